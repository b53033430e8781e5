"""POST /rules/backtest against the real database: a rule replayed before it is saved, with the stored rule's
backtest machinery (bounds, per-role share, off the request path), and its mistakes named by field."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_value
from careloop.mqtt import events_topic
from tests.factories import make_device
from tests.helpers import event, inbound, store

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
DRAFT = {
    "id": "hood-stall-draft",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "severity": "critical",
}
HOUR = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
WINDOW = {"start": (HOUR - dt.timedelta(hours=60)).isoformat(), "end": HOUR.isoformat(), "step": "1h"}


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


@pytest.fixture
def stalled_hood(database, conn) -> str:
    """A range hood whose fan stalled 50 h ago, cleared 45 h ago, and stalled again 2 h ago."""
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    happened = [(HOUR - dt.timedelta(hours=50, minutes=30), "fault"),
                (HOUR - dt.timedelta(hours=45, minutes=30), "fault_cleared"),
                (HOUR - dt.timedelta(hours=2, minutes=30), "fault")]
    store(database, [inbound(events_topic(device.id), event(seq, at=at, kind=kind, code="E21"), now)
                     for seq, (at, kind) in enumerate(happened, start=1)], now=now)
    return device.id


def test_a_draft_is_replayed_over_history_and_nothing_is_stored_or_opened(client, conn, stalled_hood) -> None:
    answer = client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["rule_id"], result["version"]) == ("hood-stall-draft", 0)
    assert (result["opened"], result["cleared"], result["devices"]) == (2, 1, 1)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    assert sorted((change["change"], change["at"]) for change in result["transitions"]) == sorted([
        ("opened", (HOUR - dt.timedelta(hours=50)).strftime(iso)),
        ("cleared", (HOUR - dt.timedelta(hours=45)).strftime(iso)),
        ("opened", (HOUR - dt.timedelta(hours=2)).strftime(iso)),
    ])
    assert fetch_value(conn, "SELECT count(*) FROM rules") == 0
    assert fetch_value(conn, "SELECT count(*) FROM detections") == 0


def test_the_same_draft_as_yaml_text_answers_the_same(client, stalled_hood) -> None:
    yaml_text = ("id: hood-stall-draft\napplies_to: {kind: range_hood}\nwhen:\n  fault: {codes: [E21]}\n"
                 "severity: critical\n")
    answer = client.post("/rules/backtest", json={**WINDOW, "document": yaml_text}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["opened"], answer.json()["cleared"]) == (2, 1)


def test_a_drafts_mistakes_are_a_422_naming_each_field_under_document(client) -> None:
    wrong = {**DRAFT, "when": {"threshold": {"metric": "fan_current_a", "above": "high"}}, "cooldown": "5x"}
    answer = client.post("/rules/backtest", json={**WINDOW, "document": wrong}, headers=ADMIN)
    assert answer.status_code == 422
    places = {tuple(problem["loc"]) for problem in answer.json()["detail"]}
    assert ("body", "document", "when", "threshold", "above") in places
    assert ("body", "document", "cooldown") in places


def test_a_draft_keeps_the_stored_backtests_bounds(client) -> None:
    too_long = client.post("/rules/backtest", headers=ADMIN, json={
        "document": DRAFT, "start": "2024-01-01T00:00:00Z", "end": "2025-06-01T00:00:00Z", "step": "1d"})
    assert too_long.status_code == 422 and "MAX_BACKTEST_WINDOW" in too_long.text
    too_fine = client.post("/rules/backtest", json={**WINDOW, "step": "1s", "document": DRAFT}, headers=ADMIN)
    assert too_fine.status_code == 422 and "step" in too_fine.text
    missing = client.post("/rules/backtest", json=WINDOW, headers=ADMIN)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "document"]


def test_drafts_share_the_roles_backtest_slots(client, database) -> None:
    with database.transaction() as conn:
        dispatcher = {"Authorization": f"Bearer {create_token(conn, role='dispatcher', name='d')}"}
        marketer = {"Authorization": f"Bearer {create_token(conn, role='marketer', name='m')}"}
        technician = {"Authorization": f"Bearer {create_token(conn, role='technician', name='t')}"}
    backtests = client.app.state.backtests
    with backtests.slot("dispatcher"), backtests.slot("dispatcher"):
        refused = client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=dispatcher)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    # A marketer may replay a fault rule's draft: nothing is written, so who may write it does not matter.
    assert client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=marketer).status_code == 200
    assert client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=dispatcher).status_code == 200
    assert client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=technician).status_code == 403


@pytest.mark.parametrize("text", [
    "id: x\nwhen: " + "[" * 8000 + "]" * 8000,  # nested past what the parsers survive
    "{a: " * 3000 + "1" + "}" * 3000,  # flow mappings, under the size limit
    "id: x\nwhen: {fault: {codes: [E21]}}\nseverity: " + "9" * 5000,  # more digits than int() converts
    '{"id": "x", "when": {"fault": {"codes": ["E21"]}}, "severity": ' + "9" * 5000 + "}",
    "id: x\nwhen: {fault: {codes: [E21]}}\ncooldown: " + "9" * 400 + "s",  # a 400-digit duration
    "id: x\napplies_to: {kind: range_hood}\nwhen: {threshold: {metric: fan_current_a, above: " + "9" * 400 + "}}",
    "id: x\nwhen: {age: {over: 2001-13-45}}",  # a date that is none
    "id: x\nwhen: {age: {over: 99999-01-01}}",  # a year past any date
    "id: !!float abc\nwhen: {fault: {codes: [E21]}}",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",  # aliases: 200,000 values
    "id: x\x00\nwhen: {fault: {codes: [E21]}}",
])
def test_a_draft_text_no_parser_survives_is_a_422_under_document_not_a_500(client, text) -> None:
    answer = client.post("/rules/backtest", json={**WINDOW, "document": text}, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    assert all(problem["loc"][:2] == ["body", "document"] for problem in answer.json()["detail"])


def test_a_marketer_sees_a_backtest_without_device_ids(client, database, stalled_hood) -> None:
    """A marketer sees no device's faults or readings; a backtest naming devices would show them, one threshold
    or one birthday at a time. Each device is a number within the answer instead."""
    with database.transaction() as conn:
        marketer = {"Authorization": f"Bearer {create_token(conn, role='marketer', name='m')}"}
    seen_by = {}
    for who, headers in (("admin", ADMIN), ("marketer", marketer)):
        answer = client.post("/rules/backtest", json={**WINDOW, "document": DRAFT}, headers=headers)
        assert answer.status_code == 200, answer.text
        seen_by[who] = answer.json()
    assert {change["device_id"] for change in seen_by["admin"]["transitions"]} == {stalled_hood}
    assert {change["device_id"] for change in seen_by["marketer"]["transitions"]} == {"device 1"}
    assert stalled_hood not in str(seen_by["marketer"])
    assert [(c["change"], c["at"]) for c in seen_by["marketer"]["transitions"]] == [
        (c["change"], c["at"]) for c in seen_by["admin"]["transitions"]]
