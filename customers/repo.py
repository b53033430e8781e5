"""Thin functions over customers/queries.sql; rows leave as the domain's models."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from careloop.db import Connection, execute, fetch_all, fetch_one, fetch_value, load_queries
from careloop.pages import Page, paginate
from customers.contact_policy import ContactDecision
from customers.models import ContactFacts, CustomerRead

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def insert_customer(conn: Connection, *, customer: dict[str, Any]) -> int:
    return int(fetch_value(conn, QUERIES["insert_customer"], customer))


def upsert_consent(conn: Connection, *, customer_id: int, purpose: str, channel: str, granted: bool) -> None:
    execute(
        conn,
        QUERIES["upsert_consent"],
        {"customer_id": customer_id, "purpose": purpose, "channel": channel, "granted": granted},
    )


def customer_exists(conn: Connection, *, customer_id: int) -> bool:
    return bool(fetch_value(conn, QUERIES["customer_exists"], {"customer_id": customer_id}))


def list_customers(
    conn: Connection, *, customer_id: int | None = None, q: str | None = None, limit: int = 100, offset: int = 0
) -> Page[CustomerRead]:
    rows = fetch_all(
        conn,
        QUERIES["list_customers"],
        {"customer_id": customer_id, "q": q, "limit": limit, "offset": offset},
    )
    return paginate(rows, CustomerRead.model_validate)


def contact_facts(conn: Connection, *, customer_id: int, purpose: str, now: dt.datetime) -> ContactFacts | None:
    row = fetch_one(conn, QUERIES["contact_facts"], {"customer_id": customer_id, "purpose": purpose, "now": now})
    if row is None:
        return None
    return ContactFacts(
        timezone=row["timezone"],
        consents={(purpose, channel): granted for purpose, channel, granted in row["consents"]},
        contacts_last_day=row["last_day"],
        contacts_last_week=row["last_week"],
    )


def record_contact_decision(conn: Connection, *, decision: dict[str, Any]) -> None:
    execute(conn, QUERIES["record_contact_decision"], decision)


def contact_decision(conn: Connection, *, subject: str, channel: str) -> ContactDecision | None:
    row = fetch_one(conn, QUERIES["contact_decision"], {"subject": subject, "channel": channel})
    return ContactDecision(**row) if row is not None else None


def record_spend(
    conn: Connection, *, customer_id: int, amount: Decimal, source: str, entry_key: str, at: dt.datetime
) -> None:
    execute(conn, QUERIES["record_spend"], {
        "customer_id": customer_id, "amount": amount, "source": source, "entry_key": entry_key, "at": at,
    })
