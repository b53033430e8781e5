"""Customers: creation with consents, look-ups and the 360 view. Takes a connection."""

from __future__ import annotations

from typing import Any

from careloop.errors import NotFound
from customers import repo
from customers.models import Customer360, CustomerCreate, CustomerRead
from devices import service as devices_service


def create_customer(conn: Any, customer: CustomerCreate) -> CustomerRead:
    fields = customer.model_dump(exclude={"consents"})
    customer_id = repo.insert_customer(conn, customer=fields)
    for consent in customer.consents:
        repo.upsert_consent(conn, customer_id=customer_id, **consent.model_dump())
    return get_customer(conn, customer_id)


def get_customer(conn: Any, customer_id: int) -> CustomerRead:
    rows = repo.list_customers(conn, customer_id=customer_id, limit=1)
    if not rows:
        raise NotFound(f"no customer {customer_id}")
    return CustomerRead.model_validate(rows[0])


def list_customers(conn: Any, *, q: str | None, limit: int, offset: int) -> tuple[list[CustomerRead], int]:
    rows = repo.list_customers(conn, q=q, limit=limit, offset=offset)
    return [CustomerRead.model_validate(row) for row in rows], (rows[0]["total"] if rows else 0)


def customer_360(conn: Any, customer_id: int) -> Customer360:
    """One view of a customer: profile, consents and devices with their state."""
    customer = get_customer(conn, customer_id)
    devices, _total = devices_service.list_devices(conn, owner=customer_id, limit=1000, offset=0)
    return Customer360(customer=customer, devices=devices, consents=customer.consents)
