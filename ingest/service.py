"""Storing a batch of device messages in one transaction. Takes a connection; no MQTT here."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devices import service as devices_service
from devices.models import ApplianceModel
from ingest import repo
from ingest.payloads import (
    UNKNOWN_DEVICE,
    ParsedMessage,
    Rejected,
    check_against_model,
    parse_message,
    payload_text,
    reading_text,
)

log = logging.getLogger("careloop.ingest")


@dataclass(frozen=True)
class InboundMessage:
    """A message as the broker delivered it."""

    topic: str
    payload: bytes
    received_at: dt.datetime
    mid: int = 0
    qos: int = 1


@dataclass
class BatchOutcome:
    messages: int = 0
    readings_stored: int = 0  # metric values
    readings_duplicate: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    status_changes: int = 0
    quarantined: Counter = field(default_factory=Counter)  # reason -> count
    devices: set[str] = field(default_factory=set)  # devices with newly stored data
    status_devices: set[str] = field(default_factory=set)  # devices whose online status was reported

    def add(self, other: BatchOutcome) -> None:
        self.messages += other.messages
        self.readings_stored += other.readings_stored
        self.readings_duplicate += other.readings_duplicate
        self.events_stored += other.events_stored
        self.events_duplicate += other.events_duplicate
        self.status_changes += other.status_changes
        self.quarantined.update(other.quarantined)
        self.devices |= other.devices
        self.status_devices |= other.status_devices


def ingest_batch(
    conn: Any, messages: Sequence[InboundMessage], *, now: dt.datetime | None = None
) -> BatchOutcome:
    """Validate and store a batch; the caller commits, and only then acknowledges the messages."""
    now = now or dt.datetime.now(dt.UTC)
    outcome = BatchOutcome(messages=len(messages))
    quarantine: list[tuple] = []

    def reject(
        message: InboundMessage, device_id: str | None, reason: str, detail: str, payload: str
    ) -> None:
        outcome.quarantined[reason] += 1
        parts = [message.topic.encode(), message.payload, detail.encode()]
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()
        size = len(message.payload)
        quarantine.append((message.received_at, message.topic, device_id, reason, detail, payload, size, key))
        log.info("quarantined %s from %s: %s", reason, device_id or message.topic, detail)

    parsed: list[tuple[InboundMessage, ParsedMessage]] = []
    for message in messages:
        try:
            parsed.append((message, parse_message(message.topic, message.payload, now)))
        except Rejected as rejected:
            reject(
                message,
                _device_of(message.topic),
                rejected.reason,
                rejected.detail,
                payload_text(message.payload),
            )

    models = devices_service.models_of_devices(conn, sorted({p.device_id for _m, p in parsed}))
    telemetry_rows: list[tuple] = []
    event_rows: list[tuple] = []
    for message, item in parsed:
        for part in item.rejected:
            reject(message, item.device_id, part.reason, part.detail, part.payload)
        model = models.get(item.device_id)
        if model is None:
            reject(
                message,
                item.device_id,
                UNKNOWN_DEVICE,
                f"no device {item.device_id} is registered",
                payload_text(message.payload),
            )
            continue
        if item.status is not None:
            repo.set_device_status(
                conn, device_id=item.device_id, online=item.status.online, changed_at=message.received_at
            )
            outcome.status_changes += 1
            outcome.status_devices.add(item.device_id)
        if item.event is not None:
            event = item.event
            event_rows.append((event.ts, event.device_id, event.seq, event.type, event.code, event.detail))
        for reading in item.readings:
            try:
                check_against_model(reading, model)
            except Rejected as rejected:
                reject(message, item.device_id, rejected.reason, rejected.detail, reading_text(reading))
                continue
            telemetry_rows.extend(
                (reading.ts, reading.device_id, metric, value, reading.seq)
                for metric, value in reading.metrics.items()
            )

    stored_telemetry: list[tuple] = []
    if telemetry_rows:
        repo.stage_readings(conn, rows=telemetry_rows)
        stored_telemetry = repo.insert_staged_telemetry(conn)
    stored_events = repo.insert_events(conn, rows=event_rows)
    # Progress first: its row locks make batches of one device take turns for the rest.
    repo.upsert_device_progress(conn, rows=_device_progress(stored_telemetry, stored_events))
    repo.upsert_device_latest(conn, rows=_newest_readings(stored_telemetry))
    repo.record_event_counters(
        conn,
        events=event_counter_triples(((row[0], row[2]) for row in stored_events), models),
        earliest_readings=_earliest_readings(stored_telemetry),
    )
    repo.insert_quarantine(conn, rows=quarantine)

    outcome.readings_stored = len(stored_telemetry)
    outcome.readings_duplicate = len(telemetry_rows) - len(stored_telemetry)
    outcome.events_stored = len(stored_events)
    outcome.events_duplicate = len(event_rows) - len(stored_events)
    outcome.devices = {row[0] for row in stored_telemetry} | {row[0] for row in stored_events}
    # Delivered to listeners (the rule engine) only if this transaction commits.
    repo.notify_changed_devices(conn, device_ids=sorted(outcome.devices | outcome.status_devices))
    return outcome


def _device_of(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3][:64] if len(parts) > 3 and parts[:3] == ["careloop", "v1", "devices"] else None


def _device_progress(stored_telemetry: list[tuple], stored_events: list[tuple]) -> list[tuple]:
    """Per device: newest ts, seq range and count of newly stored seqs."""
    seqs: dict[str, set[int]] = {}
    last_seen: dict[str, dt.datetime] = {}
    for device_id, seq, _metric, _value, ts in stored_telemetry:
        seqs.setdefault(device_id, set()).add(seq)
        last_seen[device_id] = max(ts, last_seen.get(device_id, ts))
    for device_id, seq, _type, _code, ts in stored_events:
        seqs.setdefault(device_id, set()).add(seq)
        last_seen[device_id] = max(ts, last_seen.get(device_id, ts))
    return [
        (device_id, last_seen[device_id], min(device_seqs), max(device_seqs), len(device_seqs))
        for device_id, device_seqs in sorted(seqs.items())
    ]


def _newest_readings(stored_telemetry: list[tuple]) -> list[tuple]:
    """Per (device, metric): the newly stored reading newest by (ts, seq), as (device_id, metric, value, ts, seq)."""
    newest: dict[tuple[str, str], tuple] = {}
    for device_id, seq, metric, value, ts in stored_telemetry:
        current = newest.get((device_id, metric))
        if current is None or (ts, seq) > (current[3], current[4]):
            newest[(device_id, metric)] = (device_id, metric, value, ts, seq)
    return [newest[key] for key in sorted(newest)]


def _earliest_readings(stored_telemetry: list[tuple]) -> list[tuple[str, str, dt.datetime]]:
    """Per (device, metric): the earliest ts newly stored, as (device_id, metric, ts)."""
    earliest: dict[tuple[str, str], dt.datetime] = {}
    for device_id, _seq, metric, _value, ts in stored_telemetry:
        key = (device_id, metric)
        earliest[key] = min(ts, earliest.get(key, ts))
    return [(device_id, metric, ts) for (device_id, metric), ts in sorted(earliest.items())]


def event_counter_triples(
    events: Iterable[tuple[str, str]], models: Mapping[str, ApplianceModel]
) -> list[tuple[str, str, str]]:
    """For events given as (device_id, event type): (device_id, event type, counter metric) for each counter of
    the device's model, the rows of event_counters that `usage` rules measure from."""
    triples = {
        (device_id, event_type, metric)
        for device_id, event_type in events
        for metric, spec in models[device_id].metrics.items()
        if spec.counter
    }
    return sorted(triples)
