"""Each condition kind compiled and evaluated over prepared facts, with what it explains."""

from __future__ import annotations

import numpy as np
import pytest

from rules.conditions import days_until_birthday, requirements_of
from rules.facts import (
    Baseline,
    BaselineStats,
    CounterAtEvent,
    EventCount,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Trend,
    TrendFit,
    WindowAggregate,
)

DAY = 86400
NAN = np.nan
NAT = None


def reasons(evaluation, count: int) -> list[str]:
    return [evaluation.explain(i)["reason"] for i in range(count)]


# ---------------------------------------------------------------- threshold


def test_threshold_without_for_compares_the_latest_value(make_facts, make_rule) -> None:
    rule = make_rule(
        {"threshold": {"metric": "fan_current_a", "above": 3}}, applies_to={"kind": "range_hood"}
    )
    assert rule.requirements == {Latest("fan_current_a")}
    facts = make_facts(["RH-900"] * 3)
    facts.add(Latest("fan_current_a"), [4.0, 2.0, NAN])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False, False]
    assert reasons(evaluation, 3) == [
        "fan_current_a is 4, above 3",
        "fan_current_a is 2, not above 3",
        "no fan_current_a reading",
    ]


def test_threshold_for_needs_the_whole_window_beyond_the_level(make_facts, make_rule) -> None:
    rule = make_rule(
        {"threshold": {"metric": "fan_current_a", "above": 3, "for": "10m"}},
        applies_to={"kind": "range_hood"},
    )
    window = MetricWindow("fan_current_a", 600)
    assert rule.requirements == {Latest("fan_current_a"), window}
    facts = make_facts(["RH-900"] * 3)
    facts.add(Latest("fan_current_a"), [3.6, 3.6, 3.6])
    facts.add(
        window,
        WindowAggregate(min=[3.5, 3.5, 2.9], max=[4, 4, 4], count=[10, 2, 10], covered=[True, False, True]),
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False, False]
    assert reasons(evaluation, 3) == [
        "fan_current_a stayed above 3 for 10m (lowest 3.5)",
        "fan_current_a readings do not cover the whole 10m window yet",
        "fan_current_a reached 2.9 within the last 10m, not above 3 throughout",
    ]
    explained = evaluation.explain(0)
    assert explained["condition"] == {
        "condition": "threshold",
        "met": True,
        "reason": "fan_current_a stayed above 3 for 10m (lowest 3.5)",
        "metric": "fan_current_a",
        "above": 3.0,
        "for": "10m",
        "values": {"latest": 3.6, "lowest": 3.5, "highest": 4.0, "readings": 10, "covers_window": True},
    }


def test_threshold_below_uses_the_window_maximum(make_facts, make_rule) -> None:
    rule = make_rule(
        {"threshold": {"metric": "refrigerant_pressure_kpa", "below": 300, "for": "30m"}},
        applies_to={"kind": "air_conditioner"},
    )
    facts = make_facts(["AC-350"] * 2)
    facts.add(Latest("refrigerant_pressure_kpa"), [250, 250])
    facts.add(
        MetricWindow("refrigerant_pressure_kpa", 1800),
        WindowAggregate(min=[240, 240], max=[290, 310], count=[5, 5], covered=[True, True]),
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False]
    assert (
        evaluation.explain(0)["reason"] == "refrigerant_pressure_kpa stayed below 300 for 30m (highest 290)"
    )


def test_hysteresis_keeps_an_open_detection_until_the_clear_level(make_facts, make_rule) -> None:
    rule = make_rule(
        {"threshold": {"metric": "water_temp_c", "above": 90, "clear_below": 85}},
        applies_to={"kind": "water_heater"},
    )
    facts = make_facts(["WH-80"] * 4)
    facts.add(Latest("water_temp_c"), [87, 87, 84, 91])
    evaluation = rule.evaluate(facts, is_open=[False, True, True, False])
    # Closed at 87: not above 90. Open at 87: not yet below 85. Open at 84: cleared. Closed at 91: opens.
    assert evaluation.met.tolist() == [False, True, False, True]
    assert (
        evaluation.explain(1)["reason"] == "still open: water_temp_c 87 has not gone below the clear level 85"
    )
    assert evaluation.explain(1)["condition"]["was_open"] is True
    assert evaluation.explain(2)["reason"] == "water_temp_c is 84, not above 90"


def test_hysteresis_on_the_low_side(make_facts, make_rule) -> None:
    rule = make_rule(
        {"threshold": {"metric": "refrigerant_pressure_kpa", "below": 300, "clear_above": 350}},
        applies_to={"model": "AC-350"},
    )
    facts = make_facts(["AC-350"] * 2)
    facts.add(Latest("refrigerant_pressure_kpa"), [320, 360])
    assert rule.evaluate(facts, is_open=[True, True]).met.tolist() == [True, False]
    assert rule.evaluate(facts, is_open=[False, False]).met.tolist() == [False, False]


# ---------------------------------------------------------------- fault


def test_fault_lists_the_open_codes_with_their_meaning(make_facts, make_rule) -> None:
    rule = make_rule({"fault": {"codes": ["E21", "E31"]}}, applies_to={"kind": "range_hood"})
    assert rule.requirements == {OpenFault("E21"), OpenFault("E31")}
    facts = make_facts(["RH-900"] * 3)
    facts.add(OpenFault("E21"), [True, False, True])
    facts.add(OpenFault("E31"), [False, False, True])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False, True]
    assert evaluation.explain(2)["condition"]["open_codes"] == ["E21", "E31"]
    assert evaluation.explain(2)["reason"] == "open fault E21 (fan motor stall), E31 (airflow blocked)"
    assert evaluation.explain(1)["reason"] == "none of E21, E31 is open"


def test_fault_without_codes_means_any_code_of_the_models_in_scope(make_rule) -> None:
    rule = make_rule({"fault": {}}, applies_to={"kind": "range_hood"})
    assert rule.requirements == {OpenFault("E21"), OpenFault("E31"), OpenFault("E41")}


# ---------------------------------------------------------------- usage, elapsed, age, count


def test_usage_measures_counter_growth_since_the_last_event(make_facts, make_rule, ago) -> None:
    rule = make_rule({"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 180}})
    assert rule.requirements == {
        Latest("run_hours"),
        LastEvent("maintenance_done"),
        CounterAtEvent("run_hours", "maintenance_done"),
    }
    facts = make_facts(["RH-900"] * 5)
    facts.add(Latest("run_hours"), [400, 200, 100, NAN, 300])
    facts.add(LastEvent("maintenance_done"), [ago(30 * DAY), NAT, ago(DAY), ago(DAY), ago(DAY)])
    facts.add(CounterAtEvent("run_hours", "maintenance_done"), [210, NAN, 150, 10, NAN])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, True, False, False, False]
    assert reasons(evaluation, 5) == [
        "run_hours grew by 190 since the last maintenance_done (2026-05-02T12:00:00Z), at least 180",
        "run_hours grew by 200 since new, at least 180",
        "run_hours went backwards since the last maintenance_done (2026-05-31T12:00:00Z) "
        "(150 -> 100): reset?",
        "no run_hours reading",
        "no run_hours value known at the last maintenance_done",
    ]
    assert evaluation.explain(0)["condition"]["values"] == {
        "current": 400.0,
        "at_since": 210.0,
        "since_at": "2026-05-02T12:00:00Z",
        "growth": 190.0,
    }


def test_usage_since_purchase_counts_the_whole_counter(make_facts, make_rule) -> None:
    rule = make_rule({"usage": {"metric": "run_hours", "since": "purchase", "at_least": 100}})
    assert rule.requirements == {Latest("run_hours")}
    facts = make_facts(["OV-700", "OV-700"])
    facts.add(Latest("run_hours"), [120, 80])
    assert rule.evaluate(facts).met.tolist() == [True, False]


def test_elapsed_falls_back_to_purchase_when_the_event_never_happened(make_facts, make_rule, ago) -> None:
    rule = make_rule({"elapsed": {"since": "maintenance_done", "at_least": "180d"}})
    facts = make_facts(["RH-900"] * 4, purchased_on=[ago(400 * DAY), ago(200 * DAY), NAT, ago(100 * DAY)])
    facts.add(LastEvent("maintenance_done"), [ago(10 * DAY), NAT, NAT, NAT])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [False, True, False, False]
    assert reasons(evaluation, 3) == [
        "10d since the last maintenance_done (2026-05-22T12:00:00Z), less than 180d",
        "200d since purchase (2025-11-13T12:00:00Z), at least 180d",
        "no maintenance_done event and no purchase date: nothing to count from",
    ]


def test_age_by_duration_or_by_fraction_of_the_models_expected_life(make_facts, make_rule, ago) -> None:
    purchased = [ago(7.5 * 365 * DAY), ago(7.5 * 365 * DAY), NAT]
    facts = make_facts(["RH-900", "RH-600", "RH-600"], purchased_on=purchased)
    by_years = make_rule({"age": {"at_least": "5y"}}).evaluate(facts)
    assert by_years.met.tolist() == [True, True, False]
    assert by_years.explain(2)["reason"] == "purchase date unknown"
    # RH-900 lasts 10 years, RH-600 8: at 7.5 years only the RH-600 is past 0.9 of its life.
    by_life = make_rule({"age": {"of_expected_life": 0.9}}, applies_to={"kind": "range_hood"}).evaluate(facts)
    assert by_life.met.tolist() == [False, True, False]
    assert by_life.explain(1)["reason"] == "7.50 years old, at least 7.20 years (0.9 of expected life)"


def test_count_of_events_with_codes_in_a_window(make_facts, make_rule) -> None:
    rule = make_rule(
        {"count": {"event": "fault", "codes": ["E31", "E21"], "at_least": 3, "within": "365d"}},
        applies_to={"kind": "range_hood"},
    )
    key = EventCount("fault", ("E21", "E31"), 365 * DAY)
    assert rule.requirements == {key}
    facts = make_facts(["RH-600"] * 2)
    facts.add(key, [3, 2])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False]
    assert evaluation.explain(1)["reason"] == "2 fault (E21, E31) events in the last 1y, fewer than 3"


# ---------------------------------------------------------------- offline, birthday


def test_offline_by_status_or_by_silence(make_facts, make_rule, ago) -> None:
    rule = make_rule({"offline": {"for": "24h"}})
    assert rule.requirements == frozenset()
    facts = make_facts(
        ["DW-450"] * 4,
        online=[False, True, True, False],
        offline_since=[ago(2 * DAY), NAT, NAT, ago(3600)],
        last_seen=[ago(2 * DAY), ago(3 * DAY), ago(60), NAT],
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, True, False, False]
    assert reasons(evaluation, 4) == [
        "offline for 2d (since 2026-05-30T12:00:00Z)",
        "silent for 3d (last seen 2026-05-29T12:00:00Z)",
        "online, last seen 60s ago, less than 1d",
        "never seen: no status, telemetry or event yet",
    ]


def test_birthday_within_days_before(make_facts, make_rule) -> None:
    rule = make_rule({"birthday": {"within": "7d"}})
    facts = make_facts(["OV-700"] * 4, owner_birthday=["1980-06-01", "1975-06-08", "1990-06-09", None])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, True, False, False]
    assert reasons(evaluation, 4) == [
        "owner's birthday is today",
        "owner's birthday in 7 days, within 7",
        "owner's birthday in 8 days, beyond 7",
        "owner's birthday unknown",
    ]


@pytest.mark.parametrize(
    ("today", "birthday", "days"),
    [
        ("2027-02-28", "1984-02-29", 0),  # a leap-day birthday is celebrated on 28 February
        ("2028-02-28", "1984-02-29", 1),
        ("2026-12-31", "1990-01-01", 1),  # across the new year
        ("2026-06-02", "1980-06-01", 364),  # just passed
    ],
)
def test_days_until_birthday_edges(today: str, birthday: str, days: int) -> None:
    result = days_until_birthday(np.array([birthday], dtype="datetime64[D]"), np.datetime64(today, "D"))
    assert result.tolist() == [days]


# ---------------------------------------------------------------- anomaly, trend


def test_anomaly_in_robust_deviations_from_the_model_baseline(make_facts, make_rule) -> None:
    rule = make_rule(
        {"anomaly": {"metric": "fan_current_a", "at_least": 4}}, applies_to={"kind": "range_hood"}
    )
    assert rule.requirements == {Baseline("fan_current_a"), Latest("fan_current_a")}
    facts = make_facts(["RH-900"] * 5)
    facts.add(Latest("fan_current_a"), [1.5, 1.05, 0.5, 1.5, 1.5])
    facts.add(
        Baseline("fan_current_a"),
        BaselineStats(centre=[1.0] * 5, spread=[0.1, 0.1, 0.1, 0.1, 0.0], samples=[10, 10, 10, 3, 10]),
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False, True, False, False]
    assert reasons(evaluation, 5) == [
        "fan_current_a is +5.0 robust deviations from the RH-900 median",
        "fan_current_a is within 4 robust deviations (either) of the median",
        "fan_current_a is -5.0 robust deviations from the RH-900 median",
        "baseline of RH-900 has 3 devices, fewer than 5",
        "baseline of RH-900 has no spread to measure deviations against",
    ]
    assert evaluation.explain(2)["condition"]["values"]["deviations"] == -5.0


def test_anomaly_held_for_a_window_and_in_one_direction(make_facts, make_rule) -> None:
    rule = make_rule(
        {"anomaly": {"metric": "fan_current_a", "at_least": 4, "direction": "above", "for": "30m"}},
        applies_to={"kind": "range_hood"},
    )
    facts = make_facts(["RH-900"] * 3)
    facts.add(Latest("fan_current_a"), [1.6, 1.6, 0.2])
    facts.add(Baseline("fan_current_a"), BaselineStats(centre=[1.0] * 3, spread=[0.1] * 3, samples=[9] * 3))
    facts.add(
        MetricWindow("fan_current_a", 1800),
        WindowAggregate(min=[1.5, 1.2, 0.2], max=[1.7, 1.7, 0.3], count=[6, 6, 6], covered=[True] * 3),
    )
    # Device 1 peaked high but dipped to +2 deviations; device 2 is far below, but only `above` counts.
    assert rule.evaluate(facts).met.tolist() == [True, False, False]


def test_trend_projects_the_fitted_line_to_the_target(make_facts, make_rule) -> None:
    rule = make_rule(
        {"trend": {"metric": "grease_load_pct", "reaches": 90, "within": "7d"}},
        applies_to={"kind": "range_hood"},
    )
    key = Trend("grease_load_pct", 7 * DAY)
    assert rule.requirements == {key}
    per_day = 1 / DAY
    facts = make_facts(["RH-900"] * 5)
    facts.add(
        key,
        TrendFit(
            slope_per_s=[5 * per_day, 1 * per_day, -1 * per_day, 5 * per_day, NAN],
            fitted_now=[70, 70, 95, 70, NAN],
            points=[20, 20, 20, 2, 1],
        ),
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False, True, False, False]
    assert reasons(evaluation, 5) == [
        "grease_load_pct at 70, +5/day over 7d, reaches 90 in 4d, within 7d",
        "grease_load_pct at 70, +1/day over 7d, reaches 90 in 20d, later than 7d",
        "grease_load_pct is at 95, already past 90",
        "2 grease_load_pct readings in the last 7d, fewer than 3",
        "1 grease_load_pct readings in the last 7d, fewer than 3",
    ]
    assert evaluation.explain(0)["condition"]["values"] == {
        "fitted_now": 70.0,
        "slope_per_day": 5.0,
        "points": 20,
        "eta_s": 4 * DAY,
    }


def test_falling_trend(make_facts, make_rule) -> None:
    rule = make_rule(
        {
            "trend": {
                "metric": "refrigerant_pressure_kpa",
                "reaches": 300,
                "within": "30d",
                "over": "14d",
                "direction": "falling",
            }
        },
        applies_to={"model": "AC-350"},
    )
    facts = make_facts(["AC-350"] * 2)
    facts.add(
        Trend("refrigerant_pressure_kpa", 14 * DAY),
        TrendFit(slope_per_s=[-5 / DAY, 5 / DAY], fitted_now=[400, 400], points=[50, 50]),
    )
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False]
    assert evaluation.explain(1)["reason"] == "refrigerant_pressure_kpa at 400 is not falling (+5/day)"


# ---------------------------------------------------------------- all / any, scope, missing data


def test_all_and_any_combine_masks_and_explanations(make_facts, make_rule, ago) -> None:
    facts = make_facts(
        ["RH-900"] * 4, purchased_on=[ago(6 * 365 * DAY), ago(DAY), ago(6 * 365 * DAY), ago(DAY)]
    )
    count = EventCount("fault", None, 365 * DAY)
    facts.add(count, [3, 3, 0, 0])
    both = {
        "all": [{"age": {"at_least": "5y"}}, {"count": {"event": "fault", "at_least": 3, "within": "365d"}}]
    }
    either = {"any": both["all"]}
    assert make_rule(both).evaluate(facts).met.tolist() == [True, False, False, False]
    evaluation = make_rule(either).evaluate(facts)
    assert evaluation.met.tolist() == [True, True, True, False]
    explained = evaluation.explain(3)
    assert explained["condition"]["condition"] == "any"
    assert [part["condition"] for part in explained["condition"]["conditions"]] == ["age", "count"]
    assert explained["reason"].startswith("none holds: 0.00 years old, less than 5.00 years")
    assert make_rule(both).evaluate(facts).explain(0)["reason"] == "all 2 conditions hold"


def test_nested_requirements_are_the_union_of_the_leaves(make_rule) -> None:
    rule = make_rule(
        {
            "all": [
                {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 100}},
                {
                    "any": [
                        {"threshold": {"metric": "run_hours", "above": 5, "for": "1h"}},
                        {"offline": {"for": "1d"}},
                    ]
                },
            ]
        }
    )
    assert rule.requirements == {
        Latest("run_hours"),
        LastEvent("maintenance_done"),
        CounterAtEvent("run_hours", "maintenance_done"),
        MetricWindow("run_hours", 3600),
    }
    other = make_rule({"fault": {"codes": ["F12"]}}, applies_to={"model": "OV-700"})
    assert requirements_of([rule, other]) == rule.requirements | {OpenFault("F12")}


def test_applies_to_filters_by_kind_and_explains_why_not(make_facts, make_rule, ago) -> None:
    rule = make_rule({"offline": {"for": "1h"}}, applies_to={"kind": "oven"})
    facts = make_facts(["OV-700", "RH-900"], last_seen=[ago(DAY), ago(DAY)])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [True, False]
    assert evaluation.explain(1) == {
        "rule": "test-rule",
        "device_id": "D1",
        "model": "RH-900",
        "at": "2026-06-01T12:00:00Z",
        "met": False,
        "reason": "rule applies to kind oven; this is a range_hood (RH-900)",
    }
    assert evaluation.explain_device("D0")["met"] is True
    assert evaluation.explain_device("nope")["reason"] == "device not in the facts"


def test_facts_not_loaded_mean_not_met_with_a_reason(make_facts, make_rule, ago) -> None:
    rule = make_rule(
        {"any": [{"offline": {"for": "1h"}}, {"fault": {"codes": ["E21"]}}]},
        applies_to={"kind": "range_hood"},
    )
    facts = make_facts(["RH-900"], last_seen=[ago(60)])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [False]
    fault_part = evaluation.explain(0)["condition"]["conditions"][1]
    assert fault_part == {
        "condition": "fault",
        "met": False,
        "reason": "facts not loaded: OpenFault(code='E21')",
    }


def test_non_numeric_and_non_finite_data_is_missing_not_an_error(make_facts, make_rule) -> None:
    rule = make_rule({"threshold": {"metric": "fan_current_a", "above": 1}}, applies_to={"model": "RH-900"})
    facts = make_facts(["RH-900"] * 5)
    facts.add(Latest("fan_current_a"), ["high", None, float("inf"), True, "2.5"])
    evaluation = rule.evaluate(facts)
    assert evaluation.met.tolist() == [False, False, False, False, True]
    assert evaluation.explain(0)["reason"] == "no fan_current_a reading"


def test_misaligned_facts_are_a_loader_bug_and_fail_loudly(make_facts) -> None:
    facts = make_facts(["RH-900"] * 3)
    with pytest.raises(ValueError, match="expected 3 values"):
        facts.add(Latest("fan_current_a"), [1.0, 2.0])


def test_kind_is_derived_from_the_catalog_when_the_loader_omits_it(make_facts) -> None:
    facts = make_facts(["RH-900", "WH-80", "XX-9"])
    assert facts.kind.tolist() == ["range_hood", "water_heater", ""]
    assert str(facts.now) == "2026-06-01T12:00:00"
