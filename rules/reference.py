"""The reference fact loader: `FleetFacts` from in-memory device histories, in plain Python.

It defines by example what each requirement means (see the docstrings in `rules.facts`), so the
SQL loader can be checked against it, and it drives pure tests and small backtests
(`evaluate_series`). Evaluation itself is not repeated here: it is `rules.conditions`, the same
code the engine runs. Only data with ts <= now is used, so a history can be replayed at any instant.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rules.conditions import CompiledRule
from rules.facts import (
    MAD_TO_SIGMA,
    Baseline,
    BaselineStats,
    CounterAtEvent,
    EventCount,
    FleetFacts,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Requirement,
    Trend,
    TrendFit,
    WindowAggregate,
    epoch_seconds,
    to_datetime64,
)
from rules.lifecycle import Transition, backtest


def _epoch(instant: Any) -> float:
    return float(epoch_seconds(np.array([to_datetime64(instant)]))[0])


@dataclass(frozen=True)
class Reading:
    ts: dt.datetime | str
    metric: str
    value: float


@dataclass(frozen=True)
class Event:
    ts: dt.datetime | str
    type: str
    code: str | None = None


@dataclass(frozen=True)
class Status:
    ts: dt.datetime | str
    online: bool


@dataclass
class DeviceHistory:
    """What one device did: its readings, events and retained status changes, in any order."""

    device_id: str
    model: str
    purchased_on: dt.date | str | None = None
    owner_birthday: dt.date | str | None = None
    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)


@dataclass
class _Timeline:
    """One device's history as sorted epoch-second arrays, up to `now`."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (ts, value), by ts
    events: list[tuple[float, str, str | None]]  # (ts, type, code), by ts
    statuses: list[tuple[float, bool]]  # by ts

    @classmethod
    def of(cls, history: DeviceHistory, now: float) -> _Timeline:
        by_metric: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for reading in history.readings:
            ts = _epoch(reading.ts)
            if ts <= now:
                by_metric[reading.metric].append((ts, reading.value))
        series = {}
        for metric, points in by_metric.items():
            points.sort(key=lambda point: point[0])
            series[metric] = (np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float))
        events = sorted(
            ((_epoch(e.ts), e.type, e.code) for e in history.events if _epoch(e.ts) <= now),
            key=lambda event: event[0],
        )
        statuses = sorted((_epoch(s.ts), s.online) for s in history.statuses if _epoch(s.ts) <= now)
        return cls(series, events, statuses)

    def points(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        return self.series.get(metric, (np.array([]), np.array([])))

    def latest(self, metric: str) -> float:
        _, values = self.points(metric)
        return float(values[-1]) if values.size else np.nan

    def value_at(self, metric: str, instant: float) -> float:
        """The last reading at or before `instant`, else the first one after it."""
        times, values = self.points(metric)
        if not times.size:
            return np.nan
        before = np.searchsorted(times, instant, side="right")
        return float(values[before - 1] if before else values[0])

    def last_event(self, event_type: str) -> float:
        return max((ts for ts, kind, _ in self.events if kind == event_type), default=np.nan)

    def last_seen(self) -> float:
        readings = [times[-1] for times, _ in self.series.values() if times.size]
        return max(readings + [ts for ts, _, _ in self.events], default=np.nan)


def _window(timeline: _Timeline, requirement: MetricWindow, now: float) -> tuple[float, float, int, bool]:
    times, values = timeline.points(requirement.metric)
    start = now - requirement.seconds
    inside = values[times > start]
    carried = values[times <= start][-1:]  # the value in force when the window opened
    considered = np.concatenate([carried, inside])
    if not considered.size:
        return np.nan, np.nan, 0, False
    return float(considered.min()), float(considered.max()), int(inside.size), bool(carried.size)


def _trend(timeline: _Timeline, requirement: Trend, now: float) -> tuple[float, float, int]:
    times, values = timeline.points(requirement.metric)
    inside = times > now - requirement.seconds
    times, values = times[inside], values[inside]
    if times.size < 2 or np.ptp(times) == 0:
        return np.nan, np.nan, int(times.size)
    # Fit against seconds before now, so the intercept is the fitted value at now.
    slope, intercept = np.polyfit(times - now, values, 1)
    return float(slope), float(intercept), int(times.size)


def _open_fault(timeline: _Timeline, code: str) -> bool:
    raised = max((ts for ts, kind, c in timeline.events if kind == "fault" and c == code), default=None)
    if raised is None:
        return False
    cleared = max(
        (ts for ts, kind, c in timeline.events if kind == "fault_cleared" and c in (code, None)), default=None
    )
    return cleared is None or raised > cleared


def _event_count(timeline: _Timeline, requirement: EventCount, now: float) -> int:
    start = now - requirement.seconds
    return sum(
        1
        for ts, kind, code in timeline.events
        if kind == requirement.event_type
        and ts > start
        and (requirement.codes is None or code in requirement.codes)
    )


def _baseline(timelines: list[_Timeline], models: np.ndarray, metric: str) -> BaselineStats:
    latest = np.array([timeline.latest(metric) for timeline in timelines])
    centre, spread, samples = (np.full(len(timelines), np.nan) for _ in range(3))
    for model in np.unique(models):
        of_model = models == model
        values = latest[of_model & ~np.isnan(latest)]
        if values.size:
            median = np.median(values)
            centre[of_model] = median
            spread[of_model] = MAD_TO_SIGMA * np.median(np.abs(values - median))
        samples[of_model] = values.size
    return BaselineStats(centre=centre, spread=spread, samples=samples)


def build_facts(
    histories: Sequence[DeviceHistory], *, now: Any, requirements: Iterable[Requirement]
) -> FleetFacts:
    """FleetFacts at `now` for these devices, with every requirement loaded."""
    now_s = _epoch(now)
    timelines = [_Timeline.of(history, now_s) for history in histories]
    last_status = [timeline.statuses[-1] if timeline.statuses else None for timeline in timelines]
    facts = FleetFacts(
        now=to_datetime64(now),
        device_id=[history.device_id for history in histories],
        model=[history.model for history in histories],
        purchased_on=[history.purchased_on for history in histories],
        owner_birthday=[history.owner_birthday for history in histories],
        online=[bool(status and status[1]) for status in last_status],
        offline_since=[_as_instant(s[0]) if s and not s[1] else None for s in last_status],
        last_seen=[_as_instant(timeline.last_seen()) for timeline in timelines],
    )
    for requirement in requirements:
        facts.add(requirement, _load(requirement, timelines, facts.model, now_s))
    return facts


def _as_instant(seconds: float) -> np.datetime64 | None:
    return None if np.isnan(seconds) else np.datetime64(int(seconds), "s")


def _load(requirement: Requirement, timelines: list[_Timeline], models: np.ndarray, now: float) -> Any:
    if isinstance(requirement, Latest):
        return [timeline.latest(requirement.metric) for timeline in timelines]
    if isinstance(requirement, LastEvent):
        return [_as_instant(timeline.last_event(requirement.event_type)) for timeline in timelines]
    if isinstance(requirement, CounterAtEvent):
        return [
            timeline.value_at(requirement.metric, at) if not np.isnan(at) else np.nan
            for timeline in timelines
            for at in [timeline.last_event(requirement.event_type)]
        ]
    if isinstance(requirement, EventCount):
        return [_event_count(timeline, requirement, now) for timeline in timelines]
    if isinstance(requirement, OpenFault):
        return [_open_fault(timeline, requirement.code) for timeline in timelines]
    if isinstance(requirement, MetricWindow):
        columns = list(zip(*(_window(t, requirement, now) for t in timelines), strict=True)) or [[]] * 4
        return WindowAggregate(*(np.array(column) for column in columns))
    if isinstance(requirement, Trend):
        columns = list(zip(*(_trend(t, requirement, now) for t in timelines), strict=True)) or [[]] * 3
        return TrendFit(*(np.array(column) for column in columns))
    if isinstance(requirement, Baseline):
        return _baseline(timelines, models, requirement.metric)
    raise TypeError(f"not a rule requirement: {requirement!r}")


def evaluate_series(
    rule: CompiledRule, histories: Sequence[DeviceHistory], times: Iterable[Any]
) -> list[Transition]:
    """Backtest a rule over in-memory histories at the given instants."""

    def facts_at(now: np.datetime64, requirements: frozenset[Requirement]) -> FleetFacts:
        return build_facts(histories, now=now, requirements=requirements)

    return backtest(rule, facts_at, times)
