"""Thin functions over rules/queries.sql."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from psycopg2.extras import Json, RealDictCursor, execute_values

from careloop.db import Row, copied_integers, copy_columns, execute, fetch_all, fetch_one, load_queries

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def insert_rule(conn: Any, *, rule_id: str, document: dict, enabled: bool, builtin: bool) -> bool:
    params = {"id": rule_id, "document": Json(document), "enabled": enabled, "builtin": builtin}
    created = fetch_one(conn, QUERIES["insert_rule"], params) is not None
    if created:
        execute(conn, QUERIES["record_version"], {"id": rule_id})
    return created


def update_rule(conn: Any, *, rule_id: str, document: dict, enabled: bool) -> int | None:
    row = fetch_one(conn, QUERIES["update_rule"], {"id": rule_id, "document": Json(document), "enabled": enabled})
    if row is None:
        return None
    execute(conn, QUERIES["record_version"], {"id": rule_id})
    return row["version"]


def get_rule(conn: Any, *, rule_id: str) -> Row | None:
    return fetch_one(conn, QUERIES["get_rule"], {"id": rule_id})


def list_rules(conn: Any, *, enabled: bool | None = None, limit: int = 1000, offset: int = 0) -> list[Row]:
    return fetch_all(conn, QUERIES["list_rules"], {"enabled": enabled, "limit": limit, "offset": offset})


def rule_versions(conn: Any, *, rule_id: str) -> list[Row]:
    return fetch_all(conn, QUERIES["rule_versions"], {"id": rule_id})


# ---------------------------------------------------------------- detections and engine jobs


def enabled_rules(conn: Any) -> list[Row]:
    return fetch_all(conn, QUERIES["enabled_rules"])


def lock_evaluation(conn: Any) -> None:
    fetch_all(conn, QUERIES["lock_evaluation"])


def detections_revision(conn: Any) -> int:
    return int(fetch_one(conn, QUERIES["detections_revision"])["revision"])


def open_detections(conn: Any, *, rule_ids: list[str], device_ids: list[str] | None) -> list[np.ndarray]:
    """Columns rule_id, device_id (raw text) and opened_at (epoch seconds) of the uncleared detections."""
    params = {"rule_ids": rule_ids, "device_ids": device_ids}
    rules, devices, opened_at = copy_columns(conn, QUERIES["open_detections"], params, 3)
    return [rules, devices, copied_integers(opened_at)]


def recent_clears(conn: Any, *, rule_ids: list[str], device_ids: list[str] | None, since: Any) -> list[np.ndarray]:
    """Columns rule_id, device_id (raw text) and last cleared_at (epoch seconds) since `since`."""
    params = {"rule_ids": rule_ids, "device_ids": device_ids, "since": since}
    rules, devices, cleared_at = copy_columns(conn, QUERIES["recent_clears"], params, 3)
    return [rules, devices, copied_integers(cleared_at)]


def _values(conn: Any, query: str, rows: list[tuple]) -> list[Row]:
    if not rows:
        return []
    with conn.cursor(cursor_factory=RealDictCursor) as cursor:
        return [dict(row) for row in execute_values(cursor, query, rows, fetch=True)]


def open_detections_rows(conn: Any, rows: list[tuple]) -> list[Row]:
    """Insert (rule_id, rule_version, device_id, severity, opened_at, dedup_key, explanation, actions) rows."""
    return _values(conn, QUERIES["open_detection"], rows)


def clear_detections_rows(conn: Any, rows: list[tuple]) -> list[Row]:
    """Clear by (rule_id, device_id, opened_at, cleared_at, explanation json text) rows."""
    return _values(conn, QUERIES["clear_detection"], rows)


def list_detections(
    conn: Any, *, device_id: str | None, status: str | None, rule_id: str | None, limit: int, offset: int
) -> list[Row]:
    params = {"device_id": device_id, "status": status, "rule_id": rule_id, "limit": limit, "offset": offset}
    return fetch_all(conn, QUERIES["list_detections"], params)


def get_detection(conn: Any, *, detection_id: int) -> Row | None:
    return fetch_one(conn, QUERIES["get_detection"], {"id": detection_id})


def acknowledge_detection(conn: Any, *, detection_id: int, by: str) -> bool:
    return fetch_one(conn, QUERIES["acknowledge_detection"], {"id": detection_id, "by": by}) is not None


def record_job(conn: Any, *, job: str, at: Any, duration_ms: float, summary: dict) -> None:
    params = {"job": job, "at": at, "duration_ms": duration_ms, "summary": Json(summary)}
    execute(conn, QUERIES["record_job"], params)


def engine_jobs(conn: Any) -> list[Row]:
    return fetch_all(conn, QUERIES["engine_jobs"])


def detections_with_pending_actions(conn: Any, *, kinds: list[str], limit: int) -> list[Row]:
    return fetch_all(conn, QUERIES["detections_with_pending_actions"], {"kinds": kinds, "limit": limit})


def set_action_status(conn: Any, *, detection_id: int, key: str, status: str, result: dict) -> None:
    execute(conn, QUERIES["set_action_status"],
            {"id": detection_id, "key": key, "status": status, "result": Json(result)})


def detections_cleared(conn: Any, *, detection_ids: list[int]) -> dict[int, Any]:
    rows = fetch_all(conn, QUERIES["detections_cleared"], {"ids": detection_ids})
    return {row["id"]: row["cleared_at"] for row in rows}

