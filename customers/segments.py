"""Customer segments, without any server: recency, frequency and monetary scores (1 to 5, by rank among all
customers), a value segment named from them, the customers who bring 80% of revenue, and device-based segments
("three or more appliances, the oldest over five years")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

TOP_REVENUE_SHARE = Decimal("0.8")
VALUE_SEGMENTS = ("champions", "loyal", "big_spenders", "new", "at_risk", "regular", "dormant")
DEVICE_SEGMENTS = ("three_plus_appliances_oldest_over_5y", "multi_appliance", "aging_appliance")


@dataclass(frozen=True)
class CustomerValue:
    customer_id: int
    recency_days: int | None  # days since the last spend; None: nothing spent in the window
    frequency: int  # spends in the window
    monetary: Decimal  # spent in the window


@dataclass(frozen=True)
class CustomerSegment:
    customer_id: int
    r_score: int
    f_score: int
    m_score: int
    value_segment: str
    top_revenue: bool


def rank_scores(values: Sequence[float]) -> list[int]:
    """Scores 1 to 5 by rank (quintiles); higher values score higher and equal values score the same."""
    if not values:
        return []
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2  # ties share their middle rank
        start = end + 1
    n = len(values)
    return [min(5, 1 + int(5 * rank / n)) for rank in ranks]


def value_segment(r: int, f: int, m: int, *, active: bool) -> str:
    if not active:
        return "dormant"
    if r >= 4 and f >= 4 and m >= 4:
        return "champions"
    if f >= 4 and r >= 3:
        return "loyal"
    if r <= 2 and f >= 3:
        return "at_risk"
    if m >= 4:
        return "big_spenders"
    if r >= 4 and f <= 2:
        return "new"
    return "regular"


def top_revenue_customers(values: Sequence[CustomerValue], share: Decimal = TOP_REVENUE_SHARE) -> set[int]:
    """The fewest customers, biggest spenders first, who together bring `share` of all revenue."""
    spenders = sorted((v for v in values if v.monetary > 0), key=lambda v: (-v.monetary, v.customer_id))
    total = sum((v.monetary for v in spenders), Decimal(0))
    chosen: set[int] = set()
    running = Decimal(0)
    for value in spenders:
        if running >= share * total:
            break
        chosen.add(value.customer_id)
        running += value.monetary
    return chosen


def segment_customers(values: Sequence[CustomerValue]) -> list[CustomerSegment]:
    """Every customer's scores and segments, relative to all the others."""
    # Recency: fewer days is better; those who spent nothing rank below everyone.
    recency = [-(v.recency_days if v.recency_days is not None else 10**9) for v in values]
    r_scores = rank_scores(recency)
    f_scores = rank_scores([v.frequency for v in values])
    m_scores = rank_scores([float(v.monetary) for v in values])
    top = top_revenue_customers(values)
    return [
        CustomerSegment(
            customer_id=v.customer_id,
            r_score=r,
            f_score=f,
            m_score=m,
            value_segment=value_segment(r, f, m, active=v.frequency > 0),
            top_revenue=v.customer_id in top,
        )
        for v, r, f, m in zip(values, r_scores, f_scores, m_scores, strict=True)
    ]


def device_segments(appliances: int, oldest_age_years: float | None) -> list[str]:
    """Segments by what the customer owns."""
    found = []
    if appliances >= 3 and oldest_age_years is not None and oldest_age_years > 5:
        found.append("three_plus_appliances_oldest_over_5y")
    if appliances >= 2:
        found.append("multi_appliance")
    if oldest_age_years is not None and oldest_age_years > 8:
        found.append("aging_appliance")
    return found
