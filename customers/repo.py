"""Thin functions over customers/queries.sql."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from careloop.db import Row, execute, fetch_all, fetch_one, fetch_value, load_queries

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


def contact_facts(conn: Any, *, customer_id: int, purpose: str, now: dt.datetime) -> Row | None:
    return fetch_one(conn, QUERIES["contact_facts"], {"customer_id": customer_id, "purpose": purpose, "now": now})


def record_contact_decision(conn: Any, *, decision: dict[str, Any]) -> None:
    execute(conn, QUERIES["record_contact_decision"], decision)


def contact_decision(conn: Any, *, subject: str, channel: str) -> Row | None:
    return fetch_one(conn, QUERIES["contact_decision"], {"subject": subject, "channel": channel})


def contact_decisions(conn: Any, *, customer_id: int, limit: int = 100) -> list[Row]:
    return fetch_all(conn, QUERIES["contact_decisions"], {"customer_id": customer_id, "limit": limit})


def record_spend(conn: Any, *, customer_id: int, amount: Any, source: str, entry_key: str, at: dt.datetime) -> None:
    execute(conn, QUERIES["record_spend"], {
        "customer_id": customer_id, "amount": amount, "source": source, "entry_key": entry_key, "at": at,
    })
