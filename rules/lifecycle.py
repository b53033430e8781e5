"""The detection lifecycle, pure and fleet-wide: which detections open, stay open, clear, or cool down; and the
backtest, which replays a rule through it over any loader's facts.

State per (rule, device) is two instants: `open_since` (when the open detection opened; NaT when
none is open) and `cleared_at` (when the last one cleared; NaT if never). Given that state and the
rule's new `met` mask at `now`:

- met, not open, and not within `cleared_at + cooldown`  -> opened (open_since = now)
- met, not open, but within the cooldown                  -> suppressed (nothing happens)
- met and open                                            -> still_open (nothing is repeated)
- not met and open                                        -> cleared (cleared_at = now)

A detection's dedup key is `"{rule_id}:{device_id}:{opened_at}"` with opened_at as
`YYYY-MM-DDTHH:MM:SSZ` (UTC, seconds). Only one detection per (rule, device) is open at a time and
opened_at is the evaluation instant, so re-running the same evaluation (same `now`) after a crash
yields the same key: store it with ON CONFLICT DO NOTHING and the detection's actions run once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from careloop.durations import Duration
from rules.facts import SECONDS, FleetFacts, Requirement, as_datetime, to_datetime64

if TYPE_CHECKING:
    from rules.conditions import CompiledRule


@dataclass(frozen=True)
class LifecycleStep:
    """The outcome of one evaluation for one rule, aligned by device index."""

    now: np.datetime64
    opened: np.ndarray  # bool: a new detection opens now
    still_open: np.ndarray  # bool: was open and still holds
    cleared: np.ndarray  # bool: was open, no longer holds; clears now
    suppressed: np.ndarray  # bool: holds, but the cooldown after the last clear has not passed
    open_since: np.ndarray  # datetime64[s]: the new state, NaT where no detection is open
    cleared_at: np.ndarray  # datetime64[s]: the new state, last clear time

    @property
    def is_open(self) -> np.ndarray:
        """Devices with an open detection after this step (the next evaluation's hysteresis input)."""
        return ~np.isnat(self.open_since)


def step_detections(
    *,
    met: np.ndarray,
    open_since: np.ndarray,
    cleared_at: np.ndarray,
    now: Any,
    cooldown: Duration,
) -> LifecycleStep:
    """Advance every (rule, device) detection of one rule from its previous state to `now`."""
    now_s = to_datetime64(now)
    met = np.asarray(met, dtype=bool)
    open_since = as_datetime(open_since)
    cleared_at = as_datetime(cleared_at)
    was_open = ~np.isnat(open_since)
    # NaT + cooldown stays NaT, and NaT compares False: a device that never cleared is never cooling down.
    cooling_down = now_s < cleared_at + np.timedelta64(cooldown.seconds, "s")
    opened = met & ~was_open & ~cooling_down
    cleared = was_open & ~met
    return LifecycleStep(
        now=now_s,
        opened=opened,
        still_open=was_open & met,
        cleared=cleared,
        suppressed=met & ~was_open & cooling_down,
        open_since=np.where(opened, now_s, np.where(cleared, np.datetime64("NaT"), open_since)).astype(
            SECONDS
        ),
        cleared_at=np.where(cleared, now_s, cleared_at).astype(SECONDS),
    )


def format_instant(instant: Any) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ`, the form used in dedup keys."""
    return f"{to_datetime64(instant)}Z"


def dedup_key(rule_id: str, device_id: str, opened_at: Any) -> str:
    """The detection's idempotency key: `{rule_id}:{device_id}:{opened_at}`."""
    return f"{rule_id}:{device_id}:{format_instant(opened_at)}"


@dataclass(frozen=True)
class Transition:
    """A detection opening or clearing, ready for the engine to store."""

    change: Literal["opened", "cleared"]
    rule_id: str
    device_id: str
    opened_at: str
    at: str
    dedup_key: str


def transitions(
    step: LifecycleStep,
    *,
    rule_id: str,
    device_ids: Sequence[str] | np.ndarray,
    previous_open_since: np.ndarray,
) -> list[Transition]:
    """The detections that opened or cleared in this step (nothing for those that stayed as they were)."""
    at = format_instant(step.now)
    changes = []
    for index in np.flatnonzero(step.opened):
        changes.append(
            Transition(
                "opened",
                rule_id,
                str(device_ids[index]),
                at,
                at,
                dedup_key(rule_id, str(device_ids[index]), step.now),
            )
        )
    previous = as_datetime(previous_open_since)
    for index in np.flatnonzero(step.cleared):
        opened_at = previous[index]
        changes.append(
            Transition(
                "cleared",
                rule_id,
                str(device_ids[index]),
                format_instant(opened_at),
                at,
                dedup_key(rule_id, str(device_ids[index]), opened_at),
            )
        )
    return changes


def state_arrays(
    device_ids: Sequence[str] | np.ndarray,
    *,
    open_since: Mapping[str, Any],
    cleared_at: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Align stored state (device_id -> instant, for devices that have one) with the facts' device order."""

    def aligned(by_device: Mapping[str, Any]) -> np.ndarray:
        return np.array([to_datetime64(by_device.get(str(device))) for device in device_ids], dtype=SECONDS)

    return aligned(open_since), aligned(cleared_at)


# ---------------------------------------------------------------- backtests

# The longest stretch of history one backtest replays: a year and a day (a yearly rule's whole cycle). Its steps
# are bounded too (rules.models.MAX_BACKTEST_STEPS), and the API runs it under a time limit.
MAX_BACKTEST_WINDOW = dt.timedelta(days=366)

FactsAt = Callable[[np.datetime64, frozenset[Requirement]], FleetFacts]


def backtest(rule: CompiledRule, facts_at: FactsAt, times: Iterable[Any]) -> list[Transition]:
    """Replay a rule at each instant (in order) through the lifecycle: what it would have opened and cleared.

    `facts_at(now, requirements)` is any loader (this module's, or the SQL one) returning the same
    devices in the same order each time.
    """
    changes: list[Transition] = []
    open_since = cleared_at = device_ids = None
    for now in times:
        facts = facts_at(to_datetime64(now), rule.requirements)
        if device_ids is None:
            device_ids = facts.device_id
            open_since = cleared_at = np.full(facts.size, np.datetime64("NaT"), dtype="datetime64[s]")
        elif not np.array_equal(device_ids, facts.device_id):
            raise ValueError("facts_at must return the same devices in the same order at every instant")
        evaluation = rule.evaluate(facts, is_open=~np.isnat(open_since))
        step = step_detections(
            met=evaluation.met,
            open_since=open_since,
            cleared_at=cleared_at,
            now=now,
            cooldown=rule.rule.cooldown,
        )
        changes += transitions(
            step, rule_id=rule.rule.id, device_ids=device_ids, previous_open_since=open_since
        )
        open_since, cleared_at = step.open_since, step.cleared_at
    return changes
