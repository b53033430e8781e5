"""HTTP endpoints for service orders, technicians and call tasks; thin handlers over service_orders.service.

Who may call what is the permission table's (careloop.auth.PERMISSIONS): dispatchers work every order; a
technician's token sees and moves only the orders assigned to them (narrowed here by the service, through the
actor) and the customer's contact details on those; marketers have no part in service.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from careloop.deps import Caller, Conn, Limit, Offset, RowId
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page
from service_orders import service
from service_orders.models import (
    Actor,
    Assignment,
    CallOutcomeRecord,
    CallTaskRead,
    Completion,
    OrderDetail,
    OrderOpen,
    OrderSummary,
    Proposal,
    TechnicianCreate,
    TechnicianRead,
    Transition,
)

router = APIRouter(tags=["service orders"], responses=EVERY_ROUTE)
Name = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9 _.:-]+$")]
StatusFilter = Literal["open", "new", "scheduled", "assigned", "in_progress", "completed", "cancelled"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def actor_of(caller: Caller) -> Actor:
    return Actor(name=caller.name, role=caller.role, technician_id=caller.technician_id)


@router.get("/service-orders")
def list_orders(
    conn: Conn,
    caller: Caller,
    status: StatusFilter | None = None,
    device_id: Name = None,
    customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    technician_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    region: Name = None,
    skill: Name = None,
    priority: Literal["low", "normal", "high", "urgent"] | None = None,
    overdue: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[OrderSummary]:
    """Orders, most urgent first (by SLA due time); `status=open` is every order not completed or cancelled. Each
    is the whole order but why it opened: `GET /service-orders/{id}` adds the rule's explanation."""
    return service.list_orders(
        conn, now=now(), actor=actor_of(caller), status=status, device_id=device_id, customer_id=customer_id,
        technician_id=technician_id, region=region, skill=skill, priority=priority, overdue=overdue, limit=limit,
        offset=offset,
    )


@router.post("/service-orders", status_code=201, responses=answers(403, 404, 409))
def open_order(order: OrderOpen, conn: Conn, caller: Caller) -> OrderDetail:
    """Open an order by hand (a hotline call). A device with an open order of the same type and skill answers 409
    naming that order."""
    return service.open_order(conn, order, actor=actor_of(caller), now=now())


@router.get("/service-orders/{order_id}", responses=answers(404))
def get_order(order_id: RowId, conn: Conn, caller: Caller) -> OrderDetail:
    """One order with its history (who changed what, when) and where it may go next."""
    return service.get_order(conn, order_id, now=now(), actor=actor_of(caller))


@router.post(
    "/service-orders/{order_id}/status",
    responses=answers(403, 404, 409),
)
def change_status(order_id: RowId, transition: Transition, conn: Conn, caller: Caller) -> OrderDetail:
    """Move an order along its lifecycle; a transition that is not allowed is a 409 naming the allowed ones."""
    return service.change_status(conn, order_id, transition.status, actor=actor_of(caller), now=now(),
                                 note=transition.note)


@router.get("/service-orders/{order_id}/proposals", responses=answers(403, 404))
def propose_technicians(order_id: RowId, conn: Conn) -> list[Proposal]:
    """The best technicians for the order, each with why (skill, region, load, soonest free window)."""
    return service.propose_technicians(conn, order_id, now=now())


@router.post("/service-orders/{order_id}/assign", responses=answers(403, 404, 409))
def assign(order_id: RowId, assignment: Assignment, conn: Conn, caller: Caller) -> OrderDetail:
    """Assign a technician and book a visit window in their calendar (the soonest free one when none is given);
    a window that does not fit is a 409 saying why."""
    return service.assign(conn, order_id, assignment, actor=actor_of(caller), now=now())


@router.post(
    "/service-orders/{order_id}/complete",
    responses=answers(403, 404, 409),
)
def complete(order_id: RowId, completion: Completion, conn: Conn, caller: Caller) -> OrderDetail:
    """Record the visit: outcome, parts, cost, rating. An order opened from a detection is confirmed when the
    fault clears in the telemetry, else reopened."""
    return service.complete(conn, order_id, completion, actor=actor_of(caller), now=now())


@router.get("/technicians", responses=answers(403))
def list_technicians(
    conn: Conn, skill: Name = None, region: Name = None, limit: Limit = 100, offset: Offset = 0
) -> Page[TechnicianRead]:
    return service.list_technicians(conn, skill=skill, region=region, limit=limit, offset=offset)


@router.post("/technicians", status_code=201, responses=answers(403))
def create_technician(technician: TechnicianCreate, conn: Conn) -> TechnicianRead:
    """Register a technician: skills, home region, working hours in their time zone, daily capacity."""
    return service.create_technician(conn, technician)


@router.get("/technicians/{technician_id}", responses=answers(404))
def get_technician(technician_id: RowId, conn: Conn) -> TechnicianRead:
    """A technician; a technician's token sees only themselves."""
    return service.get_technician(conn, technician_id)


@router.get("/call-tasks", responses=answers(403))
def list_call_tasks(
    conn: Conn,
    caller: Caller,
    status: Literal["open", "blocked", "done"] | None = None,
    device_id: Name = None,
    customer_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    order_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    region: Name = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[CallTaskRead]:
    """Proactive calls for dispatchers, due first: whom to call, on which number, why, a script."""
    return service.list_call_tasks(conn, actor=actor_of(caller), status=status, device_id=device_id,
                                   customer_id=customer_id, order_id=order_id, region=region, limit=limit,
                                   offset=offset)


@router.post("/call-tasks/{task_id}/outcome", responses=answers(403, 404, 409))
def record_call_outcome(task_id: RowId, record: CallOutcomeRecord, conn: Conn, caller: Caller) -> CallTaskRead:
    """Record a call: reached or declined close it; no answer (retry in 2 h unless given) and call back keep it
    open until retry_at."""
    return service.record_call_outcome(conn, task_id, record, actor=actor_of(caller), now=now())
