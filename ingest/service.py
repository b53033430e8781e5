"""Storing a batch of device messages in one transaction. Takes a connection; no MQTT here."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from careloop.db import TRANSIENT_ERRORS, Connection, savepoint
from careloop.mqtt import device_named_in
from careloop.notify import notify_changed_devices
from careloop.pages import Page
from devices import service as devices_service
from devices.models import ApplianceModel
from ingest import repo
from ingest.models import (
    MAX_PAYLOAD_BYTES,
    UNKNOWN_DEVICE,
    UNPROCESSABLE,
    CounterKey,
    DeviceEventType,
    DeviceProgress,
    EventRow,
    IngestStats,
    ParsedMessage,
    QuarantinedMessage,
    QuarantineRow,
    Reading,
    Rejected,
    StoredReading,
    TelemetryRow,
    check_against_model,
    parse_message,
    payload_text,
    reading_text,
    storable_text,
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
    conn: Connection,
    messages: Sequence[InboundMessage],
    *,
    now: dt.datetime | None = None,
    device_models: devices_service.DeviceModelCache | None = None,
) -> BatchOutcome:
    """Validate and store a batch; the caller commits, and only then acknowledges the messages.

    One message's fault is that message's alone. A message that cannot be accepted is quarantined with its
    reason. When storing the batch fails for any reason but the connection's (a value the database refuses, a
    defect), the batch is undone to a savepoint and stored again in halves, down to the one message at fault,
    which is quarantined as `unprocessable` with the error named. Connection-level errors go to the caller,
    which retries the whole batch. A process that stores batch after batch passes its `device_models`, which
    remembers the devices' models between batches.
    """
    now = now or dt.datetime.now(dt.UTC)
    device_models = device_models or devices_service.DeviceModelCache()
    try:
        with savepoint(conn, "ingest_batch"):
            return _store_batch(conn, messages, now, device_models)
    except TRANSIENT_ERRORS:
        raise
    except MemoryError:
        # The process's trouble, not a message's: quarantining the batch's last message for it would put a good
        # message away. The writer ends and the process with it; the broker sends the batch again to its restart.
        raise
    except Exception as error:
        if len(messages) == 1:
            return _quarantine_unprocessable(conn, messages[0], error)
        log.warning("a batch of %d messages could not be stored (%s); storing it in halves", len(messages),
                    _error_text(error))
        middle = len(messages) // 2
        outcome = ingest_batch(conn, messages[:middle], now=now, device_models=device_models)
        outcome.add(ingest_batch(conn, messages[middle:], now=now, device_models=device_models))
        return outcome


def _store_batch(
    conn: Connection,
    messages: Sequence[InboundMessage],
    now: dt.datetime,
    device_models: devices_service.DeviceModelCache,
) -> BatchOutcome:
    outcome = BatchOutcome(messages=len(messages))
    quarantine: list[QuarantineRow] = []

    def reject(message: InboundMessage, device_id: str | None, reason: str, detail: str, payload: bytes) -> None:
        outcome.quarantined[reason] += 1
        quarantine.append(_quarantine_row(message, device_id, reason, detail, payload))

    parsed: list[tuple[InboundMessage, ParsedMessage]] = []
    for message in messages:
        try:
            parsed.append((message, parse_message(message.topic, message.payload, now)))
        except Rejected as rejected:
            reject(message, device_named_in(message.topic), rejected.reason, rejected.detail, message.payload)
        except Exception as error:  # a defect in parsing: this message's problem, not the batch's
            log.exception("parsing a message on %s raised", storable_text(message.topic))
            reject(message, device_named_in(message.topic), UNPROCESSABLE, _error_text(error), message.payload)

    models = device_models.models_of(conn, sorted({p.device_id for _m, p in parsed}))
    to_store: list[Reading] = []  # the accepted readings with their values, staged for the insert
    accepted: list[StoredReading] = []
    event_rows: list[EventRow] = []
    for message, item in parsed:
        for part in item.rejected:
            reject(message, item.device_id, part.reason, part.detail, part.payload.encode())
        model = models.get(item.device_id)
        if model is None:
            reject(message, item.device_id, UNKNOWN_DEVICE, f"no device {item.device_id} is registered",
                   message.payload)
            continue
        if item.status is not None:
            repo.set_device_status(
                conn, device_id=item.device_id, online=item.status.online, changed_at=message.received_at
            )
            outcome.status_changes += 1
            outcome.status_devices.add(item.device_id)
        if item.event is not None:
            event = item.event
            event_rows.append(EventRow(event.ts, event.device_id, event.seq, event.type, event.code, event.detail))
        for reading in item.readings:
            try:
                check_against_model(reading, model)
            except Rejected as rejected:
                reject(message, item.device_id, rejected.reason, rejected.detail, reading_text(reading).encode())
                continue
            accepted.append(StoredReading(reading.device_id, reading.seq, reading.ts, tuple(reading.metrics)))
            to_store.append(reading)

    stored_readings: list[StoredReading] = []
    readings_stored = 0
    values_staged = sum(len(reading.metrics) for reading in to_store)
    if to_store:
        repo.stage_readings(conn, readings=to_store)
        already_stored = repo.insert_staged_telemetry(conn)
        stored_readings = _newly_stored(accepted, already_stored)
        readings_stored = sum(len(reading.metrics) for reading in stored_readings)
    stored_events = repo.insert_events(conn, rows=event_rows)
    # Progress before the event counters: its row locks make batches of one device take turns for them.
    repo.upsert_device_progress(conn, rows=_device_progress(stored_readings, stored_events))
    repo.record_event_counters(
        conn,
        events=event_counter_triples((DeviceEventType(row.device_id, row.type) for row in stored_events), models),
        readings_staged=bool(stored_readings),
    )
    repo.insert_quarantine(conn, rows=quarantine)
    _log_quarantined(quarantine)

    outcome.readings_stored = readings_stored
    outcome.readings_duplicate = values_staged - readings_stored
    outcome.events_stored = len(stored_events)
    outcome.events_duplicate = len(event_rows) - len(stored_events)
    outcome.devices = {row.device_id for row in stored_readings} | {row.device_id for row in stored_events}
    # Delivered to listeners (the rule engine) only if this transaction commits.
    notify_changed_devices(conn, device_ids=sorted(outcome.devices | outcome.status_devices))
    return outcome


def _log_quarantined(rows: list[QuarantineRow]) -> None:
    """One line per reason and batch, naming its first message: a flood of bad messages must not become a flood
    of log lines (a full log pipe stops the process that writes it). Every message is in the quarantine table."""
    first: dict[str, QuarantineRow] = {}
    counts: Counter[str] = Counter()
    for row in rows:
        first.setdefault(row.reason, row)
        counts[row.reason] += 1
        log.debug("quarantined %s from %s: %s", row.reason, row.device_id or row.topic, row.detail)
    for reason, row in first.items():
        others = f" and {counts[reason] - 1} more" if counts[reason] > 1 else ""
        log.info("quarantined %s from %s: %s%s", reason, row.device_id or row.topic, row.detail, others)


def record_service_event(conn: Connection, *, device_id: str, event_type: str, at: dt.datetime, number: int) -> bool:
    """An event CareLoop itself records for a device, as if the device had sent it: a completed maintenance visit
    is a `maintenance_done`, so usage rules count from it. `number` (an order's id, say) makes it unique; its seq
    is the negative of it, apart from the device's own seqs (0 and up), so gap accounting never sees it.
    Answers whether it was new."""
    event = EventRow(at, device_id, -abs(number), event_type, None, "recorded by CareLoop")
    stored = repo.insert_events(conn, rows=[event])
    if stored:
        models = devices_service.models_of_devices(conn, [device_id])
        if device_id in models:
            repo.record_event_counters(
                conn, events=event_counter_triples([DeviceEventType(device_id, event_type)], models),
                readings_staged=False,
            )
        notify_changed_devices(conn, device_ids=[device_id])
    return bool(stored)


def quarantined_since(conn: Connection, *, since: dt.datetime) -> int:
    """How many messages were quarantined since a time, whatever the reason."""
    return sum(row.count for row in repo.quarantine_by_reason(conn, since=since))


def derive_state_from_history(conn: Connection) -> None:
    """What ingesting would have kept per device, for history stored in bulk instead (an import of history, a
    benchmark's fixture): last seen, the newest reading of each metric, and the counters at each device's last
    event of each type. Seq accounting is left alone: it counts messages lost on the way, and history loaded in
    bulk never travelled. Status (online or offline) is what devices say on their status topic: ingest that."""
    repo.derive_last_seen(conn)
    repo.derive_device_latest(conn)
    events = repo.event_types_by_device(conn)
    models = devices_service.models_of_devices(conn, sorted({event.device_id for event in events}))
    repo.record_event_counters(
        conn,
        events=event_counter_triples([event for event in events if event.device_id in models], models),
        readings_staged=False,
    )


def list_quarantine(conn: Connection, *, reason: str | None, limit: int, offset: int) -> Page[QuarantinedMessage]:
    """Rejected messages, newest first, optionally of one reason."""
    return repo.list_quarantine(conn, reason=reason, limit=limit, offset=offset)


def ingest_stats(conn: Connection, *, since: dt.datetime) -> IngestStats:
    """Quarantined messages per reason since a time, and messages lost in transit (seq gaps) over the fleet."""
    return IngestStats(
        quarantine_by_reason=repo.quarantine_by_reason(conn, since=since), missing_seq=repo.missing_seq_total(conn)
    )


# Quarantine is bounded: kept 30 days, and never more than the newest million messages.
QUARANTINE_RETENTION = dt.timedelta(days=30)
QUARANTINE_MAX_ROWS = 1_000_000


def prune_quarantine(
    conn: Connection, *, retention: dt.timedelta, max_rows: int, now: dt.datetime | None = None
) -> int:
    """Drop quarantined messages older than `retention` or beyond the newest `max_rows`; answers how many."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - retention
    removed = 0
    while True:
        chunk = repo.prune_quarantine(conn, cutoff=cutoff, max_rows=max_rows)
        removed += chunk
        if chunk == 0:
            return removed


def _quarantine_unprocessable(conn: Connection, message: InboundMessage, error: Exception) -> BatchOutcome:
    """Keep a message that could not be stored, with the error, so the rest of its batch can be."""
    row = _quarantine_row(message, device_named_in(message.topic), UNPROCESSABLE, _error_text(error), message.payload)
    log.error("quarantined unprocessable message from %s: %s", row.device_id or row.topic, row.detail)
    repo.insert_quarantine(conn, rows=[row])
    return BatchOutcome(messages=1, quarantined=Counter({UNPROCESSABLE: 1}))


def _error_text(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:1000]


def _quarantine_row(
    message: InboundMessage, device_id: str | None, reason: str, detail: str, payload: bytes
) -> QuarantineRow:
    """What quarantine keeps of a rejected message, or of one reading of it (`payload`): every text storable."""
    topic, detail = storable_text(message.topic), storable_text(detail)
    return QuarantineRow(
        received_at=message.received_at,
        topic=topic,
        device_id=storable_text(device_id) if device_id is not None else None,
        reason=reason,
        detail=detail,
        payload=payload_text(payload),
        payload_bytes=len(message.payload),
        # a redelivered bad message is kept once
        dedup_key=hashlib.sha256(b"\0".join([topic.encode(), payload, detail.encode()])).hexdigest(),
        payload_raw=payload[:MAX_PAYLOAD_BYTES],
    )


# Within one batch, seqs further apart than this are two counts (see seq_is_reset in migration 011).
SEQ_RESET_SLACK = 10_000


def _newly_stored(accepted: Sequence[StoredReading], already_stored: Sequence[TelemetryRow]) -> list[StoredReading]:
    """The readings of a batch that stored at least one metric value, with the metrics they stored.

    The database answers the staged values it did not store now, usually none: the ones stored before, each copy
    of it. A value twice in one batch (a message redelivered into the same batch) is stored once: its first copy
    counts as new (unless stored before), the second as a duplicate."""
    # Checked per reading, a fifth of the keys of a check per value: no reading twice, no value twice.
    if not already_stored and len({(reading.device_id, reading.seq, reading.ts) for reading in accepted}) == len(
        accepted
    ):
        return list(accepted)
    skipped = Counter((row.device_id, row.seq, row.metric, row.ts) for row in already_stored)
    stored: list[StoredReading] = []
    seen: set[tuple[str, int, str, dt.datetime]] = set()
    for reading in accepted:
        metrics = []
        for metric in reading.metrics:
            key = (reading.device_id, reading.seq, metric, reading.ts)
            if key in seen:
                continue  # the second copy in this batch: the database skipped it
            seen.add(key)
            if skipped[key]:
                skipped[key] -= 1
                continue
            metrics.append(metric)
        if metrics:
            stored.append(reading._replace(metrics=tuple(metrics)))
    return stored


# Within one batch, seqs further apart than this are two counts (see seq_is_reset in migration 011).
SEQ_RESET_SLACK = 10_000


def _device_progress(
    stored_readings: Sequence[StoredReading], stored_events: Sequence[EventRow]
) -> list[DeviceProgress]:
    """Per device: newest ts, seq range and count of newly stored seqs, and how many times the count restarted.

    Where the batch's seqs of a device fall into runs far apart (a device reset, a forged seq), the run holding
    the newest message is the device's count now; each other run counts as a reset, not as a gap."""
    seen_at: dict[str, dict[int, dt.datetime]] = {}
    for row in (*stored_readings, *stored_events):
        seqs = seen_at.get(row.device_id)
        if seqs is None:
            seen_at[row.device_id] = {row.seq: row.ts}
        elif row.seq not in seqs or row.ts > seqs[row.seq]:
            seqs[row.seq] = row.ts
    progress = []
    for device_id, seqs in sorted(seen_at.items()):
        if len(seqs) == 1:  # one message of the device in the batch: a fleet's usual batch
            ((seq, ts),) = seqs.items()
            progress.append(DeviceProgress(device_id, ts, seq, seq, 1, 0))
            continue
        runs: list[list[int]] = []
        for seq in sorted(seqs):
            if runs and seq - runs[-1][-1] <= SEQ_RESET_SLACK:
                runs[-1].append(seq)
            else:
                runs.append([seq])
        newest = max(seqs, key=lambda seq: (seqs[seq], seq))
        current = next(run for run in runs if run[0] <= newest <= run[-1])
        last_seen = max(seqs.values())
        progress.append(DeviceProgress(
            device_id=device_id, last_seen=last_seen, first_seq=current[0], last_seq=current[-1],
            seq_count=len(current), seq_resets=len(runs) - 1,
        ))
    return progress


def event_counter_triples(
    events: Iterable[DeviceEventType], models: Mapping[str, ApplianceModel]
) -> list[CounterKey]:
    """For (device, event type) pairs: a key for each counter metric of the device's model, the rows of
    event_counters that `usage` rules measure from."""
    keys = {
        CounterKey(event.device_id, event.event_type, metric)
        for event in events
        for metric, spec in models[event.device_id].metrics.items()
        if spec.counter
    }
    return sorted(keys)
