"""Durations: `90s` ... `5y` to whole seconds, back to text, and clear errors for anything else."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from careloop.durations import DURATION_PATTERN, MAX_SECONDS, UNIT_SECONDS, Duration
from rules.models import RuleError, parse_rule


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600), ("5y", 5 * 365 * 86400)],
)
def test_contract_examples_parse_to_seconds(text: str, seconds: int) -> None:
    assert Duration.parse(text).seconds == seconds


def test_duration_prints_in_its_largest_exact_unit() -> None:
    assert [str(Duration.parse(text)) for text in ("90s", "120s", "24h", "7d", "365d", "0m")] == [
        "90s",
        "2m",
        "1d",
        "7d",
        "1y",
        "0s",
    ]


@given(count=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(UNIT_SECONDS)))
def test_any_count_and_unit_parses_to_count_times_unit(count: int, unit: str) -> None:
    assume(count * UNIT_SECONDS[unit] <= MAX_SECONDS)
    assert Duration.parse(f"{count}{unit}").seconds == count * UNIT_SECONDS[unit]


@given(seconds=st.integers(min_value=0, max_value=200 * 365 * 86400))
def test_printed_duration_reads_back_equal(seconds: int) -> None:
    duration = Duration(seconds)
    assert Duration.parse(str(duration)) == duration


@given(text=st.text(max_size=12).filter(lambda text: not DURATION_PATTERN.match(text)))
def test_anything_else_is_refused_with_the_text_in_the_message(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        Duration.parse(text)


def test_unknown_unit_names_the_value_and_the_units() -> None:
    with pytest.raises(ValueError, match=r"invalid duration '5x'.*s, m, h, d, w, y"):
        Duration.parse("5x")


def test_unknown_unit_in_a_rule_names_the_field() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule({"id": "r", "when": {"offline": {"for": "5x"}}})
    assert caught.value.errors == [
        {
            "loc": ["when", "offline", "for"],
            "msg": "`for`: invalid duration '5x': write a whole number and a unit, one of s, m, h, d, w, y "
            "(e.g. 90s, 30m, 24h, 7d, 5y)",
        }
    ]


@pytest.mark.parametrize("value", [30, 1.5, True, None])
def test_bare_numbers_are_refused_because_the_unit_is_ambiguous(value: object) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule({"id": "r", "when": {"offline": {"for": "1d"}}, "cooldown": value})
    (error,) = caught.value.errors
    assert error["loc"] == ["cooldown"]
    assert "with a unit" in error["msg"]


def test_negative_durations_do_not_exist() -> None:
    with pytest.raises(ValueError, match="negative"):
        Duration(-1)


def test_absurdly_long_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="longer than 1000y"):
        Duration.parse("1001y")
