"""Customers: creation with consents, look-ups and the 360 view. Takes a connection."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import zoneinfo
from decimal import Decimal
from typing import Any, get_args

from careloop.db import Connection
from careloop.errors import Conflict, NotFound
from careloop.pages import Page
from customers import repo
from customers.contact_policy import ContactDecision, RecentContacts, local_today
from customers.contact_policy import decide_contact as decide_contact_now
from customers.contact_policy import decide_offer_contact as decide_offer_contact_now
from customers.membership import TIER_WINDOW, TIERS, points_lots, points_state, spend_in_window, tier_for_spend
from customers.models import (
    Channel,
    Consent,
    ConsentChange,
    ConsentRecord,
    Customer360,
    CustomerCreate,
    CustomerRead,
    CustomerUpdate,
    ErasureRead,
    FreeVisitsRead,
    MembershipRead,
    PointsLotRead,
    PointsSpendRequest,
    Purpose,
    SegmentRead,
    TierRead,
    TimelineEntry,
)
from customers.segments import CustomerValue, device_segments, segment_customers
from devices import service as devices_service
from devices.models import DeviceRead

CHANNELS: tuple[str, ...] = get_args(Channel)
log = logging.getLogger("careloop.customers")


def create_customer(conn: Connection, customer: CustomerCreate) -> CustomerRead:
    fields = customer.model_dump(exclude={"consents"})
    customer_id = repo.insert_customer(conn, customer=fields)
    for consent in customer.consents:
        repo.upsert_consent(conn, customer_id=customer_id, **consent.model_dump())
    return get_customer(conn, customer_id)


def update_customer(conn: Connection, customer_id: int, update: CustomerUpdate) -> CustomerRead:
    """Correct the fields given; an erased customer cannot be corrected (409)."""
    changes = update.model_dump(exclude_unset=True, exclude={"consents"})
    if not repo.update_customer(conn, customer_id=customer_id, changes=changes):
        exists, erased_at = repo.customer_erased_at(conn, customer_id=customer_id)
        if not exists:
            raise NotFound(f"no customer {customer_id}")
        raise Conflict(f"customer {customer_id} was erased on {erased_at:%Y-%m-%d}: there is no one to correct")
    return get_customer(conn, customer_id)


def erase_customer(conn: Connection, customer_id: int, *, at: dt.datetime) -> ErasureRead:
    """Erase the person everywhere the product wrote them (customers/queries.sql lists each place): profile,
    consents and their history, their offers' messages, call tasks, texts of their orders that quote their
    e-mail or phone, quarantined messages that mention them; their appliances are owned by nobody. An anonymous
    stub keeps the id, so orders, offers, spend and segments still count. Erasing again changes nothing."""
    exists, erased_at = repo.customer_erased_at(conn, customer_id=customer_id)
    if not exists:
        raise NotFound(f"no customer {customer_id}")
    if erased_at is not None:
        return ErasureRead(customer_id=customer_id, erased_at=erased_at, erased_now=False, touched={})
    customer = get_customer(conn, customer_id)
    phone = customer.phone or ""
    digits = "".join(c for c in phone if c.isdigit())
    marks = [mark for mark in (customer.email, phone, digits) if mark and len(mark) >= 5]
    # `replace(text, '', ...)` changes nothing: an absent e-mail or phone quotes nothing to erase
    touched = repo.erase_customer(conn, customer_id=customer_id, email=customer.email or "", phone=phone,
                                  marks=marks, at=at)
    log.info("customer %d erased: %s", customer_id, touched)
    return ErasureRead(customer_id=customer_id, erased_at=at, erased_now=True, touched=touched)


def get_customer(conn: Connection, customer_id: int) -> CustomerRead:
    return repo.list_customers(conn, customer_id=customer_id, limit=1).one(f"no customer {customer_id}")


def list_customers(
    conn: Connection, *, q: str | None, limit: int, offset: int, names_only: bool = False
) -> Page[CustomerRead]:
    """Customers not erased; `q` finds part of a name, e-mail or phone (of a name alone with `names_only`, so that
    who may not see contact details cannot probe them either)."""
    return repo.list_customers(conn, q=q, limit=limit, offset=offset, names_only=names_only)


def customer_360(conn: Connection, customer_id: int, *, now: dt.datetime | None = None) -> Customer360:
    """One view of a customer: profile, consents and devices with their state; membership (tier, points), value
    segment, orders, offers, contacts and the consent history; all of it on one timeline."""
    customer = get_customer(conn, customer_id)
    devices = devices_service.list_devices(conn, owner=customer_id, limit=1000, offset=0).items
    picture = _picture(conn, customer_id, devices, now=now or dt.datetime.now(dt.UTC))
    return Customer360(customer=customer, devices=devices, consents=customer.consents, **picture)


def decide_contact(
    conn: Connection, *, customer_id: int, purpose: Purpose, channel: Channel, subject: str, now: dt.datetime
) -> ContactDecision:
    """The contact policy's decision about one contact (`subject`, e.g. `call_task:order:12`), kept with its reason.

    Decided once per subject and channel: asking again (a retried action) answers the decision kept."""
    kept = repo.contact_decision(conn, subject=subject, channel=channel)
    if kept is not None:
        return kept
    facts = repo.contact_facts(conn, customer_id=customer_id, purpose=purpose, channel=channel, now=now)
    if facts is None:
        raise NotFound(f"no customer {customer_id}")
    decision = decide_contact_now(
        purpose=purpose,
        channel=channel,
        consents=facts.consents,
        timezone=facts.timezone,
        now=now,
        contacts_last_day=facts.contacts_last_day,
        contacts_last_week=facts.contacts_last_week,
        channel_last_day=facts.channel_last_day,
        channel_last_week=facts.channel_last_week,
    )
    repo.record_contact_decision(conn, decision={
        "customer_id": customer_id, "purpose": purpose, "channel": channel, "subject": subject,
        "allowed": decision.allowed, "reason": decision.reason, "not_before": decision.not_before, "now": now,
    })
    return decision


def record_spend(
    conn: Connection, *, customer_id: int, amount: Decimal, source: str, key: str, at: dt.datetime
) -> None:
    """Add to the customer's spend ledger (tiers follow it); the same key is counted once."""
    repo.record_spend(conn, customer_id=customer_id, amount=amount, source=source, entry_key=key, at=at)


# ---------------------------------------------------------------- consents over time


def record_consent(conn: Connection, customer_id: int, change: ConsentChange, *, at: dt.datetime) -> list[Consent]:
    """A consent given or withdrawn, how and when: the consent as it stands changes and the history keeps it.
    Answers the customer's consents now."""
    if not repo.customer_exists(conn, customer_id=customer_id):
        raise NotFound(f"no customer {customer_id}")
    repo.record_consent(conn, customer_id=customer_id, at=at, **change.model_dump())
    return get_customer(conn, customer_id).consents


def object_to_marketing(
    conn: Connection, customer_id: int, *, source: str, note: str | None = None, at: dt.datetime
) -> bool:
    """The customer objects to marketing: it is withdrawn on every channel at once (each kept in the consent
    history with when and how), whatever they had given. Answers whether anything changed: objecting again (a
    second click of the link) records nothing more."""
    if not repo.lock_customer(conn, customer_id=customer_id):
        raise NotFound(f"no customer {customer_id}")
    standing = repo.marketing_consents(conn, customer_id=customer_id)
    changed = False
    for channel in CHANNELS:
        if standing.get(channel) is False:
            continue
        repo.record_consent(conn, customer_id=customer_id, purpose="marketing", channel=channel, granted=False,
                            source=source, note=note or "objection to all marketing", at=at)
        changed = True
    return changed


def unsubscribe_token(conn: Connection, customer_id: int) -> str | None:
    """The customer's own unguessable unsubscribe token (made once; None for an erased customer)."""
    return repo.unsubscribe_token(conn, customer_id=customer_id, token=secrets.token_urlsafe(24))


def customer_by_unsubscribe_token(conn: Connection, token: str) -> int | None:
    return repo.customer_by_unsubscribe_token(conn, token=token)


def consent_history(conn: Connection, customer_id: int) -> list[ConsentRecord]:
    """Every consent the customer gave or withdrew, newest first, with when and how."""
    if not repo.customer_exists(conn, customer_id=customer_id):
        raise NotFound(f"no customer {customer_id}")
    return repo.consent_history(conn, customer_id=customer_id)


# ---------------------------------------------------------------- the gate for offers


def decide_offer_contact(
    conn: Connection,
    *,
    customer_id: int,
    subject: str,
    channels: list[Channel],
    sales: bool,
    open_service: list[str],
    now: dt.datetime,
    earliest: dt.datetime | None = None,
) -> ContactDecision:
    """The contact policy's decision about one offer (`subject`, e.g. `offer:41#1`), kept with its reason and
    channel. `channels`: those the offer may use and the sender can deliver on; `open_service`: what the customer
    has open (service first: the offers side knows it). Asked again with the same subject, the decision kept."""
    kept = repo.offer_decision(conn, subject=subject)
    if kept is not None:
        return kept
    facts = repo.offer_contact_facts(conn, customer_id=customer_id, now=now)
    if facts is None:
        raise NotFound(f"no customer {customer_id}")
    decision = decide_offer_contact_now(
        sales=sales,
        open_service=open_service,
        channels=channels,
        preferred=facts.preferred_channel,
        consents=facts.consents,
        reachable=facts.reachable,
        timezone=facts.timezone,
        now=now,
        recent=RecentContacts(facts.last_day, facts.last_week, facts.channel_last_day, facts.channel_last_week),
        earliest=earliest,
    )
    repo.record_offer_decision(conn, decision={
        "customer_id": customer_id, "channel": decision.channel or (channels[0] if channels else "email"),
        "subject": subject, "allowed": decision.allowed, "held": decision.held, "reason": decision.reason,
        "not_before": decision.not_before, "now": now,
    })
    return decision


# ---------------------------------------------------------------- membership


def membership(conn: Connection, customer_id: int, *, now: dt.datetime) -> MembershipRead:
    """The customer's tier (spend over the rolling window), its benefits, and their points."""
    if not repo.customer_exists(conn, customer_id=customer_id):
        raise NotFound(f"no customer {customer_id}")
    spends = repo.spend_entries(conn, customer_id=customer_id)
    in_window = spend_in_window(spends, now)
    tier = tier_for_spend(in_window)
    free_visits = _free_visits(conn, customer_id, tier.free_cleaning_visits, now=now)
    higher = [t for t in TIERS if t.min_spend > tier.min_spend]
    points = points_state(points_lots(spends), repo.points_spent(conn, customer_id=customer_id), now)
    return MembershipRead(
        customer_id=customer_id,
        tier=TierRead(**vars(tier)),
        spend_in_window=in_window,
        window_days=TIER_WINDOW.days,
        next_tier=TierRead(**vars(higher[0])) if higher else None,
        to_next_tier=higher[0].min_spend - in_window if higher else None,
        points_balance=points.balance,
        points_earned=points.earned,
        points_spent=points.spent,
        points_expired=points.expired,
        points_expiring_soon=points.expiring_soon,
        next_points_expiry=points.next_expiry,
        lots=[PointsLotRead(**vars(lot)) for lot in points.lots],
        free_cleaning_visits=free_visits,
    )


def _free_visits(conn: Connection, customer_id: int, allowance: int, *, now: dt.datetime) -> FreeVisitsRead:
    """The free cleaning visits of the customer's calendar year, in their own time zone."""
    timezone = get_customer(conn, customer_id).timezone
    year = local_today(now, timezone).year
    since, until = (dt.datetime(y, 1, 1, tzinfo=zoneinfo.ZoneInfo(timezone)) for y in (year, year + 1))
    visits = repo.free_visits_used(conn, customer_id=customer_id, since=since, until=until)
    return FreeVisitsRead(year=year, allowance=allowance, used=len(visits),
                          remaining=max(allowance - len(visits), 0), visits=visits)


def spend_points(
    conn: Connection, customer_id: int, request: PointsSpendRequest, *, now: dt.datetime
) -> MembershipRead:
    """Spend points, oldest first; more than the balance is a 409 naming it. The same key is spent once."""
    if not repo.lock_customer(conn, customer_id=customer_id):
        raise NotFound(f"no customer {customer_id}")
    before = membership(conn, customer_id, now=now)
    written = repo.spend_points(conn, customer_id=customer_id, points=request.points, reason=request.reason,
                                entry_key=f"points:{customer_id}:{request.key}", at=now)
    if written and request.points > before.points_balance:  # raising rolls the spend back with the transaction
        raise Conflict(f"customer {customer_id} has {before.points_balance} points, not {request.points}")
    return membership(conn, customer_id, now=now)


def tier_name(conn: Connection, customer_id: int, *, now: dt.datetime) -> str:
    return tier_for_spend(spend_in_window(repo.spend_entries(conn, customer_id=customer_id), now)).name


# ---------------------------------------------------------------- segments


SEGMENT_WINDOW = dt.timedelta(days=365)


def refresh_segments(conn: Connection, *, now: dt.datetime) -> dict[str, int]:
    """Scheduled: every customer's RFM scores and value segment (relative to all customers), whether they are
    among those who bring 80% of revenue, and device-based segments."""
    rows = repo.customer_values(conn, now=now, since=now - SEGMENT_WINDOW)
    values = [CustomerValue(row["customer_id"], row["recency_days"], row["frequency"], row["monetary"])
              for row in rows]
    segments = segment_customers(values)
    columns: dict[str, list[Any]] = {name: [] for name in (
        "customer_id", "recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "value_segment",
        "top_revenue", "device_segments")}
    for row, segment in zip(rows, segments, strict=True):
        age = float(row["oldest_age_years"]) if row["oldest_age_years"] is not None else None
        for name, value in (
            ("customer_id", row["customer_id"]), ("recency_days", row["recency_days"]),
            ("frequency", row["frequency"]), ("monetary", row["monetary"]), ("r_score", segment.r_score),
            ("f_score", segment.f_score), ("m_score", segment.m_score), ("value_segment", segment.value_segment),
            ("top_revenue", segment.top_revenue),
            ("device_segments", ",".join(device_segments(row["appliances"], age))),
        ):
            columns[name].append(value)
    repo.store_segments(conn, columns=columns, now=now)
    return {"customers": len(rows), "top_revenue": sum(s.top_revenue for s in segments)}


def segment_of(conn: Connection, customer_id: int) -> SegmentRead | None:
    """The customer's segments as last computed (None before the first run)."""
    return repo.customer_segment(conn, customer_id=customer_id)


# ---------------------------------------------------------------- the 360 view's picture


def _picture(conn: Connection, customer_id: int, devices: list[DeviceRead], *, now: dt.datetime) -> dict[str, Any]:
    orders = repo.customer_orders(conn, customer_id=customer_id)
    offers = repo.customer_offers(conn, customer_id=customer_id)
    contacts = repo.customer_contacts(conn, customer_id=customer_id)
    consents = repo.consent_history(conn, customer_id=customer_id)
    spend = repo.customer_spend(conn, customer_id=customer_id)
    timeline = [
        *(TimelineEntry(at=d.created_at, kind="device",
                        text=f"{d.kind.replace('_', ' ')} {d.id} ({d.model}) registered") for d in devices),
        *(TimelineEntry(at=o.opened_at, kind="order", text=f"service order {o.id} ({o.type}) for {o.device_id}: "
                        f"{o.reason}; {o.status}") for o in orders),
        *(TimelineEntry(at=o.issued_at, kind="offer", text=f"offer {o.template}: {o.status} ({o.status_reason})")
          for o in offers),
        *(TimelineEntry(at=c.decided_at, kind="contact", text=f"{c.purpose} by {c.channel}: "
                        f"{'held' if c.held else 'allowed' if c.allowed else 'refused'}: {c.reason}")
          for c in contacts),
        *(TimelineEntry(at=c.at, kind="consent", text=f"{c.purpose} by {c.channel} "
                        f"{'given' if c.granted else 'withdrawn'} ({c.source})") for c in consents),
        *(TimelineEntry(at=s["at"], kind="spend", text=f"spent {s['amount']} ({s['source'].replace('_', ' ')})")
          for s in spend),
    ]
    timeline.sort(key=lambda entry: entry.at, reverse=True)
    return {
        "membership": membership(conn, customer_id, now=now),
        "segment": segment_of(conn, customer_id),
        "orders": orders,
        "offers": offers,
        "contacts": contacts,
        "consent_history": consents,
        "timeline": timeline,
    }
