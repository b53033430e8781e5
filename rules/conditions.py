"""Compile a `Rule` into a pure function over `FleetFacts`: the whole fleet at once, with numpy masks.

`compile_rule(rule).evaluate(facts, is_open)` returns a `RuleEvaluation`: `met` (bool per device)
and `explain(i)`, a JSON-ready dict saying which condition, which values, which window, and why it
fired or not. Missing data (NaN, NaT, a requirement the loader did not fetch) is "not met, because
...", never an exception. Explanations are built lazily, only for the devices someone asks about.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from pydantic import BaseModel

from careloop.durations import UNIT_SECONDS
from devices.catalog import load_catalog
from devices.models import ApplianceModel
from rules.facts import (
    Baseline,
    CounterAtEvent,
    EventCount,
    FleetFacts,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Requirement,
    Trend,
    epoch_seconds,
)
from rules.specs import (
    PURCHASE,
    AgeSpec,
    AnomalySpec,
    BirthdaySpec,
    CountSpec,
    ElapsedSpec,
    FaultSpec,
    OfflineSpec,
    ThresholdSpec,
    TrendSpec,
    UsageSpec,
    condition_kind,
    condition_spec,
    models_in_scope,
    scope_target,
)

if TYPE_CHECKING:
    from rules.models import Rule

Explanation = dict[str, Any]


@dataclass(frozen=True)
class ConditionResult:
    """A condition evaluated over the fleet: the mask, and how to explain one device."""

    met: np.ndarray
    explain: Callable[[int], Explanation]


# Which devices a costly requirement matters for, decided from cheaper facts already loaded and the
# open detections: outside the mask the condition cannot hold whatever the requirement's value is.
Narrower = Callable[[FleetFacts, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class CompiledCondition:
    """A condition as a pure function of the facts and of which detections are open (for hysteresis).

    `narrowers` lets the engine load a costly requirement (a window over raw readings) only for the
    devices where it can change the outcome. The devices with an open detection are always inside,
    so every opening and clearing is decided and explained with the full facts.

    `sole_narrowers` narrow further, and hold only where the condition is a rule's whole `when`: there a
    detection kept open by hysteresis stays open whatever the window says, and nothing that stays open
    is explained. (Under `all`, a sibling may clear the rule, and the clear is explained with the window.)
    """

    kind: str
    requirements: frozenset[Requirement]
    evaluate_loaded: Callable[[FleetFacts, np.ndarray], ConditionResult]
    narrowers: Mapping[Requirement, Narrower] = field(default_factory=dict)
    sole_narrowers: Mapping[Requirement, Narrower] = field(default_factory=dict)

    def evaluate(self, facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        """Evaluate, or explain which facts were not loaded."""
        # `all`/`any` leave it to their leaves, so one unloaded leaf does not hide its siblings.
        missing = [] if self.kind in ("all", "any") else facts.missing(self.requirements)
        if missing:
            reason = "facts not loaded: " + ", ".join(sorted(map(repr, missing)))
            return ConditionResult(
                np.zeros(facts.size, dtype=bool),
                lambda i: {"condition": self.kind, "met": False, "reason": reason},
            )
        return self.evaluate_loaded(facts, is_open)


# ---------------------------------------------------------------- formatting for explanations


def _number(value: Any) -> float | None:
    number = float(value)
    return round(number, 6) if np.isfinite(number) else None


def _instant(seconds: float) -> str | None:
    if not np.isfinite(seconds):
        return None
    return str(np.datetime64(int(seconds), "s")) + "Z"


def _span(seconds: float) -> str:
    """A readable length of time: 45s, 12m, 26h, 3.5d."""
    for unit in ("d", "h", "m"):
        if abs(seconds) >= 2 * UNIT_SECONDS[unit]:
            return f"{seconds / UNIT_SECONDS[unit]:.3g}{unit}"
    return f"{seconds:.0f}s"


def _explained(kind: str, met: bool, reason: str, **details: Any) -> Explanation:
    return {"condition": kind, "met": bool(met), "reason": reason, **details}


def _beyond(values: np.ndarray, level: float, side: str) -> np.ndarray:
    """values strictly above (or below) level; NaN is never beyond."""
    return values > level if side == "above" else values < level


# ---------------------------------------------------------------- leaf conditions


@dataclass(frozen=True)
class CompileContext:
    """What compilation knows beyond the rule: the catalog models it applies to."""

    models: list[ApplianceModel]


def compile_threshold(spec: ThresholdSpec, context: CompileContext) -> CompiledCondition:
    side = "above" if spec.above is not None else "below"
    level = spec.above if spec.above is not None else spec.below
    clear_level = spec.clear_below if side == "above" else spec.clear_above
    held_seconds = spec.for_.seconds
    latest_key = Latest(spec.metric)
    window_key = MetricWindow(spec.metric, held_seconds) if held_seconds else None
    metric, window = spec.metric, str(spec.for_)

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        latest = facts.get(latest_key)
        if window_key is None:
            extreme, covered = latest, np.ones(facts.size, dtype=bool)
        else:
            aggregate = facts.get(window_key)
            # Held above: even the lowest value in the window is above (below: the highest is below).
            extreme = aggregate.min if side == "above" else aggregate.max
            covered = aggregate.covered
        held = covered & _beyond(extreme, level, side)
        if clear_level is None:
            kept_open = np.zeros(facts.size, dtype=bool)
        else:
            # Hysteresis: an open detection stays open until the value crosses back past the clear level.
            not_cleared = latest >= clear_level if side == "above" else latest <= clear_level
            kept_open = is_open & not_cleared
        met = held | kept_open

        def reason(i: int) -> str:
            if held[i] and window_key is None:
                return f"{metric} is {latest[i]:g}, {side} {level:g}"
            if held[i]:
                word = "lowest" if side == "above" else "highest"
                return f"{metric} stayed {side} {level:g} for {window} ({word} {extreme[i]:g})"
            if kept_open[i]:
                back = "below" if side == "above" else "above"
                return (
                    f"still open: {metric} {latest[i]:g} has not gone {back} the clear level {clear_level:g}"
                )
            if np.isnan(latest[i]):
                return f"no {metric} reading"
            if not covered[i]:
                return f"{metric} readings do not cover the whole {window} window yet"
            if window_key is None:
                return f"{metric} is {latest[i]:g}, not {side} {level:g}"
            return (
                f"{metric} reached {extreme[i]:g} within the last {window}, not {side} {level:g} throughout"
            )

        def explain(i: int) -> Explanation:
            values: dict[str, Any] = {"latest": _number(latest[i])}
            if window_key is not None:
                aggregate = facts.get(window_key)
                values |= {
                    "lowest": _number(aggregate.min[i]),
                    "highest": _number(aggregate.max[i]),
                    "readings": int(aggregate.count[i]),
                    "covers_window": bool(aggregate.covered[i]),
                }
            details = {"metric": metric, side: level, "for": window, "values": values}
            if clear_level is not None:
                details |= {
                    f"clear_{'below' if side == 'above' else 'above'}": clear_level,
                    "was_open": bool(is_open[i]),
                }
            return _explained("threshold", met[i], reason(i), **details)

        return ConditionResult(met, explain)

    def beyond_now(facts: FleetFacts, is_open: np.ndarray) -> np.ndarray:
        # The latest reading is in the window (inside it, or carried in), so a window that holds
        # throughout needs the latest value beyond the level too.
        return _beyond(facts.get(latest_key), level, side) | is_open

    def opening_or_clearing(facts: FleetFacts, is_open: np.ndarray) -> np.ndarray:
        # Kept open by hysteresis, the rule holds whatever the window says: of the open detections only
        # those past the clear level (or without a reading) can clear, and need the window to decide and
        # explain it; of the others, those that can open.
        latest = facts.get(latest_key)
        not_cleared = latest >= clear_level if side == "above" else latest <= clear_level
        return np.where(is_open, ~not_cleared, _beyond(latest, level, side))

    requirements = {latest_key} | ({window_key} if window_key else set())
    narrowers = {window_key: beyond_now} if window_key else {}
    sole = {window_key: opening_or_clearing} if window_key and clear_level is not None else {}
    return CompiledCondition("threshold", frozenset(requirements), evaluate, narrowers, sole)


def compile_fault(spec: FaultSpec, context: CompileContext) -> CompiledCondition:
    meanings: dict[str, str] = {}
    for model in context.models:
        for code, fault in model.fault_codes.items():
            meanings.setdefault(code, fault.meaning)
    codes = sorted(spec.codes) if spec.codes else sorted(meanings)
    keys = [OpenFault(code) for code in codes]

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        per_code = (
            np.stack([facts.get(key) for key in keys]) if keys else np.zeros((1, facts.size), dtype=bool)
        )
        met = per_code.any(axis=0)

        def explain(i: int) -> Explanation:
            open_codes = [code for code, row in zip(codes, per_code, strict=False) if row[i]]
            described = ", ".join(f"{code} ({meanings.get(code, 'unknown code')})" for code in open_codes)
            reason = (
                f"open fault {described}"
                if open_codes
                else f"none of {', '.join(codes) or 'no codes'} is open"
            )
            return _explained("fault", met[i], reason, codes=codes, open_codes=open_codes)

        return ConditionResult(met, explain)

    return CompiledCondition("fault", frozenset(keys), evaluate)


def _since_start(facts: FleetFacts, since: str) -> tuple[np.ndarray, np.ndarray]:
    """When counting `since` starts per device (epoch seconds), and whether it fell back to purchase.

    An event that never happened counts from purchase: the device has been "due" since it was new.
    """
    purchased = epoch_seconds(facts.purchased_on)
    if since == PURCHASE:
        return purchased, np.ones(facts.size, dtype=bool)
    last_event = epoch_seconds(facts.get(LastEvent(since)))
    never = np.isnan(last_event)
    return np.where(never, purchased, last_event), never


def compile_usage(spec: UsageSpec, context: CompileContext) -> CompiledCondition:
    metric, since, needed = spec.metric, spec.since, spec.at_least
    latest_key = Latest(metric)
    keys: set[Requirement] = {latest_key}
    if since != PURCHASE:
        keys |= {LastEvent(since), CounterAtEvent(metric, since)}

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        current = facts.get(latest_key)
        if since == PURCHASE:
            at_since = np.zeros(facts.size)
            event_at = np.full(facts.size, np.nan)
        else:
            event_at = epoch_seconds(facts.get(LastEvent(since)))
            # No such event yet: the counter started at zero when the device was new.
            at_since = np.where(np.isnan(event_at), 0.0, facts.get(CounterAtEvent(metric, since)))
        growth = current - at_since
        met = growth >= needed

        def explain(i: int) -> Explanation:
            values = {
                "current": _number(current[i]),
                "at_since": _number(at_since[i]),
                "since_at": _instant(event_at[i]),
                "growth": _number(growth[i]),
            }
            origin = f"the last {since} ({_instant(event_at[i])})" if np.isfinite(event_at[i]) else "new"
            if np.isnan(current[i]):
                reason = f"no {metric} reading"
            elif np.isnan(at_since[i]):
                reason = f"no {metric} value known at the last {since}"
            elif growth[i] < 0:
                reason = f"{metric} went backwards since {origin} ({at_since[i]:g} -> {current[i]:g}): reset?"
            else:
                verdict = "at least" if met[i] else "less than"
                reason = f"{metric} grew by {growth[i]:g} since {origin}, {verdict} {needed:g}"
            return _explained(
                "usage", met[i], reason, metric=metric, since=since, at_least=needed, values=values
            )

        return ConditionResult(met, explain)

    return CompiledCondition("usage", frozenset(keys), evaluate)


def compile_elapsed(spec: ElapsedSpec, context: CompileContext) -> CompiledCondition:
    since, needed = spec.since, spec.at_least
    keys = frozenset() if since == PURCHASE else frozenset({LastEvent(since)})

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        start, from_purchase = _since_start(facts, since)
        elapsed = facts.now_seconds - start
        met = elapsed >= needed.seconds

        def explain(i: int) -> Explanation:
            origin = "purchase" if from_purchase[i] else f"the last {since}"
            values = {"since_at": _instant(start[i]), "from": origin, "elapsed_s": _number(elapsed[i])}
            if np.isnan(start[i]):
                what = "no purchase date" if since == PURCHASE else f"no {since} event and no purchase date"
                reason = f"{what}: nothing to count from"
            else:
                verdict = "at least" if met[i] else "less than"
                reason = f"{_span(elapsed[i])} since {origin} ({_instant(start[i])}), {verdict} {needed}"
            return _explained("elapsed", met[i], reason, since=since, at_least=str(needed), values=values)

        return ConditionResult(met, explain)

    return CompiledCondition("elapsed", keys, evaluate)


def compile_age(spec: AgeSpec, context: CompileContext) -> CompiledCondition:
    year = UNIT_SECONDS["y"]
    life_years = {model.code: model.expected_life_years for model in context.models}

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        age = facts.now_seconds - epoch_seconds(facts.purchased_on)
        if spec.at_least is not None:
            limit = np.full(facts.size, float(spec.at_least.seconds))
        else:
            limit = facts.per_model(life_years) * year * spec.of_expected_life
        met = age >= limit

        def explain(i: int) -> Explanation:
            bound = str(spec.at_least) if spec.at_least else f"{spec.of_expected_life:g} of expected life"
            values = {"age_years": _number(age[i] / year), "limit_years": _number(limit[i] / year)}
            if np.isnan(age[i]):
                reason = "purchase date unknown"
            elif np.isnan(limit[i]):
                reason = f"model {facts.model[i]} has no expected life in the catalog"
            else:
                verdict = "at least" if met[i] else "less than"
                reason = f"{age[i] / year:.2f} years old, {verdict} {limit[i] / year:.2f} years ({bound})"
            return _explained("age", met[i], reason, values=values)

        return ConditionResult(met, explain)

    return CompiledCondition("age", frozenset(), evaluate)


def compile_count(spec: CountSpec, context: CompileContext) -> CompiledCondition:
    key = EventCount(spec.event, tuple(sorted(spec.codes)) if spec.codes else None, spec.within.seconds)
    what = spec.event + (f" ({', '.join(key.codes)})" if key.codes else "")

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        counts = facts.get(key)
        met = counts >= spec.at_least

        def explain(i: int) -> Explanation:
            verdict = "at least" if met[i] else "fewer than"
            reason = f"{counts[i]} {what} events in the last {spec.within}, {verdict} {spec.at_least}"
            return _explained(
                "count",
                met[i],
                reason,
                event=spec.event,
                codes=list(key.codes or []),
                within=str(spec.within),
                at_least=spec.at_least,
                values={"count": int(counts[i])},
            )

        return ConditionResult(met, explain)

    return CompiledCondition("count", frozenset({key}), evaluate)


def compile_offline(spec: OfflineSpec, context: CompileContext) -> CompiledCondition:
    needed = spec.for_

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        now = facts.now_seconds
        offline_since = np.where(facts.online, np.nan, epoch_seconds(facts.offline_since))
        last_seen = epoch_seconds(facts.last_seen)
        # Silence counts too: a device whose last will never reached the broker still looks online.
        met = (now - offline_since >= needed.seconds) | (now - last_seen >= needed.seconds)

        def explain(i: int) -> Explanation:
            values = {
                "online": bool(facts.online[i]),
                "offline_since": _instant(offline_since[i]),
                "last_seen": _instant(last_seen[i]),
            }
            if np.isfinite(offline_since[i]) and now - offline_since[i] >= needed.seconds:
                reason = f"offline for {_span(now - offline_since[i])} (since {_instant(offline_since[i])})"
            elif np.isnan(last_seen[i]):
                reason = "never seen: no status, telemetry or event yet"
            elif now - last_seen[i] >= needed.seconds:
                reason = f"silent for {_span(now - last_seen[i])} (last seen {_instant(last_seen[i])})"
            else:
                state = "online" if facts.online[i] else "offline"
                reason = f"{state}, last seen {_span(now - last_seen[i])} ago, less than {needed}"
            return _explained("offline", met[i], reason, **{"for": str(needed)}, values=values)

        return ConditionResult(met, explain)

    return CompiledCondition("offline", frozenset(), evaluate)


def compile_anomaly(spec: AnomalySpec, context: CompileContext) -> CompiledCondition:
    metric, limit, direction = spec.metric, spec.at_least, spec.direction
    baseline_key, latest_key = Baseline(metric), Latest(metric)
    window_key = MetricWindow(metric, spec.for_.seconds) if spec.for_.seconds else None

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        baseline = facts.get(baseline_key)
        if window_key is None:
            high = low = facts.get(latest_key)
            covered = np.ones(facts.size, dtype=bool)
        else:
            aggregate = facts.get(window_key)
            # Held high: even the window's lowest value deviates upwards (and vice versa).
            high, low, covered = aggregate.min, aggregate.max, aggregate.covered
        usable = (baseline.samples >= spec.min_samples) & (baseline.spread > 0) & covered
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation_up = (high - baseline.centre) / baseline.spread
            deviation_down = (low - baseline.centre) / baseline.spread
        up = usable & (deviation_up >= limit)
        down = usable & (deviation_down <= -limit)
        met = up if direction == "above" else down if direction == "below" else up | down

        def explain(i: int) -> Explanation:
            values = {
                "value": _number(facts.get(latest_key)[i]),
                "centre": _number(baseline.centre[i]),
                "spread": _number(baseline.spread[i]),
                "samples": int(baseline.samples[i]),
                "deviations": _number(deviation_down[i] if down[i] and not up[i] else deviation_up[i]),
            }
            held = f" for {spec.for_}" if window_key else ""
            if baseline.samples[i] < spec.min_samples:
                reason = (
                    f"baseline of {facts.model[i]} has {baseline.samples[i]} devices, "
                    f"fewer than {spec.min_samples}"
                )
            elif not baseline.spread[i] > 0:
                reason = f"baseline of {facts.model[i]} has no spread to measure deviations against"
            elif not covered[i]:
                reason = f"{metric} readings do not cover the whole {spec.for_} window yet"
            elif np.isnan(high[i]):
                reason = f"no {metric} reading"
            elif met[i]:
                deviation = deviation_up[i] if up[i] else deviation_down[i]
                reason = (
                    f"{metric} is {deviation:+.1f} robust deviations from the {facts.model[i]} median{held}"
                )
            else:
                reason = f"{metric} is within {limit:g} robust deviations ({direction}) of the median{held}"
            return _explained(
                "anomaly",
                met[i],
                reason,
                metric=metric,
                at_least=limit,
                direction=direction,
                **{"for": str(spec.for_)},
                values=values,
            )

        return ConditionResult(met, explain)

    def deviating_now(facts: FleetFacts, is_open: np.ndarray) -> np.ndarray:
        # As for a threshold: a window that deviates throughout holds a latest value that deviates.
        baseline, latest = facts.get(baseline_key), facts.get(latest_key)
        with np.errstate(divide="ignore", invalid="ignore"):
            deviation = (latest - baseline.centre) / baseline.spread
        up, down = deviation >= limit, deviation <= -limit
        deviating = up if direction == "above" else down if direction == "below" else up | down
        return (deviating & (baseline.samples >= spec.min_samples) & (baseline.spread > 0)) | is_open

    requirements = {baseline_key, latest_key} | ({window_key} if window_key else set())
    narrowers = {window_key: deviating_now} if window_key else {}
    return CompiledCondition("anomaly", frozenset(requirements), evaluate, narrowers)


def compile_trend(spec: TrendSpec, context: CompileContext) -> CompiledCondition:
    metric, target, horizon = spec.metric, spec.reaches, spec.within.seconds
    key = Trend(metric, spec.over.seconds)
    sign = 1.0 if spec.direction == "rising" else -1.0

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        fit = facts.get(key)
        enough = fit.points >= spec.min_points
        # In the direction of travel: gap > 0 is still to go, rate > 0 is moving towards the target.
        gap = sign * (target - fit.fitted_now)
        rate = sign * fit.slope_per_s
        reached = gap <= 0
        met = enough & (reached | ((rate > 0) & (gap <= rate * horizon)))

        def explain(i: int) -> Explanation:
            per_day = fit.slope_per_s[i] * 86400
            eta = gap[i] / rate[i] if rate[i] > 0 and gap[i] > 0 else (0.0 if reached[i] else np.nan)
            values = {
                "fitted_now": _number(fit.fitted_now[i]),
                "slope_per_day": _number(per_day),
                "points": int(fit.points[i]),
                "eta_s": _number(eta),
            }
            if not enough[i]:
                reason = (
                    f"{fit.points[i]} {metric} readings in the last {spec.over}, fewer than {spec.min_points}"
                )
            elif reached[i]:
                reason = f"{metric} is at {fit.fitted_now[i]:g}, already past {target:g}"
            elif not rate[i] > 0:
                reason = f"{metric} at {fit.fitted_now[i]:g} is not {spec.direction} ({per_day:+.3g}/day)"
            else:
                verdict = "within" if met[i] else "later than"
                reason = (
                    f"{metric} at {fit.fitted_now[i]:g}, {per_day:+.3g}/day over {spec.over}, "
                    f"reaches {target:g} in {_span(eta)}, {verdict} {spec.within}"
                )
            return _explained(
                "trend",
                met[i],
                reason,
                metric=metric,
                reaches=target,
                within=str(spec.within),
                over=str(spec.over),
                values=values,
            )

        return ConditionResult(met, explain)

    return CompiledCondition("trend", frozenset({key}), evaluate)


def days_until_birthday(birthdays: np.ndarray, today: np.datetime64) -> np.ndarray:
    """Days from `today` to each next birthday (0 on the day, NaN unknown); 29 Feb is 28 Feb otherwise."""
    known = ~np.isnat(birthdays)
    safe = np.where(known, birthdays, np.datetime64("2000-01-01", "D")).astype("datetime64[D]")
    month_of_year = safe.astype("datetime64[M]").astype(np.int64) % 12
    day_of_month = (safe - safe.astype("datetime64[M]")).astype(np.int64)

    def occurrence(year: np.datetime64) -> np.ndarray:
        month_start = year.astype("datetime64[M]") + month_of_year
        month_length = (
            (month_start + 1).astype("datetime64[D]") - month_start.astype("datetime64[D]")
        ).astype(np.int64)
        return month_start.astype("datetime64[D]") + np.minimum(day_of_month, month_length - 1)

    this_year = today.astype("datetime64[Y]")
    upcoming = occurrence(this_year)
    upcoming = np.where(upcoming < today, occurrence(this_year + 1), upcoming)
    return np.where(known, (upcoming - today).astype(np.int64).astype(np.float64), np.nan)


def compile_birthday(spec: BirthdaySpec, context: CompileContext) -> CompiledCondition:
    window_days = spec.within.seconds // 86400

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        # Dates are UTC here; quiet hours and local time belong to the contact policy.
        days = days_until_birthday(facts.owner_birthday, facts.now.astype("datetime64[D]"))
        met = days <= window_days

        def explain(i: int) -> Explanation:
            if np.isnan(days[i]):
                reason = "owner's birthday unknown"
            elif days[i] == 0:
                reason = "owner's birthday is today"
            else:
                verdict = "within" if met[i] else "beyond"
                reason = f"owner's birthday in {days[i]:.0f} days, {verdict} {window_days}"
            return _explained(
                "birthday", met[i], reason, within_days=window_days, values={"days_until": _number(days[i])}
            )

        return ConditionResult(met, explain)

    return CompiledCondition("birthday", frozenset(), evaluate)


# ---------------------------------------------------------------- the kinds


@dataclass(frozen=True)
class ConditionKind:
    """Everything about one kind of condition, found by its name (as Home Assistant finds `{kind}_from_config`
    beside its schema): adding a kind is one spec, one compiler and one line of `CONDITION_KINDS`."""

    name: str
    spec: type[BaseModel]  # what the document says under the kind's key
    compile: Callable[[Any, CompileContext], CompiledCondition]
    # A single new reading, event or status can change the outcome: evaluated for each ingest batch and by the
    # sweep; the others (time windows) by the window job.
    event_driven: bool
    reads_status: bool = False  # needs the devices' online status and last seen


CONDITION_KINDS: dict[str, ConditionKind] = {
    kind.name: kind
    for kind in (
        ConditionKind("threshold", ThresholdSpec, compile_threshold, event_driven=True),
        ConditionKind("fault", FaultSpec, compile_fault, event_driven=True),
        ConditionKind("usage", UsageSpec, compile_usage, event_driven=False),
        ConditionKind("elapsed", ElapsedSpec, compile_elapsed, event_driven=False),
        ConditionKind("age", AgeSpec, compile_age, event_driven=False),
        ConditionKind("count", CountSpec, compile_count, event_driven=False),
        ConditionKind("offline", OfflineSpec, compile_offline, event_driven=True, reads_status=True),
        ConditionKind("anomaly", AnomalySpec, compile_anomaly, event_driven=False),
        ConditionKind("trend", TrendSpec, compile_trend, event_driven=False),
        ConditionKind("birthday", BirthdaySpec, compile_birthday, event_driven=False),
    )
}
COMBINATIONS = ("all", "any")


class Leaf(NamedTuple):
    """A leaf condition of a rule: its kind, its spec and where it stands in the document."""

    kind: ConditionKind
    spec: Any
    loc: list[str | int]


def walk_conditions(condition: BaseModel, loc: list[str | int] | None = None) -> Iterator[Leaf]:
    """Every leaf condition under `all`/`any`, depth first: the one walk over a condition tree."""
    loc = loc or []
    kind, spec = condition_kind(condition), condition_spec(condition)
    if kind in COMBINATIONS:
        for index, child in enumerate(spec):
            yield from walk_conditions(child, [*loc, kind, index])
    else:
        yield Leaf(CONDITION_KINDS[kind], spec, [*loc, kind])


# ---------------------------------------------------------------- all / any


def compile_combination(kind: str, children: list[CompiledCondition]) -> CompiledCondition:
    """`all` (every child holds) or `any` (at least one does), with every child's explanation."""
    combine = np.logical_and.reduce if kind == "all" else np.logical_or.reduce

    def evaluate(facts: FleetFacts, is_open: np.ndarray) -> ConditionResult:
        results = [child.evaluate(facts, is_open) for child in children]
        met = combine([result.met for result in results])

        def explain(i: int) -> Explanation:
            parts = [result.explain(i) for result in results]
            holding = sum(part["met"] for part in parts)
            failing = [part["reason"] for part in parts if not part["met"]]
            if kind == "all":
                reason = f"all {len(parts)} conditions hold" if met[i] else "not met: " + "; ".join(failing)
            else:
                reason = (
                    f"{holding} of {len(parts)} conditions hold"
                    if met[i]
                    else "none holds: " + "; ".join(failing)
                )
            return _explained(kind, met[i], reason, conditions=parts)

        return ConditionResult(met, explain)

    requirements = frozenset().union(*(child.requirements for child in children))
    # Under `any`, a device may hold through one child while another is explained: that one needs its
    # full facts too. Under `all`, a device where one child cannot hold does not hold.
    return CompiledCondition(kind, requirements, evaluate, merge_narrowers(children) if kind == "all" else {})


def merge_narrowers(conditions: Iterable[CompiledCondition]) -> dict[Requirement, Narrower]:
    """A requirement is narrowed only if every condition needing it narrows it: the union of their masks."""
    conditions = list(conditions)
    merged: dict[Requirement, Narrower] = {}
    for requirement in frozenset().union(*(condition.requirements for condition in conditions)):
        needing = [condition for condition in conditions if requirement in condition.requirements]
        if all(requirement in condition.narrowers for condition in needing):
            parts = [condition.narrowers[requirement] for condition in needing]
            merged[requirement] = lambda facts, is_open, parts=parts: np.logical_or.reduce(
                [part(facts, is_open) for part in parts]
            )
    return merged


def compile_condition(condition: Any, context: CompileContext) -> CompiledCondition:
    """Compile one condition document (leaf or `all`/`any`, nested) into a `CompiledCondition`."""
    kind, spec = condition_kind(condition), condition_spec(condition)
    if kind in COMBINATIONS:
        return compile_combination(kind, [compile_condition(child, context) for child in spec])
    return CONDITION_KINDS[kind].compile(spec, context)


# ---------------------------------------------------------------- rules


@dataclass(frozen=True)
class RuleEvaluation:
    """One rule over the fleet: `met` per device, and `explain(i)` for the device at index i."""

    rule: Rule
    facts: FleetFacts
    met: np.ndarray
    in_scope: np.ndarray
    condition: ConditionResult

    def explain(self, i: int) -> Explanation:
        """Why the rule holds (or not) for the device at index i, as the API shows it."""
        header = {
            "rule": self.rule.id,
            "device_id": str(self.facts.device_id[i]),
            "model": str(self.facts.model[i]),
            "at": _instant(self.facts.now_seconds),
            "met": bool(self.met[i]),
        }
        if not self.in_scope[i]:
            target = scope_target(self.rule.applies_to)
            reason = f"rule applies to {target}; this is a {self.facts.kind[i]} ({self.facts.model[i]})"
            return header | {"reason": reason}
        condition = self.condition.explain(i)
        return header | {"reason": condition["reason"], "condition": condition}

    def explain_device(self, device_id: str) -> Explanation:
        index = np.flatnonzero(self.facts.device_id == device_id)
        if index.size == 0:
            return {
                "rule": self.rule.id,
                "device_id": device_id,
                "met": False,
                "reason": "device not in the facts",
            }
        return self.explain(int(index[0]))


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate: its requirements and a pure function of the facts."""

    rule: Rule
    condition: CompiledCondition

    @property
    def requirements(self) -> frozenset[Requirement]:
        return self.condition.requirements

    def in_scope(self, facts: FleetFacts) -> np.ndarray:
        scope = self.rule.applies_to
        return facts.scope_mask(kind=scope.kind, model=scope.model) if scope else facts.scope_mask()

    def devices_needing(self, requirement: Requirement, facts: FleetFacts, is_open: np.ndarray) -> np.ndarray:
        """The devices whose value of `requirement` can change this rule's opening or clearing (its narrower,
        in scope)."""
        narrower = self.condition.sole_narrowers.get(requirement) or self.condition.narrowers.get(requirement)
        in_scope = self.in_scope(facts)
        return in_scope if narrower is None else in_scope & narrower(facts, np.asarray(is_open, dtype=bool))

    def evaluate(self, facts: FleetFacts, is_open: np.ndarray | None = None) -> RuleEvaluation:
        """Evaluate over every device; `is_open` marks devices whose detection is open (hysteresis)."""
        open_mask = np.zeros(facts.size, dtype=bool) if is_open is None else np.asarray(is_open, dtype=bool)
        in_scope = self.in_scope(facts)
        result = self.condition.evaluate(facts, open_mask)
        return RuleEvaluation(self.rule, facts, result.met & in_scope, in_scope, result)


def compile_rule(rule: Rule, catalog: Mapping[str, ApplianceModel] | None = None) -> CompiledRule:
    """Compile a validated rule against the models catalog."""
    context = CompileContext(models=models_in_scope(rule.applies_to, load_catalog() if catalog is None else catalog))
    return CompiledRule(rule, compile_condition(rule.when, context))


def requirements_of(rules: Iterable[CompiledRule]) -> frozenset[Requirement]:
    """Everything a fact loader must fetch for these rules (the union of their conditions' needs)."""
    return functools.reduce(frozenset.union, (rule.requirements for rule in rules), frozenset())
