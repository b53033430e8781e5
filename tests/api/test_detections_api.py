"""Detections and backtests over HTTP: listed with their explanation, acknowledged, replayed over history."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_value
from careloop.mqtt import events_topic
from rules.engine import Engine
from tests.factories import make_device
from tests.helpers import event, inbound, store

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
FAN_STALL = {
    "id": "hood-stall",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "severity": "critical",
    "cooldown": "1d",
}


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


def headers_for(database, role: str, name: str = "test") -> dict:
    with database.transaction() as conn:
        return {"Authorization": f"Bearer {create_token(conn, role=role, name=name)}"}


def store_events(database, device_id: str, events: list[tuple[dt.datetime, str]]) -> None:
    now = dt.datetime.now(dt.UTC)
    messages = [
        inbound(events_topic(device_id), event(seq, at=at, kind=kind, code="E21"), now)
        for seq, (at, kind) in enumerate(events, start=1)
    ]
    store(database, messages, now=now)


def test_detections_are_listed_explained_and_acknowledged(client, database, conn) -> None:
    assert client.post("/rules", json=FAN_STALL, headers=ADMIN).status_code == 201
    stalled, quiet = make_device(conn), make_device(conn)
    conn.commit()
    store_events(database, stalled.id, [(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), "fault")])
    Engine(database).sweep()

    listed = client.get("/detections", params={"status": "open"}, headers=ADMIN).json()
    assert listed["total"] == 1
    [detection] = listed["items"]
    assert (detection["device_id"], detection["rule_id"], detection["severity"]) == (
        stalled.id,
        "hood-stall",
        "critical",
    )
    assert detection["explanation"]["reason"] == "open fault E21 (fan motor stall)"
    assert detection["actions"][0]["status"] == "pending"
    assert client.get("/detections", params={"device_id": quiet.id}, headers=ADMIN).json()["total"] == 0

    marketer, dispatcher = headers_for(database, "marketer"), headers_for(database, "dispatcher", "Zhang Wei")
    assert client.post(f"/detections/{detection['id']}/acknowledge", headers=marketer).status_code == 403
    acknowledged = client.post(f"/detections/{detection['id']}/acknowledge", headers=dispatcher)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged" and acknowledged.json()["acknowledged_by"] == "Zhang Wei"
    assert client.get("/detections", params={"status": "acknowledged"}, headers=ADMIN).json()["total"] == 1
    # Acknowledged is still open for the engine: the next sweep opens no second one.
    Engine(database).sweep()
    assert client.get("/detections", headers=ADMIN).json()["total"] == 1

    jobs = {job["job"]: job for job in client.get("/engine/jobs", headers=ADMIN).json()["items"]}
    assert jobs["sweep"]["summary"]["rules"] == 1 and jobs["sweep"]["summary"]["devices"] == 2
    assert client.post("/detections/999999/acknowledge", headers=ADMIN).status_code == 404
    wrong_status = client.get("/detections", params={"status": "closed"}, headers=ADMIN)
    assert wrong_status.status_code == 422 and "status" in wrong_status.text


def test_a_backtest_replays_stored_history_and_opens_nothing(client, database, conn) -> None:
    assert client.post("/rules", json=FAN_STALL, headers=ADMIN).status_code == 201
    device = make_device(conn)
    conn.commit()
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    store_events(
        database,
        device.id,
        [
            (hour - dt.timedelta(hours=50, minutes=30), "fault"),
            (hour - dt.timedelta(hours=45, minutes=30), "fault_cleared"),
            (hour - dt.timedelta(hours=2, minutes=30), "fault"),
        ],
    )
    body = {"start": (hour - dt.timedelta(hours=60)).isoformat(), "end": hour.isoformat(), "step": "1h"}
    answer = client.post("/rules/hood-stall/backtest", json=body, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["opened"], result["cleared"], result["devices"]) == (2, 1, 1)
    moments = [(change["change"], change["at"]) for change in result["transitions"]]
    iso = "%Y-%m-%dT%H:%M:%SZ"
    assert sorted(moments) == sorted(
        [
            ("opened", (hour - dt.timedelta(hours=50)).strftime(iso)),
            ("cleared", (hour - dt.timedelta(hours=45)).strftime(iso)),
            ("opened", (hour - dt.timedelta(hours=2)).strftime(iso)),
        ]
    )
    assert fetch_value(conn, "SELECT count(*) FROM detections") == 0

    backwards = client.post("/rules/hood-stall/backtest", json={**body, "end": body["start"]}, headers=ADMIN)
    assert backwards.status_code == 422 and "end must be after start" in backwards.text
    too_fine = client.post("/rules/hood-stall/backtest", json={**body, "step": "1s"}, headers=ADMIN)
    assert too_fine.status_code == 422 and "step" in too_fine.text
    assert client.post("/rules/no-such-rule/backtest", json=body, headers=ADMIN).status_code == 404
