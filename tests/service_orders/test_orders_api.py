"""Service orders over HTTP: dispatchers work the queue, a technician sees only their own orders."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from psycopg2.extras import Json

from careloop.app import create_app
from careloop.auth import create_token
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url))


def token(database, role: str, name: str, technician_id: int | None = None) -> dict:
    with database.transaction() as conn:
        return {"Authorization": f"Bearer {create_token(conn, role=role, name=name, technician_id=technician_id)}"}


def technician(client: TestClient, dispatcher: dict, name: str, region: str = "east") -> int:
    answer = client.post("/technicians", headers=dispatcher, json={
        "name": name, "skills": ["motor"], "region": region, "timezone": "UTC", "work_days": [1, 2, 3, 4, 5, 6, 7],
        "work_start": "00:00", "work_end": "23:59", "daily_capacity": 8,
    })
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def test_a_dispatcher_opens_proposes_assigns_and_moves_an_order_with_history_by_person(client, conn, database):
    owner = make_customer(conn, name="Chen Jie", phone="+86 139 5555 6666")
    device = make_device(conn, owner=owner.id, region="east")
    conn.commit()
    dispatcher = token(database, "dispatcher", "Zhang Wei")
    near, far = technician(client, dispatcher, "Liu Yang", "east"), technician(client, dispatcher, "Ma Li", "west")

    opened = client.post("/service-orders", headers=dispatcher,
                         json={"device_id": device.id, "skill": "motor", "reason": "owner reports a loud fan"})
    assert opened.status_code == 201, opened.text
    order = opened.json()
    assert (order["customer_id"], order["status"], order["sla_state"]) == (owner.id, "new", "ok")
    again = client.post("/service-orders", headers=dispatcher,
                        json={"device_id": device.id, "skill": "motor", "reason": "same again"})
    assert again.status_code == 409 and f"open order {order['id']}" in again.json()["detail"]

    proposals = client.get(f"/service-orders/{order['id']}/proposals", headers=dispatcher).json()
    assert [p["technician_id"] for p in proposals] == [near, far]
    assert "home region east" in proposals[0]["reason"] and "not the device's east" in proposals[1]["reason"]

    wrong = client.post(f"/service-orders/{order['id']}/status", headers=dispatcher, json={"status": "completed"})
    assert wrong.status_code == 409 and "scheduled, assigned, cancelled" in wrong.json()["detail"]
    assigned = client.post(f"/service-orders/{order['id']}/assign", headers=dispatcher, json={"technician_id": near})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["status"] == "assigned" and assigned.json()["appointment_start"] is not None
    history = client.get(f"/service-orders/{order['id']}", headers=dispatcher).json()["history"]
    assert [(h["change"], h["actor"], h["actor_role"]) for h in history] == [
        ("opened", "Zhang Wei", "dispatcher"), ("assigned", "Zhang Wei", "dispatcher")]

    # a window that collides with the booked one is refused, saying why
    start = dt.datetime.fromisoformat(assigned.json()["appointment_start"])
    clash = client.post(f"/service-orders/{order['id']}/assign", headers=dispatcher, json={
        "technician_id": near, "start": start.isoformat(), "end": (start + dt.timedelta(hours=2)).isoformat()})
    assert clash.status_code == 200  # the order's own window does not collide with itself
    other = client.post("/service-orders", headers=dispatcher,
                        json={"device_id": device.id, "skill": "motor", "type": "inspection", "reason": "check"})
    refused = client.post(f"/service-orders/{other.json()['id']}/assign", headers=dispatcher, json={
        "technician_id": near, "start": start.isoformat(), "end": (start + dt.timedelta(hours=2)).isoformat()})
    assert refused.status_code == 409 and "overlaps" in refused.json()["detail"]


def test_a_list_carries_every_order_whole_but_why_it_opened_which_its_own_page_adds(client, conn, database):
    owner = make_customer(conn, name="Wang Fang", phone="+86 137 1234 5678")
    device = make_device(conn, owner=owner.id, region="north")
    conn.commit()
    dispatcher = token(database, "dispatcher", "Zhang Wei")
    opened = client.post("/service-orders", headers=dispatcher,
                         json={"device_id": device.id, "skill": "motor", "reason": "fan stalls"}).json()
    why = {"rule": "hood-stall", "reason": "fan current 0.0 A for 5 min", "condition": {"met": True, "n": 2**70}}
    with database.transaction() as writer, writer.cursor() as cursor:
        cursor.execute("UPDATE service_orders SET explanation = %s WHERE id = %s", (Json(why), opened["id"]))

    listed = client.get("/service-orders", headers=dispatcher, params={"status": "open"}).json()
    [item] = [o for o in listed["items"] if o["id"] == opened["id"]]
    detail = client.get(f"/service-orders/{opened['id']}", headers=dispatcher).json()
    assert "explanation" not in item
    assert detail["explanation"] == why
    assert set(detail) - set(item) == {"explanation", "history", "allowed_transitions"}
    assert {key: detail[key] for key in item if key != "time_left_s"} == {
        key: value for key, value in item.items() if key != "time_left_s"}
    assert (item["region"], item["customer_name"], item["customer_phone"], item["sla_state"]) == (
        "north", "Wang Fang", "+86 137 1234 5678", "ok")


def test_a_technician_sees_and_moves_only_their_own_orders_and_their_customers(client, conn, database):
    first_owner, second_owner = make_customer(conn, name="Owner One"), make_customer(conn, name="Owner Two")
    first_device = make_device(conn, owner=first_owner.id)
    second_device = make_device(conn, owner=second_owner.id)
    conn.commit()
    dispatcher = token(database, "dispatcher", "Zhang Wei")
    mine, theirs = technician(client, dispatcher, "Liu Yang"), technician(client, dispatcher, "Ma Li")
    orders = []
    for device, assignee in ((first_device, mine), (second_device, theirs)):
        order = client.post("/service-orders", headers=dispatcher,
                            json={"device_id": device.id, "skill": "motor", "reason": "noise"}).json()
        client.post(f"/service-orders/{order['id']}/assign", headers=dispatcher, json={"technician_id": assignee})
        orders.append(order["id"])
    liu = token(database, "technician", "Liu Yang", technician_id=mine)

    listed = client.get("/service-orders", headers=liu).json()
    assert [o["id"] for o in listed["items"]] == [orders[0]] and listed["total"] == 1
    assert listed["items"][0]["customer_name"] == "Owner One"
    assert client.get(f"/service-orders/{orders[1]}", headers=liu).status_code == 404
    assert client.post(f"/service-orders/{orders[1]}/status", headers=liu,
                       json={"status": "in_progress"}).status_code == 404
    moved = client.post(f"/service-orders/{orders[0]}/status", headers=liu, json={"status": "in_progress"})
    assert moved.status_code == 200 and moved.json()["history"][-1]["actor"] == "Liu Yang"
    assert client.post(f"/service-orders/{orders[0]}/assign", headers=liu,
                       json={"technician_id": mine}).status_code == 403
    assert client.get("/technicians", headers=liu).status_code == 403
    assert client.get(f"/technicians/{theirs}", headers=liu).status_code == 404
    done = client.post(f"/service-orders/{orders[0]}/complete", headers=liu,
                       json={"outcome": "fan replaced", "parts": ["fan motor"], "cost": "45.00", "paid": True,
                             "rating": 5})
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert done.json()["verification"] == "not_needed"  # opened by hand: nothing in telemetry to confirm


def test_call_task_outcomes_keep_a_task_open_until_the_customer_is_reached(client, conn, database):
    from service_orders import service

    owner = make_customer(conn, timezone="UTC")
    device = make_device(conn, owner=owner.id)
    noon = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    task = service.open_call_task(conn, device_id=device.id, reason="your range hood's fan has stopped turning",
                                  key="test:call", order_id=None, now=noon)
    conn.commit()
    dispatcher = token(database, "dispatcher", "Zhang Wei")
    assert task.status == "open" and task.due_at == noon
    listed = client.get("/call-tasks", headers=dispatcher, params={"customer_id": owner.id}).json()
    assert [t["id"] for t in listed["items"]] == [task.id]
    no_answer = client.post(f"/call-tasks/{task.id}/outcome", headers=dispatcher, json={"outcome": "no_answer"})
    assert no_answer.status_code == 200 and no_answer.json()["status"] == "open"
    assert no_answer.json()["attempts"] == 1
    needs_time = client.post(f"/call-tasks/{task.id}/outcome", headers=dispatcher, json={"outcome": "call_back"})
    assert needs_time.status_code == 422 and "retry_at" in needs_time.text
    reached = client.post(f"/call-tasks/{task.id}/outcome", headers=dispatcher, json={"outcome": "reached"})
    assert reached.json()["status"] == "done"
    assert client.post(f"/call-tasks/{task.id}/outcome", headers=dispatcher,
                       json={"outcome": "reached"}).status_code == 409


def test_a_call_without_consent_is_blocked_and_says_why(conn) -> None:
    from service_orders import service

    owner = make_customer(conn, consents=[{"purpose": "service", "channel": "phone", "granted": False}])
    device = make_device(conn, owner=owner.id)
    task = service.open_call_task(conn, device_id=device.id, reason="fan stopped", key="test:blocked",
                                  order_id=None, now=dt.datetime.now(dt.UTC))
    assert task.status == "blocked" and task.policy_reason == "no consent to service calls; the order stands"
    assert task.reason == "Your range hood: fan stopped."


def test_impossible_orders_windows_and_call_backs_are_refused_naming_the_field(client, conn, database) -> None:
    device = make_device(conn)
    conn.commit()
    dispatcher = token(database, "dispatcher", "Zhang Wei")
    born_overdue = client.post("/service-orders", headers=dispatcher,
                               json={"device_id": device.id, "skill": "motor", "reason": "x", "sla": "0s"})
    assert born_overdue.status_code == 422 and "sla" in born_overdue.text
    no_such_skill = client.post("/technicians", headers=dispatcher,
                                json={"name": "X", "skills": ["astrology"], "region": "east"})
    assert no_such_skill.status_code == 422 and "unknown skill 'astrology'" in no_such_skill.text
    order = client.post("/service-orders", headers=dispatcher,
                        json={"device_id": device.id, "skill": "motor", "reason": "noise"}).json()
    fitter = technician(client, dispatcher, "Liu Yang")
    far = client.post(f"/service-orders/{order['id']}/assign", headers=dispatcher, json={
        "technician_id": fitter, "start": "9999-12-31T10:00:00Z", "end": "9999-12-31T12:00:00Z"})
    assert far.status_code == 422 and "start" in far.text
