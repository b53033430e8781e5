"""How `careloop bench proactive` judges a run, without any server: the owner's waking hours, which rules are about
a gradual failure, when our call came first, how far ahead the order was, and which calls were false."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from bench.proactive import (
    Behaviour,
    Call,
    Failure,
    OrderEvent,
    addresses,
    after_waking_hours,
    score,
)
from bench.replay import Fault
from devices.catalog import load_catalog
from rules.builtin import load_builtin_rules
from rules.conditions import compile_rule
from rules.evaluation import ActiveRule
from simulators.appliances import PHYSICS_BY_KIND
from simulators.device import SimDevice

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
RULES = [ActiveRule(compile_rule(rule), 1) for rule in load_builtin_rules()]
HOOD = SimDevice("RH-000001", "RH-900", "range_hood", dt.date(2020, 1, 1), "east", 0, -5.0)
OVEN = SimDevice("OV-000002", "OV-700", "oven", dt.date(2020, 1, 1), "east", 0, -5.0)


def local(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=NEW_YORK).astimezone(dt.UTC)


def test_the_owners_delay_counts_only_their_waking_hours() -> None:
    assert after_waking_hours(local(10, 10), 3, NEW_YORK) == local(10, 13)
    assert after_waking_hours(local(10, 20), 6, NEW_YORK) == local(11, 11)  # 2 h tonight, 4 h tomorrow from 07:00
    assert after_waking_hours(local(10, 3), 1, NEW_YORK) == local(10, 8)  # noticed in the night: from 07:00
    assert after_waking_hours(local(10, 21), 31, NEW_YORK) == local(12, 22)  # 1 h, then two waking days of 15 h
    # The clocks go forward on 8 March 2026 in New York: 07:00 local is still when the day starts.
    before = dt.datetime(2026, 3, 7, 21, tzinfo=NEW_YORK)
    assert after_waking_hours(before, 2, NEW_YORK).astimezone(NEW_YORK) == dt.datetime(2026, 3, 8, 8, tzinfo=NEW_YORK)


def test_the_rules_about_a_hoods_grease_watch_its_readings_or_count_from_its_cleaning() -> None:
    catalog = load_catalog()
    failure = PHYSICS_BY_KIND["range_hood"].gradual_failure
    about = {rule.id for rule in RULES if addresses(rule, "range_hood", failure, catalog)}
    assert {"hood-grease-cleaning-rh900", "hood-grease-cleaning-rh600", "hood-grease-filling-up"} <= about
    assert not about & {"hood-fan-stall", "hood-airflow-blocked", "hood-trade-in", "owner-birthday"}
    assert not any(rule.startswith(("oven", "heater", "ac-", "dishwasher")) for rule in about)


def judge(*, faults=(), failures=(), calls=(), orders=(), scored_days=(1, 30), behaviour=Behaviour(seed=1),
          rules=RULES):
    return score(
        faults=list(faults),
        failures=list(failures),
        calls=list(calls),
        orders=list(orders),
        rules=rules,
        fleet=[HOOD, OVEN],
        zones={HOOD.device_id: NEW_YORK, OVEN.device_id: NEW_YORK},
        scored=(local(scored_days[0], 0), local(scored_days[1], 0)),
        ahead=dt.timedelta(days=14),
        behaviour=behaviour,
    )


def row(scores, label: str):
    [found] = [row for row in scores.rows if row.label.startswith(label)]
    return found


def test_a_call_days_before_the_failure_comes_first_and_its_order_counts_days_ahead() -> None:
    failure = Failure(HOOD.device_id, "range_hood", "grease_filter", local(1, 12), local(20, 19), None)
    call = Call(1, HOOD.device_id, "hood-grease-cleaning-rh900", local(15, 19), local(16, 8), True)
    order = OrderEvent(HOOD.device_id, "hood-grease-cleaning-rh900", local(15, 19))
    grease = row(judge(failures=[failure], calls=[call], orders=[order]), "range_hood grease_filter")
    assert (grease.faults, grease.first) == (1, 1)
    assert grease.leads_days == [pytest.approx(5.0)] and grease.ahead_share == 1.0
    assert (grease.calls, grease.false_calls) == (1, 0)


@pytest.mark.parametrize(
    "call",
    [
        Call(1, HOOD.device_id, "hood-grease-cleaning-rh900", local(15, 19), local(16, 8), False),  # blocked
        Call(1, HOOD.device_id, "hood-grease-cleaning-rh900", local(1, 9), local(1, 9), True),  # before the cleaning
        Call(1, HOOD.device_id, "hood-fan-stall", local(15, 19), local(16, 8), True),  # about something else
        Call(1, HOOD.device_id, "hood-grease-cleaning-rh900", local(25, 9), local(25, 9), True),  # after they called
    ],
)
def test_a_blocked_late_or_unrelated_call_does_not_come_first(call: Call) -> None:
    failure = Failure(HOOD.device_id, "range_hood", "grease_filter", local(1, 12), local(20, 19), None)
    grease = row(judge(failures=[failure], calls=[call]), "range_hood grease_filter")
    assert (grease.faults, grease.first) == (1, 0)
    assert grease.leads_days == [] and grease.ahead_share == 0.0


def test_a_sudden_fault_is_first_only_when_our_call_beats_the_owners() -> None:
    fault = Fault(OVEN.device_id, "oven", "F12", local(10, 18), None)
    call_at_once = Call(1, OVEN.device_id, "oven-element-failure", local(10, 18), local(10, 18), True)
    element = row(judge(faults=[fault], calls=[call_at_once]), "F12")
    assert (element.faults, element.first, element.calls, element.false_calls) == (1, 1, 1, 0)
    # At 21:30 our call waits for the morning: it comes first when the owner waits too, not when they ring at once.
    late = Fault(OVEN.device_id, "oven", "F12", local(10, 21, 30), None)
    next_morning = Call(1, OVEN.device_id, "oven-element-failure", local(10, 21, 30), local(11, 8), True)
    patient, hasty = Behaviour(owner_median_h=10, dispatcher_median_min=1), Behaviour(owner_median_h=0.01)
    assert row(judge(faults=[late], calls=[next_morning], behaviour=patient), "F12").first == 1
    assert row(judge(faults=[late], calls=[next_morning], behaviour=hasty), "F12").first == 0


def test_calls_with_nothing_wrong_around_them_are_false() -> None:
    failure = Failure(HOOD.device_id, "range_hood", "grease_filter", local(1, 12), local(25, 19), local(27, 9))
    calls = [
        Call(1, HOOD.device_id, "hood-grease-filling-up", local(15, 12), local(15, 12), True),  # 10 days ahead: true
        Call(2, HOOD.device_id, "hood-grease-filling-up", local(5, 12), local(5, 12), True),  # 20 days ahead: false
        Call(3, OVEN.device_id, "oven-cavity-overheat", local(5, 12), local(5, 12), True),  # nothing wrong: false
        Call(4, HOOD.device_id, "hood-grease-filling-up", local(27, 12), local(27, 12), True),  # cleaned that day
    ]
    scores = judge(failures=[failure], calls=calls)
    assert (scores.calls, scores.false_calls) == (4, 2)
    assert dict(scores.false_by_rule) == {"hood-grease-filling-up": 1, "oven-cavity-overheat": 1}
    assert (row(scores, "range_hood grease_filter").calls, row(scores, "range_hood grease_filter").false_calls) == (
        3, 1)  # fmt: skip


def test_a_fault_without_a_call_says_whether_its_rules_cooldown_held_the_detection_back() -> None:
    repaired = Fault(OVEN.device_id, "oven", "F12", local(9, 10), local(10, 12))
    again = Fault(OVEN.device_id, "oven", "F12", local(10, 20), None)
    lone = Fault(HOOD.device_id, "range_hood", "E21", local(10, 20), None)
    lamp = Fault(HOOD.device_id, "range_hood", "E41", local(12, 20), None)
    ordering_only = [  # the lamp's rule as one that orders but never calls
        ActiveRule(compile_rule(rule.model_copy(update={"then": rule.then[:1]}) if rule.id == "hood-lamp-failure"
                                else rule), 1)
        for rule in load_builtin_rules()
    ]
    scores = judge(faults=[repaired, again, lone, lamp], scored_days=(10, 30), rules=ordering_only)
    assert dict(row(scores, "F12").missed) == {"no call: the rule's cooldown after the last one": 1}
    assert row(scores, "F12").faults == 1  # the first one started before the scored days
    assert dict(row(scores, "E21").missed) == {"no call before the owner's": 1}
    assert dict(row(scores, "E41").missed) == {"its rules make no call": 1}
