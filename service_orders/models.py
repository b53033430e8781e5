"""What comes in and goes out of the service orders domain: orders, their history, technicians, call tasks."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SkipValidation, field_validator, model_validator

from careloop.durations import Duration, DurationField
from devices.catalog import known_skill
from devices.models import DEVICE_ID_PATTERN

OrderType = Literal["repair", "maintenance", "inspection", "installation"]
Priority = Literal["low", "normal", "high", "urgent"]
OrderStatus = Literal["new", "scheduled", "assigned", "in_progress", "completed", "cancelled"]
CallOutcome = Literal["reached", "no_answer", "call_back", "declined"]
SlaState = Literal["ok", "due_soon", "overdue", "met", "missed"]

PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")
OPEN_STATUSES = ("new", "scheduled", "assigned", "in_progress")
# Where an order may go from each status. `scheduled`: a visit window is agreed with the customer;
# `assigned`: a technician has it (with a window in their calendar).
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("scheduled", "assigned", "cancelled"),
    "scheduled": ("assigned", "cancelled"),
    "assigned": ("in_progress", "scheduled", "cancelled"),
    "in_progress": ("completed", "assigned", "cancelled"),
    "completed": (),
    "cancelled": (),
}
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Skill = Annotated[Slug, AfterValidator(known_skill)]
Text = Annotated[str, Field(min_length=1, max_length=2000)]


class Actor(BaseModel):
    """Who changes an order: the person behind a token (their name and role), or the engine."""

    name: str
    role: str
    technician_id: int | None = None


ENGINE = Actor(name="engine", role="engine")


class OrderOpen(BaseModel):
    """An order opened by hand, e.g. from a hotline call."""

    model_config = ConfigDict(extra="forbid")

    device_id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    type: OrderType = "repair"
    priority: Priority = "normal"
    skill: Skill
    reason: Text
    sla: DurationField = Duration(72 * 3600)

    @field_validator("sla")
    @classmethod
    def _sla_ahead(cls, sla: Duration) -> Duration:
        if sla.seconds <= 0:
            raise ValueError("must be longer than 0s: an order would be born overdue")
        return sla
    source: Literal["hotline", "dispatcher"] = "hotline"


class _Order(BaseModel):
    """What an order is: the columns a stored order and an answered one share."""

    id: int
    device_id: str
    customer_id: int | None
    type: OrderType
    fault_class: str
    priority: Priority
    status: OrderStatus
    reason: str
    skill: str
    source: str
    detection_ids: list[int]
    opened_at: dt.datetime
    sla_due_at: dt.datetime
    escalations: int
    technician_id: int | None
    appointment_start: dt.datetime | None
    appointment_end: dt.datetime | None
    completed_at: dt.datetime | None
    outcome: str | None
    parts: SkipValidation[list[Any]]
    cost: Decimal | None
    rating: int | None
    verification: str | None
    verify_by: dt.datetime | None
    reopened: int
    region: str | None = None  # the device's
    customer_name: str | None = None
    customer_phone: str | None = None


# JSON the engine and the service stored, read back as it was: walking it to validate it again was half the cost
# of reading an order.
Explanation = SkipValidation[dict[str, Any] | None]


class OrderRow(_Order):
    """An order as the repo reads it: every column, with the device's region and the customer where joined."""

    explanation: Explanation
    action_key: str | None
    escalated_at: dt.datetime | None
    paid: bool
    updated_at: dt.datetime


class OrderSummary(_Order):
    """An order in a list (the dispatch board's queue), with where it stands against its SLA: all of the order but
    why it opened, which its own page (OrderRead) carries. The board lists 500 orders, and their explanations were
    a third of its bytes and a fifth of its time."""

    sla_state: SlaState
    time_left_s: float | None = Field(description="seconds to the SLA due time; negative when overdue")


class OrderRead(OrderSummary):
    """One order as the API answers it: its summary and why it opened (the rule's explanation; null for an order
    opened by hand)."""

    explanation: Explanation


class HistoryEntry(BaseModel):
    at: dt.datetime
    actor: str
    actor_role: str
    change: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]


class OrderDetail(OrderRead):
    history: list[HistoryEntry]
    allowed_transitions: list[str]


class Transition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: OrderStatus
    note: Annotated[str, Field(max_length=2000)] | None = None


class Assignment(BaseModel):
    """A technician for the order, with a visit window in their calendar (the soonest free one when omitted)."""

    model_config = ConfigDict(extra="forbid")

    technician_id: int = Field(ge=1, le=2**63 - 1)
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    @model_validator(mode="after")
    def _window(self) -> Assignment:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end of the window, or neither")
        for moment in (self.start, self.end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("start and end need a time zone, e.g. 2026-12-01T09:00:00+08:00")
        return self


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Text
    parts: list[Annotated[str, Field(max_length=200)]] = Field(default=[], max_length=50)
    cost: Decimal = Field(default=Decimal(0), ge=0, le=Decimal("1000000"), decimal_places=2)
    paid: bool = False
    rating: int | None = Field(default=None, ge=1, le=5)


class Proposal(BaseModel):
    technician_id: int
    name: str
    region: str
    open_orders: int
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    reason: str


# ---------------------------------------------------------------- technicians


class TechnicianCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=200)]
    phone: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{5,32}$")] | None = None
    email: Annotated[str, Field(max_length=200)] | None = None
    skills: list[Skill] = Field(min_length=1, max_length=20)
    region: Annotated[str, Field(min_length=1, max_length=64)]
    timezone: str = "UTC"
    work_start: dt.time = dt.time(8, 0)
    work_end: dt.time = dt.time(17, 0)
    work_days: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    daily_capacity: int = Field(default=4, ge=1, le=24)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like Asia/Shanghai") from None
        return value

    @model_validator(mode="after")
    def _hours(self) -> TechnicianCreate:
        if self.work_end <= self.work_start:
            raise ValueError("work_end must be after work_start")
        return self


class TechnicianRead(TechnicianCreate):
    model_config = ConfigDict(extra="ignore")

    id: int
    active: bool
    open_orders: int = 0
    created_at: dt.datetime


# ---------------------------------------------------------------- call tasks


class CallTaskRead(BaseModel):
    id: int
    order_id: int | None
    customer_id: int | None
    customer_name: str | None = None
    device_id: str
    phone: str | None
    reason: str
    script: str
    status: Literal["open", "blocked", "done"]
    due_at: dt.datetime
    policy_reason: str
    outcome: CallOutcome | None
    attempts: int
    notes: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class CallOutcomeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: CallOutcome
    retry_at: dt.datetime | None = Field(default=None, description="for no_answer and call_back: when to call again")
    notes: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _retry(self) -> CallOutcomeRecord:
        if self.outcome == "call_back" and self.retry_at is None:
            raise ValueError("call_back needs retry_at: when the customer asked to be called")
        if self.retry_at is not None and self.retry_at.tzinfo is None:
            raise ValueError("retry_at needs a time zone")
        return self
