"""From a detection to an offer in the owner's mailbox, against the real database, a real SMTP server and a real
webhook receiver: once, with consent, service first, through an outbox that survives a kill between send and
mark, a dead channel that blocks nothing, and one birthday coupon however many appliances."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from careloop.db import Database, fetch_all, fetch_value
from careloop.errors import Conflict
from offers import service
from offers.delivery import LEASE, deliver_due, retry_delay
from offers.jobs import JOBS as OFFER_JOBS
from offers.messages import verify_signature
from offers.models import Redemption, TemplateCreate, WebhookCreate
from rules.engine import Engine, Schedule
from rules.service import create_rule
from service_orders import service as orders
from service_orders.jobs import JOBS as ORDER_JOBS
from service_orders.models import Actor, Assignment, Completion, OrderOpen, TechnicianCreate
from tests.factories import make_customer, make_device

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RARELY = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600)
NOW = dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)  # daytime in UTC and in Shanghai (18:00)
DISPATCHER = Actor(name="Zhang Wei", role="dispatcher")
MARKETING_EMAIL = [{"purpose": "marketing", "channel": "email", "granted": True},
                   {"purpose": "service", "channel": "phone", "granted": True}]
OLD_OVEN = {
    "id": "oven-trade-in-test",
    "description": "Old oven, time for a trade-in offer",
    "applies_to": {"kind": "oven"},
    "when": {"age": {"at_least": "5y"}},
    "then": [{"offer": {"template": "trade-in"}}],
    "severity": "info",
    "cooldown": "180d",
}
BIRTHDAY = {
    "id": "owner-birthday-test",
    "description": "The owner's birthday is within a week",
    "when": {"birthday": {"within": "7d"}},
    "then": [{"offer": {"template": "birthday-coupon"}}],
    "severity": "info",
    "cooldown": "300d",
}


def rows(database: Database, query: str, params: tuple = ()) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(conn, query, params)


def count(database: Database, query: str, params: tuple = ()) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, query, params))


def no_holdout(conn, code: str) -> None:
    """The seeded sales templates keep a 10% holdout; these tests need the offer itself."""
    template = service.get_template(conn, code)
    service.update_template(conn, code, TemplateCreate.model_validate(
        {**template.model_dump(exclude={"id", "created_at", "updated_at"}), "holdout_share": 0}))


def engine(database: Database, at: dt.datetime) -> Engine:
    return Engine(database, schedule=RARELY, jobs=[*ORDER_JOBS, *OFFER_JOBS], clock=lambda: at)


def deliver(database: Database, transports, at: dt.datetime) -> dict[str, int]:
    with database.transaction() as conn:
        return deliver_due(conn, now=at, transports=transports)


def old_oven_owner(conn, **customer):
    owner = make_customer(conn, **{"name": "Wang Fang", "email": "wang.fang@example.com", "timezone": "UTC",
                                   "consents": MARKETING_EMAIL, **customer})
    oven = make_device(conn, id=f"OV-{owner.id:06d}", model="OV-700", owner=owner.id, purchased_on="2020-03-01")
    return owner, oven


KILL_BETWEEN_SEND_AND_MARK = """
import datetime as dt, os, signal, sys
from careloop.db import Database
from offers.delivery import Transports, deliver_due
database = Database(sys.argv[1])
with database.transaction() as conn:
    deliver_due(conn, now=dt.datetime.fromisoformat(sys.argv[3]),
                transports=Transports(smtp_url=sys.argv[2], mail_from="CareLoop <offers@careloop.test>"),
                after_send=lambda message: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_consenting_owner_of_an_old_oven_gets_one_trade_in_offer_delivered_once_though_killed_between_send_and_mark(
    conn, database, database_url, smtp_server, webhook_receiver, transports
) -> None:
    smtp_url, mailbox = smtp_server
    owner, oven = old_oven_owner(conn)
    make_device(conn, model="RH-900", owner=owner.id, purchased_on="2025-01-01")  # a young hood: no offer
    no_holdout(conn, "trade-in")
    create_rule(conn, OLD_OVEN)
    crm = service.create_webhook(conn, WebhookCreate(name="crm", url=webhook_receiver.url,
                                                     events=["offer.issued", "offer.redeemed"]),
                                 allow_private_network=True)  # the receiver listens on loopback
    conn.commit()

    engine(database, NOW).window()  # the detection, and its offer right after the evaluation
    engine(database, NOW).window()  # a second evaluation, and the relay again, add nothing
    with database.transaction() as writer:
        assert service.list_offers(writer).total == 1
    [offer] = rows(database, "SELECT o.*, t.code AS template FROM offers o JOIN offer_templates t "
                             "ON t.id = o.template_id")
    assert (offer["template"], offer["customer_id"], offer["device_id"]) == ("trade-in", owner.id, oven.id)
    assert offer["status"] == "issued" and offer["channel"] == "email"
    assert offer["reason"] == "Your oven has served you for six years"
    assert len(offer["code"]) == 19 and offer["expires_at"] == NOW + dt.timedelta(days=90)
    [detection] = rows(database, "SELECT actions FROM detections")
    assert detection["actions"][0]["status"] == "done"
    assert detection["actions"][0]["result"] == {"offer_id": offer["id"], "offer_status": "issued"}
    assert offer["code"] not in str(detection["actions"])  # the code is for the owner, not the dispatch board

    # The engine is killed between sending the e-mail and marking it sent.
    killed = subprocess.run([sys.executable, "-c", KILL_BETWEEN_SEND_AND_MARK, database_url, smtp_url,
                             NOW.isoformat()], cwd=ROOT, capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(mailbox.messages) == 1
    assert count(database, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 2  # e-mail and CRM event
    assert deliver(database, transports, NOW)["sent"] == 0  # still leased to the dead engine
    sent = deliver(database, transports, NOW + LEASE + dt.timedelta(seconds=1))
    assert sent["sent"] == 2
    # the same message again, never a different one: one Message-ID, the very same bytes
    assert len(mailbox.messages) == 2 and len(mailbox.message_ids()) == 1
    assert mailbox.messages[0]["raw"] == mailbox.messages[1]["raw"]
    mail = mailbox.messages[0]
    assert mail["to"] == ["wang.fang@example.com"] and offer["code"] in mail["text"]
    assert "Your oven has served you for six years" in mail["subject"] or "six years" in mail["text"]
    [delivered] = rows(database, "SELECT status, delivered_at FROM offers")
    assert delivered["status"] == "delivered"
    assert deliver(database, transports, NOW + dt.timedelta(hours=1))["sent"] == 0
    assert len(mailbox.messages) == 2

    [issued] = webhook_receiver.events("offer.issued")
    assert issued["headers"]["Idempotency-Key"] == f"offer:{offer['id']}:offer.issued:{crm.id}"
    assert verify_signature(crm.secret, issued["headers"]["X-CareLoop-Signature"], issued["body"])
    assert not verify_signature("another secret", issued["headers"]["X-CareLoop-Signature"], issued["body"])
    assert issued["json"]["offer"]["template"] == "trade-in"


def test_an_owner_without_marketing_consent_gets_no_offer_and_the_gate_says_why(
    conn, database, smtp_server, transports
) -> None:
    _url, mailbox = smtp_server
    owner, _oven = old_oven_owner(conn, consents=[{"purpose": "service", "channel": "phone", "granted": True},
                                                 {"purpose": "marketing", "channel": "email", "granted": False}])
    no_holdout(conn, "trade-in")
    create_rule(conn, OLD_OVEN)
    conn.commit()
    engine(database, NOW).window()
    [offer] = service.list_offers(conn, customer_id=owner.id).items
    assert offer.status == "blocked" and offer.status_reason == "no consent to marketing e-mail"
    [decision] = rows(database, "SELECT * FROM contact_decisions WHERE customer_id = %s", (owner.id,))
    assert not decision["allowed"] and decision["reason"] == offer.status_reason
    assert decision["subject"] == f"offer:{offer.id}#1"
    assert deliver(database, transports, NOW + dt.timedelta(days=1))["sent"] == 0
    assert mailbox.messages == []
    assert count(database, "SELECT count(*) FROM outbox") == 0


def test_an_owner_with_an_open_fault_order_gets_no_sales_offer_until_it_is_completed(
    conn, database, smtp_server, transports
) -> None:
    _url, mailbox = smtp_server
    owner, oven = old_oven_owner(conn)
    no_holdout(conn, "trade-in")
    create_rule(conn, OLD_OVEN)
    order = orders.open_order(conn, OrderOpen(device_id=oven.id, skill="electrical", reason="the oven will not heat"),
                              actor=DISPATCHER, now=NOW)
    conn.commit()
    engine(database, NOW).window()
    [offer] = service.list_offers(conn, customer_id=owner.id).items
    assert offer.status == "held"
    assert offer.status_reason == (f"service first: service order {order.id} (repair) for {oven.id} is open; sales "
                                   "offers wait until it is done")
    [decision] = rows(database, "SELECT held, allowed FROM contact_decisions WHERE customer_id = %s", (owner.id,))
    assert decision == {"held": True, "allowed": False}
    with database.transaction() as writer:
        assert service.release_held(writer, now=NOW + dt.timedelta(hours=1)) == {
            "released": 0, "still_held": 1, "expired": 0}
    assert deliver(database, transports, NOW + dt.timedelta(hours=1))["sent"] == 0

    later = NOW + dt.timedelta(days=2)
    technician = orders.create_technician(conn, TechnicianCreate(name="Liu Yang", skills=["electrical"],
                                                                 region="east"))
    orders.assign(conn, order.id, Assignment(technician_id=technician.id), actor=DISPATCHER, now=later)
    orders.change_status(conn, order.id, "in_progress", actor=DISPATCHER, now=later)
    orders.complete(conn, order.id, Completion(outcome="element replaced", cost=Decimal("180"), paid=True),
                    actor=DISPATCHER, now=later)
    conn.commit()
    with database.transaction() as writer:
        assert service.release_held(writer, now=later)["released"] == 1
    [released] = service.list_offers(conn, customer_id=owner.id).items
    assert released.status == "issued" and released.expires_at == later + dt.timedelta(days=90)
    assert deliver(database, transports, later)["sent"] == 1
    assert len(mailbox.messages) == 1 and released.code in mailbox.messages[0]["text"]
    decisions = rows(database, "SELECT subject, held, allowed FROM contact_decisions WHERE customer_id = %s "
                               "ORDER BY id", (owner.id,))
    assert [(d["held"], d["allowed"]) for d in decisions] == [(True, False), (False, True)]


def test_a_coupon_redeems_once_for_its_owner_and_not_after_it_expired(conn, database) -> None:
    owner, oven = old_oven_owner(conn)
    stranger = make_customer(conn, name="Somebody Else")
    no_holdout(conn, "trade-in")
    outcome = service.issue_offer(conn, template_code="trade-in", customer_id=owner.id, device_id=oven.id,
                                  key="test:redeem", now=NOW)
    code = outcome.offer.code
    with pytest.raises(service.NotYours):
        service.redeem(conn, code, Redemption(customer_id=stranger.id), now=NOW)
    redeemed = service.redeem(conn, code.lower().replace("-", " "), Redemption(customer_id=owner.id,
                                                                                         amount=Decimal("4200")),
                              now=NOW + dt.timedelta(days=3))
    assert redeemed.status == "redeemed" and redeemed.redeemed_amount == Decimal("4200")
    with pytest.raises(Conflict, match="redeemed already"):
        service.redeem(conn, code, Redemption(customer_id=owner.id), now=NOW + dt.timedelta(days=4))
    spend = fetch_all(conn, "SELECT amount, source FROM spend_ledger WHERE customer_id = %s", (owner.id,))
    assert spend == [{"amount": Decimal("4200.00"), "source": "purchase"}]

    other = service.issue_offer(conn, template_code="trade-in", customer_id=owner.id, device_id=oven.id,
                                key="test:expire", now=NOW).offer
    # a second marketing e-mail within the week waits for the next one (the channel's cap); it expires 90 days on
    assert other.send_at == NOW + dt.timedelta(days=7) and "wait a week" in other.status_reason
    assert other.expires_at == other.send_at + dt.timedelta(days=90)
    assert service.expire_due(conn, now=other.expires_at - dt.timedelta(seconds=1))["expired"] == 0
    assert service.expire_due(conn, now=other.expires_at)["expired"] == 1
    assert service.get_offer(conn, other.code).status == "expired"
    with pytest.raises(service.Expired):
        service.redeem(conn, other.code, Redemption(customer_id=owner.id), now=other.expires_at)


def test_an_owner_of_three_appliances_gets_one_birthday_coupon_on_the_day_in_their_zone(
    conn, database, smtp_server, transports
) -> None:
    _url, mailbox = smtp_server
    # 2026-06-13 in Shanghai (UTC+8): the coupon goes out at 08:00 there, 00:00 UTC
    owner = make_customer(conn, name="Chen Jing", email="chen.jing@example.com", birthday="1985-06-13",
                          timezone="Asia/Shanghai", consents=MARKETING_EMAIL)
    for model in ("RH-900", "OV-700", "DW-450"):
        make_device(conn, model=model, owner=owner.id)
    create_rule(conn, BIRTHDAY)
    conn.commit()
    engine(database, NOW).window()
    assert count(database, "SELECT count(*) FROM detections") == 3
    [offer] = service.list_offers(conn, customer_id=owner.id).items
    assert offer.template == "birthday-coupon" and offer.device_id is None
    assert offer.send_at == dt.datetime(2026, 6, 13, 0, 0, tzinfo=dt.UTC)
    results = [a["result"] for d in rows(database, "SELECT actions FROM detections") for a in d["actions"]]
    assert all(result["offer_id"] == offer.id for result in results)
    assert deliver(database, transports, NOW + dt.timedelta(days=2))["sent"] == 0  # not before the day
    assert deliver(database, transports, offer.send_at)["sent"] == 1
    assert len(mailbox.messages) == 1 and mailbox.messages[0]["subject"] == "Happy birthday, Chen Jing"
    # next year's birthday is another coupon
    next_year = service.issue_offer(conn, template_code="birthday-coupon", customer_id=owner.id, device_id=None,
                                    key="another-detection", now=dt.datetime(2027, 6, 12, tzinfo=dt.UTC))
    assert next_year.offer.id != offer.id


def test_a_dead_webhook_endpoint_does_not_block_the_mail_and_is_retried_with_back_off(
    conn, database, smtp_server, webhook_receiver, transports
) -> None:
    _url, mailbox = smtp_server
    owner, oven = old_oven_owner(conn)
    no_holdout(conn, "trade-in")
    service.create_webhook(conn, WebhookCreate(name="crm", url=webhook_receiver.url, events=["offer.issued"]),
                           allow_private_network=True)
    webhook_receiver.status = 503
    for number in range(3):
        service.issue_offer(conn, template_code="trade-in", customer_id=owner.id, device_id=oven.id,
                            key=f"test:dead:{number}", now=NOW - dt.timedelta(days=7 * number))
    conn.commit()
    first = deliver(database, transports, NOW)
    # one try at the dead endpoint; its other messages are not tried in this run; the e-mail goes out
    assert len(webhook_receiver.requests) == 1
    assert first["retrying"] == 1 and first["put_back"] == 2
    assert len(mailbox.messages) >= 1
    [retrying] = rows(database, "SELECT attempts, next_attempt_at, last_error FROM outbox WHERE event = "
                                "'offer.issued' AND attempts = 1")
    assert retrying["next_attempt_at"] == NOW + retry_delay(1) and "503" in retrying["last_error"]
    webhook_receiver.status = 200
    assert deliver(database, transports, NOW + dt.timedelta(seconds=10))["sent"] == 0  # backing off
    later = deliver(database, transports, NOW + dt.timedelta(minutes=5))
    assert later["sent"] >= 3 and count(database, "SELECT count(*) FROM outbox WHERE status = 'pending' "
                                                  "AND event = 'offer.issued'") == 0
    keys = [r["headers"]["Idempotency-Key"] for r in webhook_receiver.requests]
    assert len(set(keys)) == 3 and len(keys) == 4  # the first one twice, with the same key


def test_the_report_compares_offered_and_held_out_customers(conn, database) -> None:
    template = service.get_template(conn, "consumables")
    assert template.holdout_share == Decimal("0.100")
    customers = [make_customer(conn, name=f"C{i}", email=f"c{i}@example.com", consents=MARKETING_EMAIL)
                 for i in range(60)]
    outcomes = []
    for customer in customers:
        hood = make_device(conn, model="RH-900", owner=customer.id)
        outcomes.append(service.issue_offer(conn, template_code="consumables", customer_id=customer.id,
                                            device_id=hood.id, key=f"test:report:{customer.id}", now=NOW,
                                            rule_id="hood-filters"))
    kinds = [outcome.kind for outcome in outcomes]
    assert kinds.count("holdout") >= 1 and kinds.count("offer") >= 40
    for outcome in outcomes:
        if outcome.kind == "offer" and outcome.offer.id % 2 == 0:
            service.redeem(conn, outcome.offer.code, Redemption(customer_id=outcome.offer.customer_id,
                                                                        amount=Decimal(100)), now=NOW)
    report = service.offers_report(conn, group_by="template")
    [row] = report.rows
    assert row.key == "consumables" and row.treated == kinds.count("offer") and row.holdout == kinds.count("holdout")
    assert row.redeemed == row.revenue / 100 and row.conversion_holdout == 0
    assert row.uplift == row.conversion_treated and row.uplift_low < row.uplift < row.uplift_high
    by_rule = service.offers_report(conn, group_by="rule")
    assert [r.key for r in by_rule.rows] == ["hood-filters"]
    assert by_rule.total.treated == row.treated


def test_a_held_out_customer_gets_nothing_and_stays_held_out_on_a_retry(conn) -> None:
    customer = make_customer(conn, consents=MARKETING_EMAIL)
    hood = make_device(conn, model="RH-900", owner=customer.id)
    keys = [f"test:holdout:{n}" for n in range(200)]
    held = [k for k in keys if service.held_out("consumables", k, Decimal("0.1"))]
    assert 5 <= len(held) <= 40
    first = service.issue_offer(conn, template_code="consumables", customer_id=customer.id, device_id=hood.id,
                                key=held[0], now=NOW)
    again = service.issue_offer(conn, template_code="consumables", customer_id=customer.id, device_id=hood.id,
                                key=held[0], now=NOW + dt.timedelta(hours=1))
    assert first.kind == again.kind == "holdout" and first.holdout_id == again.holdout_id
    assert service.list_offers(conn, customer_id=customer.id).total == 0


def test_an_offer_in_quiet_hours_waits_for_the_morning_in_the_customers_zone(conn, database, transports) -> None:
    customer = make_customer(conn, timezone="America/New_York", consents=MARKETING_EMAIL)
    hood = make_device(conn, model="RH-900", owner=customer.id)
    night = dt.datetime(2026, 3, 8, 4, 0, tzinfo=dt.UTC)  # 23:00 EST, hours before the clocks spring forward
    offer = service.issue_offer(conn, template_code="member-cleaning", customer_id=customer.id, device_id=hood.id,
                                key="test:quiet", now=night).offer
    assert offer.status == "issued" and offer.send_at == dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)
    assert "quiet hours in America/New_York" in offer.status_reason
    conn.commit()
    assert deliver(database, transports, night + dt.timedelta(hours=7))["sent"] == 0
    assert deliver(database, transports, offer.send_at)["sent"] == 1

