"""Thin functions over customers/queries.sql."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from careloop.db import Row, execute, fetch_all, fetch_value, load_queries

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def insert_customer(conn: Any, *, customer: dict[str, Any]) -> int:
    return int(fetch_value(conn, QUERIES["insert_customer"], customer))


def upsert_consent(conn: Any, *, customer_id: int, purpose: str, channel: str, granted: bool) -> None:
    execute(
        conn,
        QUERIES["upsert_consent"],
        {"customer_id": customer_id, "purpose": purpose, "channel": channel, "granted": granted},
    )


def customer_exists(conn: Any, *, customer_id: int) -> bool:
    return bool(fetch_value(conn, QUERIES["customer_exists"], {"customer_id": customer_id}))


def list_customers(
    conn: Any, *, customer_id: int | None = None, q: str | None = None, limit: int = 100, offset: int = 0
) -> list[Row]:
    return fetch_all(
        conn,
        QUERIES["list_customers"],
        {"customer_id": customer_id, "q": q, "limit": limit, "offset": offset},
    )
