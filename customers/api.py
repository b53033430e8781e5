"""HTTP endpoints for customers; thin handlers over customers.service."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from careloop.deps import Conn, Limit, Offset, Role, RowId, require
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page, whole
from customers import service
from customers.models import (
    Consent,
    ConsentChange,
    ConsentRecord,
    Customer360,
    CustomerCreate,
    CustomerRead,
    CustomerUpdate,
    ErasureRead,
    MembershipRead,
    PointsSpendRequest,
    PurchaseRecord,
)

router = APIRouter(tags=["customers"], responses=EVERY_ROUTE)
# Consents and purchases are recorded by the hotline on the customer's behalf (with how: the source), or by an
# admin; a marketer, who gains from a consent, never records one.
HOTLINE = require("dispatcher")


def for_role(customer: CustomerRead, role: str) -> CustomerRead:
    """A marketer sees no contact details, a technician the name and phone alone (the permission table in
    careloop.auth relies on this)."""
    if role == "marketer":
        return customer.without_contact_details()
    return customer.for_a_visit() if role == "technician" else customer


@router.post("/customers", status_code=201, dependencies=[HOTLINE], responses=answers(403))
def create_customer(customer: CustomerCreate, conn: Conn) -> CustomerRead:
    return service.create_customer(conn, customer)


@router.get("/customers")
def list_customers(
    conn: Conn,
    role: Role,
    q: Annotated[str | None, Query(max_length=100, description="part of a name, email or phone (a marketer's: of a "
                                   "name)")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[CustomerRead]:
    """Customers (the erased are not listed); a marketer's answer carries no contact details."""
    page = service.list_customers(conn, q=q, limit=limit, offset=offset, names_only=role == "marketer")
    return page.map(lambda customer: for_role(customer, role))


@router.get("/customers/{customer_id}", responses=answers(404))
def get_customer(customer_id: RowId, conn: Conn, role: Role) -> CustomerRead:
    return for_role(service.get_customer(conn, customer_id), role)


@router.patch("/customers/{customer_id}", dependencies=[HOTLINE], responses=answers(403, 404, 409))
def update_customer(customer_id: RowId, update: CustomerUpdate, conn: Conn) -> CustomerRead:
    """Correct a customer: only the fields given change (null clears phone, e-mail, birthday, region or preferred
    channel); a bad value is a 422 naming the field. An erased customer is a 409."""
    return service.update_customer(conn, customer_id, update)


@router.delete("/customers/{customer_id}", dependencies=[require()], responses=answers(403, 404))
def erase_customer(customer_id: RowId, conn: Conn) -> ErasureRead:
    """Erase the person everywhere CareLoop wrote them (profile, consents and their history, messages, call tasks,
    quarantined messages mentioning them); their appliances are owned by nobody, their telemetry stays. Orders,
    offers and spend keep counting, against an anonymous stub. Erasing again answers the same, touching nothing."""
    return service.erase_customer(conn, customer_id, at=dt.datetime.now(dt.UTC))


@router.get("/customers/{customer_id}/360", responses=answers(404))
def customer_360(customer_id: RowId, conn: Conn, role: Role) -> Customer360:
    """The customer's whole picture: profile, consents, devices with their health (a marketer's without contact
    details)."""
    picture = service.customer_360(conn, customer_id)
    return picture.model_copy(update={"customer": for_role(picture.customer, role)})


@router.post(
    "/customers/{customer_id}/consents", dependencies=[HOTLINE], responses=answers(403, 404)
)
def record_consent(customer_id: RowId, change: ConsentChange, conn: Conn) -> list[Consent]:
    """A consent given or withdrawn, and how ('web form', 'hotline call', 'unsubscribe link'): the contact policy
    follows the latest of each purpose and channel; every change is kept in the history. Answers the consents now."""
    return service.record_consent(conn, customer_id, change, at=dt.datetime.now(dt.UTC))


@router.get("/customers/{customer_id}/consents/history", responses=answers(404))
def consent_history(customer_id: RowId, conn: Conn, _role: Role) -> Page[ConsentRecord]:
    """Every consent the customer gave or withdrew, newest first, with when and how."""
    return whole(service.consent_history(conn, customer_id))


@router.get("/customers/{customer_id}/membership", responses=answers(404))
def membership(customer_id: RowId, conn: Conn, _role: Role) -> MembershipRead:
    """The customer's tier (spend over the last year), its benefits, and their points (earned, spent, expiring)."""
    return service.membership(conn, customer_id, now=dt.datetime.now(dt.UTC))


@router.post(
    "/customers/{customer_id}/points/spend", dependencies=[HOTLINE],
    responses=answers(403, 404, 409),
)
def spend_points(customer_id: RowId, request: PointsSpendRequest, conn: Conn) -> MembershipRead:
    """Spend points, oldest first; more than the balance is a 409. The same key is spent once."""
    return service.spend_points(conn, customer_id, request, now=dt.datetime.now(dt.UTC))


@router.post(
    "/customers/{customer_id}/purchases", dependencies=[HOTLINE],
    responses=answers(403, 404),
)
def record_purchase(customer_id: RowId, purchase: PurchaseRecord, conn: Conn) -> MembershipRead:
    """A purchase into the customer's spend ledger (the same key is counted once); answers their membership now."""
    now = dt.datetime.now(dt.UTC)
    service.get_customer(conn, customer_id)
    service.record_spend(conn, customer_id=customer_id, amount=purchase.amount, source=purchase.source,
                         key=f"purchase:{customer_id}:{purchase.key}", at=now)
    return service.membership(conn, customer_id, now=now)
