"""Thin functions over rules/queries.sql; rows leave as the domain's models (named tuples in their query's column
order where an evaluation or a job writes many at once)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from psycopg2.extras import Json, execute_values

from careloop.db import Connection, copied_integers, copy_columns, execute, fetch_all, fetch_one, load_queries
from careloop.pages import Page, paginate
from rules.models import (
    DetectionChange,
    DetectionRead,
    DetectionToCarryOut,
    DetectionToClear,
    DetectionToOpen,
    DueRow,
    EngineJobRead,
    ModelBaseline,
    RuleVersion,
    StoredRule,
    TrendFitRow,
)

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


# ---------------------------------------------------------------- rules


def insert_rule(conn: Connection, *, rule_id: str, document: dict, enabled: bool, builtin: bool) -> bool:
    params = {"id": rule_id, "document": Json(document), "enabled": enabled, "builtin": builtin}
    created = fetch_one(conn, QUERIES["insert_rule"], params) is not None
    if created:
        execute(conn, QUERIES["record_version"], {"id": rule_id})
    return created


def update_rule(conn: Connection, *, rule_id: str, document: dict, enabled: bool) -> int | None:
    row = fetch_one(conn, QUERIES["update_rule"], {"id": rule_id, "document": Json(document), "enabled": enabled})
    if row is None:
        return None
    execute(conn, QUERIES["record_version"], {"id": rule_id})
    return row["version"]


def get_rule(conn: Connection, *, rule_id: str) -> StoredRule | None:
    row = fetch_one(conn, QUERIES["get_rule"], {"id": rule_id})
    return StoredRule.model_validate(row) if row is not None else None


def list_rules(
    conn: Connection, *, enabled: bool | None = None, limit: int = 1000, offset: int = 0
) -> Page[StoredRule]:
    rows = fetch_all(conn, QUERIES["list_rules"], {"enabled": enabled, "limit": limit, "offset": offset})
    return paginate(rows, StoredRule.model_validate)


def rule_versions(conn: Connection, *, rule_id: str) -> list[RuleVersion]:
    return [RuleVersion.model_validate(row) for row in fetch_all(conn, QUERIES["rule_versions"], {"id": rule_id})]


def enabled_rules(conn: Connection) -> list[StoredRule]:
    return [StoredRule.model_validate(row) for row in fetch_all(conn, QUERIES["enabled_rules"])]


# ---------------------------------------------------------------- detections and engine jobs


def lock_evaluation(conn: Connection) -> None:
    fetch_all(conn, QUERIES["lock_evaluation"])


def detections_revision(conn: Connection) -> int:
    return int(fetch_one(conn, QUERIES["detections_revision"])["revision"])


def open_detections(conn: Connection, *, rule_ids: list[str], device_ids: list[str] | None) -> list[np.ndarray]:
    """Columns rule_id, device_id (raw text) and opened_at (epoch seconds) of the uncleared detections."""
    params = {"rule_ids": rule_ids, "device_ids": device_ids}
    rules, devices, opened_at = copy_columns(conn, QUERIES["open_detections"], params, 3)
    return [rules, devices, copied_integers(opened_at)]


def recent_clears(
    conn: Connection, *, rule_ids: list[str], device_ids: list[str] | None, since: dt.datetime
) -> list[np.ndarray]:
    """Columns rule_id, device_id (raw text) and last cleared_at (epoch seconds) since `since`."""
    params = {"rule_ids": rule_ids, "device_ids": device_ids, "since": since}
    rules, devices, cleared_at = copy_columns(conn, QUERIES["recent_clears"], params, 3)
    return [rules, devices, copied_integers(cleared_at)]


def _changes(conn: Connection, query: str, rows: Sequence[tuple]) -> list[DetectionChange]:
    if not rows:
        return []
    with conn.cursor() as cursor:
        return [DetectionChange(*row) for row in execute_values(cursor, query, rows, fetch=True)]


def open_detections_rows(conn: Connection, rows: Sequence[DetectionToOpen]) -> list[DetectionChange]:
    """Open these detections; answers those opened (one already open for the rule and device is skipped)."""
    values = [row._replace(explanation=Json(row.explanation), actions=Json(row.actions)) for row in rows]
    return _changes(conn, QUERIES["open_detection"], values)


def clear_detections_rows(conn: Connection, rows: Sequence[DetectionToClear]) -> list[DetectionChange]:
    """Clear these detections; answers those cleared."""
    return _changes(conn, QUERIES["clear_detection"], [row._replace(explanation=json.dumps(row.explanation))
                                                       for row in rows])


def list_detections(
    conn: Connection, *, device_id: str | None, status: str | None, rule_id: str | None, limit: int, offset: int,
    severity: str | None = None, urgent_first: bool = False,
) -> Page[DetectionRead]:
    params = {"device_id": device_id, "status": status, "rule_id": rule_id, "limit": limit, "offset": offset,
              "severity": severity, "urgent": urgent_first}
    return paginate(fetch_all(conn, QUERIES["list_detections"], params), DetectionRead.model_validate)


def get_detection(conn: Connection, *, detection_id: int) -> DetectionRead | None:
    row = fetch_one(conn, QUERIES["get_detection"], {"id": detection_id})
    return DetectionRead.model_validate(row) if row is not None else None


def acknowledge_detection(conn: Connection, *, detection_id: int, by: str) -> bool:
    return fetch_one(conn, QUERIES["acknowledge_detection"], {"id": detection_id, "by": by}) is not None


def record_job(conn: Connection, *, job: str, at: dt.datetime, duration_ms: float, summary: dict) -> None:
    params = {"job": job, "at": at, "duration_ms": duration_ms, "summary": Json(summary)}
    execute(conn, QUERIES["record_job"], params)


def engine_jobs(conn: Connection) -> list[EngineJobRead]:
    return [EngineJobRead.model_validate(row) for row in fetch_all(conn, QUERIES["engine_jobs"])]


def detections_with_pending_actions(conn: Connection, *, kinds: list[str], limit: int) -> list[DetectionToCarryOut]:
    rows = fetch_all(conn, QUERIES["detections_with_pending_actions"], {"kinds": kinds, "limit": limit})
    return [DetectionToCarryOut.model_validate(row) for row in rows]


def set_action_status(conn: Connection, *, detection_id: int, key: str, status: str, result: dict) -> None:
    execute(conn, QUERIES["set_action_status"],
            {"id": detection_id, "key": key, "status": status, "result": Json(result)})


def detections_cleared(conn: Connection, *, detection_ids: list[int]) -> dict[int, dt.datetime | None]:
    rows = fetch_all(conn, QUERIES["detections_cleared"], {"ids": detection_ids})
    return {row["id"]: row["cleared_at"] for row in rows}


# ---------------------------------------------------------------- what the engine learns


def store_trend_fits(
    conn: Connection, *, windows: Sequence[tuple[str, int]], fits: Sequence[TrendFitRow],
    device_ids: Sequence[str] | None = None,
) -> None:
    """Replace the stored fits of these (metric, seconds) windows with `fits`, for every device or only these."""
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["forget_trend_fits"], {
            "metrics": [metric for metric, _seconds in windows], "seconds": [seconds for _metric, seconds in windows],
            "device_ids": None if device_ids is None else list(device_ids),
        })
        execute_values(cursor, QUERIES["store_trend_fits"], fits, page_size=5000)


def upsert_baselines(conn: Connection, *, baselines: Sequence[ModelBaseline], learned_at: dt.datetime) -> None:
    """Store baselines learned at `learned_at`, replacing what was learned before for their (model, metric)."""
    if baselines:
        with conn.cursor() as cursor:
            execute_values(cursor, QUERIES["upsert_baselines"], [(*baseline, learned_at) for baseline in baselines],
                           page_size=len(baselines))


def offer_template_codes(conn: Connection) -> set[str]:
    return {row["code"] for row in fetch_all(conn, QUERIES["offer_template_codes"])}


# ---------------------------------------------------------------- the fleet's coming demand


def _due(conn: Connection, query: str, params: dict) -> list[DueRow]:
    return [DueRow(row["device_id"], row["region"], float(row["due_s"])) for row in fetch_all(conn, query, params)
            if row["due_s"] is not None]


def due_by_age(conn: Connection, *, age_seconds: dict[str, float]) -> list[DueRow]:
    """When each device of these models reaches its model's age (seconds after purchase)."""
    return _due(conn, QUERIES["forecast_age"],
                {"models": list(age_seconds), "seconds": list(age_seconds.values())})


def due_by_elapsed(
    conn: Connection, *, models: list[str], since: str | None, seconds: float, now: dt.datetime
) -> list[DueRow]:
    """When `seconds` will have passed since each device's last `since` event (else its purchase)."""
    return _due(conn, QUERIES["forecast_elapsed"],
                {"models": models, "since": since, "seconds": seconds, "now": now})


def due_by_usage(
    conn: Connection, *, models: list[str], metric: str, since: str | None, at_least: float, now: dt.datetime,
    rate_window: dt.timedelta,
) -> list[DueRow]:
    """When each device's counter will have grown by `at_least` since its last `since` event, at its recent rate."""
    return _due(conn, QUERIES["forecast_usage"], {
        "models": models, "metric": metric, "since": since, "at_least": at_least, "now": now,
        "rate_window": rate_window,
    })


def due_by_trend(
    conn: Connection, *, models: list[str], metric: str, over_seconds: int, min_points: int, reaches: float,
    rising: bool, within_seconds: float,
) -> list[DueRow]:
    """When each device's stored trend fit comes within `within_seconds` of reaching `reaches`."""
    return _due(conn, QUERIES["forecast_trend"], {
        "models": models, "metric": metric, "over": over_seconds, "min_points": min_points, "reaches": reaches,
        "sign": 1.0 if rising else -1.0, "within": within_seconds,
    })


def open_windows(conn: Connection, *, rule_ids: list[str]) -> dict[str, set[str]]:
    """Per rule, the devices with an uncleared detection of it."""
    found: dict[str, set[str]] = {}
    for row in fetch_all(conn, QUERIES["open_windows"], {"rule_ids": rule_ids}):
        found.setdefault(row["rule_id"], set()).add(row["device_id"])
    return found
