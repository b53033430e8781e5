"""Offers without any server: coupon codes, the owner's words, webhook signatures, and the uplift interval."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offers.messages import (
    age_words,
    check_placeholders,
    coupon_code,
    normalise_code,
    owner_words,
    render,
    signature,
    value_words,
    verify_signature,
)
from offers.report import uplift, wilson
from offers.service import held_out, next_birthday


def test_coupon_codes_are_unguessable_and_typed_back_in_any_case() -> None:
    codes = {coupon_code() for _ in range(2000)}
    assert len(codes) == 2000
    code = next(iter(codes))
    assert len(code) == 19 and code.count("-") == 3
    assert normalise_code(code.lower().replace("-", " ")) == code
    assert normalise_code(code.replace("0", "O")) == code


def test_the_reason_names_the_appliance_and_its_age_in_plain_words() -> None:
    today = dt.date(2026, 6, 10)
    words = owner_words(reason="Your {appliance} has served you for {age}", name="Li Na", appliance="oven",
                        age=age_words(dt.date(2021, 3, 1), today), value=value_words("amount", Decimal(500)),
                        expires="8 September 2026", code="ABCD-EFGH-JKMN-PQRS")
    assert words["reason"] == "Your oven has served you for five years"
    text = render("Hello {name}, {reason_lower}. Take {value} off: {code}, until {expires}.", words)
    assert text == ("Hello Li Na, your oven has served you for five years. Take CNY 500 off: ABCD-EFGH-JKMN-PQRS, "
                    "until 8 September 2026.")
    assert age_words(dt.date(2025, 6, 1), today) == "a year" and age_words(None, today) == "a good many years"
    assert value_words("percent", Decimal("20.00")) == "20%"


def test_a_template_may_name_only_the_known_placeholders() -> None:
    check_placeholders("Hello {name}, {reason_lower}")
    for bad in ("{phone}", "{name.__class__}", "{name!r}", "{value:>10}", "{0}"):
        with pytest.raises(ValueError, match="unknown placeholder"):
            check_placeholders(bad)


def test_a_webhook_signature_covers_timestamp_and_body() -> None:
    header = signature("s3cret", 1_780_000_000, '{"event":"offer.issued"}')
    assert verify_signature("s3cret", header, '{"event":"offer.issued"}')
    assert not verify_signature("s3cret", header, '{"event":"offer.redeemed"}')
    assert not verify_signature("s3cret", header.replace("t=1780000000", "t=1780000001"), '{"event":"offer.issued"}')
    assert not verify_signature("s3cret", "garbage", "{}")


@given(st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(2020, 12, 31)),
       st.dates(min_value=dt.date(2024, 1, 1), max_value=dt.date(2040, 12, 31)))
def test_the_next_birthday_is_within_a_year_and_on_the_day(birthday: dt.date, today: dt.date) -> None:
    day = next_birthday(birthday, today)
    assert today <= day < today + dt.timedelta(days=367)
    assert (day.month, day.day) == (birthday.month, birthday.day) or (birthday.month, birthday.day) == (2, 29)


def test_the_holdout_keeps_about_its_share_and_answers_the_same_on_a_retry() -> None:
    keys = [f"rule:device:{n}" for n in range(20_000)]
    share = sum(held_out("trade-in", key, Decimal("0.1")) for key in keys) / len(keys)
    assert 0.09 < share < 0.11
    assert all(held_out("trade-in", key, Decimal("0.1")) == held_out("trade-in", key, Decimal("0.1"))
               for key in keys[:100])
    assert not any(held_out("trade-in", key, Decimal(0)) for key in keys[:100])


@given(st.integers(0, 500), st.integers(1, 500))
def test_the_wilson_interval_holds_the_observed_rate(successes: int, trials: int) -> None:
    successes = min(successes, trials)
    low, high = wilson(successes, trials)
    assert 0 <= low <= successes / trials <= high <= 1


@given(st.integers(0, 300), st.integers(1, 300), st.integers(0, 300), st.integers(1, 300))
def test_the_uplift_interval_holds_the_observed_difference(a: int, n: int, b: int, m: int) -> None:
    a, b = min(a, n), min(b, m)
    found = uplift(a, n, b, m)
    assert found.uplift == pytest.approx(a / n - b / m)
    assert -1 <= found.low <= found.uplift <= found.high <= 1


def test_the_uplift_interval_covers_the_true_difference_about_95_times_in_100() -> None:
    rng = random.Random(7)
    covered = 0
    trials = 2000
    for _ in range(trials):
        p_treated, p_holdout, n, m = 0.12, 0.05, 400, 100
        a = sum(rng.random() < p_treated for _ in range(n))
        b = sum(rng.random() < p_holdout for _ in range(m))
        found = uplift(a, n, b, m)
        covered += found.low <= p_treated - p_holdout <= found.high
    assert 0.93 <= covered / trials <= 0.975


def test_an_empty_group_gives_no_uplift() -> None:
    assert uplift(3, 10, 0, 0).uplift is None and uplift(0, 0, 0, 0).treated_rate is None
