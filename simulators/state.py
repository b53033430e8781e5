"""The fleet's state between runs of the simulator: what a restart needs to carry on.

Without it a restarted simulator starts every seq at 1 again and the ingester drops those messages as
duplicates of the earlier run. The file holds one JSON object per device id: its hidden state
(device.py: counters, fouling, wear, the owner's habits), its last seq, and its open fault if any:

    {"RH-000123": {"run_hours": 812.4, "fouling": 0.31, ..., "trait": 0.42, "seq": 1042,
                   "fault": {"code": "E21", "until": 1795000000.0, "started_at": "2026-..."}}}

Buffered offline readings are not kept: a restart loses them, as a power cut would. The file is
replaced atomically, so a crash mid-write keeps the previous state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulators.device import HIDDEN_FIELDS, HiddenState
from simulators.faults import OpenFault

if TYPE_CHECKING:  # the simulation saves through this module, so only its type is needed here
    from simulators.simulation import Simulation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedDevice:
    """One device's entry in the state file."""

    hidden: HiddenState
    seq: int  # the last seq it used
    fault: OpenFault | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {**asdict(self.hidden), "seq": self.seq}
        if self.fault is not None:
            entry["fault"] = asdict(self.fault)
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> SavedDevice:
        """Parse an entry; KeyError, ValueError or TypeError where it is not one."""
        fault = entry.get("fault")
        return cls(
            hidden=HiddenState(**{name: float(entry[name]) for name in HIDDEN_FIELDS}),
            seq=int(entry["seq"]),
            fault=OpenFault(code=fault["code"], until=float(fault["until"]), started_at=fault["started_at"])
            if fault
            else None,
        )


def load_state(simulation: Simulation, state_path: Path | None) -> None:
    """Restore what an earlier run saved at state_path, if anything; a bad file is logged and skipped."""
    if state_path is None or not state_path.exists():
        return
    try:
        restored = simulation.restore_state(json.loads(state_path.read_text()))
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("simulator state not restored path=%s error=%s", state_path, error)
        return
    logger.info("simulator state restored path=%s devices=%d", state_path, restored)


def save_state(simulation: Simulation, state_path: Path | None) -> None:
    if state_path is None:
        return
    state_path.parent.mkdir(parents=True, exist_ok=True)
    partial = state_path.with_suffix(state_path.suffix + ".tmp")
    partial.write_text(json.dumps(simulation.export_state()))
    partial.replace(state_path)  # atomic: a crash mid-write keeps the previous state
