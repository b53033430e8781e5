"""From MQTT to a service order and a call task, against the real broker and database: once, for the right
customer, joined on a second fault, escalated when late, reopened when the fault does not clear."""

from __future__ import annotations

import datetime as dt

import pytest

from careloop.db import Database, fetch_all, fetch_value
from careloop.errors import Conflict
from careloop.mqtt import events_topic, telemetry_topic
from rules.engine import Engine, Schedule
from rules.service import create_rule
from service_orders import service
from service_orders.flows import carry_out_detection_actions
from service_orders.jobs import JOBS
from service_orders.models import ENGINE, Actor, Assignment, Completion, OrderOpen, TechnicianCreate
from tests.factories import make_customer, make_device
from tests.helpers import event, inbound, publish_all, reading, store, wait_until

pytestmark = pytest.mark.integration

RARELY = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600)
DISPATCHER = Actor(name="Zhang Wei", role="dispatcher")
FAN_STALL = {
    "id": "hood-stall",
    "description": "Range hood fan motor stalled",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [
        {"open_service_order": {"type": "repair", "priority": "high", "sla": "24h", "skill": "motor"}},
        {"call_customer": {"reason": "your range hood's fan has stopped turning"}},
    ],
    "severity": "critical",
    "cooldown": "0s",
}
CURRENT_HIGH = {
    "id": "hood-current-high",
    "description": "Fan motor drawing too much current",
    "applies_to": {"kind": "range_hood"},
    "when": {"threshold": {"metric": "fan_current_a", "above": 3}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "cooldown": "0s",
}


def count(database: Database, query: str, params: tuple = ()) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, query, params))


def rows(database: Database, query: str, params: tuple = ()) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(conn, query, params)


def test_a_fault_published_twice_gives_one_order_and_one_call_task_for_the_owner(
    conn, database, mqtt_url, run_ingester, run_engine
) -> None:
    owner = make_customer(conn, name="Li Na", phone="+86 138 0000 1111", timezone="UTC")
    other = make_customer(conn, name="Somebody Else")
    device = make_device(conn, owner=owner.id)
    make_device(conn, owner=other.id)
    create_rule(conn, FAN_STALL)
    conn.commit()
    run_ingester()
    run_engine(JOBS)
    run_engine(JOBS)  # a second engine adds nothing
    fault = (events_topic(device.id), event(1, at=dt.datetime.now(dt.UTC), kind="fault", code="E21"))
    publish_all(mqtt_url, [fault, fault])  # redelivered
    wait_until(lambda: count(database, "SELECT count(*) FROM call_tasks") == 1, what="the call task")
    [order] = rows(database, "SELECT * FROM service_orders")
    assert (order["device_id"], order["customer_id"], order["type"], order["priority"]) == (
        device.id, owner.id, "repair", "high")
    assert order["reason"] == "Range hood fan motor stalled" and order["skill"] == "motor"
    assert order["sla_due_at"] - order["opened_at"] == dt.timedelta(hours=24)
    assert order["explanation"]["rule"] == "hood-stall"
    [task] = rows(database, "SELECT * FROM call_tasks")
    assert (task["customer_id"], task["phone"], task["order_id"]) == (owner.id, "+86 138 0000 1111", order["id"])
    assert "range hood" in task["reason"] and task["reason"].startswith("Your range hood's fan has stopped")
    assert "Li Na" in task["script"] and str(order["id"]) in task["script"]
    assert not any(ch.isdigit() for ch in task["reason"])  # no telemetry figures recited

    # An engine restart, and the actions' relay run again, add nothing.
    run_engine(JOBS)
    with database.transaction() as writer:
        assert carry_out_detection_actions(writer, now=dt.datetime.now(dt.UTC))["detections"] == 0
    publish_all(mqtt_url, [fault])
    wait_until(lambda: count(database, "SELECT count(*) FROM events") == 1, what="the event stored once")
    assert count(database, "SELECT count(*) FROM service_orders") == 1
    assert count(database, "SELECT count(*) FROM call_tasks") == 1
    [detection] = rows(database, "SELECT actions FROM detections")
    assert [a["status"] for a in detection["actions"]] == ["done", "done"]
    assert detection["actions"][0]["result"] == {"order_id": order["id"]}


def test_a_second_fault_of_the_same_class_joins_the_open_order(conn, database) -> None:
    owner = make_customer(conn)
    device = make_device(conn, owner=owner.id)
    create_rule(conn, FAN_STALL)
    create_rule(conn, CURRENT_HIGH)
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store(database, [inbound(events_topic(device.id), event(1, at=now, kind="fault", code="E21"), now),
                     inbound(telemetry_topic(device.id), reading(2, at=now, fan_current_a=4.0), now)], now=now)
    Engine(database, schedule=RARELY, jobs=JOBS, clock=lambda: now).sweep()
    [order] = rows(database, "SELECT * FROM service_orders")
    assert len(order["detection_ids"]) == 2 and order["priority"] == "urgent"
    history = [entry["change"] for entry in rows(database, "SELECT change FROM service_order_history ORDER BY id")]
    assert history == ["opened", "joined"]


def test_a_hand_opened_order_for_a_device_with_one_open_is_answered_with_that_one(conn) -> None:
    device = make_device(conn, owner=make_customer(conn).id)
    now = dt.datetime.now(dt.UTC)
    hotline = OrderOpen(device_id=device.id, skill="motor", reason="owner says the fan is loud")
    first = service.open_order(conn, hotline, actor=DISPATCHER, now=now)
    with pytest.raises(Conflict, match=f"open order {first.id}"):
        service.open_order(conn, hotline, actor=DISPATCHER, now=now)
    other_class = service.open_order(conn, hotline.model_copy(update={"skill": "cleaning"}), actor=DISPATCHER,
                                     now=now)
    assert other_class.id != first.id
    assert service.get_order(conn, first.id, now=now).history[0].actor == "Zhang Wei"


def test_a_wrong_transition_is_refused_naming_the_allowed_ones(conn) -> None:
    device = make_device(conn)
    now = dt.datetime.now(dt.UTC)
    order = service.open_order(conn, OrderOpen(device_id=device.id, skill="motor", reason="noise"),
                               actor=DISPATCHER, now=now)
    with pytest.raises(Conflict, match="it may go to scheduled, assigned, cancelled, not in_progress"):
        service.change_status(conn, order.id, "in_progress", actor=DISPATCHER, now=now)
    cancelled = service.change_status(conn, order.id, "cancelled", actor=DISPATCHER, now=now, note="duplicate")
    assert cancelled.status == "cancelled" and cancelled.allowed_transitions == []
    with pytest.raises(Conflict, match="closed"):
        service.change_status(conn, order.id, "new", actor=DISPATCHER, now=now)


def test_the_sla_job_escalates_an_overdue_order_once_per_interval(conn) -> None:
    device = make_device(conn)
    opened = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
    order = service.open_order(conn, OrderOpen(device_id=device.id, skill="motor", reason="noise", sla="2h"),
                               actor=DISPATCHER, now=opened)
    assert service.get_order(conn, order.id, now=opened + dt.timedelta(minutes=100)).sla_state == "due_soon"
    assert service.escalate_overdue(conn, now=opened + dt.timedelta(hours=1)) == 0
    late = opened + dt.timedelta(hours=3)
    assert service.escalate_overdue(conn, now=late) == 1
    assert service.escalate_overdue(conn, now=late + dt.timedelta(minutes=5)) == 0  # not again at once
    escalated = service.get_order(conn, order.id, now=late)
    assert (escalated.priority, escalated.escalations, escalated.sla_state) == ("high", 1, "overdue")
    assert escalated.history[-1].change == "escalated" and escalated.history[-1].actor == "engine"


def test_where_an_order_stands_against_its_sla_at_each_boundary(conn) -> None:
    """Due soon once a quarter of the SLA (at most 4 h) is left, overdue past it; met or missed once closed."""
    opened = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)

    def standing(order_id: int, after: dt.timedelta) -> tuple[str, float | None]:
        order = service.get_order(conn, order_id, now=opened + after)
        listed = service.list_orders(conn, now=opened + after, order_id=order_id).one("listed")
        assert (listed.sla_state, listed.time_left_s) == (order.sla_state, order.time_left_s)
        return order.sla_state, order.time_left_s

    def order(sla: str, at: dt.datetime) -> int:
        fields = OrderOpen(device_id=make_device(conn).id, skill="motor", reason="noise", sla=sla)
        return service.open_order(conn, fields, actor=DISPATCHER, now=at).id

    eight_hours = order("8h", opened)  # due soon in its last 2 h
    hour = dt.timedelta(hours=1)
    assert standing(eight_hours, 6 * hour - dt.timedelta(seconds=1)) == ("ok", 7201.0)
    assert standing(eight_hours, 6 * hour) == ("due_soon", 7200.0)
    assert standing(eight_hours, 8 * hour) == ("due_soon", 0.0)
    assert standing(eight_hours, 8 * hour + dt.timedelta(seconds=1)) == ("overdue", -1.0)
    day = order("24h", opened)  # a quarter is 6 h: due soon in its last 4 h
    assert standing(day, 20 * hour - dt.timedelta(seconds=1))[0] == "ok"
    assert standing(day, 20 * hour)[0] == "due_soon"
    # closed now (the row's update time): within one SLA, past the other
    an_hour_ago = dt.datetime.now(dt.UTC) - hour
    within, late = order("24h", an_hour_ago), order("30m", an_hour_ago)
    for order_id in (within, late):
        service.change_status(conn, order_id, "cancelled", actor=DISPATCHER, now=opened, note="duplicate")
    assert standing(within, dt.timedelta(0)) == ("met", None)
    assert standing(late, dt.timedelta(0)) == ("missed", None)


def _technician(conn, **overrides) -> int:
    fields = {"name": "Wang Jun", "skills": ["motor", "cleaning"], "region": "east", "timezone": "UTC",
              "daily_capacity": 4, "work_days": [1, 2, 3, 4, 5, 6, 7], **overrides}
    return service.create_technician(conn, TechnicianCreate.model_validate(fields)).id


def _visit_after_fault(database, device, technician: int, now: dt.datetime, completion: Completion):
    """A high fan current opens an order, which a technician then visits and completes."""
    store(database, [inbound(telemetry_topic(device.id), reading(1, at=now, fan_current_a=4.0), now)], now=now)
    Engine(database, schedule=RARELY, jobs=JOBS, clock=lambda: now).sweep()
    with database.transaction() as writer:
        [order] = service.list_orders(writer, now=now).items
        service.assign(writer, order.id, Assignment(technician_id=technician), actor=DISPATCHER, now=now)
        service.change_status(writer, order.id, "in_progress", actor=DISPATCHER, now=now)
        return service.complete(writer, order.id, completion, actor=DISPATCHER, now=now)


def test_a_completed_repair_whose_fault_does_not_clear_is_reopened(conn, database) -> None:
    owner = make_customer(conn)
    device = make_device(conn, owner=owner.id)
    create_rule(conn, CURRENT_HIGH)
    technician = _technician(conn)
    conn.commit()
    now = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    done = _visit_after_fault(database, device, technician, now,
                              Completion(outcome="replaced fan", cost=80, paid=True, rating=4))
    assert (done.status, done.verification) == ("completed", "pending")
    with database.transaction() as writer:
        assert service.verify_completions(writer, now=now + dt.timedelta(hours=2)) == {"fixed": 0, "reopened": 0}
        assert service.verify_completions(writer, now=now + dt.timedelta(hours=25)) == {"fixed": 0, "reopened": 1}
        reopened = service.get_order(writer, done.id, now=now)
    assert (reopened.status, reopened.verification, reopened.reopened) == ("new", "not_fixed", 1)
    assert reopened.technician_id is None and reopened.history[-1].change == "reopened"
    # the paid visit counts in the customer's spend, once
    assert count(database, "SELECT sum(amount) FROM spend_ledger WHERE customer_id = %s", (owner.id,)) == 80


def test_a_completed_repair_whose_fault_cleared_is_confirmed(conn, database) -> None:
    device = make_device(conn, owner=make_customer(conn).id)
    create_rule(conn, CURRENT_HIGH)
    technician = _technician(conn)
    conn.commit()
    now = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    later = now + dt.timedelta(hours=3)
    _visit_after_fault(database, device, technician, now, Completion(outcome="cleaned"))
    store(database, [inbound(telemetry_topic(device.id), reading(2, at=later, fan_current_a=0.6), later)], now=later)
    Engine(database, schedule=RARELY, jobs=JOBS, clock=lambda: later).sweep()
    with database.transaction() as writer:
        assert service.verify_completions(writer, now=later) == {"fixed": 1, "reopened": 0}


def test_detections_opened_before_the_relay_existed_are_carried_out_once(conn, database) -> None:
    device = make_device(conn, owner=make_customer(conn).id)
    create_rule(conn, FAN_STALL)
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    store(database, [inbound(events_topic(device.id), event(1, at=now, kind="fault", code="E21"), now)], now=now)
    Engine(database, schedule=RARELY, clock=lambda: now).sweep()  # an engine without the relay, as before
    assert count(database, "SELECT count(*) FROM service_orders") == 0
    with database.transaction() as writer:
        first = carry_out_detection_actions(writer, now=now)
    with database.transaction() as writer:
        second = carry_out_detection_actions(writer, now=now)
    assert (first["orders_opened"], first["call_tasks"], second["detections"]) == (1, 1, 0)
    assert ENGINE.name == "engine"
