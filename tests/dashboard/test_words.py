"""Explanations in words: spans, instants, values with units and fault codes, without any server."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.words import (
    code_words,
    duration_words,
    event_words,
    forecast_kind_words,
    instant_words,
    left_out_words,
    reason_words,
    region_words,
    span_seconds,
    value_words,
    with_unit,
)

YEAR, DAY, HOUR, MINUTE = 365 * 86400, 86400, 3600, 60
WORDS = re.compile(r"^\d[\d,]*(?:\.\d)? (?:year|day|hour|minute|second)s?$")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(2520 * DAY, "6.9 years"), (3 * DAY, "3 days"), (5 * HOUR, "5 hours"), (45, "45 seconds"), (1, "1 second"),
     (YEAR, "1 year"), (DAY + 2 * HOUR, "1.1 days"), (90, "1.5 minutes"), (12 * YEAR, "12 years"),
     (-3 * DAY, "3 days"), (59.97 * MINUTE, "1 hour"), (DAY - 1, "1 day"), (0, "0 seconds")],
)
def test_a_span_reads_in_its_largest_sensible_unit(seconds: float, expected: str) -> None:
    assert duration_words(seconds) == expected


@given(st.floats(min_value=0, max_value=1000 * YEAR, allow_nan=False))
def test_every_span_is_one_number_and_one_unit_never_below_one_of_a_larger_unit(seconds: float) -> None:
    text = duration_words(seconds)
    assert WORDS.match(text), text
    number, unit = text.split(" ")
    # The number is at least 1 (a larger unit it does not fill is not used) unless the span is under a second.
    assert float(number.replace(",", "")) >= 1 or seconds < 1
    # Never '60 minutes' or '24 hours': those are the next unit up.
    assert not (unit.startswith("minute") and number == "60") and not (unit.startswith("hour") and number == "24")
    # Singular exactly when the number is 1.
    assert unit.endswith("s") == (number != "1")


@given(st.floats(min_value=1, max_value=900 * YEAR, allow_nan=False))
def test_a_span_in_words_is_close_to_the_span(seconds: float) -> None:
    number, unit = duration_words(seconds).split(" ")
    size = {"year": YEAR, "day": DAY, "hour": HOUR, "minute": MINUTE, "second": 1}[unit.removesuffix("s")]
    # One decimal below 10, whole above: within 5% of the truth (rounding 1.05 to 1.0, say).
    assert abs(float(number.replace(",", "")) * size - seconds) <= 0.05 * seconds + 0.5


def test_the_issues_reason_reads_as_a_dispatcher_needs() -> None:
    assert reason_words("2.52e+03d since purchase (2020-01-04T00:00:00Z), at least 1y") == (
        "6.9 years since purchase (4 Jan 2020), at least 1 year"
    )
    assert reason_words("offline for 26h (since 2026-11-29T10:05:00Z)") == (
        "offline for 1.1 days (since 29 Nov 2026 10:05 UTC)"
    )
    # Fault codes and plain numbers are no spans.
    assert reason_words("open fault E21 (fan motor stall); 3 fault events") == (
        "open fault E21 (fan motor stall); 3 fault events"
    )


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["s", "m", "h", "d", "w", "y"]))
def test_every_span_the_api_writes_is_read_back(count: int, unit: str) -> None:
    seconds = span_seconds(f"{count}{unit}")
    assert seconds == count * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": YEAR}[unit]
    assert reason_words(f"for {count}{unit} now") == f"for {duration_words(seconds)} now"


# No span units (s, m, h, d, w, y) among the letters: a digit then one of them is a span.
@given(st.text(alphabet="abcefgikn ,()E0123456789.:-", max_size=60))
def test_reason_words_never_fails_and_leaves_text_without_spans_or_instants_alone(text: str) -> None:
    assert reason_words(text) == text


def test_instants_read_as_dates_and_times_in_utc() -> None:
    assert instant_words("2020-01-04T00:00:00Z") == "4 Jan 2020"
    assert instant_words(datetime(2026, 11, 30, 18, 5, tzinfo=UTC)) == "30 Nov 2026 18:05 UTC"
    assert instant_words("2026-11-30T20:05:00+02:00") == "30 Nov 2026 18:05 UTC"
    assert instant_words("not a time") == "not a time"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [(2.6, "A", "2.6 A"), (812.40, "h", "812.4 h"), (1250, "rpm", "1,250 rpm"), (None, "A", "–"), (True, None, "yes"),
     ("24h", None, "1 day"), ("2020-01-04T00:00:00Z", None, "4 Jan 2020"), (["E21", "E22"], None, "E21, E22"),
     ([], None, "none")],
)
def test_values_read_with_their_units(value: object, unit: str | None, expected: str) -> None:
    assert value_words(value, unit) == expected


def test_fault_codes_carry_their_meaning() -> None:
    catalog = {"E21": {"meaning": "fan motor stall", "severity": "critical"}}
    assert code_words("E21", catalog) == "E21 (fan motor stall)"
    assert code_words("E99", catalog) == "E99 (not in the catalog)"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("fan_current_a is 2.6, above 2", "fan_current_a is 2.6 A, above 2 A"),
     ("fan_current_a stayed above 2 for 10 minutes (lowest 2.1)", "fan_current_a stayed above 2 A for 10 minutes "
                                                                   "(lowest 2.1 A)"),
     ("fan_current_a at 1.9 is not rising (+0.05/day)", "fan_current_a at 1.9 A is not rising (+0.05/day)"),
     ("no fan_current_a reading", "no fan_current_a reading")],
)
def test_a_metrics_values_in_its_reason_carry_its_unit(reason: str, expected: str) -> None:
    assert with_unit(reason, "A") == expected
    assert with_unit(reason, None) == reason


def test_identifiers_read_as_words() -> None:
    from dashboard.words import key_words, metric_words, name_words, unit_words

    assert name_words("air_conditioner") == "air conditioner"
    assert name_words("last_seen") == "last seen"
    assert metric_words("compressor_current_a") == "compressor current"
    assert metric_words("heat_rate_c_per_min") == "heat rate"
    assert metric_words("grease_load_pct") == "grease load"
    assert metric_words("run_hours") == "run hours"
    assert metric_words("cycles") == "cycles"
    assert unit_words("degC") == "°C"
    assert unit_words("A") == "A"
    assert unit_words(None) == ""
    assert key_words("owner-birthday:RH-000025:2026-11-30T19:10:00Z:offer").endswith("…")
    assert key_words("short") == "short"


def test_events_read_as_words_with_their_fault_meaning() -> None:
    meanings = {"E21": {"meaning": "motor stall"}}
    assert event_words({"type": "fault", "code": "E21"}, meanings) == "fault E21 (motor stall)"
    assert event_words({"type": "maintenance_done"}, meanings) == "maintenance done"
    assert event_words({"type": "door_opened"}, meanings) == "door opened"
    assert event_words({"type": "fault", "code": "E99"}, meanings) == "fault E99 (not in the catalog)"


def test_the_forecast_in_words() -> None:
    assert forecast_kind_words("trade_in") == "Trade-in" and forecast_kind_words("maintenance") == "Maintenance"
    assert region_words(None) == "no region" and region_words("east") == "east"
    assert left_out_words([{"rule_id": "hood-trade-in", "unprojected": ["count"]},
                           {"rule_id": "hood-cleaning", "unprojected": []}]) == (
        "Conditions time does not drive are left out (a count of faults, a threshold): hood-trade-in (count). "
        "Those rules are projected from their other conditions.")
    assert left_out_words([{"rule_id": "hood-cleaning", "unprojected": []}]) is None
