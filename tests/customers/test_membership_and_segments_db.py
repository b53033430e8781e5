"""Membership and segments against the real database: the spend ledger makes the tier and the points, points are
spent once per key and never beyond the balance, and the segments job scores every customer."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from careloop.errors import Conflict
from customers import service
from customers.models import PointsSpendRequest
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)


def test_spend_makes_the_tier_and_points_are_spent_once_per_key(conn) -> None:
    customer = make_customer(conn)
    service.record_spend(conn, customer_id=customer.id, amount=Decimal(1200), source="purchase", key="p1",
                         at=NOW - dt.timedelta(days=400))  # earned 1200 points that expired; no longer counts
    service.record_spend(conn, customer_id=customer.id, amount=Decimal(1500), source="purchase", key="p2",
                         at=NOW - dt.timedelta(days=30))
    service.record_spend(conn, customer_id=customer.id, amount=Decimal(200), source="service_visit", key="p3",
                         at=NOW - dt.timedelta(days=1))
    membership = service.membership(conn, customer.id, now=NOW)
    assert membership.tier.name == "silver" and membership.spend_in_window == Decimal(1700)
    assert membership.next_tier.name == "gold" and membership.to_next_tier == Decimal(3300)
    assert membership.points_balance == 1500 + 250 and membership.points_expired == 1200
    spend = PointsSpendRequest(points=1600, reason="a filter set", key="order-77")
    after = service.spend_points(conn, customer.id, spend, now=NOW)
    assert after.points_balance == 150 and [lot.remaining for lot in after.lots] == [0, 150]
    assert service.spend_points(conn, customer.id, spend, now=NOW).points_balance == 150  # the same key: once
    with pytest.raises(Conflict, match="has 150 points, not 151"):
        service.spend_points(conn, customer.id, PointsSpendRequest(points=151, reason="x", key="k2"), now=NOW)


def test_the_segments_job_scores_every_customer_and_finds_the_big_spenders_and_old_fleets(conn) -> None:
    big = make_customer(conn, name="Big Spender")
    for n, model in enumerate(("RH-900", "OV-700", "DW-450")):
        make_device(conn, model=model, owner=big.id, purchased_on=f"201{n}-01-01")
    others = [make_customer(conn, name=f"Other {n}") for n in range(4)]
    service.record_spend(conn, customer_id=big.id, amount=Decimal(9000), source="purchase", key="big",
                         at=NOW - dt.timedelta(days=3))
    for n, other in enumerate(others[:2]):
        service.record_spend(conn, customer_id=other.id, amount=Decimal(300), source="purchase", key=f"o{n}",
                             at=NOW - dt.timedelta(days=200))
    assert service.refresh_segments(conn, now=NOW) == {"customers": 5, "top_revenue": 1}
    segment = service.segment_of(conn, big.id)
    assert segment.top_revenue and segment.m_score == 5
    assert "three_plus_appliances_oldest_over_5y" in segment.device_segments
    assert service.segment_of(conn, others[3].id).value_segment == "dormant"
    assert service.customer_360(conn, big.id, now=NOW).segment.top_revenue
