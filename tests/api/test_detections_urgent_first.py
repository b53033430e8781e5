"""GET /detections?severity=&order=urgent against the real database: one request answers the most urgent first,
and the older parameters answer as before."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from rules import repo
from rules import service as rules_service
from rules.models import DetectionToOpen
from tests.factories import make_device

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


@pytest.fixture
def found(conn) -> dict[str, int]:
    """A critical fault opened 3 hours ago under 2 warnings and 5 reminders opened since; ids by name."""
    now = dt.datetime.now(dt.UTC)
    hood = make_device(conn)
    rows = [("stall", "critical", 180)] + [(f"warn-{n}", "warning", 100 - n) for n in range(2)] + [
        (f"remind-{n}", "info", 60 - n) for n in range(5)]
    for name, severity, _minutes in rows:
        rules_service.create_rule(conn, {"id": f"rule-{name}", "severity": severity,
                                         "applies_to": {"kind": "range_hood"}, "when": {"fault": {"codes": ["E21"]}}})
    changes = repo.open_detections_rows(conn, [
        DetectionToOpen(f"rule-{name}", 1, hood.id, severity, now - dt.timedelta(minutes=minutes), f"key-{name}",
                        {"reason": name}, [])
        for name, severity, minutes in rows
    ])
    conn.commit()
    return {change.rule_id.removeprefix("rule-"): change.id for change in changes}


def ids(answer) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def test_urgent_first_puts_the_old_fault_before_newer_warnings_and_reminders(client, found) -> None:
    first_three = ids(client.get("/detections", params={"order": "urgent", "limit": 3}, headers=ADMIN))
    assert first_three == [found["stall"], found["warn-1"], found["warn-0"]]
    # Newest first, as before: the fault is last.
    assert ids(client.get("/detections", headers=ADMIN))[-1] == found["stall"]


def test_severity_filters_and_counts_exactly(client, found) -> None:
    critical = client.get("/detections", params={"severity": "critical", "status": "open", "limit": 1},
                          headers=ADMIN).json()
    assert critical["total"] == 1 and critical["items"][0]["id"] == found["stall"]
    reminders = client.get("/detections", params={"severity": "info"}, headers=ADMIN).json()
    assert reminders["total"] == 5
    assert {item["severity"] for item in reminders["items"]} == {"info"}
    by_rule = client.get("/detections", params={"rule_id": "rule-warn-0", "severity": "warning"},
                         headers=ADMIN).json()
    assert by_rule["total"] == 1


@pytest.mark.parametrize("name, value", [("severity", "urgent"), ("order", "oldest")])
def test_unknown_severity_or_order_is_a_422_naming_the_parameter(client, name, value) -> None:
    answer = client.get("/detections", params={name: value}, headers=ADMIN)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", name]
