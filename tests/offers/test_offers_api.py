"""Offers over HTTP: templates, the list by customer, redemption's refusals (403/409/410), the report, webhooks;
and the customer's consents, membership and 360 view with what offers and orders add to it."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from offers import service
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-offer-tests"}
TEMPLATE = {
    "code": "descaler-spring", "name": "Spring descaler", "category": "sales", "value_kind": "percent",
    "value": "15", "validity_days": 30, "eligibility": {"kinds": ["water_heater"]}, "channels": ["email"],
    "subject": "{value} off descaler", "reason": "Spring is a good time to descale your {appliance}",
    "message": "Hello {name}, {reason_lower}: code {code} until {expires}.", "holdout_share": "0.2",
    "rule_holdouts": {"wh-scale": "0.5"},
}


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=mqtt_url))


def token(database, role: str) -> dict:
    with database.transaction() as conn:
        return {"Authorization": f"Bearer {create_token(conn, role=role, name='test')}"}


def test_marketers_manage_templates_and_the_seeded_ones_are_there(client, database) -> None:
    marketer = token(database, "marketer")
    codes = [t["code"] for t in client.get("/offer-templates", headers=marketer).json()["items"]]
    assert {"member-cleaning", "birthday-coupon", "consumables", "extended-warranty"} <= set(codes)
    assert any("trade-in" in code for code in codes)
    created = client.post("/offer-templates", json=TEMPLATE, headers=marketer)
    assert created.status_code == 201 and created.json()["rule_holdouts"] == {"wh-scale": "0.5"}
    assert client.post("/offer-templates", json=TEMPLATE, headers=marketer).status_code == 409
    bad = client.post("/offer-templates", json={**TEMPLATE, "code": "x", "message": "{password}"}, headers=marketer)
    assert bad.status_code == 422 and "unknown placeholder" in bad.text
    assert client.post("/offer-templates", json={**TEMPLATE, "code": "y", "value": "150"},
                       headers=marketer).status_code == 422
    technician = token(database, "technician")
    assert client.post("/offer-templates", json={**TEMPLATE, "code": "z"}, headers=technician).status_code == 403
    assert client.get("/offers", headers=technician).status_code == 403


def test_a_code_redeems_once_for_its_owner_over_http(client, conn, database) -> None:
    owner = make_customer(conn, email="owner@example.com", timezone="UTC",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    stranger = make_customer(conn, name="Stranger")
    hood = make_device(conn, owner=owner.id)
    now = dt.datetime.now(dt.UTC)
    fresh = service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                                key="api:fresh", now=now).offer
    old = service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                              key="api:old", now=now - dt.timedelta(days=400)).offer
    conn.commit()
    desk = token(database, "dispatcher")
    listed = client.get("/offers", params={"customer_id": owner.id}, headers=desk).json()
    assert listed["total"] == 2 and {o["code"] for o in listed["items"]} == {fresh.code, old.code}
    assert all({"code", "status"} <= set(o) for o in listed["items"])

    other = client.post(f"/offers/{fresh.code}/redeem", json={"customer_id": stranger.id}, headers=desk)
    assert other.status_code == 403 and other.json()["detail"] == "this code was issued to another customer"
    first = client.post(f"/offers/{fresh.code}/redeem", json={"customer_id": owner.id, "amount": "80"}, headers=desk)
    assert first.status_code == 200 and first.json()["status"] == "redeemed"
    second = client.post(f"/offers/{fresh.code}/redeem", json={"customer_id": owner.id}, headers=desk)
    assert second.status_code == 409 and "redeemed already" in second.json()["detail"]
    expired = client.post(f"/offers/{old.code}/redeem", json={"customer_id": owner.id}, headers=desk)
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    assert client.post("/offers/NOPE-NOPE-NOPE-NOPE/redeem", json={"customer_id": owner.id},
                       headers=desk).status_code == 404

    report = client.get("/reports/offers", params={"group_by": "template"}, headers=token(database, "marketer"))
    assert report.status_code == 200
    [row] = report.json()["rows"]
    assert (row["key"], row["issued"], row["redeemed"], row["revenue"]) == ("member-cleaning", 2, 1, "80.00")


def test_only_the_hotline_records_consents_and_purchases_and_the_360_view_shows_the_whole_picture(
    client, conn, database
) -> None:
    owner = make_customer(conn, email="owner@example.com", timezone="UTC",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    hood = make_device(conn, owner=owner.id)
    service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                        key="api:360", now=dt.datetime.now(dt.UTC))
    conn.commit()
    marketer, desk = token(database, "marketer"), token(database, "dispatcher")
    withdrawal = {"purpose": "marketing", "channel": "email", "granted": False, "source": "unsubscribe link"}
    assert client.post(f"/customers/{owner.id}/consents", headers=marketer, json=withdrawal).status_code == 403
    withdrawn = client.post(f"/customers/{owner.id}/consents", headers=desk, json=withdrawal)
    assert withdrawn.status_code == 200
    assert {"purpose": "marketing", "channel": "email", "granted": False} in withdrawn.json()
    history = client.get(f"/customers/{owner.id}/consents/history", headers=marketer).json()["items"]
    assert [(h["granted"], h["source"]) for h in history if h["purpose"] == "marketing"] == [
        (False, "unsubscribe link"), (True, "sign-up")]

    gift = {"points": 10, "reason": "gift", "key": "k1"}
    assert client.post(f"/customers/{owner.id}/points/spend", headers=marketer, json=gift).status_code == 403
    spent = client.post(f"/customers/{owner.id}/points/spend", headers=desk, json=gift)
    assert spent.status_code == 409 and "0 points" in spent.json()["detail"]
    membership = client.get(f"/customers/{owner.id}/membership", headers=marketer).json()
    assert membership["tier"]["name"] == "basic" and membership["points_balance"] == 0
    purchase = {"amount": "1200", "key": "shop-order-1"}
    assert client.post(f"/customers/{owner.id}/purchases", json=purchase, headers=marketer).status_code == 403
    assert client.post(f"/customers/{owner.id}/purchases", json=purchase, headers=desk).status_code == 200
    bought = client.post(f"/customers/{owner.id}/purchases", json=purchase, headers=desk).json()  # once
    assert bought["tier"]["name"] == "silver" and bought["points_balance"] == 1200
    assert client.post(f"/customers/{owner.id}/points/spend", headers=desk,
                       json={"points": 200, "reason": "gift", "key": "k1"}).json()["points_balance"] == 1000

    picture = client.get(f"/customers/{owner.id}/360", headers=marketer).json()
    assert picture["membership"]["tier"]["name"] == "silver" and picture["membership"]["points_balance"] == 1000
    assert [o["template"] for o in picture["offers"]] == ["member-cleaning"]
    assert picture["contacts"][0]["purpose"] == "marketing"
    kinds = {entry["kind"] for entry in picture["timeline"]}
    assert {"device", "offer", "contact", "consent"} <= kinds


def test_only_an_admin_registers_webhooks_and_the_secret_is_shown_once(client, database) -> None:
    body = {"name": "sms gateway", "url": "http://93.184.216.34/sms", "events": ["offer.sms"]}
    assert client.post("/webhooks", json=body, headers=token(database, "marketer")).status_code == 403
    created = client.post("/webhooks", json=body, headers=ADMIN)
    assert created.status_code == 201 and len(created.json()["secret"]) > 30
    [listed] = client.get("/webhooks", headers=ADMIN).json()["items"]
    assert "secret" not in listed and listed["events"] == ["offer.sms"] and listed["private_network"] is False


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/sms", "http://localhost:8080/hooks", "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hooks", "http://192.168.0.10/hooks", "http://[::1]/hooks", "http://[::ffff:127.0.0.1]/hooks",
    "http://0.0.0.0/hooks",
    # IPv6 forms that carry a loopback, link-local or private IPv4 address: IPv4-compatible, NAT64, 6to4
    "http://[::127.0.0.1]/", "http://[::a9fe:a9fe]/", "http://[64:ff9b::7f00:1]/", "http://[64:ff9b::a9fe:a9fe]/latest/",
    "http://[64:ff9b::a00:1]/", "http://[64:ff9b:1::a00:1]/", "http://[2002:7f00:1::]/", "http://[2002:a9fe:a9fe::]/",
])
def test_webhooks_to_loopback_link_local_or_private_addresses_are_refused_naming_the_url(client, url) -> None:
    refused = client.post("/webhooks", json={"name": "inside", "url": url, "events": ["offer.issued"]},
                          headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("url: its host") and "public receivers only" in refused.json()["detail"]


def test_a_private_receiver_is_allowed_where_the_setting_says_so(client, monkeypatch) -> None:
    from offers.delivery import delivery_settings

    monkeypatch.setenv("CARELOOP_WEBHOOK_PRIVATE_NETWORKS", "true")
    delivery_settings.cache_clear()
    try:
        created = client.post("/webhooks", json={"name": "on premise", "url": "http://10.1.2.3/hooks",
                                                 "events": ["offer.issued"]}, headers=ADMIN)
    finally:
        monkeypatch.undo()
        delivery_settings.cache_clear()
    assert created.status_code == 201 and created.json()["private_network"] is True


def test_a_rule_offering_an_unknown_template_is_refused_naming_the_field(client, database) -> None:
    rule = {"id": "hood-offer-typo", "applies_to": {"kind": "range_hood"},
            "when": {"fault": {"codes": ["E21"]}}, "then": [{"offer": {"template": "nope"}}]}
    refused = client.post("/rules", json=rule, headers=ADMIN)
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]
    assert problem["loc"] == ["then", 0, "offer", "template"] and "unknown offer template 'nope'" in problem["msg"]
    assert client.post("/offer-templates", json=TEMPLATE, headers=ADMIN).status_code == 201
    accepted = client.post("/rules", json={**rule, "then": [{"offer": {"template": TEMPLATE["code"]}}]}, headers=ADMIN)
    assert accepted.status_code == 201
    changed = client.put(f"/rules/{rule['id']}", json=rule, headers=ADMIN)
    assert changed.status_code == 422 and changed.json()["detail"][0]["loc"] == ["then", 0, "offer", "template"]


def test_the_built_in_rules_offer_only_templates_that_are_seeded(conn) -> None:
    from rules.builtin import load_builtin_rules
    from rules.catalog_checks import offer_template_errors
    from rules.repo import offer_template_codes

    known = offer_template_codes(conn)
    rules = load_builtin_rules()
    assert any(getattr(action, "offer", None) for rule in rules for action in rule.then)
    assert [(rule.id, problem) for rule in rules for problem in offer_template_errors(rule.then, known)] == []
