"""The fleet simulation: device state advanced in time, and the MQTT messages it produces.

`Simulation` holds the state of many `SimDevice`s as numpy arrays (vectorised, so weeks of
history for 10,000+ devices take seconds) and advances any subset of them with
`step(now, dt_seconds, indices)`, returning the messages those devices would send. It is pure and
deterministic for a given seed, device list and sequence of calls: no I/O, no clock (run.py
publishes). The per-kind physics live in appliances.py.

In one step, for each device stepped, in this order:

1. its first step ever publishes retained `online` on its status topic;
2. if its offline spell is over: `online`, then one `{"readings": [...]}` telemetry message with
   the readings it buffered, then the events it held back;
3. it may go offline (a seeded chance per day, `offline_per_day`): retained `offline`. A real
   device leaves that as its MQTT last will; the simulator shares one client for the whole
   fleet, so the broker cannot do it per device and the simulator publishes it explicitly;
4. physics: run hours grow by the kind's usage profile over the local hours covered (meal times
   for hoods and ovens, evenings for dishwashers, showers for water heaters, seasons for air
   conditioners), fouling and wear grow with run hours; the owner may clean (`maintenance_done`,
   more likely the fouler it is); an injected fault past its repair time clears
   (`fault_cleared`); a new fault may start (`fault`), chosen by the fault spec;
5. one telemetry reading. While a fault with a telemetry signature is open, the device reports
   as if running so the signature shows. While offline, the reading goes to a buffer of at most
   `buffer_limit` readings; the oldest are dropped, which leaves a gap in `seq`.

Every telemetry reading and event takes its device's next `seq`; status messages carry none.
`now` drives the physics; `stamp` (default `now`) is what goes into `ts`, so a run faster than real
time can age devices quickly while stamping wall-clock times the ingester accepts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from careloop.mqtt import events_topic, status_topic, telemetry_topic
from devices.catalog import load_catalog
from devices.models import ApplianceModel
from simulators.appliances import PHYSICS_BY_KIND, Inputs, KindPhysics
from simulators.faults import FaultRecord, FaultSpec, parse_fault_spec

DAY_S = 86_400.0
HOUR_S = 3_600.0
DEFAULT_BUFFER_LIMIT = 500
DEFAULT_OFFLINE_PER_DAY = 0.02
MEDIAN_OFFLINE_S = 2 * HOUR_S
MEDIAN_REPAIR_S = 24 * HOUR_S
# Cleaning chance per day = diligence * this * fouling^3: nobody cleans a clean filter.
CLEANING_HAZARD_AT_FULL = 0.15
# Decimal places per unit, as a device's firmware would plausibly send them.
DECIMALS_BY_UNIT = {"rpm": 0, "count": 0, "kPa": 0, "m3/h": 0, "Pa": 1, "s": 1, "min": 1}
DEFAULT_DECIMALS = 2
# What survives a restart of the simulator (see export_state).
STATE_FIELDS = (
    "run_hours",
    "fouling",
    "wear",
    "usage_factor",
    "fouling_factor",
    "wear_factor",
    "diligence",
    "trait",
)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """The moment in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def format_ts(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, e.g. 2026-11-22T08:15:30.250Z."""
    moment = as_utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


class Message(NamedTuple):
    """One MQTT message a device would send: a topic and a JSON object (or a status word)."""

    topic: str
    payload: dict[str, Any] | str

    @property
    def retained(self) -> bool:
        """Only the status is retained: it stands in for the device's last will."""
        return self.topic.endswith("/status")

    def encode(self) -> bytes:
        if isinstance(self.payload, str):
            return self.payload.encode()
        return json.dumps(self.payload, separators=(",", ":")).encode()


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
class _ModelGroup:
    """What the simulation needs per appliance model, looked up once."""

    model: ApplianceModel
    physics: KindPhysics
    metric_names: tuple[str, ...]
    all_columns: np.ndarray
    idle_names: tuple[str, ...]  # the metrics reported while idle
    idle_columns: np.ndarray  # and their columns
    decimals: tuple[int, ...]
    lower: np.ndarray
    upper: np.ndarray
    fault_code_ids: np.ndarray  # global code ids this model can get injected
    fault_weights: np.ndarray  # each one's share of the model's total fault hazard
    total_hazard: float  # faults per simulated day
    signature_code_ids: np.ndarray  # global code ids whose fault shows in telemetry


class Simulation:
    """The state of a simulated fleet, advanced step by step (see the module docstring)."""

    def __init__(
        self,
        devices: Sequence[SimDevice],
        *,
        seed: int,
        start: dt.datetime,
        faults: FaultSpec | str | None = None,
        offline_per_day: float = DEFAULT_OFFLINE_PER_DAY,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        if not devices:
            raise ValueError("a simulation needs at least one device")
        if buffer_limit < 1:
            raise ValueError(f"buffer_limit must be at least 1, not {buffer_limit}")
        if offline_per_day < 0:
            raise ValueError(f"offline_per_day must not be negative, not {offline_per_day}")
        self.devices = list(devices)
        self._index = {device.device_id: position for position, device in enumerate(self.devices)}
        if len(self._index) != len(self.devices):
            raise ValueError("device ids must be unique")
        self.fault_spec = faults if isinstance(faults, FaultSpec) else parse_fault_spec(faults)
        self.offline_per_day = offline_per_day
        self.buffer_limit = buffer_limit
        self._rng = np.random.default_rng(seed)
        self._build_groups()
        self._init_state(as_utc(start).date())
        self._telemetry_topics = [telemetry_topic(device.device_id) for device in self.devices]
        self._events_topics = [events_topic(device.device_id) for device in self.devices]
        self._status_topics = [status_topic(device.device_id) for device in self.devices]

    # --- set-up ---------------------------------------------------------------------------------

    def _build_groups(self) -> None:
        catalog = load_catalog()
        model_codes = sorted({device.model for device in self.devices})
        for device in self.devices:
            model = catalog.get(device.model)
            if model is None:
                raise ValueError(f"device {device.device_id}: model {device.model!r} is not in the catalog")
            if model.kind not in PHYSICS_BY_KIND:
                raise ValueError(f"device {device.device_id}: no physics for kind {model.kind!r}")
        self._codes = sorted({code for model_code in model_codes for code in catalog[model_code].fault_codes})
        self._code_ids = {code: code_id for code_id, code in enumerate(self._codes)}
        self._groups = [self._model_group(catalog[code]) for code in model_codes]
        group_of_model = {code: group for group, code in enumerate(model_codes)}
        self._group = np.array([group_of_model[device.model] for device in self.devices], dtype=np.intp)
        kinds = sorted({group.model.kind for group in self._groups})
        self._kind_physics = [PHYSICS_BY_KIND[kind] for kind in kinds]
        kind_of_model = [kinds.index(group.model.kind) for group in self._groups]
        self._kind = np.array(kind_of_model, dtype=np.intp)[self._group]
        self._usage_table = np.array([physics.usage_by_hour for physics in self._kind_physics], dtype=float)
        self._fouling_rate = np.array([p.fouling_per_run_hour for p in self._kind_physics])[self._kind]
        self._wear_rate = np.array([p.wear_per_run_hour for p in self._kind_physics])[self._kind]
        self._fault_hazard = np.array([group.total_hazard for group in self._groups])[self._group]
        self._utc_offset_h = np.array([device.utc_offset_hours for device in self.devices], dtype=float)

    def _model_group(self, model: ApplianceModel) -> _ModelGroup:
        physics = PHYSICS_BY_KIND[model.kind]
        names = tuple(model.metrics)
        hazards = self.fault_spec.daily_hazards(model)
        total = sum(hazards.values())
        return _ModelGroup(
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
            fault_code_ids=np.array([self._code_ids[code] for code in hazards], dtype=np.intp),
            fault_weights=np.array([hazard / total for hazard in hazards.values()]) if total else np.zeros(0),
            total_hazard=total,
            signature_code_ids=np.array(
                [self._code_ids[code] for code in model.fault_codes if code in physics.signature_codes],
                dtype=np.intp,
            ),
        )

    def _init_state(self, today: dt.date) -> None:
        """Plausible state for devices that have been in use since their purchase date."""
        rng, n = self._rng, len(self.devices)
        self.usage_factor = np.clip(rng.lognormal(math.log(0.7), 0.35, n), 0.2, 1.6)  # light to heavy users
        self.fouling_factor = rng.lognormal(0.0, 0.25, n)  # greasy cooking, hard water, dusty rooms
        self.wear_factor = rng.lognormal(0.0, 0.3, n)
        self.diligence = rng.uniform(0.2, 1.5, n)  # how readily the owner cleans
        self.trait = rng.random(n)
        age_days = np.array(
            [max((today - device.purchased_on).days, 0) for device in self.devices], dtype=float
        )
        daily_hours = np.array([physics.mean_daily_run_hours() for physics in self._kind_physics])[self._kind]
        self.run_hours = age_days * daily_hours * self.usage_factor * rng.uniform(0.9, 1.1, n)
        interval = np.array([group.model.maintenance.interval_run_hours for group in self._groups])[
            self._group
        ]
        hours_since_cleaning = np.minimum(self.run_hours, rng.uniform(0.0, 1.1, n) * interval)
        self.fouling = np.minimum(hours_since_cleaning * self._fouling_rate * self.fouling_factor, 1.0)
        self.wear = self.run_hours * self._wear_rate * self.wear_factor
        self.seq = np.zeros(n, dtype=np.int64)  # the last seq each device used
        self.offline = np.zeros(n, dtype=bool)
        self._announced = np.zeros(n, dtype=bool)
        self._offline_until = np.zeros(n)
        self._fault = np.full(n, -1, dtype=np.intp)  # global code id of the open fault, -1 for none
        self._fault_until = np.zeros(n)
        self._fault_blocks_use = np.zeros(n, dtype=bool)  # a critical fault: the appliance cannot be used
        self._fault_started_at: dict[int, str] = {}
        self._buffers: dict[int, deque[dict[str, Any]]] = {}
        self._held_events: dict[int, list[Message]] = {}
        self._transitions: list[FaultRecord] = []

    # --- public ---------------------------------------------------------------------------------

    def index_of(self, device_id: str) -> int:
        return self._index[device_id]

    def step(
        self,
        now: dt.datetime,
        dt_seconds: float | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        stamp: dt.datetime | None = None,
    ) -> list[Message]:
        """Advance the devices at `indices` (all by default) by dt_seconds up to `now`; their messages."""
        return list(self.iter_step(now, dt_seconds, indices, stamp=stamp))

    def iter_step(
        self,
        now: dt.datetime,
        dt_seconds: float | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        stamp: dt.datetime | None = None,
    ) -> Iterator[Message]:
        """Like step, but yields the readings as they are built; consume it fully before the next step.

        Messages that die young cost the garbage collector far less than a list of 10,000 of them.
        """
        idx = np.arange(len(self.devices)) if indices is None else np.asarray(indices, dtype=np.intp)
        if idx.size == 0:
            return
        elapsed = np.broadcast_to(np.asarray(dt_seconds, dtype=float), idx.shape)
        if not np.all(np.isfinite(elapsed)) or np.any(elapsed < 0):
            raise ValueError("dt_seconds must be finite and not negative")
        now = as_utc(now)
        t = now.timestamp()
        ts = format_ts(stamp if stamp is not None else now)
        out: list[Message] = []
        self._announce_first_steps(idx, out)
        self._end_offline_spells(idx, t, out)
        self._start_offline_spells(idx, t, elapsed, out)
        running = self._advance_usage(idx, now, elapsed)
        self._owner_cleaning(idx, elapsed, ts, out)
        self._clear_due_faults(idx, t, ts, out)
        self._start_random_faults(idx, t, elapsed, ts, out)
        yield from out
        yield from itertools.chain.from_iterable(self._report_telemetry(idx, running, now, ts))

    def go_offline(self, device_id: str, now: dt.datetime, duration_s: float) -> list[Message]:
        """Take a device offline for duration_s from `now`; its retained `offline` status."""
        out: list[Message] = []
        self._take_offline(self._index[device_id], as_utc(now).timestamp() + duration_s, out)
        return out

    def inject_fault(
        self,
        device_id: str,
        code: str,
        now: dt.datetime,
        repair_s: float = MEDIAN_REPAIR_S,
        *,
        stamp: dt.datetime | None = None,
    ) -> list[Message]:
        """Start fault `code` on a device now (ground truth recorded); its `fault` event."""
        position = self._index[device_id]
        model = self._groups[self._group[position]].model
        if code not in model.fault_codes:
            raise ValueError(f"device {device_id}: model {model.code} has no fault code {code!r}")
        if self._fault[position] >= 0:
            raise ValueError(f"device {device_id} already has fault {self._codes[self._fault[position]]}")
        out: list[Message] = []
        t = as_utc(now).timestamp()
        self._start_fault(position, self._code_ids[code], t + repair_s, format_ts(stamp or now), out)
        return out

    def take_fault_transitions(self) -> list[FaultRecord]:
        """Ground-truth records of faults started or cleared since the last call."""
        records, self._transitions = self._transitions, []
        return records

    def open_faults(self) -> list[FaultRecord]:
        """Ground-truth records of the faults open now."""
        return [self._record(position, started_at) for position, started_at in self._fault_started_at.items()]

    def open_fault_code(self, device_id: str) -> str | None:
        code_id = self._fault[self._index[device_id]]
        return self._codes[code_id] if code_id >= 0 else None

    @property
    def status_topics(self) -> list[str]:
        return list(self._status_topics)

    @property
    def offline_count(self) -> int:
        return int(self.offline.sum())

    def export_state(self) -> dict[str, dict[str, Any]]:
        """Per device what a restart needs to continue (seq, counters, fouling, open fault); JSON-able.

        Buffered offline readings are not kept: a restart loses them, as a power cut would.
        """
        fields = {name: getattr(self, name).tolist() for name in STATE_FIELDS}
        seqs = self.seq.tolist()
        state: dict[str, dict[str, Any]] = {}
        for position, device in enumerate(self.devices):
            entry: dict[str, Any] = {name: values[position] for name, values in fields.items()}
            entry["seq"] = seqs[position]
            if self._fault[position] >= 0:
                entry["fault"] = {
                    "code": self._codes[self._fault[position]],
                    "until": float(self._fault_until[position]),
                    "started_at": self._fault_started_at[position],
                }
            state[device.device_id] = entry
        return state

    def restore_state(self, state: dict[str, dict[str, Any]]) -> int:
        """Take back what export_state saved, for the devices known here; how many were restored."""
        restored = 0
        for device_id, entry in state.items():
            position = self._index.get(device_id)
            if position is None:
                continue
            for name in STATE_FIELDS:
                getattr(self, name)[position] = float(entry[name])
            self.seq[position] = int(entry["seq"])
            fault = entry.get("fault")
            model = self._groups[self._group[position]].model
            if fault and fault["code"] in model.fault_codes:
                self._fault[position] = self._code_ids[fault["code"]]
                self._fault_until[position] = float(fault["until"])
                self._fault_started_at[position] = fault["started_at"]
                self._fault_blocks_use[position] = model.fault_codes[fault["code"]].severity == "critical"
            restored += 1
        return restored

    # --- the phases of a step ---------------------------------------------------------------

    def _announce_first_steps(self, idx: np.ndarray, out: list[Message]) -> None:
        new = idx[~self._announced[idx]]
        self._announced[new] = True
        out.extend(Message(self._status_topics[position], "online") for position in new.tolist())

    def _end_offline_spells(self, idx: np.ndarray, t: float, out: list[Message]) -> None:
        back = idx[self.offline[idx] & (self._offline_until[idx] <= t)]
        for position in back.tolist():
            self.offline[position] = False
            out.append(Message(self._status_topics[position], "online"))
            buffered = self._buffers.pop(position)
            if buffered:
                out.append(Message(self._telemetry_topics[position], {"readings": list(buffered)}))
            out.extend(self._held_events.pop(position))

    def _start_offline_spells(
        self, idx: np.ndarray, t: float, elapsed: np.ndarray, out: list[Message]
    ) -> None:
        chance = -np.expm1(-self.offline_per_day * elapsed / DAY_S)
        going = idx[(self._rng.random(idx.size) < chance) & ~self.offline[idx]]
        for position in going.tolist():
            duration = float(np.clip(self._rng.lognormal(math.log(MEDIAN_OFFLINE_S), 1.0), 300, 3 * DAY_S))
            self._take_offline(position, t + duration, out)

    def _take_offline(self, position: int, until: float, out: list[Message]) -> None:
        self._offline_until[position] = until
        if self.offline[position]:
            return
        self.offline[position] = True
        self._buffers[position] = deque(maxlen=self.buffer_limit)
        self._held_events[position] = []
        out.append(Message(self._status_topics[position], "offline"))

    def _advance_usage(self, idx: np.ndarray, now: dt.datetime, elapsed: np.ndarray) -> np.ndarray:
        """Grow run hours, fouling and wear over the interval; whether each device runs at `now`."""
        t = now.timestamp()
        kind = self._kind[idx]
        offset = self._utc_offset_h[idx]
        season = np.array([physics.season(now.timetuple().tm_yday) for physics in self._kind_physics])[kind]
        # Average the usage profile over up to 24 instants spread across the interval, so a long
        # step (an hour, a day) counts the meal times it spans.
        samples = int(min(24, max(1, math.ceil(float(elapsed.max()) / HOUR_S))))
        instants = t - elapsed[None, :] * ((np.arange(samples) + 0.5) / samples)[:, None]
        usage = self._usage_table[kind, self._local_hour(instants, offset)].mean(axis=0)
        usable = ~self._fault_blocks_use[idx]
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

    def _owner_cleaning(self, idx: np.ndarray, elapsed: np.ndarray, ts: str, out: list[Message]) -> None:
        hazard = self.diligence[idx] * CLEANING_HAZARD_AT_FULL * self.fouling[idx] ** 3
        cleaned = idx[self._rng.random(idx.size) < -np.expm1(-hazard * elapsed / DAY_S)]
        self.fouling[cleaned] = self._rng.uniform(0.0, 0.03, cleaned.size)  # never quite spotless
        for position in cleaned.tolist():
            detail = self._groups[self._group[position]].physics.maintenance_detail
            self._emit_event(position, "maintenance_done", None, detail, ts, out)

    def _clear_due_faults(self, idx: np.ndarray, t: float, ts: str, out: list[Message]) -> None:
        due = idx[(self._fault[idx] >= 0) & (self._fault_until[idx] <= t)]
        for position in due.tolist():
            code = self._codes[self._fault[position]]
            meaning = self._groups[self._group[position]].model.fault_codes[code].meaning
            self._emit_event(position, "fault_cleared", code, f"{meaning}: repaired", ts, out)
            self._transitions.append(
                self._record(position, self._fault_started_at.pop(position), cleared_at=ts)
            )
            self._fault[position] = -1
            self._fault_blocks_use[position] = False

    def _start_random_faults(
        self, idx: np.ndarray, t: float, elapsed: np.ndarray, ts: str, out: list[Message]
    ) -> None:
        chance = -np.expm1(-self._fault_hazard[idx] * elapsed / DAY_S)
        starting = idx[(self._rng.random(idx.size) < chance) & (self._fault[idx] < 0)]
        for position in starting.tolist():
            group = self._groups[self._group[position]]
            code_id = int(self._rng.choice(group.fault_code_ids, p=group.fault_weights))
            repair_s = float(
                np.clip(self._rng.lognormal(math.log(MEDIAN_REPAIR_S), 0.7), 2 * HOUR_S, 7 * DAY_S)
            )
            self._start_fault(position, code_id, t + repair_s, ts, out)

    def _start_fault(self, position: int, code_id: int, until: float, ts: str, out: list[Message]) -> None:
        code = self._codes[code_id]
        fault = self._groups[self._group[position]].model.fault_codes[code]
        self._fault[position] = code_id
        self._fault_until[position] = until
        self._fault_blocks_use[position] = fault.severity == "critical"
        self._fault_started_at[position] = ts
        self._emit_event(position, "fault", code, fault.meaning, ts, out)
        self._transitions.append(self._record(position, ts))

    def _record(self, position: int, started_at: str, cleared_at: str | None = None) -> FaultRecord:
        device = self.devices[position]
        return FaultRecord(
            device_id=device.device_id,
            model=device.model,
            kind=self._groups[self._group[position]].model.kind,
            fault_code=self._codes[self._fault[position]],
            started_at=started_at,
            cleared_at=cleared_at,
        )

    def _emit_event(
        self, position: int, event_type: str, code: str | None, detail: str, ts: str, out: list[Message]
    ) -> None:
        self.seq[position] += 1
        payload = {
            "seq": int(self.seq[position]),
            "ts": ts,
            "type": event_type,
            "code": code,
            "detail": detail,
        }
        message = Message(self._events_topics[position], payload)
        if self.offline[position]:
            self._held_events[position].append(message)
        else:
            out.append(message)

    def _report_telemetry(
        self, idx: np.ndarray, running: np.ndarray, now: dt.datetime, ts: str
    ) -> Iterator[Iterator[Message]]:
        """Per model, an iterator of its devices' readings (to be chained: one generator level less)."""
        day_of_year = now.timetuple().tm_yday
        groups = self._group[idx]
        for group_id in np.unique(groups).tolist():
            rows = np.nonzero(groups == group_id)[0]
            positions = idx[rows]
            group = self._groups[group_id]
            fault_codes = self._fault[positions]
            shows_fault = np.isin(fault_codes, group.signature_code_ids)
            inputs = Inputs(
                run_hours=self.run_hours[positions],
                fouling=self.fouling[positions],
                wear=self.wear[positions],
                trait=self.trait[positions],
                running=running[rows] | shows_fault,
                day_of_year=day_of_year,
            )
            metrics = group.physics.measure(group.model, inputs, self._rng)
            for code_id in np.unique(fault_codes[shows_fault]).tolist():
                faulty_rows = np.nonzero(fault_codes == code_id)[0]
                group.physics.apply_fault(
                    self._codes[code_id], group.model, metrics, faulty_rows, inputs, self._rng
                )
            yield self._readings(
                group, positions, inputs.running, self._readings_matrix(group, metrics, rows.size), ts
            )

    @staticmethod
    def _readings_matrix(group: _ModelGroup, metrics: dict[str, np.ndarray], size: int) -> np.ndarray:
        """Rounded, in-range values: one row per device, columns in the order of group.metric_names."""
        columns = [
            np.round(np.broadcast_to(metrics[name], (size,)), decimals)
            for name, decimals in zip(group.metric_names, group.decimals, strict=True)
        ]
        # Clip after rounding: a rounded value must still lie within the catalog's range.
        return np.clip(np.column_stack(columns), group.lower, group.upper)

    def _readings(
        self,
        group: _ModelGroup,
        positions: np.ndarray,
        running: np.ndarray,
        matrix: np.ndarray,
        ts: str,
    ) -> Iterator[Message]:
        seqs = self.seq[positions] + 1
        self.seq[positions] = seqs
        offline = self.offline[positions]
        topics = self._telemetry_topics
        new_message = tuple.__new__  # NamedTuple's own __new__ is a Python call: too slow for millions
        # Running and idle devices report different metric sets; build each set's rows in bulk
        # (this loop is the hot path of generate_history).
        for names, columns, selected in (
            (group.metric_names, group.all_columns, running),
            (group.idle_names, group.idle_columns, ~running),
        ):
            rows = np.nonzero(selected)[0]
            readings = zip(
                positions[rows].tolist(),
                seqs[rows].tolist(),
                matrix[np.ix_(rows, columns)].tolist(),
                offline[rows].tolist(),
                strict=True,
            )
            for position, seq, values, is_offline in readings:
                # strict=False: the row was cut to `columns`, which matches `names` by construction,
                # and the check would cost a tenth of the whole loop.
                reading = {"seq": seq, "ts": ts, "metrics": dict(zip(names, values, strict=False))}
                if is_offline:
                    self._buffers[position].append(reading)
                else:
                    yield new_message(Message, (topics[position], reading))
