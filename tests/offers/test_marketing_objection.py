"""A customer's objection to marketing stops all of it at once: by the unsubscribe link every marketing e-mail
carries (no bearer token; an unguessable token of their own; idempotent), or told to the hotline; and a consent
withdrawn on one channel stops that channel's messages not yet sent. Real database and SMTP server."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from careloop.auth import create_token
from careloop.db import fetch_all
from offers import service
from offers.delivery import deliver_due
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-offer-tests"}
NOW = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)  # daytime in UTC
MARKETING = [{"purpose": "marketing", "channel": channel, "granted": True} for channel in ("email", "sms")] + [
    {"purpose": "service", "channel": "phone", "granted": True}]


def headers(conn, role: str) -> dict:
    token = create_token(conn, role=role, name=f"a {role}")
    conn.commit()
    return {"Authorization": f"Bearer {token}"}


def owner_with_offers(conn, keys: list[str]):
    owner = make_customer(conn, name="Wang Fang", email="wang.fang@example.com", timezone="UTC",
                          consents=MARKETING)
    hood = make_device(conn, owner=owner.id)
    offers = [service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                                  key=key, now=NOW).offer for key in keys]
    conn.commit()
    return owner, hood, offers


def marketing_history(conn, customer_id: int) -> list[dict]:
    return fetch_all(conn, "SELECT channel, granted, source FROM consent_history WHERE customer_id = %s "
                           "AND purpose = 'marketing' ORDER BY id", (customer_id,))


def test_the_unsubscribe_link_in_each_marketing_email_stops_all_marketing_at_once_and_twice_is_once(
    offers_client, conn, database, smtp_server, transports
) -> None:
    _url, mailbox = smtp_server
    owner, hood, [first] = owner_with_offers(conn, ["unsub:1"])
    with database.transaction() as sender:
        deliver_due(sender, now=NOW, transports=transports)
    [mail] = mailbox.messages
    link = re.search(r"<(http[^>]+)>", mail["raw"].decode()).group(1)  # List-Unsubscribe
    assert link in mail["text"] and "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in mail["raw"].decode()
    path = link.removeprefix("http://127.0.0.1:8000")
    token = path.rsplit("/", 1)[1]
    assert len(token) >= 30
    second = service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                                 key="unsub:2", now=NOW).offer
    conn.commit()
    assert second.status == "issued"

    page = offers_client.get(path)  # opening the link (a mail scanner may) changes nothing
    assert page.status_code == 200 and "<form method=\"post\">" in page.text
    assert [h["granted"] for h in marketing_history(conn, owner.id)] == [True, True]
    done = offers_client.post(path)  # no bearer token: the token in the link is the key
    assert done.status_code == 200 and "no more offers" in done.text
    history = marketing_history(conn, owner.id)
    assert sorted((h["channel"], h["granted"], h["source"]) for h in history if not h["granted"]) == [
        ("email", False, "unsubscribe link"), ("phone", False, "unsubscribe link"), ("sms", False, "unsubscribe link")]
    assert offers_client.post(path).status_code == 200  # again: nothing more recorded
    assert marketing_history(conn, owner.id) == history

    [cancelled] = fetch_all(conn, "SELECT status, cancel_reason FROM outbox WHERE offer_id = %s AND "
                                  "event = 'offer.email'", (second.id,))
    assert cancelled["status"] == "cancelled" and "objected to marketing" in cancelled["cancel_reason"]
    assert "(unsubscribe link)" in cancelled["cancel_reason"]
    blocked = service.get_offer_by_id(conn, second.id)
    assert blocked.status == "blocked" and "objected to marketing" in blocked.status_reason
    assert service.get_offer_by_id(conn, first.id).status == "delivered"  # what reached them stays theirs
    with database.transaction() as sender:
        assert deliver_due(sender, now=NOW + dt.timedelta(hours=1), transports=transports)["sent"] == 0
    assert len(mailbox.messages) == 1
    later = service.issue_offer(conn, template_code="member-cleaning", customer_id=owner.id, device_id=hood.id,
                                key="unsub:3", now=NOW + dt.timedelta(days=30)).offer
    assert later.status == "blocked" and "no consent to marketing" in later.status_reason

    unknown = "/unsubscribe/" + "x" * 32
    assert offers_client.post(unknown).json() == {"detail": "This link is not known to us (any more). If you still "
                                                  "receive offers, tell our hotline."}
    page = offers_client.get(unknown, headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert offers_client.post("/unsubscribe/short").status_code == 422


def test_an_objection_told_to_the_hotline_stops_marketing_and_a_marketer_cannot_record_one(
    offers_client, conn
) -> None:
    owner, _hood, [offer] = owner_with_offers(conn, ["hotline:1"])
    objection = {"source": "hotline call", "note": "asked us to stop"}
    path = f"/customers/{owner.id}/marketing-objection"
    assert offers_client.post(path, json=objection, headers=headers(conn, "marketer")).status_code == 403
    desk = headers(conn, "dispatcher")
    first = offers_client.post(path, json=objection, headers=desk)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["recorded_now"], body["offers_blocked"], body["messages_cancelled"]) == (True, 1, 1)
    assert not any(c["granted"] for c in body["consents"] if c["purpose"] == "marketing")
    assert {"purpose": "service", "channel": "phone", "granted": True} in body["consents"]
    again = offers_client.post(path, json=objection, headers=desk).json()
    assert (again["recorded_now"], again["offers_blocked"], again["messages_cancelled"]) == (False, 0, 0)
    assert offers_client.post("/customers/999999/marketing-objection", json=objection,
                              headers=desk).status_code == 404
    assert offers_client.post(path, json={"source": ""}, headers=desk).status_code == 422
    assert service.get_offer_by_id(conn, offer.id).status == "blocked"


def test_a_consent_withdrawn_on_one_channel_stops_that_channels_messages_not_yet_sent(
    offers_client, conn, database, smtp_server, transports
) -> None:
    _url, mailbox = smtp_server
    owner, _hood, [offer] = owner_with_offers(conn, ["withdrawn:1"])
    withdrawn = offers_client.post(f"/customers/{owner.id}/consents", headers=headers(conn, "dispatcher"), json={
        "purpose": "marketing", "channel": "email", "granted": False, "source": "hotline call"})
    assert withdrawn.status_code == 200
    with database.transaction() as sender:
        counts = deliver_due(sender, now=NOW, transports=transports)
    assert counts["sent"] == 0 and counts["withdrawn"] == 1 and mailbox.messages == []
    blocked = service.get_offer_by_id(conn, offer.id)
    assert blocked.status == "blocked" and "consent to marketing by email withdrawn" in blocked.status_reason
    assert "(hotline call)" in blocked.status_reason
