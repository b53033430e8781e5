"""Simulated appliances: who each one is (`SimDevice`), and the hidden physical state of a fleet of them.

`ApplianceStates` holds that state as numpy arrays (vectorised, so weeks of history for 10,000+
devices take seconds) and advances any subset of the devices: run hours grow by the kind's usage
profile over the local hours covered (meal times for hoods and ovens, evenings for dishwashers,
showers for water heaters, seasons for air conditioners); fouling and wear grow with run hours; the
owner may clean (more likely the fouler it is); and each device measures one reading, rounded as its
firmware would send it and within its catalog range. The per-kind physics live in appliances.py;
randomness comes only from the Generator passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from devices.catalog import load_catalog
from devices.models import ApplianceModel
from simulators.appliances import PHYSICS_BY_KIND, GradualFailure, Inputs, KindPhysics
from simulators.clock import HOUR_S, chance_within
from simulators.faults import ShownFaults
from simulators.wire import DeviceEvent

# Cleaning chance per day = diligence * this * fouling^3: nobody cleans a clean filter.
CLEANING_HAZARD_AT_FULL = 0.15
# Decimal places per unit, as a device's firmware would plausibly send them.
DECIMALS_BY_UNIT = {"rpm": 0, "count": 0, "kPa": 0, "m3/h": 0, "Pa": 1, "s": 1, "min": 1}
DEFAULT_DECIMALS = 2


@dataclass(frozen=True)
class SimDevice:
    """A simulated appliance's identity: what the API is told about it, and its home's clock."""

    device_id: str
    model: str
    kind: str
    purchased_on: dt.date
    region: str
    owner_index: int  # into the list from fleet.make_customers()
    utc_offset_hours: float = 0.0  # standard time of the home; meal times follow it

    def document(self, owner: int | None) -> dict[str, Any]:
        """The device document of CONTRACT.md for `POST /devices`."""
        return {
            "id": self.device_id,
            "model": self.model,
            "owner": owner,
            "purchased_on": self.purchased_on.isoformat(),
            "region": self.region,
        }


@dataclass(frozen=True)
class HiddenState:
    """One appliance's physical state and its owner's habits: what a restart keeps (state.py)."""

    run_hours: float
    fouling: float
    wear: float
    usage_factor: float
    fouling_factor: float
    wear_factor: float
    diligence: float
    trait: float


HIDDEN_FIELDS = tuple(field.name for field in fields(HiddenState))


@dataclass(frozen=True)
class ModelGroup:
    """What measuring needs per appliance model, looked up once."""

    model: ApplianceModel
    physics: KindPhysics
    metric_names: tuple[str, ...]
    all_columns: np.ndarray
    idle_names: tuple[str, ...]  # the metrics reported while idle
    idle_columns: np.ndarray  # and their columns
    decimals: tuple[int, ...]
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def of(cls, model: ApplianceModel) -> ModelGroup:
        physics = PHYSICS_BY_KIND[model.kind]
        names = tuple(model.metrics)
        return cls(
            model=model,
            physics=physics,
            metric_names=names,
            all_columns=np.arange(len(names)),
            idle_names=tuple(name for name in names if name not in physics.running_metrics),
            idle_columns=np.array(
                [column for column, name in enumerate(names) if name not in physics.running_metrics],
                dtype=np.intp,
            ),
            decimals=tuple(
                DECIMALS_BY_UNIT.get(model.metrics[name].unit, DEFAULT_DECIMALS) for name in names
            ),
            lower=np.array([model.metrics[name].min for name in names]),
            upper=np.array([model.metrics[name].max for name in names]),
        )


@dataclass(frozen=True)
class MetricSet:
    """The metrics some devices of one measurement report: names, their columns, and which rows."""

    names: tuple[str, ...]
    columns: np.ndarray
    reporting: np.ndarray  # bool per row of the measurement


@dataclass(frozen=True)
class Measurement:
    """One reading per device of one model: rounded, in-range values, one row per device."""

    group: ModelGroup
    positions: np.ndarray  # the devices' places in the fleet
    running: np.ndarray  # bool per row: running, or showing a fault as if running
    values: np.ndarray  # columns in the order of group.metric_names

    def metric_sets(self) -> tuple[MetricSet, MetricSet]:
        """Running devices report every metric; idle ones leave out what only running ones measure."""
        group = self.group
        return (
            MetricSet(group.metric_names, group.all_columns, self.running),
            MetricSet(group.idle_names, group.idle_columns, ~self.running),
        )


class ApplianceStates:
    """The hidden state of a fleet's appliances, advanced step by step (positions index the fleet)."""

    def __init__(self, devices: Sequence[SimDevice], *, today: dt.date, rng: np.random.Generator) -> None:
        catalog = load_catalog()
        for device in devices:
            model = catalog.get(device.model)
            if model is None:
                raise ValueError(f"device {device.device_id}: model {device.model!r} is not in the catalog")
            if model.kind not in PHYSICS_BY_KIND:
                raise ValueError(f"device {device.device_id}: no physics for kind {model.kind!r}")
        self._rng = rng
        model_codes = sorted({device.model for device in devices})
        self.groups = [ModelGroup.of(catalog[code]) for code in model_codes]
        group_of_model = {code: group for group, code in enumerate(model_codes)}
        self.group_of = np.array([group_of_model[device.model] for device in devices], dtype=np.intp)
        kinds = sorted({group.model.kind for group in self.groups})
        self._kind_physics = [PHYSICS_BY_KIND[kind] for kind in kinds]
        kind_of_model = [kinds.index(group.model.kind) for group in self.groups]
        self._kind = np.array(kind_of_model, dtype=np.intp)[self.group_of]
        self._usage_table = np.array([physics.usage_by_hour for physics in self._kind_physics], dtype=float)
        self._fouling_rate = np.array([p.fouling_per_run_hour for p in self._kind_physics])[self._kind]
        self._wear_rate = np.array([p.wear_per_run_hour for p in self._kind_physics])[self._kind]
        self._utc_offset_h = np.array([device.utc_offset_hours for device in devices], dtype=float)
        self._init_state(devices, today)

    def _init_state(self, devices: Sequence[SimDevice], today: dt.date) -> None:
        """Plausible state for devices that have been in use since their purchase date."""
        rng, n = self._rng, len(devices)
        self.usage_factor = np.clip(rng.lognormal(math.log(0.7), 0.35, n), 0.2, 1.6)  # light to heavy users
        self.fouling_factor = rng.lognormal(0.0, 0.25, n)  # greasy cooking, hard water, dusty rooms
        self.wear_factor = rng.lognormal(0.0, 0.3, n)
        self.diligence = rng.uniform(0.2, 1.5, n)  # how readily the owner cleans
        self.trait = rng.random(n)
        age_days = np.array([max((today - device.purchased_on).days, 0) for device in devices], dtype=float)
        daily_hours = np.array([physics.mean_daily_run_hours() for physics in self._kind_physics])[self._kind]
        self.run_hours = age_days * daily_hours * self.usage_factor * rng.uniform(0.9, 1.1, n)
        interval = np.array([group.model.maintenance.interval_run_hours for group in self.groups])[
            self.group_of
        ]
        hours_since_cleaning = np.minimum(self.run_hours, rng.uniform(0.0, 1.1, n) * interval)
        self.fouling = np.minimum(hours_since_cleaning * self._fouling_rate * self.fouling_factor, 1.0)
        self.wear = self.run_hours * self._wear_rate * self.wear_factor
        # The past that explains this state, for last_cleanings(): no random draw, so the streams are unchanged.
        self._hours_since_cleaning = hours_since_cleaning
        self._age_days = age_days
        self._run_hours_per_day = daily_hours * self.usage_factor
        self._gradual = [PHYSICS_BY_KIND[group.model.kind].gradual_failure for group in self.groups]
        self._worn_not_fouled = np.array(
            [failure is not None and failure.quantity == "wear" for failure in self._gradual]
        )[self.group_of]

    def last_cleanings(self, start: dt.datetime) -> list[tuple[int, dt.datetime, float]]:
        """(position, when, run hours then) of each owner's last cleaning before `start`, as the initial state
        has it (hours of use since then, at the owner's usual daily hours); devices never cleaned are left out."""
        cleaned = np.nonzero(self._hours_since_cleaning < self.run_hours)[0]
        days_ago = np.minimum(
            self._hours_since_cleaning[cleaned] / np.maximum(self._run_hours_per_day[cleaned], 1e-9),
            self._age_days[cleaned],  # never before its purchase
        )
        return [
            (position, start - dt.timedelta(days=days), hours)
            for position, days, hours in zip(
                cleaned.tolist(),
                days_ago.tolist(),
                (self.run_hours[cleaned] - self._hours_since_cleaning[cleaned]).tolist(),
                strict=True,
            )
        ]

    def gradual_failure(self, position: int) -> GradualFailure | None:
        """The gradual failure the device's kind comes to (appliances.py)."""
        return self._gradual[self.group_of[position]]

    def worsening(self, idx: np.ndarray) -> np.ndarray:
        """The quantity of each device that its gradual failure follows: wear or fouling, by kind."""
        return np.where(self._worn_not_fouled[idx], self.wear[idx], self.fouling[idx])

    @property
    def models(self) -> list[ApplianceModel]:
        """The fleet's models, in the order group_of indexes them."""
        return [group.model for group in self.groups]

    def advance(self, idx: np.ndarray, now: dt.datetime, elapsed: np.ndarray, usable: np.ndarray) -> np.ndarray:
        """Grow run hours, fouling and wear over the interval; whether each device runs at `now`.

        `usable` is false for devices a fault keeps from being used: they neither run nor age.
        """
        t = now.timestamp()
        kind = self._kind[idx]
        offset = self._utc_offset_h[idx]
        season = np.array([physics.season(now.timetuple().tm_yday) for physics in self._kind_physics])[kind]
        # Average the usage profile over up to 24 instants spread across the interval, so a long
        # step (an hour, a day) counts the meal times it spans.
        samples = int(min(24, max(1, math.ceil(float(elapsed.max()) / HOUR_S))))
        instants = t - elapsed[None, :] * ((np.arange(samples) + 0.5) / samples)[:, None]
        usage = self._usage_table[kind, self._local_hour(instants, offset)].mean(axis=0)
        share = np.clip(usage * season * self.usage_factor[idx], 0.0, 1.0)
        added_hours = elapsed / HOUR_S * share * usable
        self.run_hours[idx] += added_hours
        self.fouling[idx] = np.minimum(
            self.fouling[idx] + added_hours * self._fouling_rate[idx] * self.fouling_factor[idx], 1.0
        )
        self.wear[idx] += added_hours * self._wear_rate[idx] * self.wear_factor[idx]
        running_chance = (
            self._usage_table[kind, self._local_hour(t, offset)] * season * self.usage_factor[idx]
        )
        return (self._rng.random(idx.size) < running_chance) & usable

    @staticmethod
    def _local_hour(epoch_seconds: np.ndarray | float, utc_offset_h: np.ndarray) -> np.ndarray:
        return np.minimum(((np.asarray(epoch_seconds) / HOUR_S + utc_offset_h) % 24).astype(np.intp), 23)

    def clean(self, idx: np.ndarray, elapsed: np.ndarray) -> list[DeviceEvent]:
        """Owners may clean over the interval, the fouler the likelier; their `maintenance_done` events."""
        hazard = self.diligence[idx] * CLEANING_HAZARD_AT_FULL * self.fouling[idx] ** 3
        cleaned = idx[self._rng.random(idx.size) < chance_within(hazard, elapsed)]
        self.fouling[cleaned] = self._rng.uniform(0.0, 0.03, cleaned.size)  # never quite spotless
        return [
            DeviceEvent(position, "maintenance_done", None, self.groups[group].physics.maintenance_detail)
            for position, group in zip(cleaned.tolist(), self.group_of[cleaned].tolist(), strict=True)
        ]

    def measure(
        self, group_id: int, positions: np.ndarray, running: np.ndarray, day_of_year: int, shown: ShownFaults
    ) -> Measurement:
        """One reading for each of these devices, all of model group_id, with the faults they show."""
        group = self.groups[group_id]
        inputs = Inputs(
            run_hours=self.run_hours[positions],
            fouling=self.fouling[positions],
            wear=self.wear[positions],
            trait=self.trait[positions],
            running=running | shown.mask,
            day_of_year=day_of_year,
        )
        metrics = group.physics.measure(group.model, inputs, self._rng)
        for code, faulty_rows in shown.rows_by_code.items():
            group.physics.apply_fault(code, group.model, metrics, faulty_rows, inputs, self._rng)
        columns = [
            np.round(np.broadcast_to(metrics[name], (positions.size,)), decimals)
            for name, decimals in zip(group.metric_names, group.decimals, strict=True)
        ]
        # Clip after rounding: a rounded value must still lie within the catalog's range.
        values = np.clip(np.column_stack(columns), group.lower, group.upper)
        return Measurement(group=group, positions=positions, running=inputs.running, values=values)

    def hidden_states(self) -> list[HiddenState]:
        """Every device's hidden state, in fleet order."""
        columns = [getattr(self, name).tolist() for name in HIDDEN_FIELDS]
        return [HiddenState(*values) for values in zip(*columns, strict=True)]

    def restore(self, position: int, state: HiddenState) -> None:
        for name in HIDDEN_FIELDS:
            getattr(self, name)[position] = getattr(state, name)
