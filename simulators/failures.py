"""Gradual failures as ground truth: when a slowly worsening quantity crosses the level its owner notices.

Each kind's physics names its gradual failure (appliances.py): grease in a hood's filter, scale in a water
heater, debris in a dishwasher's drain filter, dust in an air conditioner's filter (all `fouling`, which the
owner's cleaning resets), an oven element's `wear` (never reset), and the level where the appliance does its
job at half its clean rate. `GradualFailures` watches that quantity step by step and writes, into the same
ground truth file as the injected faults (faults.GroundTruthWriter), one line when it crosses the level and one
more when the owner's cleaning resets it:

    {"device_id": "RH-000123", "model": "RH-900", "kind": "range_hood", "part": "grease_filter",
     "quantity": "fouling", "level": 0.769, "since": "2026-10-02T19:15:00.000Z",
     "failed_at": "2026-11-22T19:00:00.000Z", "cleaned_at": null}

`failed_at` is the `ts` of the step in which the quantity crossed the level (what the owner notices then is the
kind's `symptom`); `since` is the last cleaning before it, when the worsening began (null: not cleaned since
purchase, or unknown after a restart; always null for wear); `cleaned_at` is the `ts` of the `maintenance_done`
event that reset it. A device already past the level when the simulation starts failed before it: it is open
(`open_records`, `failed_at` null) but no line is written for it. `load_gradual_failures()` merges the lines of
one failure (key: device_id, part, failed_at; the cleaned line wins), as faults.load_ground_truth() does for
faults, which skips these lines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from devices.models import ApplianceModel
from simulators.appliances import PHYSICS_BY_KIND, GradualFailure
from simulators.faults import merged_records


@dataclass(frozen=True)
class FailureRecord:
    """One gradual failure, as written to the ground truth file."""

    device_id: str
    model: str
    kind: str
    part: str
    quantity: str
    level: float
    since: str | None
    failed_at: str | None  # null only for a failure open when the simulation started
    cleaned_at: str | None = None

    def to_json_line(self) -> str:
        return json.dumps(asdict(self), separators=(", ", ": ")) + "\n"


class GradualFailures:
    """Which devices of a fleet are past their gradual failure's level, and the records of crossing it."""

    def __init__(
        self,
        device_ids: Sequence[str],
        models: Sequence[ApplianceModel],
        model_of: np.ndarray,
        worsening: np.ndarray,
        since: Sequence[str | None],
    ) -> None:
        """`model_of` indexes `models` per device; `worsening` is each device's quantity now; `since` its last
        cleaning (a `ts`), if known."""
        self._device_ids = list(device_ids)
        self._models = list(models)
        self._model_of = model_of
        failures = [PHYSICS_BY_KIND[model.kind].gradual_failure for model in self._models]
        self._failure = failures
        # A kind without one never crosses: its level is out of reach.
        self._level = np.array([failure.level if failure else np.inf for failure in failures])[model_of]
        self._since = list(since)
        self._failed_at: dict[int, str | None] = {
            position: None for position in np.nonzero(worsening >= self._level)[0].tolist()
        }
        self._transitions: list[FailureRecord] = []

    def observe(self, idx: np.ndarray, before: np.ndarray, after: np.ndarray, ts: str) -> None:
        """The quantity of the devices at idx went from `before` to `after` in the step stamped `ts`."""
        level = self._level[idx]
        for position in idx[(before < level) & (after >= level)].tolist():
            self._failed_at[position] = ts
            self._transitions.append(self._record(position, ts))

    def cleaned(self, positions: Sequence[int], ts: str) -> None:
        """The owners of these devices cleaned them at `ts`: a fouling failure open on one is over."""
        for position in positions:
            failure = self._failure[self._model_of[position]]
            if failure is None or failure.quantity != "fouling":
                continue
            if position in self._failed_at:
                failed_at = self._failed_at.pop(position)
                if failed_at is not None:
                    self._transitions.append(self._record(position, failed_at, cleaned_at=ts))
            self._since[position] = ts

    def restart(self, position: int, worsening: float) -> None:
        """A device's state was restored (state.py): its past is unknown, its present is `worsening`."""
        self._since[position] = None
        self._failed_at.pop(position, None)
        if worsening >= self._level[position]:
            self._failed_at[position] = None

    def take_transitions(self) -> list[FailureRecord]:
        """Records of failures that happened or were cleaned since the last call."""
        records, self._transitions = self._transitions, []
        return records

    def open_records(self) -> list[FailureRecord]:
        """Records of the devices past their level now (failed_at null: already so at the start)."""
        return [self._record(position, failed_at) for position, failed_at in self._failed_at.items()]

    def _record(self, position: int, failed_at: str | None, cleaned_at: str | None = None) -> FailureRecord:
        model = self._models[self._model_of[position]]
        failure: GradualFailure | None = self._failure[self._model_of[position]]
        assert failure is not None  # only devices whose kind has one ever cross
        return FailureRecord(
            device_id=self._device_ids[position],
            model=model.code,
            kind=model.kind,
            part=failure.part,
            quantity=failure.quantity,
            level=round(failure.level, 3),
            since=self._since[position] if failure.quantity == "fouling" else None,
            failed_at=failed_at,
            cleaned_at=cleaned_at,
        )


def load_gradual_failures(path: Path) -> list[dict]:
    """One dict per gradual failure in a ground truth file, its lines merged, in the order they happened."""
    return merged_records(path, key=("device_id", "part", "failed_at"), closed="cleaned_at")
