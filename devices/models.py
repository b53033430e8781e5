"""What comes in and goes out of the devices domain: the models catalog and devices."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from careloop.db import BIGINT_MAX, BIGINT_MIN
from careloop.mqtt import DEVICE_ID

Severity = Literal["info", "warning", "critical"]
DEVICE_ID_PATTERN = rf"^{DEVICE_ID}$"  # as the MQTT contract has it in topics


class MetricSpec(BaseModel):
    """One metric an appliance model reports, with its physical range."""

    unit: str
    min: float
    max: float
    counter: bool = False  # grows monotonically (run hours, cycles): usage rules read its growth
    description: str = ""

    def accepts(self, value: float) -> bool:
        return self.min <= value <= self.max


class FaultCode(BaseModel):
    meaning: str
    severity: Severity
    skill: str  # the technician skill that fixes it


class MaintenanceSpec(BaseModel):
    interval_days: int
    interval_run_hours: float
    skill: str


class ApplianceModel(BaseModel):
    """A model in the catalog: kind, metrics, faults, expected life, maintenance interval."""

    code: str
    kind: str
    name: str
    expected_life_years: float
    maintenance: MaintenanceSpec
    metrics: dict[str, MetricSpec]
    fault_codes: dict[str, FaultCode]


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=DEVICE_ID_PATTERN, description="the appliance serial")
    model: str = Field(description="a model code from GET /models")
    owner: int | None = Field(default=None, ge=BIGINT_MIN, le=BIGINT_MAX, description="the owning customer's id")
    purchased_on: dt.date | None = None
    region: str | None = Field(default=None, max_length=64)

    @field_validator("purchased_on")
    @classmethod
    def _plausible_purchase(cls, value: dt.date | None) -> dt.date | None:
        # Age and elapsed-since-purchase rules count from it: year 1 or 9999 is a typing mistake that would make
        # them fire on the wrong devices. A day of slack: the buyer's today may be ahead of the server's.
        if value is not None and not (dt.date(1900, 1, 1) <= value <= dt.date.today() + dt.timedelta(days=1)):
            raise ValueError("must be between 1900-01-01 and today")
        return value


class DeviceRead(BaseModel):
    id: str
    model: str
    kind: str
    owner: int | None
    purchased_on: dt.date | None
    region: str | None
    created_at: dt.datetime
    online: bool | None = None
    last_seen: dt.datetime | None = None
    last_seq: int | None = None
    missing_seq: int = 0  # messages the device sent that never arrived
    seq_resets: int = 0  # times its seq started a new count (device reset, or a forged seq)
    latest: dict[str, float] = {}


class TelemetryPoint(BaseModel):
    ts: dt.datetime
    metric: str
    value: float
    bucket: str | None = None


class TelemetrySeries(BaseModel):
    """A device's readings in a range, newest first (averages per bucket when asked)."""

    items: list[TelemetryPoint]


class DeviceEvent(BaseModel):
    """Something a device reported happening: a fault and its code, a fault cleared, maintenance done, ..."""

    ts: dt.datetime
    seq: int
    type: str
    code: str | None = None
    detail: str | None = None


class FleetCounts(BaseModel):
    """Counts over the whole fleet's devices and their state."""

    devices: int
    online: int
    offline: int
    never_seen: int
    missing_seq: int
    seq_resets: int


class KindCount(BaseModel):
    """Devices and online devices of one kind."""

    kind: str
    devices: int
    online: int
