"""Thin functions over service_orders/queries.sql; rows leave as the domain's models."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from psycopg2.extras import Json

from careloop.db import Connection, execute, fetch_all, fetch_one, fetch_value, load_queries
from careloop.pages import Page, paginate
from service_orders.calendar import Booking
from service_orders.models import CallTaskRead, HistoryEntry, OrderRead, OrderRow, OrderSummary, TechnicianRead

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def insert_order(conn: Connection, *, order: dict[str, Any]) -> int | None:
    """The new order's id, or None when an order of the device and fault class is open already."""
    return fetch_value(conn, QUERIES["insert_order"], {**order, "explanation": Json(order.get("explanation"))})


def open_order_of_class(conn: Connection, *, device_id: str, fault_class: str) -> int | None:
    return fetch_value(conn, QUERIES["open_order_of_class"], {"device_id": device_id, "fault_class": fault_class})


def order_by_action(conn: Connection, *, action_key: str) -> int | None:
    return fetch_value(conn, QUERIES["order_by_action"], {"action_key": action_key})


def join_order(conn: Connection, *, order_id: int, detection_id: int | None, priority: str) -> None:
    execute(conn, QUERIES["join_order"], {"order_id": order_id, "detection_id": detection_id, "priority": priority})


def lock_order(conn: Connection, *, order_id: int) -> OrderRow | None:
    row = fetch_one(conn, QUERIES["lock_order"], {"order_id": order_id})
    return OrderRow.model_validate(row) if row is not None else None


def list_orders(
    conn: Connection, *, now: dt.datetime, due_soon_share: float, due_soon_at_most: dt.timedelta, limit: int = 100,
    offset: int = 0, **filters: Any,
) -> Page[OrderSummary]:
    rows = _order_rows(conn, now=now, due_soon_share=due_soon_share, due_soon_at_most=due_soon_at_most,
                       limit=limit, offset=offset, explained=False, **filters)
    return paginate(rows, OrderSummary.model_validate)


def read_order(
    conn: Connection, *, order_id: int, now: dt.datetime, due_soon_share: float, due_soon_at_most: dt.timedelta,
    technician_id: int | None = None,
) -> Page[OrderRead]:
    rows = _order_rows(conn, now=now, due_soon_share=due_soon_share, due_soon_at_most=due_soon_at_most,
                       order_id=order_id, technician_id=technician_id, limit=1, offset=0, explained=True)
    return paginate(rows, OrderRead.model_validate)


def _order_rows(conn: Connection, **params: Any) -> list[dict[str, Any]]:
    return fetch_all(conn, QUERIES["list_orders"], {
        "order_id": None, "status": None, "device_id": None, "customer_id": None, "technician_id": None,
        "region": None, "skill": None, "priority": None, "overdue": None, **params,
    })  # fmt: skip


def order_history(conn: Connection, *, order_id: int) -> list[HistoryEntry]:
    rows = fetch_all(conn, QUERIES["order_history"], {"order_id": order_id})
    return [HistoryEntry.model_validate(row) for row in rows]


def record_history(
    conn: Connection,
    *,
    order_id: int,
    at: dt.datetime,
    actor: str,
    actor_role: str,
    change: str,
    from_status: str | None = None,
    to_status: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    execute(conn, QUERIES["record_history"], {
        "order_id": order_id, "at": at, "actor": actor, "actor_role": actor_role, "change": change,
        "from_status": from_status, "to_status": to_status, "detail": Json(detail or {}),
    })


def set_status(conn: Connection, *, order_id: int, status: str) -> None:
    execute(conn, QUERIES["set_status"], {"order_id": order_id, "status": status})


def set_appointment(
    conn: Connection, *, order_id: int, technician_id: int | None, start: dt.datetime | None, end: dt.datetime | None,
    status: str,
) -> None:
    execute(conn, QUERIES["set_appointment"], {
        "order_id": order_id, "technician_id": technician_id, "start": start, "end": end, "status": status,
    })


def complete_order(conn: Connection, *, order_id: int, at: dt.datetime, completion: dict[str, Any],
                   verify_by: dt.datetime | None, verification: str) -> None:
    execute(conn, QUERIES["complete_order"], {
        **completion, "parts": Json(completion["parts"]), "order_id": order_id, "at": at,
        "verify_by": verify_by, "verification": verification,
    })


def overdue_orders(conn: Connection, *, now: dt.datetime, every: dt.timedelta) -> list[OrderRow]:
    return [OrderRow.model_validate(row)
            for row in fetch_all(conn, QUERIES["overdue_orders"], {"now": now, "every": every})]


def escalate(conn: Connection, *, order_id: int, priority: str, now: dt.datetime) -> None:
    execute(conn, QUERIES["escalate"], {"order_id": order_id, "priority": priority, "now": now})


def completions_to_verify(conn: Connection) -> list[OrderRow]:
    return [OrderRow.model_validate(row) for row in fetch_all(conn, QUERIES["completions_to_verify"])]


def set_verification(conn: Connection, *, order_id: int, verification: str) -> None:
    execute(conn, QUERIES["set_verification"], {"order_id": order_id, "verification": verification})


def reopen(conn: Connection, *, order_id: int, sla_due_at: dt.datetime) -> None:
    execute(conn, QUERIES["reopen"], {"order_id": order_id, "sla_due_at": sla_due_at})


def insert_technician(conn: Connection, *, technician: dict[str, Any]) -> int:
    return int(fetch_value(conn, QUERIES["insert_technician"], technician))


def list_technicians(
    conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any
) -> Page[TechnicianRead]:
    params = {"technician_id": None, "skill": None, "region": None, "active": None, **filters}
    rows = fetch_all(conn, QUERIES["list_technicians"], {**params, "limit": limit, "offset": offset})
    return paginate(rows, TechnicianRead.model_validate)


def lock_technician(conn: Connection, *, technician_id: int) -> bool:
    return fetch_value(conn, QUERIES["lock_technician"], {"technician_id": technician_id}) is not None


def bookings(
    conn: Connection, *, technician_id: int, since: dt.datetime, except_order: int | None = None
) -> list[Booking]:
    rows = fetch_all(conn, QUERIES["bookings"],
                     {"technician_id": technician_id, "since": since, "except_order": except_order})
    return [(row["appointment_start"], row["appointment_end"]) for row in rows]


def insert_call_task(conn: Connection, *, task: dict[str, Any]) -> int | None:
    return fetch_value(conn, QUERIES["insert_call_task"], task)


def call_task_by_action(conn: Connection, *, action_key: str) -> int | None:
    return fetch_value(conn, QUERIES["call_task_by_action"], {"action_key": action_key})


def list_call_tasks(
    conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any
) -> Page[CallTaskRead]:
    params = {
        "task_id": None, "status": None, "device_id": None, "customer_id": None, "order_id": None,
        "region": None, "technician_id": None, "due_before": None, **filters,
    }
    rows = fetch_all(conn, QUERIES["list_call_tasks"], {**params, "limit": limit, "offset": offset})
    return paginate(rows, CallTaskRead.model_validate)


def record_call_outcome(conn: Connection, *, task_id: int, outcome: str, status: str, retry_at: dt.datetime | None,
                        notes: str | None) -> bool:
    return fetch_value(conn, QUERIES["record_call_outcome"], {
        "task_id": task_id, "outcome": outcome, "status": status, "retry_at": retry_at, "notes": notes,
    }) is not None
