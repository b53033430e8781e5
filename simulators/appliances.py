"""What each kind of appliance does: when it runs, how it fouls and wears, what it measures.

Each kind is a `KindPhysics`: a daily usage profile, fouling and wear rates per running hour, the
readings it reports computed from its hidden state, and the telemetry signature of its faults.
Everything works on numpy arrays over many devices of one model at once (see device.py), and
is pure: randomness comes only from the Generator passed in.

Fouling is one number in [0, 1] per device whatever the kind (grease in a hood's filter, dirt in
an air conditioner's filter, scale in a water heater, debris in a dishwasher's drain, soiling of
an oven's cavity); the owner's cleaning resets it. Wear (an oven element's ageing) is not reset.

Each kind names its `gradual_failure`: the worsening quantity that ends in a failure its owner notices, and
the level where that happens. The level is derived from the kind's own `measure`, by one rule for every
kind: the appliance does its job at half its clean rate (half the airflow, half the heating or draining
rate). faults.py records each crossing of that level as ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from devices.models import ApplianceModel

Metrics = dict[str, np.ndarray]


@dataclass(frozen=True)
class Inputs:
    """Hidden state of the devices being measured (one array entry per device)."""

    run_hours: np.ndarray
    fouling: np.ndarray
    wear: np.ndarray
    trait: np.ndarray  # a fixed per-device number in [0, 1): the owner's favourite setpoint, program length
    running: np.ndarray  # bool: the appliance runs (or tries to, when a fault shows in telemetry)
    day_of_year: int

    @property
    def size(self) -> int:
        return len(self.run_hours)


@dataclass(frozen=True)
class GradualFailure:
    """A slowly worsening quantity of a kind and the level where its owner notices the appliance failing."""

    part: str  # what wears out or clogs, as a word for tables: grease_filter, scale, ...
    quantity: Literal["fouling", "wear"]  # fouling is reset by the owner's cleaning; wear never is
    level: float  # the quantity at which the appliance does its job at half its clean rate
    symptom: str  # what the owner notices then
    metrics: frozenset[str]  # the readings that move with the quantity


def _noisy(rng: np.random.Generator, base: np.ndarray | float, relative: float, size: int) -> np.ndarray:
    """Base values with small multiplicative gaussian noise, as a real sensor shows."""
    return np.asarray(base, dtype=float) * (1.0 + relative * rng.standard_normal(size))


def _summerness(day_of_year: int) -> float:
    """0 around 20 January, 1 around 21 July (northern hemisphere)."""
    return 0.5 - 0.5 * math.cos(2 * math.pi * (day_of_year - 20) / 365.25)


class KindPhysics:
    """The behaviour shared by all models of one kind; subclasses fill in the numbers."""

    kind: ClassVar[str]
    # Expected share of each local hour (0..23) that an average owner runs the appliance.
    usage_by_hour: ClassVar[tuple[float, ...]]
    fouling_per_run_hour: ClassVar[float]
    wear_per_run_hour: ClassVar[float] = 0.0
    # Reported only while running (currents, speeds, flows): an idle appliance has nothing to
    # measure there, and zeros would poison the learned baselines and `below` thresholds.
    running_metrics: ClassVar[frozenset[str]]
    maintenance_detail: ClassVar[str]
    # Fault codes that change telemetry; the others (a lamp, a door lock) show only as an event.
    signature_codes: ClassVar[frozenset[str]] = frozenset()
    gradual_failure: ClassVar[GradualFailure | None] = None

    def season(self, day_of_year: int) -> float:
        """Multiplier of the usage profile for the time of year."""
        return 1.0

    def mean_daily_run_hours(self) -> float:
        """Run hours per day of an average owner, averaged over a year."""
        mean_season = sum(self.season(day) for day in range(1, 366)) / 365
        return sum(self.usage_by_hour) * mean_season

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        """Every metric of the model for every device, before fault signatures and range clipping."""
        raise NotImplementedError

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        """Overwrite the metrics of `rows` (devices with fault `code`) with the fault's signature."""


class RangeHood(KindPhysics):
    kind = "range_hood"
    # Breakfast, lunch and dinner; dinner is the big one.
    usage_by_hour = (
        0, 0, 0, 0, 0, 0, 0.05, 0.2, 0.1, 0.02, 0.02, 0.25,
        0.4, 0.1, 0.02, 0.02, 0.02, 0.3, 0.6, 0.45, 0.1, 0.03, 0, 0,
    )  # fmt: skip
    fouling_per_run_hour = 0.004  # a full filter after ~250 cooking hours
    running_metrics = frozenset({"fan_current_a", "fan_speed_rpm", "airflow_m3h"})
    maintenance_detail = "owner cleaned the grease filter"
    signature_codes = frozenset({"E21", "E31"})
    # airflow = clean airflow * (1 - 0.65 * grease): half of it at grease 0.5 / 0.65 = 0.77
    gradual_failure = GradualFailure(
        part="grease_filter",
        quantity="fouling",
        level=0.5 / 0.65,
        symptom="the hood no longer clears the cooking fumes",
        metrics=frozenset({"grease_load_pct", "airflow_m3h", "fan_speed_rpm", "fan_current_a"}),
    )

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        n, grease = inputs.size, inputs.fouling
        limits = model.metrics
        return {
            "run_hours": inputs.run_hours,
            # A loaded filter chokes the airflow; the fan unloads, so it speeds up and draws a bit less.
            "airflow_m3h": _noisy(rng, 0.6 * limits["airflow_m3h"].max * (1 - 0.65 * grease), 0.02, n),
            "fan_speed_rpm": _noisy(rng, 0.5 * limits["fan_speed_rpm"].max * (1 + 0.08 * grease), 0.01, n),
            "fan_current_a": _noisy(rng, 0.12 * limits["fan_current_a"].max * (1 - 0.1 * grease), 0.02, n),
            "grease_load_pct": 100 * grease + rng.normal(0, 0.5, n),
        }

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        k = len(rows)
        if code == "E21":  # stalled rotor: locked-rotor current, nothing turns, nothing flows
            metrics["fan_current_a"][rows] = _noisy(rng, 0.7 * model.metrics["fan_current_a"].max, 0.03, k)
            metrics["fan_speed_rpm"][rows] = np.abs(rng.normal(0, 5, k))
            metrics["airflow_m3h"][rows] = np.abs(rng.normal(0, 3, k))
        elif code == "E31":
            metrics["airflow_m3h"][rows] *= 0.1
            metrics["fan_speed_rpm"][rows] *= 1.12
            metrics["fan_current_a"][rows] *= 0.8


class Oven(KindPhysics):
    kind = "oven"
    usage_by_hour = (
        0, 0, 0, 0, 0, 0, 0, 0.02, 0.02, 0.02, 0.05, 0.1,
        0.15, 0.05, 0.02, 0.03, 0.1, 0.3, 0.4, 0.2, 0.05, 0.02, 0, 0,
    )  # fmt: skip
    fouling_per_run_hour = 0.002  # cavity soiling, not measured: the owner still cleans now and then
    wear_per_run_hour = 1 / 20000  # the element loses a tenth of its power over ~2000 hours
    running_metrics = frozenset({"element_current_a"})
    maintenance_detail = "owner cleaned the oven cavity"
    signature_codes = frozenset({"F12", "F25"})
    setpoints = np.array([160.0, 180.0, 200.0, 220.0, 250.0])
    # heat rate = 12 degC/min * (1 - wear): half of it at wear 0.5 (decades of use for most ovens)
    gradual_failure = GradualFailure(
        part="heating_element",
        quantity="wear",
        level=0.5,
        symptom="preheating takes twice as long",
        metrics=frozenset({"heat_rate_c_per_min", "element_current_a"}),
    )

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        n, running = inputs.size, inputs.running
        # An ageing element's resistance rises: less current, less power, slower preheating.
        health = 1 - np.minimum(inputs.wear, 0.9)
        setpoint = np.where(running, rng.choice(self.setpoints, n), 0.0)
        return {
            "run_hours": inputs.run_hours,
            "setpoint_c": setpoint,
            "cavity_temp_c": np.where(running, setpoint + rng.normal(0, 3, n), 21 + rng.normal(0, 0.8, n)),
            "heat_rate_c_per_min": _noisy(rng, 12 * health, 0.03, n),  # ramp of the last preheat
            "element_current_a": _noisy(rng, 10.4 * health, 0.02, n),
        }

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        k = len(rows)
        if code == "F12":  # open element: no current, the cavity barely warms
            metrics["element_current_a"][rows] = 0.0
            metrics["heat_rate_c_per_min"][rows] = np.abs(rng.normal(0.2, 0.1, k))
            metrics["cavity_temp_c"][rows] = 21 + rng.normal(0, 1, k)
        elif code == "F25":  # open-circuit probe reads the bottom of its range
            metrics["cavity_temp_c"][rows] = model.metrics["cavity_temp_c"].min


class Dishwasher(KindPhysics):
    kind = "dishwasher"
    usage_by_hour = (
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0.02, 0.02, 0.02,
        0.05, 0.2, 0.1, 0.02, 0.02, 0.02, 0.02, 0.1, 0.4, 0.5, 0.3, 0.05,
    )  # fmt: skip
    fouling_per_run_hour = 1 / 400  # food debris in the drain filter
    running_metrics = frozenset({"inlet_flow_lpm"})
    maintenance_detail = "owner cleaned the drain filter"
    signature_codes = frozenset({"E15", "E24", "E09"})
    wash_temperatures = np.array([45.0, 55.0, 65.0])
    # drain time = 40 s * (1 + 4 * clog^2): the sump drains at half its clean rate (80 s) at clog 0.5
    gradual_failure = GradualFailure(
        part="drain_filter",
        quantity="fouling",
        level=0.5,
        symptom="dirty water is slow to drain and food debris stays behind",
        metrics=frozenset({"drain_time_s"}),
    )

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        n, running, clog = inputs.size, inputs.running, inputs.fouling
        cycle_hours = 1.3 + 0.5 * inputs.trait  # the owner's usual program
        return {
            "run_hours": inputs.run_hours,
            "cycles": np.floor(inputs.run_hours / cycle_hours),
            "water_temp_c": np.where(
                running,
                rng.choice(self.wash_temperatures, n) + rng.normal(0, 1.5, n),
                22 + rng.normal(0, 1, n),
            ),
            "inlet_flow_lpm": _noisy(rng, 9.0, 0.05, n),
            "drain_time_s": _noisy(rng, 40 * (1 + 4 * clog**2), 0.04, n),  # of the last cycle
        }

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        k = len(rows)
        drain_max = model.metrics["drain_time_s"].max
        if code == "E15":  # anti-flood: inlet valve shut, drain pump runs until the timeout
            metrics["drain_time_s"][rows] = rng.uniform(0.9 * drain_max, drain_max, k)
            metrics["inlet_flow_lpm"][rows] = 0.0
        elif code == "E24":  # the sump never empties: drain times out
            metrics["drain_time_s"][rows] = rng.uniform(0.95 * drain_max, drain_max, k)
        elif code == "E09":  # washes in cold inlet water
            metrics["water_temp_c"][rows] = 15 + rng.normal(0, 1, k)


class WaterHeater(KindPhysics):
    kind = "water_heater"
    # Showers in the morning and the evening, standby reheats in between.
    usage_by_hour = (
        0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.5, 0.7, 0.3, 0.05, 0.05, 0.05,
        0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.6, 0.5, 0.3, 0.1,
    )  # fmt: skip
    fouling_per_run_hour = 1 / 3000  # scale on the element; hard-water homes get it faster
    running_metrics = frozenset({"power_kw"})
    maintenance_detail = "owner had the tank descaled"
    signature_codes = frozenset({"E03", "E05", "E07"})
    # heating time = 55 min * (1 + 1.6 * scale^1.3): twice as long (half the heating rate) at
    # scale = (1 / 1.6)^(1 / 1.3) = 0.70
    gradual_failure = GradualFailure(
        part="scale",
        quantity="fouling",
        level=(1 / 1.6) ** (1 / 1.3),
        symptom="the tank reheats so slowly that the shower runs cold",
        metrics=frozenset({"scale_index", "heating_time_min"}),
    )

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        n, scale = inputs.size, inputs.fouling
        setpoint = 55 + 5 * np.floor(inputs.trait * 4)  # 55..70 degC, the owner's dial
        below_setpoint = np.where(inputs.running, rng.uniform(3, 10, n), rng.uniform(0, 3, n))
        return {
            "run_hours": inputs.run_hours,
            "water_temp_c": setpoint - below_setpoint,
            # Scale insulates the element from the water: the same power heats the tank slower.
            "heating_time_min": _noisy(rng, 55 * (1 + 1.6 * scale**1.3), 0.03, n),
            "scale_index": 100 * scale + rng.normal(0, 0.5, n),
            "power_kw": _noisy(rng, 3.0, 0.01, n),
        }

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        k = len(rows)
        if code == "E03":  # stuck thermostat: the water overshoots until the cut-out trips
            metrics["water_temp_c"][rows] = rng.uniform(92, 97.5, k)
            metrics["power_kw"][rows] = 0.0
        elif code == "E05":  # open-circuit sensor
            metrics["water_temp_c"][rows] = np.abs(rng.normal(0, 0.3, k))
        elif code == "E07":  # leaking tank keeps refilling with cold water
            metrics["heating_time_min"][rows] *= 2.5
            metrics["water_temp_c"][rows] -= 15


class AirConditioner(KindPhysics):
    kind = "air_conditioner"
    usage_by_hour = (
        0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1,
        0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6,
    )  # fmt: skip
    fouling_per_run_hour = 1 / 1500  # dust in the indoor filter
    running_metrics = frozenset(
        {"outlet_temp_c", "compressor_current_a", "refrigerant_pressure_kpa", "filter_dp_pa"}
    )
    maintenance_detail = "owner cleaned the air filter"
    signature_codes = frozenset({"P4", "F1", "E1"})
    # filter_dp is the filter's pressure drop at nominal airflow, 30 Pa clean + 260 Pa * dirt^1.5. Against the
    # indoor fan's roughly constant pressure the airflow falls as 1/sqrt(resistance): half the air once the
    # resistance is 4x a clean filter's (120 Pa), at dirt = (90 / 260)^(2 / 3) = 0.49
    gradual_failure = GradualFailure(
        part="air_filter",
        quantity="fouling",
        level=(90 / 260) ** (2 / 3),
        symptom="the unit blows half the air and the room no longer cools or heats",
        metrics=frozenset({"filter_dp_pa", "compressor_current_a", "refrigerant_pressure_kpa"}),
    )

    def season(self, day_of_year: int) -> float:
        # Cooling peaks in July, heating in January; spring and autumn need little of either.
        return 0.2 + 0.8 * math.cos(2 * math.pi * (day_of_year - 200) / 365.25) ** 2

    def measure(self, model: ApplianceModel, inputs: Inputs, rng: np.random.Generator) -> Metrics:
        n, running, dirt = inputs.size, inputs.running, inputs.fouling
        summer = _summerness(inputs.day_of_year)
        cooling = summer >= 0.5
        idle_room = 15 + 14 * summer
        room = np.where(running, 24.5 if cooling else 21.0, idle_room) + rng.normal(0, 1, n)
        # A dirty filter starves the coil of air: the compressor works harder, suction pressure sags.
        suction = 950 * (1 - 0.1 * dirt) if cooling else np.full(n, 700.0)
        return {
            "run_hours": inputs.run_hours,
            "room_temp_c": room,
            "outlet_temp_c": (13.0 if cooling else 42.0) + rng.normal(0, 1, n),
            "compressor_current_a": _noisy(rng, 6.0 * (1 + 0.2 * dirt), 0.03, n),
            "refrigerant_pressure_kpa": _noisy(rng, suction, 0.02, n),
            "filter_dp_pa": _noisy(rng, 30 + 260 * dirt**1.5, 0.03, n),
        }

    def apply_fault(
        self,
        code: str,
        model: ApplianceModel,
        metrics: Metrics,
        rows: np.ndarray,
        inputs: Inputs,
        rng: np.random.Generator,
    ) -> None:
        k = len(rows)
        current_max = model.metrics["compressor_current_a"].max
        if code == "P4":
            metrics["compressor_current_a"][rows] = rng.uniform(0.87 * current_max, 0.98 * current_max, k)
        elif code == "F1":  # short of refrigerant: low suction pressure, the air barely changes temperature
            metrics["refrigerant_pressure_kpa"][rows] *= rng.uniform(0.3, 0.4, k)
            cooling = _summerness(inputs.day_of_year) >= 0.5
            metrics["outlet_temp_c"][rows] = metrics["room_temp_c"][rows] + (-3 if cooling else 5)
        elif code == "E1":  # the outdoor unit never hears the command
            metrics["compressor_current_a"][rows] = 0.0
            metrics["outlet_temp_c"][rows] = metrics["room_temp_c"][rows]


PHYSICS_BY_KIND: dict[str, KindPhysics] = {
    physics.kind: physics for physics in (RangeHood(), Oven(), Dishwasher(), WaterHeater(), AirConditioner())
}
