"""Thin functions over offers/queries.sql; rows leave as the domain's models or dicts of named columns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg2.extras import Json

from careloop.db import Connection, Row, execute, fetch_all, fetch_one, fetch_value, load_queries
from careloop.pages import Page, paginate
from offers.models import OfferRead, OutboxRead, TemplateRead, WebhookRead

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


# ---------------------------------------------------------------- templates


def list_templates(
    conn: Connection, *, code: str | None = None, active: bool | None = None, limit: int = 100, offset: int = 0
) -> Page[TemplateRead]:
    rows = fetch_all(conn, QUERIES["list_templates"], {"code": code, "active": active, "limit": limit,
                                                        "offset": offset})
    return paginate(rows, TemplateRead.model_validate)


def _template_params(template: dict[str, Any]) -> dict[str, Any]:
    return {**template, "eligibility": Json(template["eligibility"]),
            "rule_holdouts": Json({rule: str(share) for rule, share in template["rule_holdouts"].items()})}


def insert_template(conn: Connection, *, template: dict[str, Any]) -> int | None:
    return fetch_value(conn, QUERIES["insert_template"], _template_params(template))


def update_template(conn: Connection, *, template: dict[str, Any]) -> int | None:
    return fetch_value(conn, QUERIES["update_template"], _template_params(template))


# ---------------------------------------------------------------- offers and holdouts


def issued_by_key(conn: Connection, *, issue_key: str) -> tuple[str, int] | None:
    """('offer', id) or ('holdout', id) for a key issued before."""
    row = fetch_one(conn, QUERIES["issued_by_key"], {"issue_key": issue_key})
    return (row["kind"], row["id"]) if row is not None else None


def insert_offer(conn: Connection, *, offer: dict[str, Any]) -> int | None:
    return fetch_value(conn, QUERIES["insert_offer"], offer)


def insert_holdout(conn: Connection, *, holdout: dict[str, Any]) -> int | None:
    return fetch_value(conn, QUERIES["insert_holdout"], holdout)


def set_gate(
    conn: Connection, *, offer_id: int, status: str, status_reason: str, channel: str | None,
    send_at: dt.datetime | None, expires_at: dt.datetime | None, gate_checks: int,
) -> None:
    execute(conn, QUERIES["set_gate"], {
        "offer_id": offer_id, "status": status, "status_reason": status_reason, "channel": channel,
        "send_at": send_at, "expires_at": expires_at, "gate_checks": gate_checks,
    })


def list_offers(conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any) -> Page[OfferRead]:
    params = {"offer_id": None, "code": None, "customer_id": None, "status": None, "template": None,
              "rule_id": None, "device_id": None, **filters}
    rows = fetch_all(conn, QUERIES["list_offers"], {**params, "limit": limit, "offset": offset})
    return paginate(rows, OfferRead.model_validate)


def lock_offer_by_code(conn: Connection, *, code: str) -> Row | None:
    return fetch_one(conn, QUERIES["lock_offer_by_code"], {"code": code})


def redeem(conn: Connection, *, offer_id: int, at: dt.datetime, amount: Decimal, status_reason: str) -> None:
    execute(conn, QUERIES["redeem"], {"offer_id": offer_id, "at": at, "amount": amount,
                                      "status_reason": status_reason})


def expiring(conn: Connection, *, now: dt.datetime, limit: int) -> list[Row]:
    return fetch_all(conn, QUERIES["expiring"], {"now": now, "limit": limit})


def expire(conn: Connection, *, offer_id: int, at: dt.datetime, status_reason: str) -> None:
    execute(conn, QUERIES["expire"], {"offer_id": offer_id, "at": at, "status_reason": status_reason})


def held(conn: Connection, *, limit: int) -> list[Row]:
    return fetch_all(conn, QUERIES["held"], {"limit": limit})


def delivered(conn: Connection, *, offer_id: int, at: dt.datetime, status_reason: str) -> None:
    execute(conn, QUERIES["delivered"], {"offer_id": offer_id, "at": at, "status_reason": status_reason})


def undeliverable(conn: Connection, *, offer_id: int, status_reason: str) -> None:
    execute(conn, QUERIES["undeliverable"], {"offer_id": offer_id, "status_reason": status_reason})


# ---------------------------------------------------------------- webhook endpoints and the outbox


def endpoints_for_event(conn: Connection, *, event: str) -> list[Row]:
    return fetch_all(conn, QUERIES["endpoints_for_event"], {"event": event})


def insert_endpoint(
    conn: Connection, *, name: str, url: str, secret: str, events: list[str], private_network: bool
) -> int:
    return int(fetch_value(conn, QUERIES["insert_endpoint"], {"name": name, "url": url, "secret": secret,
                                                               "events": events, "private_network": private_network}))


def delete_endpoint(conn: Connection, *, endpoint_id: int, at: dt.datetime) -> Row | None:
    return fetch_one(conn, QUERIES["delete_endpoint"], {"endpoint_id": endpoint_id, "at": at})


def cancel_endpoint_messages(conn: Connection, *, endpoint_id: int, reason: str, at: dt.datetime) -> list[Row]:
    return fetch_all(conn, QUERIES["cancel_endpoint_messages"], {"endpoint_id": endpoint_id, "reason": reason,
                                                                  "at": at})


def list_endpoints(
    conn: Connection, *, endpoint_id: int | None = None, limit: int = 100, offset: int = 0
) -> Page[WebhookRead]:
    rows = fetch_all(conn, QUERIES["list_endpoints"], {"endpoint_id": endpoint_id, "limit": limit,
                                                        "offset": offset})
    return paginate(rows, WebhookRead.model_validate)


def insert_message(conn: Connection, *, message: dict[str, Any]) -> None:
    execute(conn, QUERIES["insert_message"], message)


def claim_due(
    conn: Connection, *, now: dt.datetime, lease_until: dt.datetime, per_channel: int, scan: int
) -> list[Row]:
    return fetch_all(conn, QUERIES["claim_due"], {"now": now, "lease_until": lease_until,
                                                   "per_channel": per_channel, "scan": scan})


def mark_sent(conn: Connection, *, message_id: int, at: dt.datetime) -> None:
    execute(conn, QUERIES["mark_sent"], {"message_id": message_id, "at": at})


def mark_failed(conn: Connection, *, message_id: int, error: str, retry_at: dt.datetime | None) -> None:
    execute(conn, QUERIES["mark_failed"], {"message_id": message_id, "error": error, "retry_at": retry_at})


def put_back(conn: Connection, *, message_id: int, error: str, retry_at: dt.datetime) -> None:
    execute(conn, QUERIES["put_back"], {"message_id": message_id, "error": error, "retry_at": retry_at})


def cancel_pending(conn: Connection, *, offer_id: int, error: str) -> None:
    execute(conn, QUERIES["cancel_pending"], {"offer_id": offer_id, "error": error})


def list_outbox(
    conn: Connection, *, status: str | None = None, offer_id: int | None = None, limit: int = 100, offset: int = 0
) -> Page[OutboxRead]:
    rows = fetch_all(conn, QUERIES["list_outbox"], {"status": status, "offer_id": offer_id, "limit": limit,
                                                     "offset": offset})
    return paginate(rows, OutboxRead.model_validate)


# ---------------------------------------------------------------- the report


def report(
    conn: Connection, *, group_by: str, since: dt.datetime | None, until: dt.datetime | None
) -> list[Row]:
    return fetch_all(conn, QUERIES["report"], {"group_by": group_by, "since": since, "until": until})


def cancel_customer_messages(conn: Connection, *, customer_id: int, reason: str, at: dt.datetime) -> int:
    return len(fetch_all(conn, QUERIES["cancel_customer_messages"], {"customer_id": customer_id, "reason": reason,
                                                                     "at": at}))


def block_customer_offers(conn: Connection, *, customer_id: int, reason: str) -> int:
    return len(fetch_all(conn, QUERIES["block_customer_offers"], {"customer_id": customer_id, "reason": reason}))


def cancel_unconsented(conn: Connection, *, now: dt.datetime) -> int:
    """How many offers were blocked because their customer withdrew consent before the message went out."""
    return len(fetch_all(conn, QUERIES["cancel_unconsented"], {"now": now}))
