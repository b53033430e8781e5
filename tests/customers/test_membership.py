"""Membership without any server: tiers over a rolling window, points earned, spent oldest first, expiring."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from customers.membership import (
    POINTS_LIFETIME,
    TIER_WINDOW,
    TIERS,
    PointsLot,
    PointsSpend,
    Spend,
    points_lots,
    points_state,
    tier_at,
    tier_for_spend,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_tiers_follow_spend_over_the_rolling_window() -> None:
    spends = [Spend(Decimal(3000), day(0)), Spend(Decimal(2500), day(100))]
    assert tier_at(spends, day(-1)).name == "basic"
    assert tier_at(spends, day(0)).name == "silver"
    assert tier_at(spends, day(100)).name == "gold"
    # a year after the first spend it no longer counts: back to silver
    assert tier_at(spends, day(0) + TIER_WINDOW).name == "silver"
    assert tier_at(spends, day(100) + TIER_WINDOW).name == "basic"


def test_higher_tiers_bring_more_benefits() -> None:
    for lower, higher in zip(TIERS, TIERS[1:], strict=False):
        assert higher.min_spend > lower.min_spend and higher.discount_pct > lower.discount_pct
        assert higher.points_multiplier > lower.points_multiplier
        assert higher.free_cleaning_visits >= lower.free_cleaning_visits


def test_points_are_earned_at_the_multiplier_of_the_tier_held_before_the_spend() -> None:
    lots = points_lots([Spend(Decimal(1000), day(0)), Spend(Decimal(100), day(1)), Spend(Decimal(-50), day(2))])
    assert [lot.points for lot in lots] == [1000, 125]  # basic, then silver (x1.25); a refund earns nothing


def test_points_are_spent_oldest_first_and_expire_after_their_lifetime() -> None:
    lots = [PointsLot(100, day(0), day(0) + POINTS_LIFETIME), PointsLot(50, day(200), day(200) + POINTS_LIFETIME)]
    state = points_state(lots, [PointsSpend(120, day(250))], now=day(300))
    assert state.balance == 30 and [lot.remaining for lot in state.lots] == [0, 30]
    later = points_state(lots, [PointsSpend(60, day(250))], now=day(370))
    assert later.expired == 40 and later.balance == 50  # what was left of the first lot expired at day 365


amounts = st.decimals(min_value=-200, max_value=5000, places=2, allow_nan=False, allow_infinity=False)
moments = st.integers(0, 900).map(day)


@settings(max_examples=200)
@given(st.lists(st.tuples(amounts, moments), max_size=25), st.lists(st.tuples(st.integers(1, 3000), moments),
                                                                     max_size=15), st.integers(0, 1000).map(day))
def test_the_points_ledger_adds_up_and_spends_oldest_live_points_first(spend_rows, points_rows, now) -> None:
    lots = points_lots([Spend(amount, at) for amount, at in spend_rows])
    state = points_state(lots, [PointsSpend(points, at) for points, at in points_rows], now)
    earned_by_now = sum(lot.points for lot in lots if lot.earned_at <= now)
    assert state.earned == earned_by_now
    assert state.balance >= 0 and state.balance + state.spent + state.expired == state.earned
    # no point older than its lifetime counts
    assert all(lot.earned_at > now - POINTS_LIFETIME for lot in state.lots)
    # oldest first: a live lot that was touched leaves nothing in any older live lot
    for older in state.lots:
        for newer in state.lots:
            if older.earned_at < newer.earned_at and newer.remaining < newer.points:
                assert older.remaining == 0
    assert state.expiring_soon <= state.balance


@given(st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False))
def test_the_tier_is_the_highest_threshold_reached(spend: Decimal) -> None:
    tier = tier_for_spend(spend)
    assert tier.min_spend <= spend
    assert all(other.min_spend > spend for other in TIERS if other.min_spend > tier.min_spend)
