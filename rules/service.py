"""Rules: create, edit (keeping every version), list, and load the built-in catalog; detections and what the
engine did. Takes a connection."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from careloop.db import Connection
from careloop.durations import UNIT_SECONDS
from careloop.errors import Conflict, InvalidInput, NotFound
from careloop.pages import Page, whole
from devices.catalog import load_catalog
from devices.models import ApplianceModel
from rules import repo
from rules.builtin import load_builtin_rules
from rules.catalog_checks import offer_template_errors
from rules.conditions import compile_rule
from rules.evaluation import backtest_stored
from rules.forecast import ForecastKind, Projections, forecast_kind, project, unprojected_kinds
from rules.models import (
    BacktestRequest,
    BacktestResult,
    DetectionRead,
    DetectionToCarryOut,
    EngineJobRead,
    FleetForecast,
    RegionForecast,
    Rule,
    RuleError,
    RuleForecast,
    RuleRead,
    StoredRule,
    parse_rule,
)
from rules.specs import PURCHASE, models_in_scope


def validate(source: str | bytes | dict, conn: Connection | None = None) -> Rule:
    """The rule document parsed and checked against the models catalog and, given a connection, against the offer
    templates stored; RuleError lists every mistake."""
    rule = parse_rule(source)
    if conn is not None:
        problems = offer_template_errors(rule.then, repo.offer_template_codes(conn))
        if problems:
            raise RuleError(problems)
    return rule


def create_rule(conn: Connection, source: str | bytes | dict, *, builtin: bool = False) -> RuleRead:
    rule = validate(source, conn)
    if not repo.insert_rule(conn, rule_id=rule.id, document=rule.to_document(), enabled=rule.enabled, builtin=builtin):
        raise Conflict(f"rule {rule.id} already exists; PUT /rules/{rule.id} changes it")
    return get_rule(conn, rule.id)


def update_rule(conn: Connection, rule_id: str, source: str | bytes | dict) -> RuleRead:
    rule = validate(source, conn)
    if rule.id != rule_id:
        raise InvalidInput("id", f"the document's id {rule.id!r} is not the rule's id {rule_id!r}")
    if repo.update_rule(conn, rule_id=rule_id, document=rule.to_document(), enabled=rule.enabled) is None:
        raise NotFound(f"no rule {rule_id}")
    return get_rule(conn, rule_id)


def get_rule(conn: Connection, rule_id: str) -> RuleRead:
    stored = repo.get_rule(conn, rule_id=rule_id)
    if stored is None:
        raise NotFound(f"no rule {rule_id}")
    return RuleRead(**stored.model_dump(), versions=repo.rule_versions(conn, rule_id=rule_id))


def list_rules(conn: Connection, *, enabled: bool | None, limit: int, offset: int) -> Page[StoredRule]:
    return repo.list_rules(conn, enabled=enabled, limit=limit, offset=offset)


def load_builtin_catalog(conn: Connection) -> int:
    """Create the built-in rules, or update those whose document changed; answers how many were written."""
    written = 0
    for rule in load_builtin_rules():
        document = rule.to_document()
        stored = repo.get_rule(conn, rule_id=rule.id)
        if stored is None:
            repo.insert_rule(conn, rule_id=rule.id, document=document, enabled=rule.enabled, builtin=True)
            written += 1
        elif stored.builtin and stored.document != document:
            repo.update_rule(conn, rule_id=rule.id, document=document, enabled=stored.enabled)
            written += 1
    return written


# ---------------------------------------------------------------- detections


def list_detections(
    conn: Connection,
    *,
    device_id: str | None = None,
    status: str | None = None,
    rule_id: str | None = None,
    severity: str | None = None,
    urgent_first: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> Page[DetectionRead]:
    """Newest first, or with `urgent_first` critical before warning before info (newest first within each)."""
    return repo.list_detections(conn, device_id=device_id, status=status, rule_id=rule_id, severity=severity,
                                urgent_first=urgent_first, limit=limit, offset=offset)


def get_detection(conn: Connection, detection_id: int) -> DetectionRead:
    detection = repo.get_detection(conn, detection_id=detection_id)
    if detection is None:
        raise NotFound(f"no detection {detection_id}")
    return detection


def acknowledge_detection(conn: Connection, detection_id: int, *, by: str) -> DetectionRead:
    """Mark an open detection as seen by a person; acknowledging twice changes nothing."""
    detection = get_detection(conn, detection_id)
    if detection.status == "cleared":
        raise Conflict(
            f"detection {detection_id} cleared at {detection.cleared_at:%Y-%m-%d %H:%M}Z; nothing to acknowledge"
        )
    repo.acknowledge_detection(conn, detection_id=detection_id, by=by)
    return get_detection(conn, detection_id)


def engine_jobs(conn: Connection) -> Page[EngineJobRead]:
    """When each engine job (sweep, window, baselines, trends) last ran, how long it took and what it did."""
    return whole(repo.engine_jobs(conn))


def backtest_rule(conn: Connection, rule_id: str, request: BacktestRequest) -> BacktestResult:
    """What a stored rule would have opened and cleared over stored history; opens nothing."""
    stored = get_rule(conn, rule_id)
    return _backtest(conn, parse_rule(stored.document), request, version=stored.version)


def backtest_draft(conn: Connection, rule: Rule, request: BacktestRequest) -> BacktestResult:
    """What a rule not yet saved would have opened and cleared over stored history (version 0); opens nothing."""
    return _backtest(conn, rule, request, version=0)


def _backtest(conn: Connection, rule: Rule, request: BacktestRequest, *, version: int) -> BacktestResult:
    changes = backtest_stored(conn, compile_rule(rule), start=request.start, end=request.end,
                              step_seconds=request.step.seconds)
    opened = [change for change in changes if change.change == "opened"]
    return BacktestResult(
        rule_id=rule.id,
        version=version,
        start=request.start,
        end=request.end,
        step=str(request.step),
        opened=len(opened),
        cleared=len(changes) - len(opened),
        devices=len({change.device_id for change in opened}),
        transitions=changes,
    )


def detections_with_pending_actions(
    conn: Connection, *, kinds: list[str], limit: int = 200
) -> list[DetectionToCarryOut]:
    """Detections whose actions of these kinds (`open_service_order`, ...) are still to carry out, locked for the
    caller's transaction; another engine skips them."""
    return repo.detections_with_pending_actions(conn, kinds=kinds, limit=limit)


def mark_action_done(conn: Connection, *, detection_id: int, key: str, result: dict) -> None:
    """Record that a detection's action was carried out, and what it made."""
    repo.set_action_status(conn, detection_id=detection_id, key=key, status="done", result=result)


def detections_cleared(conn: Connection, detection_ids: list[int]) -> dict[int, dt.datetime | None]:
    """When each detection cleared; None while it is open (unknown ids are absent)."""
    return repo.detections_cleared(conn, detection_ids=detection_ids)


# ---------------------------------------------------------------- the fleet's coming demand

USAGE_RATE_WINDOW = dt.timedelta(days=7)  # a counter's rate is its growth over the last week of readings
WEEK = dt.timedelta(days=7)


class _LeafProjector:
    """Projects one leaf condition over the devices of a rule's models (rules.forecast.LeafProjector), keeping
    each device's region as it goes."""

    def __init__(self, conn: Connection, models: list[ApplianceModel], now: dt.datetime) -> None:
        self.conn, self.models, self.now = conn, models, now
        self.regions: dict[str, str | None] = {}

    def __call__(self, kind: str, spec: Any) -> Projections:
        conn, codes = self.conn, [model.code for model in self.models]
        since = getattr(spec, "since", None)
        since = None if since == PURCHASE else since
        if kind == "age":
            if spec.at_least is not None:
                ages = {code: float(spec.at_least.seconds) for code in codes}
            else:
                year = UNIT_SECONDS["y"]
                ages = {model.code: model.expected_life_years * year * spec.of_expected_life for model in self.models}
            rows = repo.due_by_age(conn, age_seconds=ages)
        elif kind == "elapsed":
            rows = repo.due_by_elapsed(conn, models=codes, since=since, seconds=spec.at_least.seconds, now=self.now)
        elif kind == "usage":
            rows = repo.due_by_usage(conn, models=codes, metric=spec.metric, since=since, at_least=spec.at_least,
                                     now=self.now, rate_window=USAGE_RATE_WINDOW)
        else:  # trend
            rows = repo.due_by_trend(conn, models=codes, metric=spec.metric, over_seconds=spec.over.seconds,
                                     min_points=spec.min_points, reaches=spec.reaches,
                                     rising=spec.direction == "rising", within_seconds=spec.within.seconds)
        self.regions.update((row.device_id, row.region) for row in rows)
        return {row.device_id: row.due_s for row in rows}


def fleet_forecast(conn: Connection, *, days: int, now: dt.datetime | None = None) -> FleetForecast:
    """The maintenance and trade-in windows the enabled rules are projected to open in the next `days`, per
    region and kind (rules.forecast says how each condition is projected). A device counts once per kind, at its
    earliest window, and not at all while a window of that kind is open for it."""
    now = now or dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(days=days)
    start_s, end_s = now.timestamp(), end.timestamp()
    catalog = load_catalog()
    rules = [(rule, kind) for rule in (parse_rule(stored.document) for stored in repo.enabled_rules(conn))
             if (kind := forecast_kind(rule.when)) is not None]
    opened = repo.open_windows(conn, rule_ids=[rule.id for rule, _kind in rules])
    open_by_kind: dict[ForecastKind, set[str]] = defaultdict(set)
    for rule, kind in rules:
        open_by_kind[kind] |= opened.get(rule.id, set())

    earliest: dict[ForecastKind, dict[str, float]] = defaultdict(dict)
    regions: dict[str, str | None] = {}
    per_rule: list[RuleForecast] = []
    not_forecast: list[str] = []
    for rule, kind in rules:
        project_leaf = _LeafProjector(conn, models_in_scope(rule.applies_to, catalog), now)
        due = project(rule.when, project_leaf)
        if due is None:
            not_forecast.append(rule.id)
            continue
        regions.update(project_leaf.regions)
        coming = {device: at for device, at in due.items()
                  if start_s <= at < end_s and device not in open_by_kind[kind]}
        for device, at in coming.items():
            if at < earliest[kind].get(device, end_s):
                earliest[kind][device] = at
        per_rule.append(RuleForecast(rule_id=rule.id, kind=kind, devices=len(coming),
                                     already_open=len(opened.get(rule.id, set())),
                                     unprojected=unprojected_kinds(rule.when)))

    weeks = -(-days // 7)
    counts: dict[tuple[str | None, ForecastKind], list[int]] = defaultdict(lambda: [0] * weeks)
    for kind, devices in earliest.items():
        for device, at in devices.items():
            counts[(regions.get(device), kind)][int((at - start_s) // WEEK.total_seconds())] += 1
    return FleetForecast(
        start=now,
        end=end,
        days=days,
        week_starts=[now + WEEK * week for week in range(weeks)],
        # Regions by name, the devices registered without one last.
        regions=[RegionForecast(region=region, kind=kind, devices=sum(per_week), weeks=per_week)
                 for (region, kind), per_week in sorted(counts.items(), key=lambda item: (item[0][0] is None,
                                                                                          item[0]))],
        rules=sorted(per_rule, key=lambda forecast: (-forecast.devices, forecast.rule_id)),
        not_forecast=not_forecast,
    )


__all__ = [
    "RuleError",
    "acknowledge_detection",
    "backtest_draft",
    "backtest_rule",
    "create_rule",
    "detections_cleared",
    "detections_with_pending_actions",
    "engine_jobs",
    "fleet_forecast",
    "get_detection",
    "get_rule",
    "list_detections",
    "list_rules",
    "load_builtin_catalog",
    "mark_action_done",
    "update_rule",
    "validate",
]
