"""HTTP endpoints for customers; thin handlers over customers.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from careloop.deps import Conn, Offset, Role, RowId, require
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page
from customers import service
from customers.models import Customer360, CustomerCreate, CustomerRead

router = APIRouter(tags=["customers"], responses=EVERY_ROUTE)


@router.post(
    "/customers", status_code=201, dependencies=[require("dispatcher", "marketer")], responses=answers(403)
)
def create_customer(customer: CustomerCreate, conn: Conn) -> CustomerRead:
    return service.create_customer(conn, customer)


@router.get("/customers")
def list_customers(
    conn: Conn,
    _role: Role,
    q: Annotated[str | None, Query(max_length=100, description="part of a name, email or phone")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Page[CustomerRead]:
    return service.list_customers(conn, q=q, limit=limit, offset=offset)


@router.get("/customers/{customer_id}", responses=answers(404))
def get_customer(customer_id: RowId, conn: Conn, _role: Role) -> CustomerRead:
    return service.get_customer(conn, customer_id)


@router.get("/customers/{customer_id}/360", responses=answers(404))
def customer_360(customer_id: RowId, conn: Conn, _role: Role) -> Customer360:
    """The customer's whole picture: profile, consents, devices with their health."""
    return service.customer_360(conn, customer_id)
