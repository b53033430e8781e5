"""The reference fact loader (what each requirement means) and backtests over in-memory histories."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rules.conditions import compile_rule
from rules.facts import (
    Baseline,
    CounterAtEvent,
    EventCount,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Trend,
)
from rules.models import parse_rule
from rules.reference import DeviceHistory, Event, Reading, Status, build_facts, evaluate_series

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def test_window_includes_the_value_in_force_when_it_opened() -> None:
    hood = DeviceHistory(
        "H1",
        "RH-900",
        readings=[
            Reading(ago(minutes=20), "fan_current_a", 5.0),
            Reading(ago(minutes=5), "fan_current_a", 4.0),
            Reading(ago(minutes=1), "fan_current_a", 4.5),
            Reading(NOW + dt.timedelta(minutes=1), "fan_current_a", 0.0),  # after `now`: not yet known
        ],
    )
    short, long = MetricWindow("fan_current_a", 600), MetricWindow("fan_current_a", 3600)
    facts = build_facts([hood], now=NOW, requirements=[Latest("fan_current_a"), short, long])
    assert facts.get(Latest("fan_current_a")).tolist() == [4.5]
    window = facts.get(short)
    assert (window.min[0], window.max[0], window.count[0], window.covered[0]) == (4.0, 5.0, 2, True)
    window = facts.get(long)
    assert (window.min[0], window.max[0], window.count[0], window.covered[0]) == (4.0, 5.0, 3, False)


def test_counter_at_event_is_the_last_reading_before_it_else_the_first_after() -> None:
    readings = [Reading(ago(days=d), "run_hours", 300 - 10 * d) for d in (10, 5, 1)]
    histories = [
        DeviceHistory("A", "RH-900", readings=readings, events=[Event(ago(days=6), "maintenance_done")]),
        DeviceHistory("B", "RH-900", readings=readings, events=[Event(ago(days=20), "maintenance_done")]),
        DeviceHistory("C", "RH-900", readings=readings),
    ]
    key = CounterAtEvent("run_hours", "maintenance_done")
    facts = build_facts(histories, now=NOW, requirements=[key, LastEvent("maintenance_done")])
    assert facts.get(key)[:2].tolist() == [200.0, 200.0] and np.isnan(facts.get(key)[2])
    assert facts.get(LastEvent("maintenance_done")).astype(str).tolist() == [
        "2026-05-26T12:00:00",
        "2026-05-12T12:00:00",
        "NaT",
    ]


def test_fault_open_until_cleared_by_code_or_by_a_clear_all() -> None:
    hood = DeviceHistory(
        "H1",
        "RH-900",
        events=[
            Event(ago(days=3), "fault", "E21"),
            Event(ago(days=2), "fault_cleared", "E21"),
            Event(ago(days=2), "fault_cleared"),
            Event(ago(days=1), "fault", "E31"),
            Event(ago(days=4), "fault", "E41"),
        ],
    )
    codes = ["E21", "E31", "E41"]
    facts = build_facts([hood], now=NOW, requirements=[OpenFault(code) for code in codes])
    assert [bool(facts.get(OpenFault(code))[0]) for code in codes] == [False, True, False]


def test_event_count_by_type_codes_and_window() -> None:
    events = [
        Event(ago(days=d), "fault", code) for d, code in [(1, "E21"), (30, "E31"), (200, "E21"), (400, "E21")]
    ]
    facts = build_facts(
        [DeviceHistory("H1", "RH-900", events=[*events, Event(ago(days=1), "power_on")])],
        now=NOW,
        requirements=[
            EventCount("fault", None, 365 * 86400),
            EventCount("fault", ("E21",), 365 * 86400),
            EventCount("fault", None, 7 * 86400),
        ],
    )
    assert [int(facts.get(key)[0]) for key in facts.loaded] == [3, 2, 1]


def test_trend_fits_a_line_and_evaluates_it_at_now() -> None:
    readings = [Reading(ago(days=d), "grease_load_pct", 80 - 2 * d) for d in range(0, 10)]
    facts = build_facts(
        [DeviceHistory("H1", "RH-900", readings=readings), DeviceHistory("H2", "RH-900")],
        now=NOW,
        requirements=[Trend("grease_load_pct", 7 * 86400)],
    )
    fit = facts.get(Trend("grease_load_pct", 7 * 86400))
    assert fit.slope_per_s[0] * 86400 == pytest.approx(2.0)
    assert fit.fitted_now[0] == pytest.approx(80.0)
    assert fit.points.tolist() == [7, 0] and np.isnan(fit.slope_per_s[1])


def test_baseline_is_the_median_and_scaled_mad_of_each_models_latest_values() -> None:
    currents = [1.0, 1.1, 0.9, 1.0, 3.0]
    histories = [
        DeviceHistory(f"H{i}", "RH-900", readings=[Reading(ago(hours=1), "fan_current_a", value)])
        for i, value in enumerate(currents)
    ]
    histories.append(DeviceHistory("S1", "RH-600", readings=[Reading(ago(hours=1), "fan_current_a", 0.5)]))
    baseline = build_facts(histories, now=NOW, requirements=[Baseline("fan_current_a")]).get(
        Baseline("fan_current_a")
    )
    assert baseline.centre.tolist() == [1.0] * 5 + [0.5]
    assert baseline.spread[:5] == pytest.approx([0.14826] * 5)
    assert baseline.samples.tolist() == [5] * 5 + [1]


def test_status_and_last_seen_come_from_the_history() -> None:
    histories = [
        DeviceHistory(
            "A",
            "OV-700",
            statuses=[Status(ago(days=3), True), Status(ago(days=2), False)],
            readings=[Reading(ago(days=2, minutes=1), "cavity_temp_c", 20)],
        ),
        DeviceHistory(
            "B",
            "OV-700",
            statuses=[Status(ago(days=2), False), Status(ago(hours=1), True)],
            events=[Event(ago(minutes=5), "power_on")],
        ),
        DeviceHistory("C", "OV-700", purchased_on="2020-03-01", owner_birthday=dt.date(1980, 5, 17)),
    ]
    facts = build_facts(histories, now=NOW, requirements=[])
    assert facts.online.tolist() == [False, True, False]
    assert facts.offline_since.astype(str).tolist() == ["2026-05-30T12:00:00", "NaT", "NaT"]
    assert facts.last_seen.astype(str).tolist() == ["2026-05-30T11:59:00", "2026-06-01T11:55:00", "NaT"]
    assert (
        str(facts.purchased_on[2]) == "2020-03-01T00:00:00" and str(facts.owner_birthday[2]) == "1980-05-17"
    )


def test_backtest_opens_clears_after_maintenance_and_reopens() -> None:
    rule = compile_rule(
        parse_rule(
            {
                "id": "grease",
                "applies_to": {"model": "RH-900"},
                "cooldown": "30d",
                "when": {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 180}},
            }
        )
    )
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    days = [start + dt.timedelta(days=d) for d in range(200)]
    hood = DeviceHistory(
        "H1",
        "RH-900",
        readings=[Reading(day, "run_hours", 2.0 * d) for d, day in enumerate(days)],
        events=[Event(days[100], "maintenance_done")],
    )
    changes = evaluate_series(rule, [hood], days)
    assert [(change.change, change.at[:10]) for change in changes] == [
        ("opened", "2026-04-01"),  # day 90: 180 h since new
        ("cleared", "2026-04-11"),  # day 100: maintenance done
        ("opened", "2026-07-10"),  # day 190: 180 h since the maintenance
    ]
    assert changes[1].dedup_key == changes[0].dedup_key == "grease:H1:2026-04-01T00:00:00Z"


def test_backtest_respects_the_cooldown() -> None:
    rule = compile_rule(
        parse_rule(
            {
                "id": "hot",
                "applies_to": {"kind": "water_heater"},
                "cooldown": "2h",
                "when": {"threshold": {"metric": "water_temp_c", "above": 90}},
            }
        )
    )
    hours = [NOW + dt.timedelta(hours=h) for h in range(6)]
    # Clears at 13:00, so 14:00 waits out the cooldown and opens at 15:00; clears at 16:00, 17:00 waits.
    temperatures = [95, 80, 95, 95, 80, 95]
    heater = DeviceHistory(
        "W1",
        "WH-80",
        readings=[Reading(at, "water_temp_c", t) for at, t in zip(hours, temperatures, strict=True)],
    )
    changes = evaluate_series(rule, [heater], hours)
    assert [(change.change, change.at[11:13]) for change in changes] == [
        ("opened", "12"),
        ("cleared", "13"),
        ("opened", "15"),
        ("cleared", "16"),
    ]
