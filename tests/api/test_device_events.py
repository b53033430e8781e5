"""GET /devices/{id}/events against the real database: what a device reported happening, in a range and of some
types, newest first."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.mqtt import events_topic
from tests.factories import make_device
from tests.helpers import event, inbound, store

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


def test_a_devices_events_in_a_range_and_of_some_types_newest_first(client, database, conn) -> None:
    hood, other = make_device(conn), make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    happened = [(now - dt.timedelta(days=3), "maintenance_done", None), (now - dt.timedelta(hours=5), "fault", "E21"),
                (now - dt.timedelta(hours=3), "fault_cleared", "E21"), (now - dt.timedelta(hours=1), "power_off", None)]
    store(database, [inbound(events_topic(hood.id), event(seq, at=at, kind=kind, code=code), now)
                     for seq, (at, kind, code) in enumerate(happened, start=1)]
          + [inbound(events_topic(other.id), event(1, at=now - dt.timedelta(hours=2), kind="fault", code="E31"), now)],
          now=now)

    last_day = client.get(f"/devices/{hood.id}/events", headers=ADMIN)
    assert last_day.status_code == 200, last_day.text
    assert [(item["type"], item["code"]) for item in last_day.json()["items"]] == [
        ("power_off", None), ("fault_cleared", "E21"), ("fault", "E21")]

    week = client.get(f"/devices/{hood.id}/events", headers=ADMIN, params={
        "since": (now - dt.timedelta(days=7)).isoformat(), "type": ["fault", "maintenance_done"]}).json()
    assert [item["type"] for item in week["items"]] == ["fault", "maintenance_done"]
    assert week["total"] == 2


def test_an_unknown_device_is_a_404_and_a_bad_type_a_422(client) -> None:
    assert client.get("/devices/NO-SUCH-1/events", headers=ADMIN).status_code == 404
    answer = client.get("/devices/NO-SUCH-1/events", headers=ADMIN, params={"type": "Fault!"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "type", 0]
