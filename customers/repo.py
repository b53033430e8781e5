"""Thin functions over customers/queries.sql; rows leave as the domain's models."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from careloop.db import Connection, execute, fetch_all, fetch_one, fetch_value, load_queries
from careloop.pages import Page, paginate
from customers.contact_policy import ContactDecision
from customers.membership import PointsSpend, Spend
from customers.models import (
    ConsentRecord,
    ContactFacts,
    ContactRead,
    CustomerRead,
    FreeVisitRead,
    OfferContactFacts,
    OfferSummary,
    OrderSummary,
    SegmentRead,
)

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
    conn: Connection, *, customer_id: int | None = None, q: str | None = None, limit: int = 100, offset: int = 0,
    names_only: bool = False,
) -> Page[CustomerRead]:
    rows = fetch_all(
        conn,
        QUERIES["list_customers"],
        {"customer_id": customer_id, "q": q, "limit": limit, "offset": offset, "names_only": names_only},
    )
    return paginate(rows, CustomerRead.model_validate)


def contact_facts(
    conn: Connection, *, customer_id: int, purpose: str, channel: str, now: dt.datetime
) -> ContactFacts | None:
    row = fetch_one(conn, QUERIES["contact_facts"], {"customer_id": customer_id, "purpose": purpose,
                                                      "channel": channel, "now": now})
    if row is None:
        return None
    return ContactFacts(
        timezone=row["timezone"],
        consents={(purpose, channel): granted for purpose, channel, granted in row["consents"]},
        contacts_last_day=row["last_day"],
        contacts_last_week=row["last_week"],
        channel_last_day=row["channel_last_day"],
        channel_last_week=row["channel_last_week"],
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


def record_consent(
    conn: Connection, *, customer_id: int, purpose: str, channel: str, granted: bool, source: str, note: str | None,
    at: dt.datetime,
) -> None:
    execute(conn, QUERIES["record_consent"], {
        "customer_id": customer_id, "purpose": purpose, "channel": channel, "granted": granted, "source": source,
        "note": note, "at": at,
    })


def consent_history(conn: Connection, *, customer_id: int, limit: int = 200) -> list[ConsentRecord]:
    rows = fetch_all(conn, QUERIES["consent_history"], {"customer_id": customer_id, "limit": limit})
    return [ConsentRecord.model_validate(row) for row in rows]


def offer_contact_facts(conn: Connection, *, customer_id: int, now: dt.datetime) -> OfferContactFacts | None:
    row = fetch_one(conn, QUERIES["offer_contact_facts"], {"customer_id": customer_id, "now": now})
    if row is None:
        return None
    recent: dict[str, list[int]] = row["recent"]
    return OfferContactFacts(
        timezone=row["timezone"],
        preferred_channel=row["preferred_channel"],
        reachable=frozenset(row["reachable"]),
        consents={(purpose, channel): granted for purpose, channel, granted in row["consents"]},
        last_day=sum(day for day, _week in recent.values()),
        last_week=sum(week for _day, week in recent.values()),
        channel_last_day={channel: day for channel, (day, _week) in recent.items()},
        channel_last_week={channel: week for channel, (_day, week) in recent.items()},
    )


def record_offer_decision(conn: Connection, *, decision: dict[str, Any]) -> None:
    execute(conn, QUERIES["record_offer_decision"], decision)


def offer_decision(conn: Connection, *, subject: str) -> ContactDecision | None:
    row = fetch_one(conn, QUERIES["offer_decision"], {"subject": subject})
    return ContactDecision(**row) if row is not None else None


def spend_entries(conn: Connection, *, customer_id: int) -> list[Spend]:
    return [Spend(row["amount"], row["at"])
            for row in fetch_all(conn, QUERIES["spend_entries"], {"customer_id": customer_id})]


def points_spent(conn: Connection, *, customer_id: int) -> list[PointsSpend]:
    return [PointsSpend(row["points"], row["at"])
            for row in fetch_all(conn, QUERIES["points_spent"], {"customer_id": customer_id})]


def spend_points(conn: Connection, *, customer_id: int, points: int, reason: str, entry_key: str,
                 at: dt.datetime) -> bool:
    """Whether the spend was written now (False: the key was spent before)."""
    return fetch_value(conn, QUERIES["spend_points"], {
        "customer_id": customer_id, "points": points, "reason": reason, "entry_key": entry_key, "at": at,
    }) is not None


def lock_customer(conn: Connection, *, customer_id: int) -> bool:
    return fetch_value(conn, QUERIES["lock_customer"], {"customer_id": customer_id}) is not None


def customer_values(conn: Connection, *, now: dt.datetime, since: dt.datetime) -> list[dict[str, Any]]:
    return fetch_all(conn, QUERIES["customer_values"], {"now": now, "since": since})


def store_segments(conn: Connection, *, columns: dict[str, list[Any]], now: dt.datetime) -> None:
    execute(conn, QUERIES["store_segments"], {**columns, "now": now})


def customer_segment(conn: Connection, *, customer_id: int) -> SegmentRead | None:
    row = fetch_one(conn, QUERIES["customer_segment"], {"customer_id": customer_id})
    return SegmentRead.model_validate(row) if row is not None else None


def customer_orders(conn: Connection, *, customer_id: int, limit: int = 100) -> list[OrderSummary]:
    rows = fetch_all(conn, QUERIES["customer_orders"], {"customer_id": customer_id, "limit": limit})
    return [OrderSummary.model_validate(row) for row in rows]


def customer_offers(conn: Connection, *, customer_id: int, limit: int = 100) -> list[OfferSummary]:
    rows = fetch_all(conn, QUERIES["customer_offers"], {"customer_id": customer_id, "limit": limit})
    return [OfferSummary.model_validate(row) for row in rows]


def customer_contacts(conn: Connection, *, customer_id: int, limit: int = 100) -> list[ContactRead]:
    rows = fetch_all(conn, QUERIES["customer_contacts"], {"customer_id": customer_id, "limit": limit})
    return [ContactRead.model_validate(row) for row in rows]


def customer_spend(conn: Connection, *, customer_id: int, limit: int = 100) -> list[dict[str, Any]]:
    return fetch_all(conn, QUERIES["customer_spend"], {"customer_id": customer_id, "limit": limit})


def unsubscribe_token(conn: Connection, *, customer_id: int, token: str) -> str | None:
    return fetch_value(conn, QUERIES["unsubscribe_token"], {"customer_id": customer_id, "token": token})


def customer_by_unsubscribe_token(conn: Connection, *, token: str) -> int | None:
    return fetch_value(conn, QUERIES["customer_by_unsubscribe_token"], {"token": token})


def marketing_consents(conn: Connection, *, customer_id: int) -> dict[str, bool]:
    rows = fetch_all(conn, QUERIES["marketing_consents"], {"customer_id": customer_id})
    return {row["channel"]: row["granted"] for row in rows}


def update_customer(conn: Connection, *, customer_id: int, changes: dict[str, Any]) -> bool:
    """Whether a customer (not erased) took the changes; fields absent from `changes` keep their value."""
    params: dict[str, Any] = {"customer_id": customer_id}
    for name in UPDATABLE:
        params[f"set_{name}"] = name in changes
        params[name] = changes.get(name)
    return fetch_value(conn, QUERIES["update_customer"], params) is not None


UPDATABLE = ("name", "phone", "email", "birthday", "timezone", "region", "preferred_channel")


def customer_erased_at(conn: Connection, *, customer_id: int) -> tuple[bool, dt.datetime | None]:
    """(whether the customer exists, when they were erased), the row locked."""
    row = fetch_one(conn, QUERIES["customer_erased_at"], {"customer_id": customer_id})
    return (row is not None, row["erased_at"] if row is not None else None)


ERASURE_STEPS = ("erase_devices", "erase_consents", "erase_outbox", "erase_offers", "erase_call_tasks",
                 "erase_order_texts", "erase_quarantine", "erase_points", "erase_tokens", "erase_profile")


def erase_customer(conn: Connection, *, customer_id: int, email: str, phone: str, marks: list[str],
                   at: dt.datetime) -> dict[str, int]:
    """Run every erasure step (customers/queries.sql); answers the rows each touched."""
    params = {"customer_id": customer_id, "email": email, "phone": phone, "marks": marks, "at": at}
    touched = {}
    with conn.cursor() as cursor:
        for step in ERASURE_STEPS:
            cursor.execute(QUERIES[step], params)
            touched[step.removeprefix("erase_")] = max(cursor.rowcount, 0)
    return touched


def free_visits_used(
    conn: Connection, *, customer_id: int, since: dt.datetime, until: dt.datetime
) -> list[FreeVisitRead]:
    rows = fetch_all(conn, QUERIES["free_visits_used"], {"customer_id": customer_id, "since": since, "until": until})
    return [FreeVisitRead.model_validate(row) for row in rows]
