"""Offers: templates, issuing once per key (a detection's action, or a birthday per customer and year) to the
eligible owner or to a random holdout, the contact policy's verdict, the messages written to the outbox in the
same transaction, redemption once, expiry, and the conversion report. Takes a connection.

Service first: the contact policy (customers/) does not know service orders or detections; this side tells it
what the customer has open, read through the service orders' and rules' own service functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from decimal import Decimal
from email.utils import parseaddr
from typing import Any

from careloop.db import Connection, Row
from careloop.errors import Conflict, DomainError, InvalidInput, NotFound
from careloop.pages import Page
from customers import service as customers_service
from customers.contact_policy import local_day_start, local_today
from customers.models import CustomerRead
from devices import service as devices_service
from devices.models import DeviceRead
from offers import repo
from offers.delivery import delivery_settings, private_address
from offers.messages import (
    age_words,
    coupon_code,
    email_message,
    local_date_words,
    normalise_code,
    owner_words,
    render,
    value_words,
)
from offers.models import (
    IssueOutcome,
    OfferRead,
    OffersReport,
    OutboxRead,
    Redemption,
    ReportRow,
    TemplateCreate,
    TemplateRead,
    WebhookCreate,
    WebhookCreated,
    WebhookDeleted,
    WebhookRead,
)
from offers.report import CONFIDENCE, METHOD, uplift
from rules import service as rules_service
from rules.models import DetectionToCarryOut
from service_orders import service as service_orders_service

log = logging.getLogger("careloop.offers")

FAULT_ORDER_TYPES = ("repair", "inspection")  # a detection that opens one of these is a fault


class NotYours(DomainError):
    """A code presented for a customer it was not issued to."""

    status_code = 403


class Expired(DomainError):
    status_code = 410


# ---------------------------------------------------------------- templates


def list_templates(
    conn: Connection, *, active: bool | None = None, limit: int = 100, offset: int = 0
) -> Page[TemplateRead]:
    return repo.list_templates(conn, active=active, limit=limit, offset=offset)


def get_template(conn: Connection, code: str) -> TemplateRead:
    found = repo.list_templates(conn, code=code, limit=1).items
    if not found:
        raise NotFound(f"no offer template {code}")
    return found[0]


def create_template(conn: Connection, template: TemplateCreate) -> TemplateRead:
    if repo.insert_template(conn, template=template.model_dump()) is None:
        raise Conflict(f"offer template {template.code} exists; PUT /offer-templates/{template.code} changes it")
    return get_template(conn, template.code)


def update_template(conn: Connection, code: str, template: TemplateCreate) -> TemplateRead:
    """Change a template; offers issued before keep the value and words they were issued with."""
    if template.code != code:
        raise InvalidInput("code", f"the document's code {template.code!r} is not the template's {code!r}")
    if repo.update_template(conn, template=template.model_dump()) is None:
        raise NotFound(f"no offer template {code}")
    return get_template(conn, code)


# ---------------------------------------------------------------- issuing


def offer_for_detection(
    conn: Connection, detection: DetectionToCarryOut, params: dict[str, Any], *, key: str, now: dt.datetime
) -> IssueOutcome:
    """What a detection's `offer` action asks for, exactly once per action key (or per birthday)."""
    if detection.owner_id is None:
        return IssueOutcome("skipped", f"device {detection.device_id} has no registered owner")
    return issue_offer(conn, template_code=params["template"], customer_id=detection.owner_id,
                       device_id=detection.device_id, rule_id=detection.rule_id, detection_id=detection.id,
                       key=key, now=now)


def issue_offer(
    conn: Connection,
    *,
    template_code: str,
    customer_id: int,
    device_id: str | None,
    key: str,
    now: dt.datetime,
    rule_id: str | None = None,
    detection_id: int | None = None,
) -> IssueOutcome:
    """Issue a template to a customer once per key: skipped (and why) when the template or the customer does not
    fit; else a place in the random holdout, or an offer with an unguessable code that the contact policy then
    holds, blocks, or lets out on a channel from a time (its message written to the outbox now)."""
    found = repo.list_templates(conn, code=template_code, limit=1).items
    if not found or not found[0].active:
        return IssueOutcome("skipped", f"no active offer template {template_code}")
    template = found[0]
    customer = customers_service.get_customer(conn, customer_id)
    if customer.erased_at is not None:
        return IssueOutcome("skipped", "the customer was erased")
    device = devices_service.get_device(conn, device_id) if device_id is not None else None
    issue_key, earliest = key, None
    if template.occasion == "birthday":
        if customer.birthday is None:
            return IssueOutcome("skipped", "the customer's birthday is not known")
        day = next_birthday(customer.birthday, local_today(now, customer.timezone))
        # once a year per customer, whichever of their appliances' detections asks first
        issue_key, earliest, device = f"{template.code}:customer:{customer_id}:{day.year}", None, None
        earliest = local_day_start(day, customer.timezone)
    known = repo.issued_by_key(conn, issue_key=issue_key)
    if known is not None:
        return _known(conn, known)
    why_not = _why_not_eligible(conn, template, customer_id, device, now)
    if why_not is not None:
        return IssueOutcome("skipped", why_not)
    segment = customers_service.segment_of(conn, customer_id)
    starts = max(now, earliest) if earliest is not None else now
    common = {
        "template_id": template.id, "customer_id": customer_id, "device_id": device.id if device else None,
        "rule_id": rule_id, "detection_id": detection_id, "issue_key": issue_key,
        "segment": segment.value_segment if segment is not None else "unsegmented",
        "window_ends_at": starts + dt.timedelta(days=template.validity_days),
    }
    share = holdout_share(template, rule_id)
    if held_out(template.code, issue_key, share):
        holdout_id = repo.insert_holdout(conn, holdout={**common, "assigned_at": now})
        if holdout_id is None:  # issued by another engine meanwhile
            return _known(conn, repo.issued_by_key(conn, issue_key=issue_key))
        log.info("customer %d held out of %s (%s)", customer_id, template.code, issue_key)
        return IssueOutcome("holdout", f"held out at random ({share:.0%} of eligible customers get nothing)",
                            holdout_id=holdout_id)
    words = _words(template, customer, device, now=now, code="", expires="")
    offer_id = repo.insert_offer(conn, offer={
        **common, "code": coupon_code(), "reason": words["reason"], "value_kind": template.value_kind,
        "value": template.value, "issued_at": now,
    })
    if offer_id is None:
        return _known(conn, repo.issued_by_key(conn, issue_key=issue_key))
    _gate(conn, offer_id, template, customer, device, now=now, earliest=earliest, attempt=1)
    offer = get_offer_by_id(conn, offer_id)
    log.info("offer %d (%s) for customer %d: %s (%s)", offer.id, template.code, customer_id, offer.status,
             offer.status_reason)
    return IssueOutcome("offer", offer.status_reason, offer=offer)


def _known(conn: Connection, known: tuple[str, int] | None) -> IssueOutcome:
    assert known is not None
    kind, row_id = known
    if kind == "holdout":
        return IssueOutcome("holdout", "held out at random", holdout_id=row_id)
    offer = get_offer_by_id(conn, row_id)
    return IssueOutcome("offer", offer.status_reason, offer=offer)


def next_birthday(birthday: dt.date, today: dt.date) -> dt.date:
    """The birthday's next occurrence on or after `today`; 29 February is the 28th in other years."""
    for year in (today.year, today.year + 1):
        try:
            day = birthday.replace(year=year)
        except ValueError:
            day = dt.date(year, 2, 28)
        if day >= today:
            return day
    raise AssertionError("unreachable: next year's birthday is always after today")


def holdout_share(template: TemplateRead, rule_id: str | None) -> Decimal:
    """The template's holdout share for a rule: the rule's own where set."""
    if rule_id is not None and rule_id in template.rule_holdouts:
        return template.rule_holdouts[rule_id]
    return template.holdout_share


def held_out(template_code: str, issue_key: str, share: Decimal) -> bool:
    """Random, and the same on every retry of the key: a hash of template and key, read as a number in [0, 1)."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"holdout:{template_code}:{issue_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _why_not_eligible(
    conn: Connection, template: TemplateRead, customer_id: int, device: DeviceRead | None, now: dt.datetime
) -> str | None:
    rules = template.eligibility
    if rules.kinds and (device is None or device.kind not in rules.kinds):
        return f"{template.code} is for {', '.join(k.replace('_', ' ') for k in rules.kinds)} owners"
    if rules.models and (device is None or device.model not in rules.models):
        return f"{template.code} is for models {', '.join(rules.models)}"
    if rules.tiers:
        tier = customers_service.tier_name(conn, customer_id, now=now)
        if tier not in rules.tiers:
            return f"{template.code} is for {', '.join(rules.tiers)} members; the customer is {tier}"
    if rules.segments:
        segment = customers_service.segment_of(conn, customer_id)
        labels = set() if segment is None else {
            segment.value_segment, *segment.device_segments, *(["top_revenue"] if segment.top_revenue else []),
        }
        if not labels & set(rules.segments):
            return f"{template.code} is for the segments {', '.join(rules.segments)}"
    return None


def _words(
    template: TemplateRead, customer: CustomerRead, device: DeviceRead | None, *, now: dt.datetime, code: str,
    expires: str,
) -> dict[str, str]:
    return owner_words(
        reason=template.reason, name=customer.name, appliance=device.kind.replace("_", " ") if device else None,
        age=age_words(device.purchased_on if device else None, local_today(now, customer.timezone)),
        value=value_words(template.value_kind, template.value), expires=expires, code=code,
    )


# ---------------------------------------------------------------- the contact policy's verdict


def open_service(conn: Connection, customer_id: int, *, now: dt.datetime) -> list[str]:
    """What the customer has open that comes before sales: service orders and fault detections, in words."""
    found = [
        f"service order {order.id} ({order.type}) for {order.device_id} is open"
        for order in service_orders_service.list_orders(conn, now=now, customer_id=customer_id, status="open",
                                                        limit=20).items
    ]
    for device in devices_service.list_devices(conn, owner=customer_id, limit=1000, offset=0).items:
        for status in ("open", "acknowledged"):
            for detection in rules_service.list_detections(conn, device_id=device.id, status=status, limit=50).items:
                if any(action.action == "open_service_order"
                       and action.params.get("type", "repair") in FAULT_ORDER_TYPES for action in detection.actions):
                    found.append(f"a fault on {device.id} ({detection.rule_id}) is open")
    return found


def _gate(
    conn: Connection, offer_id: int, template: TemplateRead, customer: CustomerRead, device: DeviceRead | None, *,
    now: dt.datetime, earliest: dt.datetime | None, attempt: int,
) -> str:
    """Ask the contact policy about the offer and act on its answer; answers the offer's new status."""
    sales = template.category == "sales"
    holding = open_service(conn, customer.id, now=now) if sales else []
    sms_gateways = repo.endpoints_for_event(conn, event="offer.sms")
    channels = [channel for channel in template.channels if channel == "email" or sms_gateways]
    if not channels:
        reason = "no way to send it: text messages need a gateway (a webhook endpoint for offer.sms)"
        repo.set_gate(conn, offer_id=offer_id, status="blocked", status_reason=reason, channel=None, send_at=None,
                      expires_at=None, gate_checks=attempt)
        return "blocked"
    decision = customers_service.decide_offer_contact(
        conn, customer_id=customer.id, subject=f"offer:{offer_id}#{attempt}", channels=channels, sales=sales,
        open_service=holding, now=now, earliest=earliest,
    )
    if decision.held or not decision.allowed:
        status = "held" if decision.held else "blocked"
        repo.set_gate(conn, offer_id=offer_id, status=status, status_reason=decision.reason, channel=None,
                      send_at=None, expires_at=None, gate_checks=attempt)
        return status
    send_at = decision.not_before or now
    expires_at = send_at + dt.timedelta(days=template.validity_days)
    repo.set_gate(conn, offer_id=offer_id, status="issued", status_reason=decision.reason, channel=decision.channel,
                  send_at=send_at, expires_at=expires_at, gate_checks=attempt)
    offer = get_offer_by_id(conn, offer_id)
    _write_messages(conn, offer, template, customer, device, sms_gateways, now=now)
    return "issued"


def _write_messages(
    conn: Connection, offer: OfferRead, template: TemplateRead, customer: CustomerRead, device: DeviceRead | None,
    sms_gateways: list[Row], *, now: dt.datetime,
) -> None:
    """The offer's message to the customer (due when the policy lets it out) and the offer.issued event for other
    systems (due now), rendered whole into the outbox."""
    assert offer.send_at is not None and offer.expires_at is not None
    words = _words(template, customer, device, now=now, code=offer.code,
                   expires=local_date_words(offer.expires_at, customer.timezone))
    subject, text = render(template.subject, words), render(template.message, words)
    if offer.channel == "email":
        settings = delivery_settings()
        domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "careloop.example"
        message_id = f"<offer-{offer.id}-{secrets.token_hex(8)}@{domain}>"
        token = customers_service.unsubscribe_token(conn, customer.id)
        unsubscribe = f"{settings.public_url.rstrip('/')}/unsubscribe/{token}" if token else None
        repo.insert_message(conn, message={
            "offer_id": offer.id, "transport": "smtp", "endpoint_id": None, "destination": customer.email,
            "event": "offer.email", "idempotency_key": message_id, "subject": subject,
            "body": email_message(message_id=message_id, sent_from=settings.mail_from, to=str(customer.email),
                                  subject=subject, text=text, date=offer.send_at, unsubscribe_url=unsubscribe),
            "not_before": offer.send_at, "created_at": now,
        })
    elif offer.channel == "sms":
        gateway = sms_gateways[0]
        key = f"offer:{offer.id}:sms:{gateway['id']}"
        body = {"event": "offer.sms", "id": key, "to": customer.phone, "text": text, "offer": _event_offer(offer)}
        _webhook(conn, offer, gateway, "offer.sms", key, body, not_before=offer.send_at, now=now)
    _event(conn, offer, "offer.issued", now=now)


def _event_offer(offer: OfferRead) -> dict[str, Any]:
    return offer.model_dump(mode="json", include={
        "code", "template", "customer_id", "device_id", "rule_id", "status", "reason", "channel", "value_kind",
        "value", "issued_at", "send_at", "expires_at", "redeemed_at", "redeemed_amount",
    })


def _event(conn: Connection, offer: OfferRead, event: str, *, now: dt.datetime) -> None:
    """The event for every endpoint that asked for it, due now."""
    for endpoint in repo.endpoints_for_event(conn, event=event):
        key = f"offer:{offer.id}:{event}:{endpoint['id']}"
        body = {"event": event, "id": key, "occurred_at": now.isoformat(), "offer": _event_offer(offer)}
        _webhook(conn, offer, endpoint, event, key, body, not_before=now, now=now)


def _webhook(
    conn: Connection, offer: OfferRead, endpoint: Row, event: str, key: str, body: dict[str, Any], *,
    not_before: dt.datetime, now: dt.datetime,
) -> None:
    repo.insert_message(conn, message={
        "offer_id": offer.id, "transport": "webhook", "endpoint_id": endpoint["id"], "destination": endpoint["url"],
        "event": event, "idempotency_key": key, "subject": None,
        "body": json.dumps(body, sort_keys=True, separators=(",", ":")), "not_before": not_before,
        "created_at": now,
    })


def release_held(conn: Connection, *, now: dt.datetime, limit: int = 500) -> dict[str, int]:
    """Scheduled: held offers whose service is done go to the contact policy again (a new decision, kept); those
    held past their window are dropped as expired."""
    counts = {"released": 0, "still_held": 0, "expired": 0}
    for row in repo.held(conn, limit=limit):
        if now >= row["window_ends_at"]:
            repo.expire(conn, offer_id=row["id"], at=now,
                        status_reason="held behind open service until its window closed; never sent")
            counts["expired"] += 1
            continue
        template = get_template(conn, row["template"])
        if template.category == "sales" and open_service(conn, row["customer_id"], now=now):
            counts["still_held"] += 1
            continue
        customer = customers_service.get_customer(conn, row["customer_id"])
        device = devices_service.get_device(conn, row["device_id"]) if row["device_id"] else None
        status = _gate(conn, row["id"], template, customer, device, now=now, earliest=None,
                       attempt=row["gate_checks"] + 1)
        counts["released" if status != "held" else "still_held"] += 1
        log.info("held offer %d (%s): %s", row["id"], row["template"], status)
    return counts


def stop_marketing(conn: Connection, customer_id: int, *, reason: str, at: dt.datetime) -> dict[str, int]:
    """Nothing more reaches the customer: their offers not yet in their hands are blocked and their messages not
    yet sent are cancelled, both saying why (an objection to marketing, an erasure)."""
    messages = repo.cancel_customer_messages(conn, customer_id=customer_id, reason=reason, at=at)
    offers = repo.block_customer_offers(conn, customer_id=customer_id, reason=reason)
    log.info("marketing to customer %d stopped: %d offers blocked, %d messages cancelled", customer_id, offers,
             messages)
    return {"offers_blocked": offers, "messages_cancelled": messages}


# ---------------------------------------------------------------- reading


def get_offer_by_id(conn: Connection, offer_id: int) -> OfferRead:
    found = repo.list_offers(conn, offer_id=offer_id, limit=1).items
    if not found:
        raise NotFound(f"no offer {offer_id}")
    return found[0]


def get_offer(conn: Connection, code: str, *, customer_id: int | None = None) -> OfferRead:
    """The offer with a code (as a person may type it); with `customer_id`, only one of that customer's: another's
    is not found, as a code that does not exist."""
    found = repo.list_offers(conn, code=normalise_code(code), customer_id=customer_id, limit=1).items
    if not found:
        raise NotFound("no offer with that code")
    return found[0]


def list_offers(conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any) -> Page[OfferRead]:
    """Offers, newest first, filtered by customer, status, template, rule or device."""
    return repo.list_offers(conn, limit=limit, offset=offset, **filters)


# ---------------------------------------------------------------- redemption and expiry


def redeem(
    conn: Connection, code: str, redemption: Redemption, *, now: dt.datetime, only_customer: int | None = None
) -> OfferRead:
    """Redeem a code once, for the customer it was issued to: another customer's code is a 403, a second redeem a
    409, an expired code a 410, one never sent (held, blocked) a 409 saying why. What was paid goes into the
    customer's spend (tiers and points follow). With `only_customer` (a customer's own token) another's code is
    not found, as a code that does not exist."""
    offer = repo.lock_offer_by_code(conn, code=normalise_code(code))
    if offer is None or (only_customer is not None and offer["customer_id"] != only_customer):
        raise NotFound("no offer with that code")
    if offer["customer_id"] != redemption.customer_id:
        raise NotYours("this code was issued to another customer")
    if offer["status"] == "redeemed":
        raise Conflict(f"this code was redeemed already, at {offer['redeemed_at']:%Y-%m-%d %H:%M} UTC")
    if offer["status"] == "expired" or (offer["expires_at"] is not None and offer["expires_at"] <= now):
        raise Expired(f"this code expired at {offer['expires_at'] or offer['expired_at']:%Y-%m-%d %H:%M} UTC")
    if offer["status"] in ("held", "blocked"):
        raise Conflict(f"this offer was never sent ({offer['status']}: {offer['status_reason']})")
    repo.redeem(conn, offer_id=offer["id"], at=now, amount=redemption.amount,
                status_reason=f"redeemed for {redemption.amount}")
    if redemption.amount > 0:
        customers_service.record_spend(conn, customer_id=offer["customer_id"], amount=redemption.amount,
                                       source=offer["conversion_source"] or "purchase", key=f"offer:{offer['id']}",
                                       at=now)
    redeemed = get_offer_by_id(conn, offer["id"])
    _event(conn, redeemed, "offer.redeemed", now=now)
    log.info("offer %d (%s) redeemed by customer %d", offer["id"], offer["template"], offer["customer_id"])
    return redeemed


def expire_due(conn: Connection, *, now: dt.datetime, limit: int = 1000) -> dict[str, int]:
    """Scheduled: offers past their expiry are marked expired; a message of theirs not yet sent never will be."""
    expired = 0
    for row in repo.expiring(conn, now=now, limit=limit):
        repo.expire(conn, offer_id=row["id"], at=now, status_reason="expired unused")
        repo.cancel_pending(conn, offer_id=row["id"], error="the offer expired before it was sent")
        _event(conn, get_offer_by_id(conn, row["id"]), "offer.expired", now=now)
        expired += 1
    return {"expired": expired}


# ---------------------------------------------------------------- webhooks and the outbox


def create_webhook(
    conn: Connection, webhook: WebhookCreate, *, allow_private_network: bool | None = None
) -> WebhookCreated:
    """Register an endpoint with a fresh secret (answered once). A receiver on a loopback, link-local or private
    address is refused unless allowed: by `allow_private_network`, else CARELOOP_WEBHOOK_PRIVATE_NETWORKS."""
    url = str(webhook.url)
    private = (delivery_settings().webhook_private_networks if allow_private_network is None
               else allow_private_network)
    if not private:
        refused = private_address(url)
        if refused is not None:
            raise InvalidInput("url", f"{refused}: webhooks go to public receivers only (for one on premise, set "
                                      "CARELOOP_WEBHOOK_PRIVATE_NETWORKS=true where the API runs)")
    secret = secrets.token_urlsafe(32)
    endpoint_id = repo.insert_endpoint(conn, name=webhook.name, url=url, secret=secret,
                                       events=list(webhook.events), private_network=private)
    return WebhookCreated(**get_webhook(conn, endpoint_id).model_dump(), secret=secret)


def delete_webhook(conn: Connection, endpoint_id: int, *, now: dt.datetime) -> WebhookDeleted:
    """Delete an endpoint: nothing more goes to it; the messages to it not yet sent are cancelled with the reason
    (an offer whose text message it was to carry says it could not be delivered). Deleting it again answers the
    same; an id never registered is a 404."""
    deleted = repo.delete_endpoint(conn, endpoint_id=endpoint_id, at=now)
    if deleted is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    reason = f"webhook endpoint {endpoint_id} ({deleted['name']}) was deleted before it was sent"
    cancelled = repo.cancel_endpoint_messages(conn, endpoint_id=endpoint_id, reason=reason, at=now)
    for message in cancelled:
        if message["offer_id"] is not None and message["event"] == "offer.sms":
            repo.undeliverable(conn, offer_id=message["offer_id"], status_reason=f"not delivered: {reason}")
    log.info("webhook endpoint %d deleted; %d pending messages cancelled", endpoint_id, len(cancelled))
    return WebhookDeleted(id=endpoint_id, deleted_at=deleted["deleted_at"], cancelled_messages=len(cancelled))


def get_webhook(conn: Connection, endpoint_id: int) -> WebhookRead:
    found = repo.list_endpoints(conn, endpoint_id=endpoint_id, limit=1).items
    if not found:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return found[0]


def list_webhooks(conn: Connection, *, limit: int = 100, offset: int = 0) -> Page[WebhookRead]:
    return repo.list_endpoints(conn, limit=limit, offset=offset)


def list_outbox(
    conn: Connection, *, status: str | None = None, offer_id: int | None = None, limit: int = 100, offset: int = 0
) -> Page[OutboxRead]:
    return repo.list_outbox(conn, status=status, offer_id=offer_id, limit=limit, offset=offset)


# ---------------------------------------------------------------- did it work?


def offers_report(
    conn: Connection, *, group_by: str = "template", since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> OffersReport:
    """Issued, delivered, redeemed, expired and revenue per template, rule or segment, and the uplift of the
    offered over the held-out customers with its confidence interval."""
    rows = repo.report(conn, group_by=group_by, since=since, until=until)
    counted = ("treated", "holdout", "issued", "delivered", "redeemed", "expired", "held", "blocked", "revenue",
               "treated_converted", "holdout_converted", "treated_revenue", "holdout_revenue")
    total = {name: sum((row[name] for row in rows), Decimal(0) if "revenue" in name else 0) for name in counted}
    return OffersReport(group_by=group_by, since=since, until=until, confidence=CONFIDENCE, method=METHOD,
                        rows=[_report_row(row) for row in rows], total=_report_row({**total, "key": "all"}))


def _report_row(row: dict[str, Any]) -> ReportRow:
    found = uplift(row["treated_converted"], row["treated"], row["holdout_converted"], row["holdout"])
    return ReportRow(
        key=row["key"], treated=row["treated"], holdout=row["holdout"], issued=row["issued"],
        delivered=row["delivered"], redeemed=row["redeemed"], expired=row["expired"], held=row["held"],
        blocked=row["blocked"], revenue=row["revenue"], conversion_treated=found.treated_rate,
        conversion_holdout=found.holdout_rate, uplift=found.uplift, uplift_low=found.low, uplift_high=found.high,
        revenue_per_treated=(row["treated_revenue"] / row["treated"]).quantize(Decimal("0.01"))
        if row["treated"] else None,
        revenue_per_holdout=(row["holdout_revenue"] / row["holdout"]).quantize(Decimal("0.01"))
        if row["holdout"] else None,
    )
