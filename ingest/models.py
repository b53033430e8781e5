"""What comes in and goes out of ingest: device messages parsed and validated per CONTRACT.md, the rows the
ingester stores, and what the API answers about what it rejected. Parsing is pure: no database, no broker.

A message that cannot be accepted raises `Rejected` with a stable reason code; the ingester
puts it in quarantine with that reason. Inside a `readings` array each reading stands alone:
the good ones are kept, a bad one is quarantined by itself.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, NamedTuple

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from careloop.mqtt import DEVICE_TOPIC
from devices.models import ApplianceModel

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READINGS_PER_MESSAGE = 2000
MAX_FUTURE = dt.timedelta(minutes=5)
MAX_AGE = dt.timedelta(days=30)
QUARANTINED_PAYLOAD_CHARS = 4096
MAX_SEQ = 2**63 - 1  # the contract's range, and PostgreSQL's bigint

# Reason codes, stable: dashboards and alerts count by them.
BAD_TOPIC = "bad_topic"
OVERSIZED = "oversized"
INVALID_JSON = "invalid_json"
INVALID_PAYLOAD = "invalid_payload"
NON_FINITE = "non_finite"
TS_IN_FUTURE = "ts_in_future"
TS_TOO_OLD = "ts_too_old"
UNKNOWN_DEVICE = "unknown_device"
DEVICE_MISMATCH = "device_mismatch"
UNKNOWN_METRIC = "unknown_metric"
OUT_OF_RANGE = "out_of_range"
BAD_STATUS = "bad_status"
UNPROCESSABLE = "unprocessable"  # handling the message raised, or the database refused its rows: a defect to look at


class Rejected(Exception):
    """A message (or one reading of it) that cannot be accepted, with the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Reading(NamedTuple):
    """One reading of a message: a named tuple, as it is built for every message (a frozen dataclass's
    constructor took several times as long)."""

    device_id: str
    seq: int
    ts: dt.datetime
    metrics: dict[str, float]


@dataclass(frozen=True)
class DeviceEvent:
    device_id: str
    seq: int
    ts: dt.datetime
    type: str
    code: str | None
    detail: str | None


@dataclass(frozen=True)
class StatusChange:
    device_id: str
    online: bool


@dataclass(frozen=True)
class RejectedPart:
    """One quarantined piece: the whole message, or one reading of a `readings` array."""

    reason: str
    detail: str
    payload: str


@dataclass
class ParsedMessage:
    topic: str
    device_id: str
    channel: str  # telemetry | events | status
    readings: list[Reading] = field(default_factory=list)
    event: DeviceEvent | None = None
    status: StatusChange | None = None
    rejected: list[RejectedPart] = field(default_factory=list)


# --- rows the ingester stores ------------------------------------------------------------------
# Named tuples: a batch builds and reads back thousands of them, and execute_values and COPY take them as they are.


class TelemetryRow(NamedTuple):
    """One metric value of one reading, in the staging table's column order (ingest.repo.stage_readings writes its
    rows from the readings): how the insert answers the values it skipped."""

    ts: dt.datetime
    device_id: str
    metric: str
    value: float
    seq: int


class StoredReading(NamedTuple):
    """A reading a batch newly stored, one per message rather than one per metric: what device state and the event
    counters are computed from (a fifth of the rows to walk)."""

    device_id: str
    seq: int
    ts: dt.datetime
    metrics: tuple[str, ...]


class EventRow(NamedTuple):
    """One device event: inserted, and answered in the same order where it was new."""

    ts: dt.datetime
    device_id: str
    seq: int
    type: str
    code: str | None
    detail: str | None


class DeviceProgress(NamedTuple):
    """What one batch newly stored of a device: newest ts, the seq run it continues, and how often seq restarted."""

    device_id: str
    last_seen: dt.datetime
    first_seq: int
    last_seq: int
    seq_count: int
    seq_resets: int


class CounterKey(NamedTuple):
    """A row of event_counters: a device's counter metric at its last event of a type."""

    device_id: str
    event_type: str
    metric: str


class DeviceEventType(NamedTuple):
    """A (device, event type) with an event stored."""

    device_id: str
    event_type: str


@dataclass(frozen=True)
class QuarantineRow:
    """A rejected message (or one reading of it) as the quarantine table keeps it."""

    received_at: dt.datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: str  # for people: truncated, bytes that are not UTF-8 and NUL written as \\xNN
    payload_bytes: int  # of the whole message
    dedup_key: str
    payload_raw: bytes  # as received, up to MAX_PAYLOAD_BYTES


# --- payload shapes ----------------------------------------------------------------------------

def _storable(text: str) -> str:
    # PostgreSQL text holds neither NUL nor lone surrogates (JSON can spell both: \u0000, \ud800).
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate, which is not UTF-8") from None
    return text


Timestamp = StrictStr | StrictInt | StrictFloat
Seq = Annotated[StrictInt, Field(ge=0, le=MAX_SEQ)]
DeviceText = Annotated[StrictStr, AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReadingPayload(_Strict):
    seq: Seq
    ts: Timestamp
    metrics: Annotated[dict[DeviceText, StrictFloat | StrictInt], Field(min_length=1)]
    device_id: StrictStr | None = None


class ReadingsPayload(_Strict):
    readings: Annotated[list[Any], Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE)]
    device_id: StrictStr | None = None


class EventPayload(_Strict):
    seq: Seq
    ts: Timestamp
    type: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    code: Annotated[DeviceText, Field(max_length=32)] | None = None
    detail: Annotated[DeviceText, Field(max_length=1000)] | None = None
    device_id: StrictStr | None = None


# --- parsing -------------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise Rejected(NON_FINITE, f"{name} is not a number a device may send")


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"


def parse_timestamp(value: str | int | float, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time with a zone, or epoch milliseconds, checked against the accepted window."""
    if isinstance(value, str):
        try:
            ts = dt.datetime.fromisoformat(value)
        except ValueError:
            raise Rejected(INVALID_PAYLOAD, f"ts: {value!r} is not ISO 8601") from None
        if ts.tzinfo is None:
            raise Rejected(INVALID_PAYLOAD, f"ts: {value!r} has no time zone")
    else:
        try:
            if not math.isfinite(value):
                raise Rejected(NON_FINITE, "ts is not finite")
            ts = dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected(INVALID_PAYLOAD, f"ts: {_shorten(value)} is out of range for epoch milliseconds") from None
    try:
        ts = ts.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31 at -14:00 or 0001-01-01 at +14:00: beyond the calendar in UTC
        late = ts.year > now.year
        raise Rejected(TS_IN_FUTURE if late else TS_TOO_OLD,
                       f"ts {ts.isoformat()} is {'far in the future' if late else 'far in the past'}") from None
    if ts > now + MAX_FUTURE:
        # The moment of checking is not in the detail: quarantine keeps a message redelivered later once, by a key
        # of its topic, payload and detail (its received_at says when it came).
        raise Rejected(TS_IN_FUTURE, f"ts {ts.isoformat()} is more than 5 minutes ahead of the ingester's clock")
    if ts < now - MAX_AGE:
        raise Rejected(TS_TOO_OLD, f"ts {ts.isoformat()} is more than 30 days old")
    return ts


def _check_device_field(claimed: str | None, device_id: str) -> None:
    if claimed is not None and claimed != device_id:
        raise Rejected(DEVICE_MISMATCH, f"payload names device {claimed!r} but the topic names {device_id!r}")


def _reading(raw: Any, device_id: str, now: dt.datetime) -> Reading:
    try:
        payload = ReadingPayload.model_validate(raw)
    except ValidationError as error:
        raise Rejected(INVALID_PAYLOAD, _describe(error)) from None
    _check_device_field(payload.device_id, device_id)
    metrics: dict[str, float] = {}
    for name, value in payload.metrics.items():
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise Rejected(NON_FINITE, f"metrics.{name} is {_shorten(value)}, too large for a double") from None
        if not math.isfinite(number):
            raise Rejected(NON_FINITE, f"metrics.{name} is {value}")
        metrics[name] = number
    return Reading(device_id=device_id, seq=payload.seq, ts=parse_timestamp(payload.ts, now), metrics=metrics)


def _shorten(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _decode(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected(OVERSIZED, f"{len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    try:
        # orjson first: several times faster than json, and stricter (UTF-8 only, no NaN or Infinity, nesting to
        # 1024, no lone surrogates): what it refuses goes the slow way below, which names the reason. What it
        # accepts json reads as the same document, but for integers beyond 64 bits, which orjson reads as floats:
        # no field takes such a number (seq is at most 2^63 - 1, readings are checked against the model's range).
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        pass
    try:
        # UTF-8 by contract: json.loads would also guess UTF-16 and UTF-32 from the first bytes.
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(INVALID_JSON, f"not UTF-8: {error}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise Rejected(INVALID_JSON, "nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, and integers beyond Python's digit limit
        raise Rejected(INVALID_JSON, str(error)[:200]) from None


def parse_message(topic: str, payload: bytes, now: dt.datetime) -> ParsedMessage:
    """Parse one MQTT message; raises `Rejected` when nothing of it can be accepted."""
    match = DEVICE_TOPIC.match(topic)
    if match is None:
        raise Rejected(BAD_TOPIC, f"topic {topic!r} is not careloop/v1/devices/{{device_id}}/<channel>")
    device_id, channel = match.groups()
    message = ParsedMessage(topic=topic, device_id=device_id, channel=channel)
    if channel == "status":
        text = payload.decode("utf-8", errors="replace").strip()
        if text not in ("online", "offline"):
            raise Rejected(BAD_STATUS, f"status must be 'online' or 'offline', not {text[:40]!r}")
        message.status = StatusChange(device_id=device_id, online=text == "online")
        return message
    document = _decode(payload)
    if not isinstance(document, dict):
        raise Rejected(INVALID_PAYLOAD, f"payload must be a JSON object, not {type(document).__name__}")
    if channel == "events":
        try:
            event = EventPayload.model_validate(document)
        except ValidationError as error:
            raise Rejected(INVALID_PAYLOAD, _describe(error)) from None
        _check_device_field(event.device_id, device_id)
        message.event = DeviceEvent(
            device_id=device_id,
            seq=event.seq,
            ts=parse_timestamp(event.ts, now),
            type=event.type,
            code=event.code,
            detail=event.detail,
        )
        return message
    if "readings" not in document:
        message.readings.append(_reading(document, device_id, now))
        return message
    try:
        batch = ReadingsPayload.model_validate(document)
    except ValidationError as error:
        raise Rejected(INVALID_PAYLOAD, _describe(error)) from None
    _check_device_field(batch.device_id, device_id)
    for index, raw in enumerate(batch.readings):
        try:
            message.readings.append(_reading(raw, device_id, now))
        except Rejected as rejected:
            message.rejected.append(
                RejectedPart(rejected.reason, f"readings[{index}]: {rejected.detail}", _to_text(raw))
            )
    return message


def check_against_model(reading: Reading, model: ApplianceModel) -> None:
    """A reading's metrics must be known to the device's model and within their valid range."""
    for name, value in reading.metrics.items():
        spec = model.metrics.get(name)
        if spec is None:
            raise Rejected(UNKNOWN_METRIC, f"{model.code} has no metric {name!r}")
        if not spec.accepts(value):
            raise Rejected(
                OUT_OF_RANGE, f"{name}={value} is outside {model.code}'s valid range [{spec.min}, {spec.max}]"
            )


def _to_text(raw: Any) -> str:
    try:
        return json.dumps(raw)[:QUARANTINED_PAYLOAD_CHARS]
    except (TypeError, ValueError, RecursionError):
        return repr(raw)[:QUARANTINED_PAYLOAD_CHARS]


def payload_text(payload: bytes) -> str:
    """The raw payload as text for quarantine, truncated: bytes that are not UTF-8 are written as \\xNN."""
    return storable_text(payload[:QUARANTINED_PAYLOAD_CHARS].decode("utf-8", errors="backslashreplace"))


def storable_text(text: str) -> str:
    """Any text as PostgreSQL can store it: NUL written as \\x00, lone surrogates as \\udNNN."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def reading_text(reading: Reading) -> str:
    return json.dumps({"seq": reading.seq, "ts": reading.ts.isoformat(), "metrics": reading.metrics})


# --- what the API answers ---------------------------------------------------------------------


class QuarantinedMessage(BaseModel):
    """A rejected message (or one reading of it), with why."""

    id: int
    received_at: dt.datetime
    topic: str
    device_id: str | None
    reason: str = Field(description="a stable reason code: bad_topic, invalid_json, out_of_range, ...")
    detail: str
    payload: str = Field(description="truncated; bytes that are not UTF-8 written as \\xNN")
    payload_bytes: int = Field(description="the size of the whole message")


class QuarantineCount(BaseModel):
    reason: str
    count: int


class IngestStats(BaseModel):
    """What the ingester rejected, per reason, and what never arrived."""

    quarantine_by_reason: list[QuarantineCount]
    missing_seq: int = Field(description="messages lost in transit: gaps in the devices' seq")
