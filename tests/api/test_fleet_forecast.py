"""GET /fleet/forecast against the real database: the maintenance and trade-in windows coming per region, each
device projected by the rules' own conditions, counted exactly (inside the range, outside it, already due, already
open, once per kind)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_all
from careloop.mqtt import events_topic, telemetry_topic
from rules import repo, service
from rules.engine import Engine
from rules.models import TrendFitRow
from tests.factories import make_device
from tests.helpers import event, inbound, reading, store

pytestmark = pytest.mark.integration
ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
DAY = dt.timedelta(days=1)
OPEN_DETECTIONS = "SELECT rule_id, device_id FROM detections WHERE cleared_at IS NULL"
YEAR = 365 * DAY  # a duration's `y`, as the engine counts it

RULES = [
    # Trade-in at 5 years, or at 3 with three faults in a year: the fault count cannot be projected.
    {"id": "test-trade-in", "applies_to": {"kind": "range_hood"}, "severity": "info",
     "when": {"any": [{"all": [{"age": {"at_least": "3y"}},
                               {"count": {"event": "fault", "at_least": 3, "within": "365d"}}]},
                      {"age": {"at_least": "5y"}}]}},
    {"id": "test-usage", "applies_to": {"model": "RH-900"}, "severity": "info",
     "when": {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 90}}},
    {"id": "test-hood-cleaning", "applies_to": {"kind": "range_hood"}, "severity": "info",
     "when": {"elapsed": {"since": "maintenance_done", "at_least": "10d"}}},
    {"id": "test-oven-service", "applies_to": {"kind": "oven"}, "severity": "info",
     "when": {"elapsed": {"since": "maintenance_done", "at_least": "40d"}}},
    {"id": "test-drain", "applies_to": {"kind": "dishwasher"}, "severity": "info",
     "when": {"trend": {"metric": "drain_time_s", "reaches": 80, "within": "7d", "over": "14d"}}},
    # Not a window the forecast knows: never counted.
    {"id": "test-stall", "applies_to": {"kind": "range_hood"}, "severity": "critical",
     "when": {"fault": {"codes": ["E21"]}}},
]


@pytest.fixture
def client(database) -> TestClient:
    return TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=None))


def purchased(now: dt.datetime, age: dt.timedelta) -> str:
    return (now - age).date().isoformat()


@pytest.fixture
def fleet(database, conn) -> dict[str, str]:
    """Devices whose windows fall inside, outside and before the next 30 days; answers their ids by role."""
    now = dt.datetime.now(dt.UTC)
    for rule in RULES:
        service.create_rule(conn, rule)
    devices = {
        # trade-in at 5 years: in 10 days, in 40 days, 5 days ago (due already, not coming)
        "trade_in_soon": make_device(conn, purchased_on=purchased(now, 5 * YEAR - 10 * DAY), region="east"),
        "trade_in_later": make_device(conn, purchased_on=purchased(now, 5 * YEAR - 40 * DAY), region="east"),
        "trade_in_due": make_device(conn, purchased_on=purchased(now, 5 * YEAR + 5 * DAY), region="east"),
        # 5 years in 10 days too, but three faults after 3 years opened its trade-in window already
        "trade_in_open": make_device(conn, purchased_on=purchased(now, 5 * YEAR - 10 * DAY), region="west"),
        # 3 years in 10 days, without faults: only the 5-year branch, far off
        "three_years_soon": make_device(conn, purchased_on=purchased(now, 3 * YEAR - 10 * DAY), region="west"),
        # cleaned 6 days ago (due again in 4); 30 run hours since, 5 a day: 90 in 12 days
        "hood_in_use": make_device(conn, model="RH-900", purchased_on=purchased(now, YEAR), region="east"),
        # never cleaned: due since purchase; 1 h a day, 74 days to go
        "hood_idle": make_device(conn, model="RH-900", purchased_on=purchased(now, YEAR), region="west"),
        # ovens serviced 20 and 25 days ago (due at 40): in 20 and 15 days; one never serviced
        "oven_serviced": make_device(conn, id=f"OV-{now:%H%M%S%f}-1", model="OV-700",
                                     purchased_on=purchased(now, 2 * YEAR), region="west"),
        "oven_no_region": make_device(conn, id=f"OV-{now:%H%M%S%f}-2", model="OV-700",
                                      purchased_on=purchased(now, 2 * YEAR), region=None),
        "oven_never_serviced": make_device(conn, id=f"OV-{now:%H%M%S%f}-3", model="OV-700",
                                           purchased_on=purchased(now, 2 * YEAR), region="west"),
        # drain time at 60 s rising 1 s a day reaches 80 in 20 days: the rule opens 7 days before, in 13
        "drain_clogging": make_device(conn, id=f"DW-{now:%H%M%S%f}-1", model="DW-450",
                                      purchased_on=purchased(now, YEAR), region="west"),
        # rising 0.1 s a day: 200 days
        "drain_slow": make_device(conn, id=f"DW-{now:%H%M%S%f}-2", model="DW-450",
                                  purchased_on=purchased(now, YEAR), region="west"),
    }
    ids = {role: device.id for role, device in devices.items()}
    conn.commit()

    def telemetry(device: str, seq: int, at: dt.datetime, **metrics: float):
        return inbound(telemetry_topic(ids[device]), reading(seq, at=at, **metrics), now)

    def happened(device: str, seq: int, at: dt.datetime, kind: str, code: str | None = None):
        return inbound(events_topic(ids[device]), event(seq, at=at, kind=kind, code=code), now)

    store(database, [
        happened("trade_in_open", 1, now - 9 * DAY, "fault", "E21"),
        happened("trade_in_open", 2, now - 8 * DAY, "fault", "E21"),
        happened("trade_in_open", 3, now - 7 * DAY, "fault", "E21"),
        telemetry("hood_in_use", 1, now - 6 * DAY - dt.timedelta(hours=1), run_hours=50.0),
        happened("hood_in_use", 2, now - 6 * DAY, "maintenance_done"),
        telemetry("hood_in_use", 3, now - dt.timedelta(hours=1), run_hours=80.0),
        telemetry("hood_idle", 1, now - 6 * DAY, run_hours=10.0),
        telemetry("hood_idle", 2, now, run_hours=16.0),
        happened("oven_serviced", 1, now - 20 * DAY, "maintenance_done"),
        happened("oven_no_region", 1, now - 25 * DAY, "maintenance_done"),
    ], now=now)
    Engine(database).window()  # opens trade_in_open's window through its faults
    with database.transaction() as writer:
        repo.store_trend_fits(writer, windows=[("drain_time_s", 14 * 86400)], fits=[
            TrendFitRow(ids["drain_clogging"], "drain_time_s", 14 * 86400, 1 / 86400, 60.0, 14, now),
            TrendFitRow(ids["drain_slow"], "drain_time_s", 14 * 86400, 0.1 / 86400, 60.0, 14, now),
        ])
    return ids


def test_forecast_counts_each_region_and_week_exactly(client, fleet, database) -> None:
    with database.transaction() as conn:
        opened = {(row["rule_id"], row["device_id"]) for row in fetch_all(conn, OPEN_DETECTIONS, {})}
    assert ("test-trade-in", fleet["trade_in_open"]) in opened  # the window the forecast must leave out

    answer = client.get("/fleet/forecast", params={"days": 30}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    forecast = answer.json()
    assert forecast["days"] == 30 and len(forecast["week_starts"]) == 5
    assert [(row["region"], row["kind"], row["devices"], row["weeks"]) for row in forecast["regions"]] == [
        # hood_in_use: cleaning due in 4 days (its usage window, in 12, counts once: the earliest)
        ("east", "maintenance", 1, [1, 0, 0, 0, 0]),
        ("east", "trade_in", 1, [0, 1, 0, 0, 0]),  # trade_in_soon, in 10 days
        ("west", "maintenance", 2, [0, 1, 1, 0, 0]),  # drain_clogging in 13 days, oven_serviced in 20
        (None, "maintenance", 1, [0, 0, 1, 0, 0]),  # oven_no_region in 15 days
    ]
    by_rule = {row["rule_id"]: row for row in forecast["rules"]}
    assert {rule: row["devices"] for rule, row in by_rule.items()} == {
        "test-trade-in": 1, "test-usage": 1, "test-hood-cleaning": 1, "test-oven-service": 2, "test-drain": 1,
    }
    assert by_rule["test-trade-in"]["unprojected"] == ["count"]
    # trade_in_open through its faults, trade_in_due by its age
    assert by_rule["test-trade-in"]["already_open"] == 2
    assert forecast["not_forecast"] == []


def test_a_shorter_range_counts_only_what_falls_in_it(client, fleet) -> None:
    forecast = client.get("/fleet/forecast", params={"days": 7}, headers=ADMIN).json()
    assert [(row["region"], row["kind"], row["weeks"]) for row in forecast["regions"]] == [
        ("east", "maintenance", [1]),
    ]


def test_planners_may_read_the_forecast_and_bad_ranges_name_the_field(client, database) -> None:
    with database.transaction() as conn:
        tokens = {role: create_token(conn, role=role, name=role) for role in ("dispatcher", "marketer", "technician")}
    for role in ("dispatcher", "marketer"):
        answer = client.get("/fleet/forecast", headers={"Authorization": f"Bearer {tokens[role]}"})
        assert answer.status_code == 200, (role, answer.text)
        assert answer.json()["regions"] == []  # no rules, no devices: nothing coming
    refused = client.get("/fleet/forecast", headers={"Authorization": f"Bearer {tokens['technician']}"})
    assert refused.status_code == 403
    for days in ("0", "366", "soon"):
        answer = client.get("/fleet/forecast", params={"days": days}, headers=ADMIN)
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["query", "days"]


def test_all_opens_at_the_latest_any_at_the_earliest_and_what_time_does_not_drive_is_left_out() -> None:
    from rules.forecast import forecast_kind, project
    from rules.models import parse_rule

    def rule_when(when: dict):
        return parse_rule({"id": "combined", "applies_to": {"kind": "range_hood"}, "when": when}).when

    due = {"age": {"a": 10.0, "b": 50.0}, "elapsed": {"a": 30.0, "c": 5.0}}

    def leaf(kind: str, _spec) -> dict[str, float]:
        return due[kind]

    age = {"age": {"at_least": "5y"}}
    elapsed = {"elapsed": {"since": "maintenance_done", "at_least": "10d"}}
    faults = {"count": {"event": "fault", "at_least": 3, "within": "365d"}}
    assert project(rule_when({"all": [age, elapsed]}), leaf) == {"a": 30.0}
    assert project(rule_when({"any": [age, elapsed]}), leaf) == {"a": 10.0, "b": 50.0, "c": 5.0}
    assert project(rule_when({"all": [age, faults]}), leaf) is None
    assert project(rule_when({"any": [{"all": [elapsed, faults]}, age]}), leaf) == {"a": 10.0, "b": 50.0}
    assert project(rule_when(faults), leaf) is None
    assert forecast_kind(rule_when({"any": [elapsed, age]})) == "trade_in"
    assert forecast_kind(rule_when(elapsed)) == "maintenance"
    assert forecast_kind(rule_when(faults)) is None
