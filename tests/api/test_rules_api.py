"""Rules over HTTP: validation with a message per mistake, versions kept, the built-in catalog loaded."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from rules.builtin import load_builtin_rules
from rules.service import load_builtin_catalog

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
GREASE_YAML = """
id: hood-grease-cleaning
description: Range hood grease filter due for cleaning
applies_to: {kind: range_hood}
when:
  usage: {metric: run_hours, since: maintenance_done, at_least: 180}
then:
  - open_service_order: {type: maintenance, priority: normal, sla: 72h, skill: cleaning}
  - call_customer: {reason: "grease filter due for cleaning"}
severity: warning
cooldown: 30d
"""


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


def test_a_yaml_rule_is_stored_and_edits_keep_every_version(client) -> None:
    created = client.post("/rules", content=GREASE_YAML, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    document = created.json()["document"]
    again = client.post("/rules", json=document, headers=ADMIN)
    assert again.status_code == 409
    disabled = client.put("/rules/hood-grease-cleaning", json={**document, "enabled": False}, headers=ADMIN)
    assert disabled.status_code == 200
    body = client.get("/rules/hood-grease-cleaning", headers=ADMIN).json()
    assert body["version"] == 2 and body["enabled"] is False
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert client.get("/rules", params={"enabled": "true"}, headers=ADMIN).json()["total"] == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"when": {"threshold": {"metric": "water_temp_c", "above": 1}}}, ["water_temp_c"]),
        ({"cooldown": "5x"}, ["cooldown", "5x"]),
        ({"when": {"threshold": {"metric": "fan_current_a", "for": "10m"}}}, ["above", "below"]),
    ],
)
def test_each_mistake_in_a_rule_is_a_422_naming_it(client, change, words) -> None:
    document = {"id": "bad-rule", "applies_to": {"kind": "range_hood"}, "severity": "warning",
                "when": {"fault": {"codes": ["E21"]}}, "then": [], **change}
    answer = client.post("/rules", json=document, headers=ADMIN)
    assert answer.status_code == 422
    text = str(answer.json()["detail"])
    assert all(word in text for word in words), text


def test_invalid_json_or_yaml_is_a_422(client) -> None:
    answer = client.post("/rules", content=b"{nope", headers={**ADMIN, "Content-Type": "application/json"})
    assert answer.status_code == 422


def test_the_builtin_catalog_loads_once_and_covers_every_kind(conn) -> None:
    expected = len(load_builtin_rules())
    assert load_builtin_catalog(conn) == expected
    assert load_builtin_catalog(conn) == 0  # idempotent: nothing changed
    rows = conn.cursor()
    rows.execute("SELECT DISTINCT document -> 'applies_to' ->> 'kind' FROM rules")
    kinds = {row[0] for row in rows.fetchall()}
    assert {"range_hood", "oven", "dishwasher", "water_heater", "air_conditioner"} <= kinds


def test_rules_and_their_versions_answer_who_wrote_them(client, database) -> None:
    with database.transaction() as conn:
        dispatcher = {"Authorization": f"Bearer {create_token(conn, role='dispatcher', name='wang.dispatch')}"}
    created = client.post("/rules", content=GREASE_YAML, headers={**ADMIN, "Content-Type": "application/yaml"})
    assert created.status_code == 201 and created.json()["changed_by"] == "admin"
    edited = client.put("/rules/hood-grease-cleaning", json={**created.json()["document"], "enabled": False},
                        headers=dispatcher)
    assert edited.status_code == 200 and edited.json()["changed_by"] == "wang.dispatch"
    rule = client.get("/rules/hood-grease-cleaning", headers=ADMIN).json()
    assert rule["changed_by"] == "wang.dispatch"
    assert [(v["version"], v["changed_by"]) for v in rule["versions"]] == [(2, "wang.dispatch"), (1, "admin")]
    listed = {r["id"]: r["changed_by"] for r in client.get("/rules", headers=ADMIN).json()["items"]}
    assert listed["hood-grease-cleaning"] == "wang.dispatch"
    # what no person wrote (the built-in catalog) says so with null
    with database.transaction() as conn:
        load_builtin_catalog(conn)
    builtin = client.get("/rules", headers=ADMIN).json()["items"]
    assert any(r["builtin"] and r["changed_by"] is None for r in builtin)
