"""A tier's free cleaning visits a year and their use, against the real database: a member cleaning offer
redeemed or a maintenance order completed unpaid uses one (the same visit once), shown in the membership and the
360 view; paid visits, last year's and repairs do not count."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from customers import service
from offers import service as offers_service
from offers.models import Redemption
from service_orders import service as orders
from service_orders.models import Actor, Assignment, Completion, OrderOpen, TechnicianCreate
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-free-visit-tests"}
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
DESK = Actor(name="Zhang Wei", role="dispatcher")


def completed_maintenance(conn, device_id: str, technician_id: int, *, paid: bool, at: dt.datetime,
                          order_type: str = "maintenance") -> int:
    order = orders.open_order(conn, OrderOpen(device_id=device_id, type=order_type, skill="cleaning",
                                              reason="grease filter cleaning"), actor=DESK, now=at)
    orders.assign(conn, order.id, Assignment(technician_id=technician_id), actor=DESK, now=at)
    orders.change_status(conn, order.id, "in_progress", actor=DESK, now=at)
    orders.complete(conn, order.id, Completion(outcome="cleaned", cost=Decimal(80 if paid else 0), paid=paid),
                    actor=DESK, now=at)
    return order.id


def test_free_cleaning_visits_follow_the_tier_and_count_redeemed_member_offers_and_free_maintenance_visits(
    conn, database, mqtt_url
) -> None:
    owner = make_customer(conn, timezone="UTC", email="owner@example.com",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    hood = make_device(conn, owner=owner.id)
    technician = orders.create_technician(conn, TechnicianCreate(name="Liu Yang", skills=["cleaning"],
                                                                 region="east"))
    visits = service.membership(conn, owner.id, now=NOW).free_cleaning_visits
    assert (visits.year, visits.allowance, visits.used, visits.remaining) == (NOW.year, 0, 0, 0)  # basic: none

    service.record_spend(conn, customer_id=owner.id, amount=Decimal(5200), source="purchase", key="fv:shop",
                         at=NOW - dt.timedelta(days=40))  # gold: two a year
    offer = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id,
                                       device_id=hood.id, key="fv:offer", now=NOW - dt.timedelta(days=1)).offer
    offers_service.redeem(conn, offer.code, Redemption(customer_id=owner.id), now=NOW)
    completed_maintenance(conn, hood.id, technician.id, paid=True, at=NOW)  # paid: not a free visit
    completed_maintenance(conn, hood.id, technician.id, paid=False, at=NOW, order_type="repair")  # not maintenance
    visits = service.membership(conn, owner.id, now=NOW).free_cleaning_visits
    assert (visits.allowance, visits.used, visits.remaining) == (2, 1, 1)
    assert visits.visits[0].what == "offer member-cleaning redeemed"

    free_order = completed_maintenance(conn, hood.id, technician.id, paid=False, at=NOW + dt.timedelta(minutes=5))
    conn.commit()
    client = TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=mqtt_url))
    shown = client.get(f"/customers/{owner.id}/membership", headers=ADMIN).json()["free_cleaning_visits"]
    assert (shown["allowance"], shown["used"], shown["remaining"]) == (2, 2, 0)
    assert shown["visits"][1]["what"] == f"maintenance order {free_order} completed as a free visit"
    picture = client.get(f"/customers/{owner.id}/360", headers=ADMIN).json()
    assert picture["membership"]["free_cleaning_visits"]["remaining"] == 0

    completed_maintenance(conn, hood.id, technician.id, paid=False, at=NOW + dt.timedelta(minutes=10))
    visits = service.membership(conn, owner.id, now=NOW).free_cleaning_visits
    assert (visits.used, visits.remaining) == (3, 0)  # more than the tier brings: used counts them all
    next_year = dt.datetime(NOW.year + 1, 1, 1, 12, tzinfo=dt.UTC)
    visits = service.membership(conn, owner.id, now=next_year).free_cleaning_visits
    assert (visits.year, visits.used, visits.remaining) == (NOW.year + 1, 0, visits.allowance)


def test_a_redeemed_member_offer_and_the_order_of_the_same_detection_are_one_visit(conn) -> None:
    owner = make_customer(conn, timezone="UTC", email="owner@example.com",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    hood = make_device(conn, owner=owner.id)
    technician = orders.create_technician(conn, TechnicianCreate(name="Liu Yang", skills=["cleaning"],
                                                                 region="east"))
    offer = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id,
                                       device_id=hood.id, key="fv:detection", detection_id=4242, now=NOW).offer
    offers_service.redeem(conn, offer.code, Redemption(customer_id=owner.id), now=NOW)
    order_id = completed_maintenance(conn, hood.id, technician.id, paid=False, at=NOW)
    with conn.cursor() as cursor:  # as when the rule that offered the visit also opened the order
        cursor.execute("UPDATE service_orders SET detection_ids = '{4242}' WHERE id = %s", (order_id,))
    visits = service.membership(conn, owner.id, now=NOW).free_cleaning_visits
    assert [visit.what for visit in visits.visits] == ["offer member-cleaning redeemed"]
