"""What comes in and goes out of the offers domain: templates, offers, redemptions, webhook endpoints, the outbox,
and the conversion report."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

from customers.membership import TIER_NAMES
from customers.models import Consent
from offers.messages import check_placeholders, masked_address, masked_url

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Category = Literal["service", "sales", "care"]
ValueKind = Literal["amount", "percent"]
OfferChannel = Literal["email", "sms"]
OfferStatus = Literal["held", "blocked", "issued", "delivered", "redeemed", "expired"]
WebhookEvent = Literal["offer.issued", "offer.redeemed", "offer.expired", "offer.sms"]
Share = Annotated[Decimal, Field(ge=0, le=Decimal("0.5"), decimal_places=3)]


class Eligibility(BaseModel):
    """Who may get a template: each list narrows it (absent: anyone)."""

    model_config = ConfigDict(extra="forbid")

    kinds: list[Slug] | None = Field(default=None, description="appliance kinds, e.g. range_hood")
    models: list[Annotated[str, Field(max_length=64)]] | None = None
    tiers: list[Literal[TIER_NAMES]] | None = None  # type: ignore[valid-type]
    segments: list[Slug] | None = Field(
        default=None, description="value segments (champions, loyal, ...), top_revenue, or device segments"
    )


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Slug
    name: Annotated[str, Field(min_length=1, max_length=200)]
    category: Category = Field(description="sales offers wait while the customer's service is open")
    value_kind: ValueKind
    value: Decimal = Field(gt=0, le=Decimal(1_000_000), decimal_places=2)
    validity_days: int = Field(ge=1, le=3660)
    eligibility: Eligibility = Eligibility()
    channels: list[OfferChannel] = Field(min_length=1, max_length=2)
    subject: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=300, description="why, in words the owner would welcome")]
    message: Annotated[str, Field(min_length=1, max_length=2000)]
    occasion: Literal["birthday"] | None = Field(
        default=None, description="birthday: once a year per customer, delivered on the day in their time zone"
    )
    conversion_source: Slug | None = Field(
        default=None, description="the spend that counts as the offer working (purchase, service_visit, ...); "
        "none: any spend"
    )
    holdout_share: Share = Decimal(0)
    rule_holdouts: dict[Slug, Share] = Field(default={}, description="a holdout share per rule, over holdout_share")
    free_visit: bool = Field(default=False, description="redeeming it uses one of the member's free cleaning visits "
                             "of the year (GET /customers/{id}/membership)")
    active: bool = True

    @field_validator("subject", "reason", "message")
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        check_placeholders(text)
        return text

    @field_validator("channels")
    @classmethod
    def _distinct(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise ValueError("each channel once")
        return channels

    @model_validator(mode="after")
    def _percent(self) -> TemplateCreate:
        if self.value_kind == "percent" and self.value > 100:
            raise ValueError("a percentage value is at most 100")
        return self


class TemplateRead(TemplateCreate):
    model_config = ConfigDict(extra="ignore")

    id: int
    created_at: dt.datetime
    updated_at: dt.datetime


class OfferRead(BaseModel):
    id: int
    code: str
    template: str
    customer_id: int
    device_id: str | None
    rule_id: str | None
    detection_id: int | None
    status: OfferStatus
    status_reason: str = Field(description="why it is held or blocked, when it goes out, or what became of it")
    reason: str = Field(description="why the owner gets it, in their words")
    channel: OfferChannel | None
    value_kind: ValueKind
    value: Decimal
    segment: str
    issued_at: dt.datetime
    send_at: dt.datetime | None
    expires_at: dt.datetime | None
    delivered_at: dt.datetime | None
    redeemed_at: dt.datetime | None
    redeemed_amount: Decimal | None
    expired_at: dt.datetime | None


class Redemption(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int = Field(ge=1, le=2**63 - 1, description="who presents the code: it must be theirs")
    amount: Decimal = Field(default=Decimal(0), ge=0, le=Decimal(10_000_000), decimal_places=2,
                            description="what the customer paid with it (goes into their spend)")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    url: AnyHttpUrl = Field(description="a public receiver: one on a loopback, link-local or private address is "
                            "refused unless CARELOOP_WEBHOOK_PRIVATE_NETWORKS=true (on premise)")
    events: list[WebhookEvent] = Field(min_length=1)


class WebhookRead(BaseModel):
    id: int
    name: str
    url: str = Field(description="without its credentials: password, query values and key-like path segments "
                     "are shown as ***")
    events: list[str]
    active: bool
    private_network: bool = Field(description="registered where private receivers are allowed (on premise)")
    created_at: dt.datetime

    @field_validator("url")
    @classmethod
    def _masked(cls, url: str) -> str:
        return masked_url(url)


class WebhookDeleted(BaseModel):
    id: int
    deleted_at: dt.datetime
    cancelled_messages: int = Field(description="messages to it not yet sent, now cancelled with the reason")


class WebhookCreated(WebhookRead):
    secret: str = Field(description="signs every body (HMAC-SHA256, X-CareLoop-Signature); shown only now")


OutboxStatus = Literal["pending", "sent", "dead", "cancelled"]


class OutboxRead(BaseModel):
    id: int
    offer_id: int | None
    transport: Literal["smtp", "webhook"]
    destination: str = Field(description="masked: the e-mail address's first letter and domain, or the webhook's "
                             "URL without its credentials")
    event: str
    idempotency_key: str
    subject: str | None
    status: OutboxStatus
    not_before: dt.datetime
    next_attempt_at: dt.datetime
    attempts: int
    last_error: str | None
    sent_at: dt.datetime | None
    cancelled_at: dt.datetime | None = None
    cancel_reason: str | None = Field(default=None, description="why it will never be sent")
    created_at: dt.datetime

    @model_validator(mode="after")
    def _masked(self) -> OutboxRead:
        shown = masked_url(self.destination) if self.transport == "webhook" else masked_address(self.destination)
        if self.last_error:  # an error may quote where the message went
            self.last_error = self.last_error.replace(self.destination, shown)
        self.destination = shown
        return self


class MarketingObjection(BaseModel):
    """A customer's objection to marketing, told to the hotline (or however it came)."""

    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        default="hotline call", description="how it came: 'hotline call', 'letter', ...")
    note: Annotated[str, Field(max_length=500)] | None = None


class ObjectionRead(BaseModel):
    customer_id: int
    objected_at: dt.datetime = Field(description="when marketing was last withdrawn")
    recorded_now: bool = Field(description="false when the customer had objected already: nothing changed")
    consents: list[Consent]
    offers_blocked: int
    messages_cancelled: int


class ReportRow(BaseModel):
    key: str = Field(description="the template's code, the rule's id or the segment")
    treated: int = Field(description="eligible and offered")
    holdout: int = Field(description="eligible and kept out at random")
    issued: int
    delivered: int
    redeemed: int
    expired: int
    held: int
    blocked: int
    revenue: Decimal = Field(description="paid with redeemed coupons")
    conversion_treated: float | None
    conversion_holdout: float | None
    uplift: float | None = Field(description="conversion of the offered minus that of the holdout")
    uplift_low: float | None
    uplift_high: float | None
    revenue_per_treated: Decimal | None = Field(description="spend that counts as conversion, per offered customer")
    revenue_per_holdout: Decimal | None


class OffersReport(BaseModel):
    group_by: Literal["template", "rule", "segment"]
    since: dt.datetime | None
    until: dt.datetime | None
    confidence: float
    method: str
    rows: list[ReportRow]
    total: ReportRow


@dataclass(frozen=True)
class IssueOutcome:
    """What an `offer` action came to: an offer, a place in the holdout, or nothing (and why)."""

    kind: Literal["offer", "holdout", "skipped"]
    reason: str
    offer: OfferRead | None = None
    holdout_id: int | None = None

    def result(self) -> dict[str, Any]:
        """What the detection's action records it made (never the coupon code)."""
        if self.offer is not None:
            return {"offer_id": self.offer.id, "offer_status": self.offer.status}
        if self.holdout_id is not None:
            return {"holdout_id": self.holdout_id}
        return {"skipped": self.reason}
