"""Customers: creation with consents, look-ups and the 360 view. Takes a connection."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from careloop.db import Connection
from careloop.errors import NotFound
from careloop.pages import Page
from customers import repo
from customers.contact_policy import ContactDecision
from customers.contact_policy import decide_contact as decide_contact_now
from customers.models import Channel, Customer360, CustomerCreate, CustomerRead, Purpose
from devices import service as devices_service


def create_customer(conn: Connection, customer: CustomerCreate) -> CustomerRead:
    fields = customer.model_dump(exclude={"consents"})
    customer_id = repo.insert_customer(conn, customer=fields)
    for consent in customer.consents:
        repo.upsert_consent(conn, customer_id=customer_id, **consent.model_dump())
    return get_customer(conn, customer_id)


def get_customer(conn: Connection, customer_id: int) -> CustomerRead:
    found = repo.list_customers(conn, customer_id=customer_id, limit=1).items
    if not found:
        raise NotFound(f"no customer {customer_id}")
    return found[0]


def list_customers(conn: Connection, *, q: str | None, limit: int, offset: int) -> Page[CustomerRead]:
    return repo.list_customers(conn, q=q, limit=limit, offset=offset)


def customer_360(conn: Connection, customer_id: int) -> Customer360:
    """One view of a customer: profile, consents and devices with their state."""
    customer = get_customer(conn, customer_id)
    devices, _total = devices_service.list_devices(conn, owner=customer_id, limit=1000, offset=0)
    return Customer360(customer=customer, devices=devices, consents=customer.consents)


def decide_contact(
    conn: Connection, *, customer_id: int, purpose: Purpose, channel: Channel, subject: str, now: dt.datetime
) -> ContactDecision:
    """The contact policy's decision about one contact (`subject`, e.g. `call_task:order:12`), kept with its reason.

    Decided once per subject and channel: asking again (a retried action) answers the decision kept."""
    kept = repo.contact_decision(conn, subject=subject, channel=channel)
    if kept is not None:
        return kept
    facts = repo.contact_facts(conn, customer_id=customer_id, purpose=purpose, now=now)
    if facts is None:
        raise NotFound(f"no customer {customer_id}")
    decision = decide_contact_now(
        purpose=purpose,
        channel=channel,
        consents=facts.consents,
        timezone=facts.timezone,
        now=now,
        contacts_last_day=facts.contacts_last_day,
        contacts_last_week=facts.contacts_last_week,
    )
    repo.record_contact_decision(conn, decision={
        "customer_id": customer_id, "purpose": purpose, "channel": channel, "subject": subject,
        "allowed": decision.allowed, "reason": decision.reason, "not_before": decision.not_before, "now": now,
    })
    return decision


def record_spend(
    conn: Connection, *, customer_id: int, amount: Decimal, source: str, key: str, at: dt.datetime
) -> None:
    """Add to the customer's spend ledger (tiers follow it); the same key is counted once."""
    repo.record_spend(conn, customer_id=customer_id, amount=amount, source=source, entry_key=key, at=at)
