"""Injected faults: the `--faults` spec, and the ground truth of what was injected.

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

Ground truth, JSON lines appended to a file and flushed as they are written:

    {"device_id": "RH-000123", "model": "RH-900", "kind": "range_hood", "fault_code": "E21",
     "started_at": "2026-11-22T08:15:30.250Z", "cleared_at": null}

One line is written when a fault starts (`cleared_at` null) and one more when it clears (the same
fields, `cleared_at` set). Both times are the `ts` of the device's `fault` / `fault_cleared` event.
A fault still open when the simulation stops keeps only its start line. `load_ground_truth()`
merges the lines of one fault (key: device_id, fault_code, started_at; a clear line wins over the
start line), so a crash never loses a fault that started nor shows a cleared one as open.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

from devices.catalog import load_catalog
from devices.models import ApplianceModel

ALL_CODES = "all"
# A rate of exactly 1 would be an infinite hazard; this keeps it finite and still ~certain per day.
_CERTAIN = 1.0 - 1e-12


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


class GroundTruthWriter:
    """Appends fault records to a JSON-lines file, flushing each so a crash loses nothing written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def write(self, records: Iterable[FaultRecord]) -> int:
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


def load_ground_truth(path: Path) -> list[dict]:
    """One dict per injected fault, start and clear lines merged, in the order the faults started."""
    faults: dict[tuple[str, str, str], dict] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            key = (record["device_id"], record["fault_code"], record["started_at"])
            faults[key] = record if key not in faults or record["cleared_at"] else faults[key]
    return list(faults.values())
