"""Webhook endpoints as an attacker would try them: credentials never shown back (GET /webhooks, GET /outbox),
a receiver that turns private after registration refused at delivery, and a deleted endpoint whose pending
messages are cancelled with the reason instead of lost."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_all
from offers import repo, service
from offers.delivery import deliver_due
from offers.messages import masked_address, masked_url
from offers.models import WebhookCreate
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-webhook-tests"}
NOW = dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)
SECRET_URL = "https://crm:pa55word@93.184.216.34/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX?token=s3cr3t&x=1"


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN["Authorization"].split()[1], mqtt_url=mqtt_url))


def test_urls_and_addresses_are_shown_without_their_credentials() -> None:
    assert masked_url(SECRET_URL) == "https://***@93.184.216.34/services/T000/B000/***?token=***&x=***"
    assert masked_url("http://127.0.0.1:8080/hooks") == "http://127.0.0.1:8080/hooks"
    assert masked_url("http://[::1]:9/a1b2c3d4e5") == "http://[::1]:9/***"
    assert masked_address("wang.fang@example.com") == "w***@example.com"


def test_webhook_secrets_and_customer_addresses_never_reach_the_lists_and_a_deleted_endpoint_cancels_its_messages(
    client, conn, database, webhook_receiver, transports
) -> None:
    owner = make_customer(conn, name="Wang Fang", email="wang.fang@example.com", timezone="UTC",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    hood = make_device(conn, owner=owner.id)
    crm = service.create_webhook(conn, WebhookCreate(name="crm", url=SECRET_URL, events=["offer.issued"]))
    service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                        key="hooks:1", now=NOW)
    conn.commit()
    marketer = {"Authorization": f"Bearer {create_token(conn, role='marketer', name='m')}"}
    conn.commit()

    for answer in (client.get("/webhooks", headers=ADMIN), client.get("/outbox", headers=marketer)):
        assert answer.status_code == 200
        assert not [word for word in ("pa55word", "s3cr3t", "XXXXXXXXXXXXXXXXXXXXXXXX", "wang.fang@", crm.secret)
                    if word in answer.text]
    destinations = {m["event"]: m["destination"] for m in client.get("/outbox", headers=marketer).json()["items"]}
    assert destinations == {"offer.email": "w***@example.com", "offer.issued": masked_url(SECRET_URL)}

    assert client.delete(f"/webhooks/{crm.id}", headers=marketer).status_code == 403
    deleted = client.delete(f"/webhooks/{crm.id}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["cancelled_messages"] == 1
    again = client.delete(f"/webhooks/{crm.id}", headers=ADMIN)
    assert again.status_code == 200 and again.json()["deleted_at"] == deleted.json()["deleted_at"]
    assert client.delete("/webhooks/999999", headers=ADMIN).status_code == 404
    assert client.get("/webhooks", headers=ADMIN).json()["total"] == 0
    [cancelled] = client.get("/outbox", params={"status": "cancelled"}, headers=marketer).json()["items"]
    assert cancelled["event"] == "offer.issued"
    assert cancelled["cancel_reason"] == f"webhook endpoint {crm.id} (crm) was deleted before it was sent"
    with database.transaction() as sender:
        assert deliver_due(sender, now=NOW, transports=transports)["sent"] == 1  # the e-mail alone
    assert fetch_all(conn, "SELECT secret FROM webhook_endpoints WHERE id = %s", (crm.id,)) == [{"secret": ""}]


def test_a_receiver_found_private_at_delivery_is_not_called(conn, database, webhook_receiver, transports) -> None:
    # as if a public name had been pointed at a loopback address after the endpoint was registered
    endpoint_id = repo.insert_endpoint(conn, name="rebound", url=webhook_receiver.url, secret="s",
                                       events=["offer.issued"], private_network=False)
    owner = make_customer(conn, email="a@example.com", timezone="UTC",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id,
                        device_id=make_device(conn, owner=owner.id).id, key="hooks:2", now=NOW)
    conn.commit()
    with database.transaction() as sender:
        counts = deliver_due(sender, now=NOW, transports=transports)
    assert counts["dead"] == 1 and webhook_receiver.requests == []
    [dead] = fetch_all(conn, "SELECT status, last_error FROM outbox WHERE endpoint_id = %s", (endpoint_id,))
    assert dead["status"] == "dead" and "loopback address" in dead["last_error"]


def test_an_error_kept_for_a_message_never_quotes_the_receivers_credentials(
    client, conn, database, webhook_receiver, transports
) -> None:
    url = webhook_receiver.url.replace("http://", "http://crm:pa55word@")
    service.create_webhook(conn, WebhookCreate(name="crm", url=url, events=["offer.issued"]),
                           allow_private_network=True)
    owner = make_customer(conn, email="b@example.com", timezone="UTC",
                          consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
    service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id,
                        device_id=make_device(conn, owner=owner.id).id, key="hooks:3", now=NOW)
    conn.commit()
    webhook_receiver.status = 400
    with database.transaction() as sender:
        assert deliver_due(sender, now=NOW, transports=transports)["dead"] == 1
    assert webhook_receiver.requests[0]["headers"]["Authorization"].startswith("Basic ")  # the receiver got them
    [kept] = fetch_all(conn, "SELECT last_error FROM outbox WHERE transport = 'webhook'")
    assert "pa55word" not in kept["last_error"] and "refused it: 400" in kept["last_error"]
    shown = client.get("/outbox", params={"status": "dead"}, headers=ADMIN)
    assert shown.status_code == 200 and "pa55word" not in shown.text and "***@127.0.0.1" in shown.text
