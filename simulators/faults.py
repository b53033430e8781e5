"""Injected faults: the `--faults` spec, the faults open on the devices, and the ground truth.

Fault spec grammar (`careloop simulate --faults SPEC`):

    spec   := "" | entry ("," entry)*
    entry  := target ":" rate
    target := "all" | CODE        CODE: a fault code of devices/catalog.yaml, e.g. E21 (any case)
    rate   := a decimal number in [0, 1]: a chance per device per simulated day

- `CODE:p`: every device whose model knows CODE gets that fault with chance p per simulated day.
- `all:p`: every device gets *some* fault of its model with chance p per simulated day, the chance
  shared evenly among the model's codes.
- An explicit `CODE:p` replaces that code's share of `all`, whatever the order of the entries.
- Whitespace around tokens is ignored; each target may appear once; an empty spec injects nothing.
- Examples: `E21:0.01,F12:0.02`, `all:0.01`, `all:0.002, E21:0.05`.

A device has at most one fault at a time; a new fault can start only after the last one cleared.
`InjectedFaults` keeps the fault open on each device. Each step, a fault past its repair time clears
(a `fault_cleared` event), then a new fault may start (a `fault` event), its code chosen by the
spec's hazards and its repair time drawn around a day. A critical fault stops the appliance being
used; a fault with a telemetry signature (appliances.py) makes the device report as if running, so
the signature shows.

Ground truth, JSON lines appended to a file and flushed as they are written:

    {"device_id": "RH-000123", "model": "RH-900", "kind": "range_hood", "fault_code": "E21",
     "started_at": "2026-11-22T08:15:30.250Z", "cleared_at": null}

One line is written when a fault starts (`cleared_at` null) and one more when it clears (the same
fields, `cleared_at` set). Both times are the `ts` of the device's `fault` / `fault_cleared` event.
A fault still open when the simulation stops keeps only its start line. `load_ground_truth()`
merges the lines of one fault (key: device_id, fault_code, started_at; a clear line wins over the
start line), so a crash never loses a fault that started nor shows a cleared one as open.

The same file holds the gradual failures (failures.py: a filter clogging, scale building up, past the
level its owner notices), lines of their own shape that `load_ground_truth()` skips.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np

from devices.catalog import load_catalog
from devices.models import ApplianceModel
from simulators.appliances import PHYSICS_BY_KIND
from simulators.clock import DAY_S, HOUR_S, chance_within
from simulators.wire import DeviceEvent

ALL_CODES = "all"
# A rate of exactly 1 would be an infinite hazard; this keeps it finite and still ~certain per day.
_CERTAIN = 1.0 - 1e-12
MEDIAN_REPAIR_S = 24 * HOUR_S


@dataclass(frozen=True)
class FaultSpec:
    """Parsed `--faults` spec: a chance per device per simulated day, for all codes and per code."""

    all_rate: float = 0.0
    code_rates: dict[str, float] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return self.all_rate == 0.0 and not any(self.code_rates.values())

    def daily_hazards(self, model: ApplianceModel) -> dict[str, float]:
        """Per fault code of the model, its hazard per simulated day (events per day, rate -> -ln(1-rate))."""
        codes = list(model.fault_codes)
        if not codes:
            return {}
        # Competing hazards add up, so sharing `all`'s total hazard evenly gives the model the
        # chance `all_rate` per day of some fault, before explicit codes replace their share.
        shared = _hazard(self.all_rate) / len(codes)
        hazards = {
            code: _hazard(self.code_rates[code]) if code in self.code_rates else shared for code in codes
        }
        return {code: hazard for code, hazard in hazards.items() if hazard > 0}


def _hazard(daily_chance: float) -> float:
    return -math.log1p(-min(daily_chance, _CERTAIN))


def parse_fault_spec(spec: str | None, known_codes: Iterable[str] | None = None) -> FaultSpec:
    """Parse a fault spec (grammar in the module docstring); ValueError names what is wrong."""
    if spec is None or not spec.strip():
        return FaultSpec()
    known = {code.upper() for code in known_codes} if known_codes is not None else _catalog_codes()
    all_rate = 0.0
    code_rates: dict[str, float] = {}
    seen: set[str] = set()
    for position, raw_entry in enumerate(spec.split(","), start=1):
        entry = raw_entry.strip()
        if not entry:
            raise ValueError(
                f"fault spec {spec!r}: entry {position} is empty (expected CODE:RATE or all:RATE)"
            )
        target_text, colon, rate_text = entry.partition(":")
        target = target_text.strip().upper()
        if not colon or not target:
            raise ValueError(
                f"fault spec entry {entry!r} must look like CODE:RATE or all:RATE, e.g. E21:0.01"
            )
        if target != ALL_CODES.upper() and target not in known:
            raise ValueError(
                f"fault spec entry {entry!r}: unknown fault code {target_text.strip()!r}; "
                f"known codes: {', '.join(sorted(known))}"
            )
        if target in seen:
            raise ValueError(f"fault spec {spec!r}: {target_text.strip()!r} appears more than once")
        seen.add(target)
        rate = _parse_rate(rate_text.strip(), entry)
        if target == ALL_CODES.upper():
            all_rate = rate
        else:
            code_rates[target] = rate
    return FaultSpec(all_rate=all_rate, code_rates=code_rates)


def _parse_rate(text: str, entry: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(
            f"fault spec entry {entry!r}: rate {text!r} is not a number (a chance per device per day, 0 to 1)"
        ) from None
    if not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(
            f"fault spec entry {entry!r}: rate {text!r} must be between 0 and 1 (a chance per day)"
        )
    return rate


def _catalog_codes() -> set[str]:
    return {code.upper() for model in load_catalog().values() for code in model.fault_codes}


@dataclass(frozen=True)
class FaultRecord:
    """One injected fault, as written to the ground truth file."""

    device_id: str
    model: str
    kind: str
    fault_code: str
    started_at: str
    cleared_at: str | None = None

    def to_json_line(self) -> str:
        return json.dumps(asdict(self), separators=(", ", ": ")) + "\n"


@dataclass(frozen=True)
class OpenFault:
    """The fault open on a device, as a restart keeps it (state.py)."""

    code: str
    until: float  # epoch seconds of the simulated clock when it is repaired
    started_at: str  # the `ts` of its `fault` event


@dataclass(frozen=True)
class ShownFaults:
    """Of some devices of one model, which have a fault that shows in telemetry, and the rows per code."""

    mask: np.ndarray  # bool per device
    rows_by_code: dict[str, np.ndarray]  # in code order


@dataclass(frozen=True)
class _ModelFaults:
    """What injecting faults needs per appliance model, looked up once."""

    model: ApplianceModel
    code_ids: np.ndarray  # global code ids this model can get injected
    weights: np.ndarray  # each one's share of the model's total fault hazard
    total_hazard: float  # faults per simulated day
    signature_code_ids: np.ndarray  # global code ids whose fault shows in telemetry


class InjectedFaults:
    """The fault open on each device of a fleet (positions index the fleet), and its ground truth."""

    def __init__(
        self,
        device_ids: Sequence[str],
        models: Sequence[ApplianceModel],
        model_of: np.ndarray,
        spec: FaultSpec,
        rng: np.random.Generator,
    ) -> None:
        """`models` are the fleet's models; `model_of` gives each device's index into them."""
        self._device_ids = list(device_ids)
        self._codes = sorted({code for model in models for code in model.fault_codes})
        self._code_ids = {code: code_id for code_id, code in enumerate(self._codes)}
        self._models = [self._model_faults(model, spec) for model in models]
        self._model_of = model_of
        self._hazard = np.array([faults.total_hazard for faults in self._models])[model_of]
        self._rng = rng
        size = len(self._device_ids)
        self._fault = np.full(size, -1, dtype=np.intp)  # global code id of the open fault, -1 for none
        self._until = np.zeros(size)
        self.blocks_use = np.zeros(size, dtype=bool)  # a critical fault: the appliance cannot be used
        self._started_at: dict[int, str] = {}
        self._transitions: list[FaultRecord] = []

    def _model_faults(self, model: ApplianceModel, spec: FaultSpec) -> _ModelFaults:
        hazards = spec.daily_hazards(model)
        total = sum(hazards.values())
        signature_codes = PHYSICS_BY_KIND[model.kind].signature_codes
        return _ModelFaults(
            model=model,
            code_ids=np.array([self._code_ids[code] for code in hazards], dtype=np.intp),
            weights=np.array([hazard / total for hazard in hazards.values()]) if total else np.zeros(0),
            total_hazard=total,
            signature_code_ids=np.array(
                [self._code_ids[code] for code in model.fault_codes if code in signature_codes], dtype=np.intp
            ),
        )

    def _model(self, position: int) -> ApplianceModel:
        return self._models[self._model_of[position]].model

    def open_code(self, position: int) -> str | None:
        code_id = self._fault[position]
        return self._codes[code_id] if code_id >= 0 else None

    def clear_due(self, idx: np.ndarray, t: float, ts: str) -> list[DeviceEvent]:
        """Clear the faults whose repair time is past at t; their `fault_cleared` events."""
        due = idx[(self._fault[idx] >= 0) & (self._until[idx] <= t)]
        events = []
        for position in due.tolist():
            code = self._codes[self._fault[position]]
            meaning = self._model(position).fault_codes[code].meaning
            events.append(DeviceEvent(position, "fault_cleared", code, f"{meaning}: repaired"))
            self._transitions.append(self._record(position, self._started_at.pop(position), cleared_at=ts))
            self._fault[position] = -1
            self.blocks_use[position] = False
        return events

    def start_random(self, idx: np.ndarray, t: float, elapsed: np.ndarray, ts: str) -> list[DeviceEvent]:
        """Start faults by the spec's hazards on devices without one; their `fault` events."""
        chance = chance_within(self._hazard[idx], elapsed)
        starting = idx[(self._rng.random(idx.size) < chance) & (self._fault[idx] < 0)]
        events = []
        for position in starting.tolist():
            faults = self._models[self._model_of[position]]
            code_id = int(self._rng.choice(faults.code_ids, p=faults.weights))
            repair_s = float(
                np.clip(self._rng.lognormal(math.log(MEDIAN_REPAIR_S), 0.7), 2 * HOUR_S, 7 * DAY_S)
            )
            events.append(self._start(position, code_id, t + repair_s, ts))
        return events

    def inject(self, position: int, code: str, until: float, ts: str) -> DeviceEvent:
        """Start fault `code` on a device by hand, repaired at `until`; its `fault` event."""
        model = self._model(position)
        if code not in model.fault_codes:
            raise ValueError(f"device {self._device_ids[position]}: model {model.code} has no fault code {code!r}")
        if self._fault[position] >= 0:
            raise ValueError(
                f"device {self._device_ids[position]} already has fault {self._codes[self._fault[position]]}"
            )
        return self._start(position, self._code_ids[code], until, ts)

    def _start(self, position: int, code_id: int, until: float, ts: str) -> DeviceEvent:
        code = self._codes[code_id]
        fault = self._model(position).fault_codes[code]
        self._fault[position] = code_id
        self._until[position] = until
        self.blocks_use[position] = fault.severity == "critical"
        self._started_at[position] = ts
        self._transitions.append(self._record(position, ts))
        return DeviceEvent(position, "fault", code, fault.meaning)

    def shown_in_telemetry(self, model_index: int, positions: np.ndarray) -> ShownFaults:
        """Which of these devices (all of model `model_index`) have a fault that shows in telemetry."""
        fault_ids = self._fault[positions]
        mask = np.isin(fault_ids, self._models[model_index].signature_code_ids)
        rows_by_code = {
            self._codes[code_id]: np.nonzero(fault_ids == code_id)[0]
            for code_id in np.unique(fault_ids[mask]).tolist()
        }
        return ShownFaults(mask=mask, rows_by_code=rows_by_code)

    def take_transitions(self) -> list[FaultRecord]:
        """Ground-truth records of faults started or cleared since the last call."""
        records, self._transitions = self._transitions, []
        return records

    def open_records(self) -> list[FaultRecord]:
        """Ground-truth records of the faults open now."""
        return [self._record(position, started_at) for position, started_at in self._started_at.items()]

    def _record(self, position: int, started_at: str, cleared_at: str | None = None) -> FaultRecord:
        model = self._model(position)
        return FaultRecord(
            device_id=self._device_ids[position],
            model=model.code,
            kind=model.kind,
            fault_code=self._codes[self._fault[position]],
            started_at=started_at,
            cleared_at=cleared_at,
        )

    def open_fault(self, position: int) -> OpenFault | None:
        """The device's open fault, as a restart keeps it."""
        if self._fault[position] < 0:
            return None
        return OpenFault(
            code=self._codes[self._fault[position]],
            until=float(self._until[position]),
            started_at=self._started_at[position],
        )

    def reopen(self, position: int, fault: OpenFault) -> None:
        """Take back a fault a restart kept; a code the device's model no longer knows is dropped."""
        model = self._model(position)
        if fault.code not in model.fault_codes:
            return
        self._fault[position] = self._code_ids[fault.code]
        self._until[position] = fault.until
        self._started_at[position] = fault.started_at
        self.blocks_use[position] = model.fault_codes[fault.code].severity == "critical"


class GroundTruthRecord(Protocol):
    """A line of ground truth: an injected fault's (FaultRecord) or a gradual failure's (failures.py)."""

    def to_json_line(self) -> str: ...


class GroundTruthWriter:
    """Appends ground truth records to a JSON-lines file, flushing each so a crash loses nothing written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[GroundTruthRecord]) -> int:
        """Write the records; returns how many."""
        count = 0
        for record in records:
            self._file.write(record.to_json_line())
            count += 1
        if count:
            self._file.flush()
        return count

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> GroundTruthWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def merged_records(path: Path, *, key: tuple[str, str, str], closed: str) -> list[dict]:
    """The records of a ground truth file that carry every `key` field, one per key, its lines merged (the line
    with `closed` set wins over the opening one), in the order they opened. Faults and gradual failures share
    the file; each reads its own lines by its own key."""
    records: dict[tuple, dict] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if any(field not in record for field in key):
                continue  # the other kind's line
            record_key = tuple(record[field] for field in key)
            if record_key not in records or record[closed]:
                records[record_key] = record
    return list(records.values())


def load_ground_truth(path: Path) -> list[dict]:
    """One dict per injected fault, start and clear lines merged, in the order the faults started."""
    return merged_records(path, key=("device_id", "fault_code", "started_at"), closed="cleared_at")
