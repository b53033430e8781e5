"""Kept so that older imports keep working: the simulation is in simulation.py, devices in device.py."""

from simulators.device import SimDevice
from simulators.simulation import Simulation

__all__ = ["SimDevice", "Simulation"]
