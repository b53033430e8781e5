"""What comes in and goes out of the customers domain."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
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


class CustomerRead(BaseModel):
    id: int
    name: str
    phone: str | None
    email: str | None
    birthday: dt.date | None
    timezone: str
    region: str | None
    preferred_channel: Channel | None
    created_at: dt.datetime
    consents: list[Consent]


class Customer360(BaseModel):
    customer: CustomerRead
    devices: list[DeviceRead]
    consents: list[Consent]


@dataclass(frozen=True)
class ContactFacts:
    """What the contact policy weighs about a customer: consents, time zone, and the contacts of one purpose
    allowed lately."""

    timezone: str
    consents: dict[tuple[str, str], bool]  # (purpose, channel) -> granted
    contacts_last_day: int
    contacts_last_week: int
