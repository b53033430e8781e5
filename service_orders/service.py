"""Service orders: opening (once per fault), the lifecycle, technicians and their calendars, SLA escalation,
proactive call tasks under the contact policy, and completion the telemetry confirms. Takes a connection.

Every change of an order is kept in its history with the person (or the engine) who made it.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from careloop.db import Connection
from careloop.durations import Duration
from careloop.errors import Conflict, InvalidInput, NotFound
from careloop.pages import Page
from customers import service as customers_service
from devices import service as devices_service
from ingest import service as ingest_service
from rules import service as rules_service
from rules.models import DetectionToCarryOut
from service_orders import repo
from service_orders.calendar import WorkingHours, soonest_window, why_not
from service_orders.models import (
    ENGINE,
    PRIORITIES,
    TRANSITIONS,
    Actor,
    Assignment,
    CallOutcomeRecord,
    CallTaskRead,
    Completion,
    OrderDetail,
    OrderOpen,
    OrderRead,
    OrderRow,
    OrderSummary,
    Proposal,
    TechnicianCreate,
    TechnicianRead,
)

log = logging.getLogger("careloop.service_orders")

DUE_SOON = 0.25  # an order is flagged once less than this share of its SLA is left ...
DUE_SOON_AT_MOST = dt.timedelta(hours=4)  # ... or less than this
ESCALATE_EVERY = dt.timedelta(hours=4)  # an overdue order is escalated again after this long
VERIFY_WITHIN = dt.timedelta(hours=24)  # the fault must clear within this after the visit
REOPENED_SLA = dt.timedelta(hours=24)
BOOKING_HORIZON = dt.timedelta(days=365)  # a visit booked further ahead is a typing mistake
CALL_BACK_HORIZON = dt.timedelta(days=30)


def fault_class(order_type: str, skill: str) -> str:
    """What makes two faults of a device "the same": the same kind of work needing the same skill."""
    return f"{order_type}:{skill}"


# ---------------------------------------------------------------- opening


def open_order(conn: Connection, order: OrderOpen, *, actor: Actor, now: dt.datetime) -> OrderRead:
    """Open an order by hand (a hotline call); an open order of the same fault class answers 409 naming it."""
    device = devices_service.get_device(conn, order.device_id)
    order_id = repo.insert_order(conn, order={
        "device_id": device.id, "customer_id": device.owner, "type": order.type,
        "fault_class": fault_class(order.type, order.skill), "priority": order.priority, "reason": order.reason,
        "skill": order.skill, "source": order.source, "explanation": None, "detection_ids": [],
        "action_key": None, "opened_at": now, "sla_due_at": now + dt.timedelta(seconds=order.sla.seconds),
    })
    if order_id is None:
        existing = repo.open_order_of_class(conn, device_id=device.id,
                                            fault_class=fault_class(order.type, order.skill))
        raise Conflict(f"device {device.id} already has open order {existing} for {order.type} needing "
                       f"{order.skill}: GET /service-orders/{existing}")
    _history(conn, order_id, actor, now, "opened", to_status="new", detail={"source": order.source})
    log.info("order %d opened by %s for device %s: %s", order_id, actor.name, device.id, order.reason)
    return get_order(conn, order_id, now=now)


def open_order_for_detection(
    conn: Connection, detection: DetectionToCarryOut, params: dict[str, Any], *, key: str, now: dt.datetime
) -> tuple[OrderRead, bool]:
    """The order a detection's `open_service_order` action asks for, exactly once: found by the action's key on a
    retry, joined when an order of the same fault class is open, else opened. Answers (order, opened)."""
    known = repo.order_by_action(conn, action_key=key)
    if known is not None:
        return get_order(conn, known, now=now), False
    device = devices_service.get_device(conn, detection.device_id)
    order_type, skill = params.get("type", "repair"), params["skill"]
    sla = Duration.parse(params.get("sla", "72h"))
    order_class = fault_class(order_type, skill)
    order_id = repo.insert_order(conn, order={
        "device_id": device.id, "customer_id": device.owner, "type": order_type, "fault_class": order_class,
        "priority": params.get("priority", "normal"), "reason": detection.description or detection.rule_id,
        "skill": skill, "source": "rule", "explanation": detection.explanation,
        "detection_ids": [detection.id], "action_key": key, "opened_at": now,
        "sla_due_at": now + dt.timedelta(seconds=sla.seconds),
    })
    if order_id is not None:
        _history(conn, order_id, ENGINE, now, "opened", to_status="new",
                 detail={"rule": detection.rule_id, "detection_id": detection.id, "action_key": key})
        log.info("order %d opened for device %s by rule %s", order_id, device.id, detection.rule_id)
        return get_order(conn, order_id, now=now), True
    order_id = repo.open_order_of_class(conn, device_id=device.id, fault_class=order_class)
    if order_id is None:  # closed between the two statements: open it again
        return open_order_for_detection(conn, detection, params, key=key, now=now)
    repo.join_order(conn, order_id=order_id, detection_id=detection.id, priority=params.get("priority", "normal"))
    _history(conn, order_id, ENGINE, now, "joined",
             detail={"rule": detection.rule_id, "detection_id": detection.id, "action_key": key,
                     "order_id": order_id})
    log.info("detection %d of device %s joined open order %d", detection.id, device.id, order_id)
    return get_order(conn, order_id, now=now), False


# ---------------------------------------------------------------- reading


def get_order(conn: Connection, order_id: int, *, now: dt.datetime, actor: Actor | None = None) -> OrderDetail:
    order = repo.read_order(conn, order_id=order_id, now=now, due_soon_share=DUE_SOON,
                            due_soon_at_most=DUE_SOON_AT_MOST, technician_id=_technician_scope(actor),
                            ).one(f"no service order {order_id}")
    history = repo.order_history(conn, order_id=order_id)
    return OrderDetail(**order.model_dump(), history=history, allowed_transitions=list(TRANSITIONS[order.status]))


def list_orders(
    conn: Connection, *, now: dt.datetime, actor: Actor | None = None, limit: int = 100, offset: int = 0, **filters: Any
) -> Page[OrderSummary]:
    """Orders, most urgent first; a technician sees only the orders assigned to them."""
    if actor is not None and actor.role == "technician":
        filters["technician_id"] = _technician_scope(actor)
    return repo.list_orders(conn, now=now, due_soon_share=DUE_SOON, due_soon_at_most=DUE_SOON_AT_MOST, limit=limit,
                            offset=offset, **filters)


def _technician_scope(actor: Actor | None) -> int | None:
    if actor is None or actor.role != "technician":
        return None
    return actor.technician_id if actor.technician_id is not None else -1  # a technician token bound to nobody


# ---------------------------------------------------------------- lifecycle


def change_status(
    conn: Connection, order_id: int, status: str, *, actor: Actor, now: dt.datetime, note: str | None = None
) -> OrderDetail:
    """Move an order along an allowed transition; another is a 409 naming the allowed ones."""
    order = _locked(conn, order_id, actor)
    allowed = TRANSITIONS[order.status]
    if status not in allowed:
        raise Conflict(f"order {order_id} is {order.status}; it may go to "
                       f"{', '.join(allowed) if allowed else 'nothing: it is closed'}, not {status}")
    if status == "completed":
        raise Conflict(f"complete order {order_id} with POST /service-orders/{order_id}/complete: "
                       "outcome, parts, cost and rating are recorded with it")
    if status == "assigned" and order.technician_id is None:
        raise Conflict(f"order {order_id} has no technician: assign one with POST /service-orders/{order_id}/assign")
    repo.set_status(conn, order_id=order_id, status=status)
    _history(conn, order_id, actor, now, "status", from_status=order.status, to_status=status,
             detail={"note": note} if note else {})
    return get_order(conn, order_id, now=now)


def _locked(conn: Connection, order_id: int, actor: Actor) -> OrderRow:
    order = repo.lock_order(conn, order_id=order_id)
    if order is None or (actor.role == "technician" and order.technician_id != actor.technician_id):
        raise NotFound(f"no service order {order_id}")
    return order


# ---------------------------------------------------------------- technicians


def create_technician(conn: Connection, technician: TechnicianCreate) -> TechnicianRead:
    technician_id = repo.insert_technician(conn, technician=technician.model_dump())
    return get_technician(conn, technician_id)


def get_technician(conn: Connection, technician_id: int) -> TechnicianRead:
    return repo.list_technicians(conn, technician_id=technician_id, limit=1).one(f"no technician {technician_id}")


def list_technicians(conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any) -> Page[TechnicianRead]:
    return repo.list_technicians(conn, limit=limit, offset=offset, **filters)


def _hours(technician: TechnicianRead) -> WorkingHours:
    return WorkingHours(technician.timezone, technician.work_start, technician.work_end,
                        frozenset(technician.work_days), technician.daily_capacity)


def propose_technicians(conn: Connection, order_id: int, *, now: dt.datetime, limit: int = 5) -> list[Proposal]:
    """The best technicians for an order, each with why: the right skill; the device's region first; then the
    soonest free visit window within their working hours; then the fewest open orders."""
    order = get_order(conn, order_id, now=now)
    candidates = list_technicians(conn, skill=order.skill, active=True, limit=1000).items
    ranked = []
    for technician in candidates:
        # the order's own visit, if it has one, does not make its technician busy for it
        booked = repo.bookings(conn, technician_id=technician.id, since=now, except_order=order_id)
        window = soonest_window(_hours(technician), booked, now)
        same_region = technician.region == order.region
        reason = (
            f"skill {order.skill}; "
            + (f"home region {technician.region}" if same_region
               else f"home region {technician.region}, not the device's {order.region or '(unknown)'}")
            + f"; {technician.open_orders} open order{'s' if technician.open_orders != 1 else ''}; "
            + (f"free from {window[0].astimezone(_hours(technician).zone):%a %d %b %H:%M} ({technician.timezone})"
               if window else "no free window in the next 3 weeks")
        )
        far = dt.datetime.max.replace(tzinfo=dt.UTC)
        ranked.append(((not same_region, window is None, window[0] if window else far, technician.open_orders,
                        technician.id),
                       Proposal(technician_id=technician.id, name=technician.name, region=technician.region,
                                open_orders=technician.open_orders, window_start=window[0] if window else None,
                                window_end=window[1] if window else None, reason=reason)))
    ranked.sort(key=lambda pair: pair[0])
    return [proposal for _key, proposal in ranked[:limit]]


def assign(conn: Connection, order_id: int, assignment: Assignment, *, actor: Actor, now: dt.datetime) -> OrderDetail:
    """Give the order a technician and a visit window that fits their calendar (the soonest when none is given)."""
    order = _locked(conn, order_id, actor)
    if order.status not in ("new", "scheduled", "assigned"):
        raise Conflict(f"order {order_id} is {order.status}: only new, scheduled or assigned orders are assigned")
    technician = get_technician(conn, assignment.technician_id)  # 404 names a technician that does not exist
    if not technician.active:
        raise Conflict(f"technician {technician.id} is not active")
    if order.skill not in technician.skills:
        raise Conflict(f"technician {technician.id} lacks the skill {order.skill} this order needs "
                       f"(has: {', '.join(technician.skills)})")
    repo.lock_technician(conn, technician_id=technician.id)  # two bookings of one calendar take turns
    booked = repo.bookings(conn, technician_id=technician.id, since=now, except_order=order_id)
    hours = _hours(technician)
    if assignment.start is not None and assignment.end is not None:
        if assignment.start > now + BOOKING_HORIZON:
            raise InvalidInput("start", f"must be within {BOOKING_HORIZON.days} days from now")
        problem = why_not(hours, booked, assignment.start, assignment.end)
        if problem is None and assignment.start < now:
            problem = "the window has already begun"
        if problem is not None:
            raise Conflict(f"technician {technician.id} cannot take {assignment.start:%Y-%m-%d %H:%M %Z}: {problem}")
        window = (assignment.start, assignment.end)
    else:
        found = soonest_window(hours, booked, now)
        if found is None:
            raise Conflict(f"technician {technician.id} has no free window in the next 3 weeks")
        window = found
    repo.set_appointment(conn, order_id=order_id, technician_id=technician.id, start=window[0], end=window[1],
                         status="assigned")
    _history(conn, order_id, actor, now, "assigned", from_status=order.status, to_status="assigned",
             detail={"technician_id": technician.id, "technician": technician.name,
                     "window": [window[0].isoformat(), window[1].isoformat()]})
    log.info("order %d assigned to technician %d by %s", order_id, technician.id, actor.name)
    return get_order(conn, order_id, now=now)


# ---------------------------------------------------------------- completion and verification


def complete(conn: Connection, order_id: int, completion: Completion, *, actor: Actor, now: dt.datetime) -> OrderDetail:
    """Record the visit. A paid visit goes into the customer's spend; an order from detections is confirmed by the
    telemetry (its detections clear within a day) or reopened; a maintenance visit resets the usage counters."""
    order = _locked(conn, order_id, actor)
    if order.status != "in_progress":
        raise Conflict(f"order {order_id} is {order.status}; only an order in progress is completed "
                       f"(it may go to {', '.join(TRANSITIONS[order.status]) or 'nothing'})")
    from_telemetry = bool(order.detection_ids)
    repo.complete_order(conn, order_id=order_id, at=now, completion=completion.model_dump(),
                        verify_by=now + VERIFY_WITHIN if from_telemetry else None,
                        verification="pending" if from_telemetry else "not_needed")
    _history(conn, order_id, actor, now, "completed", from_status="in_progress", to_status="completed",
             detail={"outcome": completion.outcome, "cost": str(completion.cost), "rating": completion.rating})
    if completion.paid and completion.cost > 0 and order.customer_id is not None:
        customers_service.record_spend(conn, customer_id=order.customer_id, amount=completion.cost,
                                       source="service_visit", key=f"service_order:{order_id}:{order.reopened}",
                                       at=now)
    if order.type == "maintenance":
        ingest_service.record_service_event(conn, device_id=order.device_id, event_type="maintenance_done",
                                            at=now, number=order_id)
    return get_order(conn, order_id, now=now)


def verify_completions(conn: Connection, *, now: dt.datetime) -> dict[str, int]:
    """Scheduled: completed orders whose detections cleared are confirmed; those still open at verify_by are
    reopened, flagged not fixed."""
    counts = {"fixed": 0, "reopened": 0}
    for order in repo.completions_to_verify(conn):
        cleared = rules_service.detections_cleared(conn, order.detection_ids)
        if all(cleared.get(detection_id) is not None for detection_id in order.detection_ids):
            repo.set_verification(conn, order_id=order.id, verification="fixed")
            _history(conn, order.id, ENGINE, now, "verified", detail={"verification": "fixed"})
            counts["fixed"] += 1
        elif order.verify_by <= now:
            repo.reopen(conn, order_id=order.id, sla_due_at=now + REOPENED_SLA)
            still_open = [d for d in order.detection_ids if cleared.get(d) is None]
            _history(conn, order.id, ENGINE, now, "reopened", from_status="completed", to_status="new",
                     detail={"verification": "not_fixed", "detections_still_open": still_open})
            log.warning("order %d reopened: the fault did not clear after the visit", order.id)
            counts["reopened"] += 1
    return counts


# ---------------------------------------------------------------- SLA


def escalate_overdue(conn: Connection, *, now: dt.datetime) -> int:
    """Scheduled: raise the priority of each overdue open order one step (and again every few hours)."""
    escalated = 0
    for order in repo.overdue_orders(conn, now=now, every=ESCALATE_EVERY):
        priority = PRIORITIES[min(PRIORITIES.index(order.priority) + 1, len(PRIORITIES) - 1)]
        repo.escalate(conn, order_id=order.id, priority=priority, now=now)
        late = now - order.sla_due_at
        _history(conn, order.id, ENGINE, now, "escalated",
                 detail={"from_priority": order.priority, "to_priority": priority,
                         "overdue_by_h": round(late.total_seconds() / 3600, 1)})
        log.warning("order %d overdue by %s: escalated to %s", order.id, late, priority)
        escalated += 1
    return escalated


# ---------------------------------------------------------------- call tasks


def open_call_task(
    conn: Connection, *, device_id: str, reason: str, key: str, order_id: int | None, now: dt.datetime
) -> CallTaskRead:
    """A proactive call for dispatchers, once per key: whom to call, why in the customer's words, a script. It is
    due in the customer's daytime and only with their consent to service calls; without it the task is blocked
    and says why (the order stands)."""
    known = repo.call_task_by_action(conn, action_key=key)
    if known is not None:
        return get_call_task(conn, known)
    device = devices_service.get_device(conn, device_id)
    appliance = device.kind.replace("_", " ")
    customer = customers_service.get_customer(conn, device.owner) if device.owner is not None else None
    if customer is None:
        status, due_at, policy = "blocked", now, "the device has no registered owner to call"
    elif not customer.phone:
        status, due_at, policy = "blocked", now, f"{customer.name} has no phone number on record"
    else:
        decision = customers_service.decide_contact(conn, customer_id=customer.id, purpose="service",
                                                    channel="phone", subject=f"call_task:{key}", now=now)
        status = "open" if decision.allowed else "blocked"
        due_at = decision.not_before or now
        policy = decision.reason + ("" if decision.allowed else "; the order stands")
    spoken = _customer_reason(reason, appliance)
    script = _script(customer.name if customer else None, appliance, device.model, spoken, order_id)
    task_id = repo.insert_call_task(conn, task={
        "order_id": order_id, "customer_id": customer.id if customer else None, "device_id": device.id,
        "phone": customer.phone if customer else None, "reason": spoken, "script": script, "status": status,
        "due_at": due_at, "policy_reason": policy, "action_key": key,
    })
    if task_id is None:
        task_id = repo.call_task_by_action(conn, action_key=key)
    log.info("call task %s for device %s: %s (%s)", task_id, device.id, status, policy)
    return get_call_task(conn, task_id)


def _customer_reason(reason: str, appliance: str) -> str:
    """The reason as said to the customer: it names the appliance."""
    text = reason.strip().rstrip(".")
    if appliance not in text.lower():
        text = f"your {appliance}: {text[:1].lower()}{text[1:]}"
    return text[:1].upper() + text[1:] + "."


def _script(name: str | None, appliance: str, model: str, reason: str, order_id: int | None) -> str:
    greeting = f"Hello {name}," if name else "Hello,"
    offer = (f" We have opened service order {order_id} and can send a technician: which day and time suit you?"
             if order_id is not None else " Would you like us to send a technician?")
    return (f"{greeting} this is CareLoop service calling about your {appliance} ({model}). {reason}{offer} "
            "Has it been behaving differently lately? Thank you for your time.")


def get_call_task(conn: Connection, task_id: int, *, actor: Actor | None = None) -> CallTaskRead:
    page = repo.list_call_tasks(conn, task_id=task_id, limit=1, technician_id=_technician_scope(actor))
    return page.one(f"no call task {task_id}")


def list_call_tasks(
    conn: Connection, *, actor: Actor | None = None, limit: int = 100, offset: int = 0, **filters: Any
) -> Page[CallTaskRead]:
    if actor is not None and actor.role == "technician":
        filters["technician_id"] = _technician_scope(actor)
    return repo.list_call_tasks(conn, limit=limit, offset=offset, **filters)


def record_call_outcome(
    conn: Connection, task_id: int, record: CallOutcomeRecord, *, actor: Actor, now: dt.datetime
) -> CallTaskRead:
    """A call made: reached and declined close the task; no answer and call back keep it open until retry_at."""
    task = get_call_task(conn, task_id)
    if task.status == "done":
        raise Conflict(f"call task {task_id} is done ({task.outcome})")
    if task.status == "blocked":
        raise Conflict(f"call task {task_id} is blocked: {task.policy_reason}")
    retry_at = record.retry_at
    if record.outcome == "no_answer" and retry_at is None:
        retry_at = now + dt.timedelta(hours=2)
    if retry_at is not None and retry_at < now:
        raise InvalidInput("retry_at", "must not be in the past")
    if retry_at is not None and retry_at > now + CALL_BACK_HORIZON:
        raise InvalidInput("retry_at", f"must be within {CALL_BACK_HORIZON.days} days from now")
    status = "open" if record.outcome in ("no_answer", "call_back") else "done"
    repo.record_call_outcome(conn, task_id=task_id, outcome=record.outcome, status=status,
                             retry_at=retry_at if status == "open" else None, notes=record.notes)
    if task.order_id is not None:
        _history(conn, task.order_id, actor, now, "call",
                 detail={"call_task_id": task_id, "outcome": record.outcome,
                         "retry_at": retry_at.isoformat() if retry_at else None})
    return get_call_task(conn, task_id)


# ----------------------------------------------------------------


def _history(
    conn: Connection, order_id: int, actor: Actor, now: dt.datetime, change: str, *, from_status: str | None = None,
    to_status: str | None = None, detail: dict[str, Any] | None = None,
) -> None:
    repo.record_history(conn, order_id=order_id, at=now, actor=actor.name, actor_role=actor.role, change=change,
                        from_status=from_status, to_status=to_status, detail=detail)

