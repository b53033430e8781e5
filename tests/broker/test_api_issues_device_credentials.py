"""The API issues a device its broker credentials when it is registered and rotates them: against a real Mosquitto
with the shipped configuration."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from careloop.app import create_app
from tests.broker.conftest import ShippedBroker, connect

ADMIN = "admin-token-for-tests-0123456789"


def test_api_issues_and_rotates(database, mqtt_url, shipped_broker: ShippedBroker) -> None:
    app = create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url, broker_accounts=shipped_broker.accounts)
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    device_id = f"RH-W{uuid.uuid4().hex[:6]}"
    answer = client.post("/devices", json={"id": device_id, "model": "RH-900"}, headers=headers)
    assert answer.status_code == 201, answer.text
    issued = answer.json()["credentials"]
    assert issued["username"] == device_id and issued["password"]
    assert not connect(shipped_broker.port, username=device_id, password=issued["password"],
                       client_id=device_id).refused
    rotated = client.post(f"/devices/{device_id}/credentials", headers=headers)
    assert rotated.status_code == 201, rotated.text
    assert connect(shipped_broker.port, username=device_id, password=issued["password"], client_id=device_id).refused
    assert client.post("/devices/RH-NOPE-1/credentials", headers=headers).status_code == 404
    assert client.get(f"/devices/{device_id}", headers=headers).json()["id"] == device_id
    # the broker away: 503 and nothing registered
    down = TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url,
                                 broker_accounts=type(shipped_broker.accounts)("mqtt://a:b@127.0.0.1:1")))
    other = f"RH-W{uuid.uuid4().hex[:6]}"
    refused = down.post("/devices", json={"id": other, "model": "RH-900"}, headers=headers)
    assert refused.status_code == 503, refused.text
    assert client.get(f"/devices/{other}", headers=headers).status_code == 404
    plain = TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url))
    assert plain.post(f"/devices/{device_id}/credentials", headers=headers).status_code == 503


def test_health_says_the_broker_refused_the_apis_login(database, shipped_broker: ShippedBroker) -> None:
    good = TestClient(create_app(database, admin_token=ADMIN, mqtt_url=shipped_broker.service_url))
    assert good.get("/health").json()["broker"] == {"ok": True, "detail": "connected"}
    wrong = f"mqtt://careloop:not-the-password@127.0.0.1:{shipped_broker.port}"
    refused = TestClient(create_app(database, admin_token=ADMIN, mqtt_url=wrong)).get("/health").json()
    assert refused["status"] == "degraded" and refused["broker"]["ok"] is False
    assert "refused" in refused["broker"]["detail"]
