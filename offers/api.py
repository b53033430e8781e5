"""HTTP endpoints for offer templates, offers and their redemption, webhook endpoints, the outbox and the
conversion report; thin handlers over offers.service.

Marketers manage templates and read the report; dispatchers (the hotline) and marketers look up and redeem
codes; only an admin registers webhook endpoints (their secrets sign what CareLoop sends).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from careloop.deps import Caller, Conn, Moment, Offset, RowId, require
from careloop.errors import EVERY_ROUTE, ErrorMessage, NotFound, answers
from careloop.pages import Page
from customers import service as customers_service
from offers import flows, service
from offers.models import (
    MarketingObjection,
    ObjectionRead,
    OfferRead,
    OffersReport,
    OfferStatus,
    OutboxRead,
    OutboxStatus,
    Redemption,
    TemplateCreate,
    TemplateRead,
    WebhookCreate,
    WebhookCreated,
    WebhookDeleted,
    WebhookRead,
)

router = APIRouter(tags=["offers"], responses=EVERY_ROUTE)
# What a customer reaches from an e-mail needs no bearer token (public in careloop.auth's permission table): their
# unguessable unsubscribe token is the key.
UnsubscribeToken = Annotated[str, Path(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Code = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _-]+$")]
TemplateCode = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
CustomerId = Annotated[int | None, Query(ge=1, le=2**63 - 1)]
MARKETING = require("marketer")
DESK = require("marketer", "dispatcher")
# A customer's token looks up and redeems its own codes only: these handlers narrow it to them.
DESK_OR_OWNER = require("marketer", "dispatcher", "customer")
# Redeemed at the till or the visit (the hotline), or by the coupon's owner: never by a marketer (careloop.auth).
REDEEMER = require("dispatcher", "customer")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def own_customer(caller: Caller) -> int | None:
    """The customer a customer's token is bound to (what it may see of offers), None for staff."""
    return caller.customer_id if caller.role == "customer" else None


@router.get("/offer-templates", dependencies=[DESK], responses=answers(403))
def list_templates(
    conn: Conn, active: bool | None = None, limit: Limit = 100, offset: Offset = 0
) -> Page[TemplateRead]:
    """What can be offered, each with its `code`, value, validity, eligibility and channels."""
    return service.list_templates(conn, active=active, limit=limit, offset=offset)


@router.post("/offer-templates", status_code=201, dependencies=[MARKETING], responses=answers(403, 409))
def create_template(template: TemplateCreate, conn: Conn) -> TemplateRead:
    """A new template; its subject, reason and message may name {name}, {appliance}, {age}, {value}, {expires},
    {code}, {reason} and {reason_lower}. A code that exists is a 409."""
    return service.create_template(conn, template)


@router.get("/offer-templates/{code}", dependencies=[DESK], responses=answers(403, 404))
def get_template(code: TemplateCode, conn: Conn) -> TemplateRead:
    return service.get_template(conn, code)


@router.put("/offer-templates/{code}", dependencies=[MARKETING], responses=answers(403, 404))
def update_template(code: TemplateCode, template: TemplateCreate, conn: Conn) -> TemplateRead:
    """Change a template; offers issued before keep the value and words they were issued with."""
    return service.update_template(conn, code, template)


@router.get("/offers", dependencies=[DESK_OR_OWNER], responses=answers(403))
def list_offers(
    conn: Conn,
    caller: Caller,
    customer_id: CustomerId = None,
    status: OfferStatus | None = None,
    template: Name = None,
    rule_id: Name = None,
    device_id: Name = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[OfferRead]:
    """Offers and coupons, newest first, each with its `code`, `status` and the reason for it (why it is held or
    blocked, when it goes out). A customer's token lists only the customer's own, whatever `customer_id` asks."""
    if caller.role == "customer":
        if customer_id is not None and customer_id != caller.customer_id:
            return Page[OfferRead](items=[], total=0)
        customer_id = caller.customer_id
    return service.list_offers(conn, customer_id=customer_id, status=status, template=template, rule_id=rule_id,
                               device_id=device_id, limit=limit, offset=offset)


@router.get("/offers/{code}", dependencies=[DESK_OR_OWNER], responses=answers(403, 404))
def get_offer(code: Code, conn: Conn, caller: Caller) -> OfferRead:
    """An offer by its code; a customer's token finds only the customer's own (another's: 404)."""
    return service.get_offer(conn, code, customer_id=own_customer(caller))


@router.post(
    "/offers/{code}/redeem", dependencies=[REDEEMER],
    responses={**answers(403, 404, 409), 410: {"model": ErrorMessage, "description": "The code has expired"}},
)
def redeem(code: Code, redemption: Redemption, conn: Conn, caller: Caller) -> OfferRead:
    """Redeem a code once, for the customer it was issued to: another customer's code is a 403, a second redeem a
    409, an expired code a 410. What was paid goes into the customer's spend (tier and points follow). A
    customer's token redeems only the customer's own codes (another's: 404)."""
    return service.redeem(conn, code, redemption, now=now(), only_customer=own_customer(caller))


@router.get("/reports/offers", dependencies=[MARKETING], responses=answers(403))
def offers_report(
    conn: Conn,
    group_by: Literal["template", "rule", "segment"] = "template",
    since: Annotated[Moment | None, Query()] = None,
    until: Annotated[Moment | None, Query()] = None,
) -> OffersReport:
    """Did it work? Issued, delivered, redeemed, expired and revenue per template, rule or segment, and the
    uplift in conversion of the offered over the random holdout, with its 95% confidence interval."""
    return service.offers_report(conn, group_by=group_by, since=since, until=until)


@router.post("/webhooks", status_code=201, dependencies=[require()], responses=answers(403))
def create_webhook(webhook: WebhookCreate, conn: Conn) -> WebhookCreated:
    """Register an endpoint for offer events (offer.issued, offer.redeemed, offer.expired) or as the text-message
    gateway (offer.sms). Each body is signed: X-CareLoop-Signature `t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">` with the secret answered here once; Idempotency-Key is the same on every retry. A URL whose
    host is (or resolves to) a loopback, link-local or private address is a 422, unless the API runs with
    CARELOOP_WEBHOOK_PRIVATE_NETWORKS=true (a receiver on premise)."""
    return service.create_webhook(conn, webhook)


@router.get("/webhooks", dependencies=[require()], responses=answers(403))
def list_webhooks(conn: Conn, limit: Limit = 100, offset: Offset = 0) -> Page[WebhookRead]:
    """Endpoints not deleted; their URLs without credentials (shown as ***), never their secrets."""
    return service.list_webhooks(conn, limit=limit, offset=offset)


@router.delete("/webhooks/{endpoint_id}", dependencies=[require()], responses=answers(403, 404))
def delete_webhook(endpoint_id: RowId, conn: Conn) -> WebhookDeleted:
    """Delete an endpoint: messages to it not yet sent are cancelled, each with the reason (GET /outbox shows
    them). Deleting it again answers the same."""
    return service.delete_webhook(conn, endpoint_id, now=now())


@router.get("/outbox", dependencies=[MARKETING], responses=answers(403))
def list_outbox(
    conn: Conn,
    status: OutboxStatus | None = None,
    offer_id: CustomerId = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[OutboxRead]:
    """Messages waiting, sent, given up on or cancelled, with their attempts, last error and why cancelled: why a
    customer got nothing. Addresses and URLs are masked."""
    return service.list_outbox(conn, status=status, offer_id=offer_id, limit=limit, offset=offset)


@router.post("/customers/{customer_id}/marketing-objection", dependencies=[require("dispatcher")],
             responses=answers(403, 404), tags=["customers"])
def object_to_marketing(customer_id: RowId, objection: MarketingObjection, conn: Conn) -> ObjectionRead:
    """The customer objects to marketing (told to the hotline): all of it stops at once, on every channel; their
    offers not yet in their hands are blocked and messages not yet sent cancelled, each saying why. The consent
    history keeps when and how. Recording it again changes nothing."""
    return flows.object_to_marketing(conn, customer_id, source=objection.source, note=objection.note, at=now())


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>CareLoop</title>
<meta name="viewport" content="width=device-width"></head>
<body style="font-family:sans-serif;max-width:36em;margin:3em auto">{body}</body></html>"""


def _page(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(body=body), status_code=status_code, headers={"Cache-Control": "no-store"})


UNKNOWN_LINK = "This link is not known to us (any more). If you still receive offers, tell our hotline."


def _unknown_link(request: Request) -> HTMLResponse:
    """A page for a person's browser; for any other client the JSON 404 every error is."""
    if "text/html" in request.headers.get("accept", ""):
        return _page(f"<p>{UNKNOWN_LINK}</p>", 404)
    raise NotFound(UNKNOWN_LINK)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse, responses=answers(404))
def unsubscribe_page(token: UnsubscribeToken, conn: Conn, request: Request) -> HTMLResponse:
    """The page an e-mail's unsubscribe link opens: one button. Opening it changes nothing (mail scanners open
    links); the button (a POST, as mail clients' one-click unsubscribe sends) records the objection."""
    if customers_service.customer_by_unsubscribe_token(conn, token) is None:
        return _unknown_link(request)
    return _page('<p>Receive no more offers from CareLoop, on any channel?</p><form method="post">'
                 '<button type="submit">Unsubscribe</button></form>')


@router.post("/unsubscribe/{token}", response_class=HTMLResponse, responses=answers(404))
def unsubscribe(token: UnsubscribeToken, conn: Conn, request: Request) -> HTMLResponse:
    """Record the objection to marketing of the link's customer (source: unsubscribe link); again, nothing more."""
    customer_id = customers_service.customer_by_unsubscribe_token(conn, token)
    if customer_id is None:
        return _unknown_link(request)
    flows.object_to_marketing(conn, customer_id, source="unsubscribe link", at=now())
    return _page("<p>Done: you will receive no more offers from CareLoop. Service calls about your appliances "
                 "continue as you agreed.</p>")
