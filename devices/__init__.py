"""Appliance models catalog, devices, ownership and device state."""
