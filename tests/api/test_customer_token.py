"""A customer-facing token: bound to one customer, it sees their profile, devices, telemetry, offers and coupons and
nothing of anyone else's; it is issued only for a customer who exists and is not erased, and erasure ends it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg2
import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import execute, fetch_one
from offers import service as offers_service
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "admin-token-for-customer-tokens-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MARKETING_EMAIL = [{"purpose": "marketing", "channel": "email", "granted": True}]


@dataclass
class Household:
    client: TestClient
    headers: dict[str, str]
    own_id: int
    other_id: int
    own_device: str
    other_device: str
    own_code: str
    other_code: str


@pytest.fixture
def household(database, conn) -> Household:
    """Two customers, each with a range hood and an offer sent to them; a token for the first."""
    own = make_customer(conn, name="Zhou Own", email="zhou.own@example.com", phone="+86 137 2222 0000",
                        timezone="UTC", consents=MARKETING_EMAIL)
    other = make_customer(conn, name="Sun Other", email="sun.other@example.com", phone="+86 131 8888 0000",
                          timezone="UTC", consents=MARKETING_EMAIL)
    own_device = make_device(conn, owner=own.id)
    other_device = make_device(conn, owner=other.id)
    now = dt.datetime.now(dt.UTC)
    codes = {}
    for customer, device in ((own, own_device), (other, other_device)):
        offer = offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=customer.id,
                                           device_id=device.id, key=f"customer-token:{customer.id}", now=now).offer
        codes[customer.id] = offer.code
    conn.commit()
    with database.transaction() as writer:
        token = create_token(writer, role="customer", name="zhou's app", customer_id=own.id)
    client = TestClient(create_app(database, admin_token=ADMIN_TOKEN, mqtt_url=None))
    return Household(client, {"Authorization": f"Bearer {token}"}, own.id, other.id, own_device.id, other_device.id,
                     codes[own.id], codes[other.id])


def test_whoami_names_the_customer_the_token_is_bound_to(household: Household) -> None:
    answer = household.client.get("/whoami", headers=household.headers)
    assert answer.status_code == 200
    assert answer.json()["role"] == "customer" and answer.json()["customer_id"] == household.own_id
    assert answer.json()["technician_id"] is None


def test_a_customer_reads_their_own_profile_and_membership_and_nobody_elses(household: Household) -> None:
    client, headers = household.client, household.headers
    profile = client.get(f"/customers/{household.own_id}", headers=headers)
    assert profile.status_code == 200
    assert (profile.json()["email"], profile.json()["phone"]) == ("zhou.own@example.com", "+86 137 2222 0000")
    assert client.get(f"/customers/{household.own_id}/membership", headers=headers).status_code == 200
    for path in (f"/customers/{household.other_id}", f"/customers/{household.other_id}/membership",
                 "/customers/999999"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404 and "Sun Other" not in answer.text, path
    # what staff use about a customer is not theirs, not even about themselves
    for path in ("/customers", f"/customers/{household.own_id}/360",
                 f"/customers/{household.own_id}/consents/history"):
        assert client.get(path, headers=headers).status_code == 403, path
    assert client.patch(f"/customers/{household.own_id}", headers=headers,
                        json={"name": "Someone"}).status_code == 403


def test_a_customer_lists_and_reads_only_their_own_devices(household: Household) -> None:
    client, headers = household.client, household.headers
    for params in ({}, {"owner": household.other_id}, {"q": household.other_device}):
        listed = client.get("/devices", headers=headers, params=params).json()
        ids = [device["id"] for device in listed["items"]]
        assert household.other_device not in ids and listed["total"] == len(ids), params
    assert [d["id"] for d in client.get("/devices", headers=headers).json()["items"]] == [household.own_device]
    assert client.get(f"/devices/{household.own_device}", headers=headers).status_code == 200
    assert client.get(f"/devices/{household.own_device}/telemetry", headers=headers).status_code == 200
    for path in (f"/devices/{household.other_device}", f"/devices/{household.other_device}/telemetry"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 404 and "Sun Other" not in answer.text, path


def test_a_customer_lists_and_looks_up_only_their_own_offers(household: Household) -> None:
    client, headers = household.client, household.headers
    for params in ({}, {"customer_id": household.own_id}, {"customer_id": household.other_id},
                   {"device_id": household.other_device}):
        listed = client.get("/offers", headers=headers, params=params).json()
        assert {offer["customer_id"] for offer in listed["items"]} <= {household.own_id}, params
        assert household.other_code not in str(listed)
    mine = client.get("/offers", headers=headers).json()
    assert [offer["code"] for offer in mine["items"]] == [household.own_code] and mine["total"] == 1
    # a code as a person types it finds their offer; another's is as unknown as a code that does not exist
    typed = household.own_code.lower().replace("-", " ")
    assert client.get(f"/offers/{typed}", headers=headers).json()["code"] == household.own_code
    other = client.get(f"/offers/{household.other_code}", headers=headers)
    assert other.status_code == 404 and other.json() == client.get("/offers/NOPE-NOPE-NOPE-NOPE",
                                                                   headers=headers).json()


def test_a_customer_redeems_only_their_own_code(household: Household) -> None:
    client, headers = household.client, household.headers
    foreign = client.post(f"/offers/{household.other_code}/redeem", headers=headers,
                          json={"customer_id": household.other_id, "amount": "10"})
    assert foreign.status_code == 404 and household.other_code not in foreign.json()["detail"]
    not_for_them = client.post(f"/offers/{household.own_code}/redeem", headers=headers,
                               json={"customer_id": household.other_id})
    assert not_for_them.status_code == 403
    redeemed = client.post(f"/offers/{household.own_code}/redeem", headers=headers,
                           json={"customer_id": household.own_id, "amount": "25"})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["status"] == "redeemed"
    others = client.get(f"/offers/{household.other_code}", headers=ADMIN).json()
    assert others["status"] != "redeemed"


def test_everything_else_is_refused_to_a_customer(household: Household) -> None:
    client, headers = household.client, household.headers
    for method, path in (("GET", "/models"), ("GET", "/rules"), ("GET", "/detections"), ("GET", "/service-orders"),
                         ("GET", "/call-tasks"), ("GET", "/technicians"), ("GET", "/offer-templates"),
                         ("GET", "/reports/offers"), ("GET", "/outbox"), ("GET", "/tokens"),
                         ("GET", "/fleet/summary"), ("GET", "/ingest/quarantine"), ("POST", "/devices"),
                         ("POST", f"/customers/{household.own_id}/points/spend"),
                         ("POST", f"/customers/{household.own_id}/consents"), ("POST", "/tokens")):
        answer = client.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert answer.status_code == 403 and "needs one of" in answer.json()["detail"], (method, path)


def test_a_customer_token_is_issued_only_naming_a_customer_who_is_there(household: Household, database) -> None:
    client = household.client
    made = client.post("/tokens", headers=ADMIN, json={"role": "customer", "name": "shop app",
                                                       "customer_id": household.other_id})
    assert made.status_code == 201 and made.json()["customer_id"] == household.other_id
    assert made.json()["token"].startswith("cl_cust_")
    listed = client.get("/tokens", headers=ADMIN).json()["items"]
    assert any(token["customer_id"] == household.other_id for token in listed)
    for body in ({"role": "customer", "name": "x"},
                 {"role": "customer", "name": "x", "customer_id": 999999},
                 {"role": "dispatcher", "name": "x", "customer_id": household.own_id}):
        refused = client.post("/tokens", headers=ADMIN, json=body)
        assert refused.status_code == 422 and refused.json()["detail"].startswith("customer_id: "), body
    with pytest.raises(psycopg2.errors.CheckViolation), database.transaction() as conn:
        # the database holds it too: a customer's token without a customer, or staff's naming one
        execute(conn, "INSERT INTO api_tokens (token_sha256, role, name, expires_at) "
                      "VALUES ('x', 'customer', 'x', now() + interval '1 day')")


def test_erasing_the_customer_ends_their_token_and_forgets_its_name(household: Household, database) -> None:
    client, headers = household.client, household.headers
    assert client.delete(f"/customers/{household.own_id}", headers=ADMIN).status_code == 200
    refused = client.get("/whoami", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    with database.transaction() as conn:
        row = fetch_one(conn, "SELECT name, revoked_by FROM api_tokens WHERE customer_id = %s", (household.own_id,))
        assert (row["name"], row["revoked_by"]) == ("erased customer", "erasure")
        with pytest.raises(ValueError, match="erased"):
            create_token(conn, role="customer", name="again", customer_id=household.own_id)
    again = client.post("/tokens", headers=ADMIN, json={"role": "customer", "name": "again",
                                                        "customer_id": household.own_id})
    assert again.status_code == 422 and "erased" in again.json()["detail"]
