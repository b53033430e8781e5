"""Customer segments without any server: RFM scores, the customers who bring 80% of revenue, device segments."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from customers.segments import (
    VALUE_SEGMENTS,
    CustomerValue,
    device_segments,
    rank_scores,
    segment_customers,
    top_revenue_customers,
)


def test_the_best_recent_frequent_big_spender_is_a_champion_and_nonspenders_are_dormant() -> None:
    values = [CustomerValue(i, recency_days=100 - i, frequency=i, monetary=Decimal(i * 100)) for i in range(1, 21)]
    values.append(CustomerValue(99, recency_days=None, frequency=0, monetary=Decimal(0)))
    segments = {s.customer_id: s for s in segment_customers(values)}
    assert segments[20].value_segment == "champions" and (segments[20].r_score, segments[20].m_score) == (5, 5)
    assert segments[99].value_segment == "dormant" and segments[99].r_score == 1


def test_the_top_revenue_customers_bring_at_least_eighty_percent_with_as_few_as_possible() -> None:
    values = [CustomerValue(1, 1, 1, Decimal(800)), CustomerValue(2, 1, 1, Decimal(150)),
              CustomerValue(3, 1, 1, Decimal(50))]
    assert top_revenue_customers(values) == {1}


def test_three_appliances_the_oldest_over_five_years_is_a_segment() -> None:
    assert "three_plus_appliances_oldest_over_5y" in device_segments(3, 5.5)
    assert "three_plus_appliances_oldest_over_5y" not in device_segments(3, 4.9)
    assert device_segments(1, None) == []


@given(st.lists(st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=60))
def test_top_revenue_is_the_smallest_set_of_biggest_spenders_reaching_eighty_percent(amounts) -> None:
    values = [CustomerValue(i, 1, 1, amount) for i, amount in enumerate(amounts)]
    chosen = top_revenue_customers(values)
    total = sum(amounts, Decimal(0))
    chosen_sum = sum((amounts[i] for i in chosen), Decimal(0))
    assert chosen_sum >= Decimal("0.8") * total
    if chosen:
        smallest = min(amounts[i] for i in chosen)
        assert chosen_sum - smallest < Decimal("0.8") * total  # one fewer would not do
        assert all(amounts[i] <= smallest for i in range(len(amounts)) if i not in chosen)


@given(st.lists(st.integers(-50, 50), max_size=80))
def test_rank_scores_are_one_to_five_monotone_and_equal_for_ties(values) -> None:
    scores = rank_scores(values)
    assert all(1 <= s <= 5 for s in scores)
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if a < b:
                assert scores[i] <= scores[j]
            if a == b:
                assert scores[i] == scores[j]


def test_every_segment_name_is_known() -> None:
    values = [CustomerValue(i, (i * 37) % 400, i % 7, Decimal((i * 53) % 900)) for i in range(200)]
    assert {s.value_segment for s in segment_customers(values)} <= set(VALUE_SEGMENTS)
