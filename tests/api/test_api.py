"""The HTTP API against the real database."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from ingest.service import InboundMessage, ingest_batch
from tests.factories import make_device

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url))


@pytest.fixture
def admin() -> dict:
    return {"Authorization": f"Bearer {ADMIN}"}


def token_for(database, role: str) -> dict:
    with database.transaction() as conn:
        return {"Authorization": f"Bearer {create_token(conn, role=role, name='test')}"}


CUSTOMER = {
    "name": "Wang Fang", "phone": "+86 139 1111 2222", "email": "wang.fang@example.com", "birthday": "1980-05-17",
    "timezone": "Asia/Shanghai", "region": "east",
    "consents": [{"purpose": "service", "channel": "phone", "granted": True},
                 {"purpose": "marketing", "channel": "email", "granted": False}],
}


def test_health_reports_database_and_broker_without_a_token(client) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.json()["database"]["ok"] is True
    assert answer.json()["broker"]["ok"] is True


def test_requests_without_or_with_a_wrong_token_are_refused(client) -> None:
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer nope-nope"}).status_code == 401


def test_roles_limit_writes(client, database) -> None:
    technician = token_for(database, "technician")
    assert client.get("/models", headers=technician).status_code == 200
    refused = client.post("/customers", json=CUSTOMER, headers=technician)
    assert refused.status_code == 403 and "technician" in refused.json()["detail"]
    assert client.post("/customers", json=CUSTOMER, headers=token_for(database, "marketer")).status_code == 403
    assert client.post("/customers", json=CUSTOMER, headers=token_for(database, "dispatcher")).status_code == 201


def test_models_list_every_kind_with_metrics(client, admin) -> None:
    body = client.get("/models", headers=admin).json()
    kinds = {model["kind"] for model in body["items"]}
    assert {"range_hood", "oven", "dishwasher", "water_heater", "air_conditioner"} <= kinds
    hood = next(model for model in body["items"] if model["code"] == "RH-900")
    assert hood["metrics"]["fan_current_a"]["unit"] == "A"
    assert body["total"] == len(body["items"])


def test_customer_and_device_round_trip_into_the_360_view(client, admin) -> None:
    created = client.post("/customers", json=CUSTOMER, headers=admin)
    assert created.status_code == 201
    customer_id = created.json()["id"]
    device = {"id": "RH-000123", "model": "RH-900", "owner": customer_id, "purchased_on": "2020-03-01",
              "region": "east"}
    assert client.post("/devices", json=device, headers=admin).status_code == 201
    assert client.post("/devices", json=device, headers=admin).status_code == 409
    view = client.get(f"/customers/{customer_id}/360", headers=admin).json()
    assert view["customer"]["name"] == "Wang Fang"
    assert [d["id"] for d in view["devices"]] == ["RH-000123"]
    assert {"purpose": "marketing", "channel": "email", "granted": False} in view["consents"]
    listed = client.get("/devices", params={"owner": customer_id}, headers=admin).json()
    assert listed["total"] == 1 and listed["items"][0]["kind"] == "range_hood"


@pytest.mark.parametrize(
    ("path", "document", "field"),
    [
        ("/devices", {"id": "RH-1", "model": "NOPE"}, "model"),
        ("/devices", {"id": "bad id!", "model": "RH-900"}, "id"),
        ("/devices", {"id": "RH-2", "model": "RH-900", "owner": 999999}, "owner"),
        ("/customers", {**CUSTOMER, "timezone": "Mars/Olympus"}, "timezone"),
        ("/customers", {**CUSTOMER, "email": "not-an-email"}, "email"),
        ("/customers", {**CUSTOMER, "consents": [{"purpose": "spam", "channel": "sms", "granted": True}]}, "purpose"),
    ],
)
def test_invalid_documents_answer_422_naming_the_field(client, admin, path, document, field) -> None:
    answer = client.post(path, json=document, headers=admin)
    assert answer.status_code == 422
    assert field in str(answer.json()["detail"])


def test_unknown_ids_answer_404(client, admin) -> None:
    assert client.get("/devices/NOPE-1", headers=admin).status_code == 404
    assert client.get("/customers/424242/360", headers=admin).status_code == 404
    assert client.get("/customers/99999999999999999999", headers=admin).status_code == 422


def test_telemetry_raw_and_bucketed(client, admin, conn) -> None:
    device = make_device(conn, id="RH-000777")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    messages = [
        InboundMessage(
            f"careloop/v1/devices/{device.id}/telemetry",
            json.dumps({"seq": seq, "ts": (now - dt.timedelta(minutes=10 * seq)).isoformat(),
                        "metrics": {"fan_current_a": 0.5 + seq / 10, "run_hours": 100 - seq}}).encode(),
            now,
        )
        for seq in range(1, 7)
    ]
    ingest_batch(conn, messages)
    conn.commit()
    raw = client.get(f"/devices/{device.id}/telemetry", params={"metric": "fan_current_a"}, headers=admin).json()
    assert len(raw["items"]) == 6 and {item["metric"] for item in raw["items"]} == {"fan_current_a"}
    bucketed = client.get(f"/devices/{device.id}/telemetry", params={"bucket": "1d"}, headers=admin).json()
    by_metric = {item["metric"]: item for item in bucketed["items"]}
    assert set(by_metric) == {"fan_current_a", "run_hours"}
    assert sum(item["metric"] == "fan_current_a" for item in bucketed["items"]) in (1, 2)  # may span midnight
    assert by_metric["run_hours"]["bucket"] == "1d"
    assert client.get(f"/devices/{device.id}/telemetry", params={"bucket": "5x"}, headers=admin).status_code == 422
    wrong_metric = client.get(f"/devices/{device.id}/telemetry", params={"metric": "water_temp_c"}, headers=admin)
    assert wrong_metric.status_code == 422 and "metric" in wrong_metric.json()["detail"]
    summary = client.get("/fleet/summary", headers=admin).json()
    assert summary["devices"] == 1 and summary["readings_24h"] == 12
    # The device's latest values are its newest readings (seq 1, ten minutes ago) ...
    newest = {"fan_current_a": 0.6, "run_hours": 99}
    assert client.get(f"/devices/{device.id}", headers=admin).json()["latest"] == newest
    late = InboundMessage(
        f"careloop/v1/devices/{device.id}/telemetry",
        json.dumps({"seq": 7, "ts": (now - dt.timedelta(hours=5)).isoformat(), "metrics": {"run_hours": 50}}).encode(),
        now,
    )
    ingest_batch(conn, [late])
    conn.commit()
    # ... and a late, older reading does not replace them.
    assert client.get(f"/devices/{device.id}", headers=admin).json()["latest"] == newest
