"""What comes in and goes out of the customers domain."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from devices.models import DeviceRead

Purpose = Literal["service", "marketing"]
Channel = Literal["phone", "sms", "email"]


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    channel: Channel
    granted: bool


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{5,32}$")
    email: EmailStr | None = None
    birthday: dt.date | None = None
    timezone: str = Field(default="UTC", max_length=64)
    region: str | None = Field(default=None, max_length=64)
    preferred_channel: Channel | None = None
    consents: list[Consent] = []

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name no file can have
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like Asia/Shanghai") from None
        return value

    @field_validator("birthday")
    @classmethod
    def _plausible_birthday(cls, value: dt.date | None) -> dt.date | None:
        if value is not None and not (dt.date(1900, 1, 1) <= value <= dt.date.today()):
            raise ValueError("must be between 1900-01-01 and today")
        return value


class CustomerUpdate(CustomerCreate):
    """A correction: only the fields given change (null clears phone, e-mail, birthday, region or the preferred
    channel; name and time zone cannot be cleared). Consents change through POST /customers/{id}/consents."""

    name: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]
    timezone: str | None = Field(default=None, max_length=64)  # type: ignore[assignment]
    consents: None = Field(default=None, exclude=True, description="not here: POST /customers/{id}/consents")

    @field_validator("name", "timezone", mode="before")
    @classmethod
    def _not_cleared(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be cleared (null); give a value")
        return value

    @field_validator("consents", mode="before")
    @classmethod
    def _not_here(cls, value: object) -> object:
        raise ValueError("consents change through POST /customers/{id}/consents, with how they were given")


class CustomerRead(BaseModel):
    id: int
    name: str
    phone: str | None = Field(description="for a marketer, its last two digits alone")
    email: str | None = Field(description="for a marketer, its first letter and domain alone; not shown to a "
                                          "technician")
    birthday: dt.date | None = Field(description="not shown to a marketer or a technician")
    timezone: str
    region: str | None
    preferred_channel: Channel | None
    created_at: dt.datetime
    consents: list[Consent] = Field(description="not shown to a technician")
    erased_at: dt.datetime | None = Field(default=None, description="set once the person was erased: an anonymous "
                                          "stub remains, which orders and offers still count")

    def for_a_visit(self) -> CustomerRead:
        """What a technician sees of the customer of an open order assigned to them: who to ask for and the number
        to call, nothing else (no e-mail, birthday or consents)."""
        return self.model_copy(update={"email": None, "birthday": None, "consents": []})

    def without_contact_details(self) -> CustomerRead:
        """What a marketer sees: enough to tell customers apart and to know a channel is on record, never the
        number, the address or the birthday (campaigns reach customers through offers, not by hand)."""
        return self.model_copy(update={
            "phone": f"***{self.phone[-2:]}" if self.phone else None,
            "email": f"{self.email[:1]}***@{self.email.rpartition('@')[2]}" if self.email else None,
            "birthday": None,
        })


class ErasureRead(BaseModel):
    """What erasing a person touched, place by place (rows); nothing more when they were erased before."""

    customer_id: int
    erased_at: dt.datetime
    erased_now: bool
    touched: dict[str, int] = Field(description="rows per place: devices (now owned by nobody), consents, outbox, "
                                    "offers, call_tasks, order_texts, quarantine, points, profile")


class Customer360(BaseModel):
    customer: CustomerRead
    devices: list[DeviceRead]
    consents: list[Consent]
    membership: MembershipRead | None = None  # tier, its benefits, points
    segment: SegmentRead | None = None  # value (RFM) and device segments, as last computed
    orders: list[OrderSummary] = []
    offers: list[OfferSummary] = []
    contacts: list[ContactRead] = []  # the contact policy's decisions, newest first
    consent_history: list[ConsentRecord] = []  # every consent given or withdrawn, newest first
    timeline: list[TimelineEntry] = []  # all of it, newest first


@dataclass(frozen=True)
class ContactFacts:
    """What the contact policy weighs about a customer: consents, time zone, and the contacts of one purpose
    allowed lately, on all channels and on the one asked about."""

    timezone: str
    consents: dict[tuple[str, str], bool]  # (purpose, channel) -> granted
    contacts_last_day: int
    contacts_last_week: int
    channel_last_day: int = 0
    channel_last_week: int = 0


# ---------------------------------------------------------------- consents over time, the offer gate's facts


class ConsentChange(BaseModel):
    """A consent given or withdrawn, and how (kept in the consent history with when)."""

    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    channel: Channel
    granted: bool
    source: str = Field(min_length=1, max_length=100, description="how: 'web form', 'hotline call', 'unsubscribe link'")
    note: str | None = Field(default=None, max_length=500)


class ConsentRecord(ConsentChange):
    model_config = ConfigDict(extra="ignore")

    at: dt.datetime


@dataclass(frozen=True)
class OfferContactFacts:
    """What the contact policy weighs before an offer: consents, the preferred channel, the channels we can reach
    the customer on, their zone, and the marketing contacts allowed lately (all channels and each)."""

    timezone: str
    preferred_channel: Channel | None
    reachable: frozenset[str]
    consents: dict[tuple[str, str], bool]
    last_day: int
    last_week: int
    channel_last_day: dict[str, int]
    channel_last_week: dict[str, int]


# ---------------------------------------------------------------- membership and segments


class TierRead(BaseModel):
    name: str
    min_spend: Decimal = Field(description="spend over the rolling window that reaches this tier")
    discount_pct: int
    points_multiplier: Decimal
    free_cleaning_visits: int = Field(description="a year")


class PointsLotRead(BaseModel):
    points: int
    remaining: int
    earned_at: dt.datetime
    expires_at: dt.datetime


class FreeVisitRead(BaseModel):
    at: dt.datetime
    what: str


class FreeVisitsRead(BaseModel):
    """The tier's free cleaning visits in the customer's calendar year (their own time zone), and their use: a
    member cleaning (or descaling) offer redeemed, or a maintenance order completed as a free visit."""

    year: int
    allowance: int = Field(description="the tier's free cleaning visits a year")
    used: int
    remaining: int
    visits: list[FreeVisitRead]


class MembershipRead(BaseModel):
    customer_id: int
    tier: TierRead
    spend_in_window: Decimal
    window_days: int
    next_tier: TierRead | None
    to_next_tier: Decimal | None
    points_balance: int
    points_earned: int
    points_spent: int
    points_expired: int
    points_expiring_soon: int = Field(description="of the balance, what expires within 30 days")
    next_points_expiry: dt.datetime | None
    lots: list[PointsLotRead]
    free_cleaning_visits: FreeVisitsRead


class PointsSpendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: int = Field(ge=1, le=10_000_000)
    reason: str = Field(min_length=1, max_length=200)
    key: str = Field(min_length=1, max_length=200, description="the caller's key: the same key is spent once")


class SegmentRead(BaseModel):
    recency_days: int | None
    frequency: int
    monetary: Decimal
    r_score: int
    f_score: int
    m_score: int
    value_segment: str
    top_revenue: bool = Field(description="among the customers who bring 80% of revenue")
    device_segments: list[str]
    computed_at: dt.datetime


class OrderSummary(BaseModel):
    id: int
    device_id: str
    type: str
    status: str
    reason: str
    opened_at: dt.datetime
    completed_at: dt.datetime | None


class OfferSummary(BaseModel):
    code: str
    template: str
    device_id: str | None
    status: str
    status_reason: str
    reason: str
    channel: str | None
    issued_at: dt.datetime
    expires_at: dt.datetime | None
    redeemed_at: dt.datetime | None


class ContactRead(BaseModel):
    purpose: str
    channel: str
    subject: str
    allowed: bool
    held: bool
    reason: str
    not_before: dt.datetime | None
    decided_at: dt.datetime


class TimelineEntry(BaseModel):
    at: dt.datetime
    kind: Literal["device", "order", "offer", "contact", "consent", "spend"]
    text: str


Customer360.model_rebuild()


class PurchaseRecord(BaseModel):
    """Something the customer bought (in a shop, online): it goes into their spend, so tier and points follow."""

    model_config = ConfigDict(extra="forbid")

    amount: Decimal = Field(gt=0, le=Decimal(10_000_000), decimal_places=2)
    source: Literal["purchase", "consumables", "warranty", "service_visit"] = "purchase"
    key: str = Field(min_length=1, max_length=200, description="the caller's key (an order number): counted once")
