"""Thin functions over rules/queries.sql."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psycopg2.extras import Json

from careloop.db import Row, execute, fetch_all, fetch_one, load_queries

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
