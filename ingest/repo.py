"""Thin functions over ingest/queries.sql; rows come and go as the named tuples and models of ingest.models, each
in its query's column order."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2.extras import execute_values

from careloop.db import Connection, execute, fetch_all, fetch_value, load_queries, savepoint
from careloop.pages import Page, paginate
from devices.catalog import counter_metrics
from ingest.models import (
    CounterKey,
    DeviceEventType,
    DeviceProgress,
    EventRow,
    QuarantineCount,
    QuarantinedMessage,
    QuarantineRow,
    Reading,
    TelemetryRow,
)

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def stage_readings(conn: Connection, *, readings: Iterable[Reading]) -> None:
    """COPY readings into this connection's staging table, a row per metric value (ingest.models.TelemetryRow's
    columns)."""
    buffer = io.StringIO()
    for reading in readings:
        # Device ids and metric names are validated before this point: no tabs or newlines.
        ts_and_device = f"{reading.ts.isoformat()}\t{reading.device_id}\t"
        seq = reading.seq
        buffer.writelines(f"{ts_and_device}{metric}\t{value!r}\t{seq}\n" for metric, value in reading.metrics.items())
    buffer.seek(0)
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["create_staging"])
        cursor.copy_expert(QUERIES["copy_staging"], buffer)


def insert_staged_telemetry(conn: Connection) -> list[TelemetryRow]:
    """Store the staged readings, and the newest of each device's metrics in device_latest; answers those that
    were already stored (a redelivered one is skipped)."""
    try:
        with savepoint(conn, "new_telemetry"):
            execute(conn, QUERIES["insert_new_telemetry_from_staging"])
        skipped: list[TelemetryRow] = []
    except psycopg2.errors.UniqueViolation:  # some were stored before (a redelivery): undone, stored again skipping
        with conn.cursor() as cursor:
            cursor.execute(QUERIES["insert_telemetry_from_staging"])
            skipped = list(map(TelemetryRow._make, cursor.fetchall()))
    execute(conn, QUERIES["refresh_latest_from_staging"])
    return skipped


def insert_events(conn: Connection, *, rows: Sequence[EventRow]) -> list[EventRow]:
    """Store device events; answers those that were new."""
    if not rows:
        return []
    with conn.cursor() as cursor:
        stored = execute_values(cursor, QUERIES["insert_events"], rows, page_size=len(rows), fetch=True)
    return list(map(EventRow._make, stored))


def upsert_device_progress(conn: Connection, *, rows: Sequence[DeviceProgress]) -> None:
    """Advance device_state by a batch's progress, one row per device. Staged through COPY: with a thousand
    devices in a batch, formatting them as one VALUES list cost the writer half of what the database's upsert did."""
    if not rows:
        return
    # Device ids are validated before this point: letters, digits, '_' and '-'.
    buffer = io.StringIO("".join(
        f"{row.device_id}\t{row.last_seen.isoformat()}\t{row.first_seq}\t{row.last_seq}\t{row.seq_count}\t"
        f"{row.seq_resets}\n"
        for row in rows
    ))
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["create_progress_staging"])
        cursor.copy_expert(QUERIES["copy_progress_staging"], buffer)
        cursor.execute(QUERIES["upsert_device_progress"])


def record_event_counters(conn: Connection, *, events: Sequence[CounterKey], readings_staged: bool) -> None:
    """Refresh event_counters for the counters of new events and, when `readings_staged`, where the readings
    staged and stored by this batch land before the reading a counter was taken from."""
    if not events and not readings_staged:
        return
    with conn.cursor() as cursor:
        if not readings_staged:
            cursor.execute(QUERIES["create_staging"])  # the query names it; nothing staged is read
        cursor.execute(
            QUERIES["record_event_counters"],
            {
                "event_devices": [key.device_id for key in events],
                "event_types": [key.event_type for key in events],
                "event_metrics": [key.metric for key in events],
                "readings_staged": readings_staged,
                "counter_metrics": list(counter_metrics()),
            },
        )


def set_device_status(conn: Connection, *, device_id: str, online: bool, changed_at: dt.datetime) -> None:
    execute(
        conn,
        QUERIES["set_device_status"],
        {"device_id": device_id, "online": online, "changed_at": changed_at},
    )


def insert_quarantine(conn: Connection, *, rows: Sequence[QuarantineRow]) -> None:
    if rows:
        values = [
            (r.received_at, r.topic, r.device_id, r.reason, r.detail, r.payload, r.payload_bytes, r.dedup_key,
             psycopg2.Binary(r.payload_raw))
            for r in rows
        ]
        with conn.cursor() as cursor:
            execute_values(cursor, QUERIES["insert_quarantine"], values, page_size=len(values))


def prune_quarantine(conn: Connection, *, cutoff: dt.datetime, max_rows: int, chunk: int = 10_000) -> int:
    """Delete quarantined messages received before `cutoff` or beyond the newest `max_rows`; answers how many."""
    return execute(conn, QUERIES["prune_quarantine"], {"cutoff": cutoff, "max_rows": max_rows, "chunk": chunk})


def quarantine_by_reason(conn: Connection, *, since: dt.datetime) -> list[QuarantineCount]:
    return [QuarantineCount.model_validate(row)
            for row in fetch_all(conn, QUERIES["quarantine_by_reason"], {"since": since})]


def list_quarantine(conn: Connection, *, reason: str | None, limit: int, offset: int) -> Page[QuarantinedMessage]:
    rows = fetch_all(conn, QUERIES["list_quarantine"], {"reason": reason, "limit": limit, "offset": offset})
    return paginate(rows, QuarantinedMessage.model_validate)


def missing_seq_total(conn: Connection) -> int:
    return int(fetch_value(conn, QUERIES["missing_seq_total"]))


def seq_resets_total(conn: Connection) -> int:
    return int(fetch_value(conn, QUERIES["seq_resets_total"]))


def derive_last_seen(conn: Connection) -> None:
    """Each device's last seen from every stored reading and event of its own (history stored in bulk)."""
    execute(conn, QUERIES["derive_last_seen"])


def derive_device_latest(conn: Connection) -> None:
    """Each device's newest stored reading of each metric (history stored in bulk)."""
    execute(conn, QUERIES["create_staging"])
    execute(conn, QUERIES["stage_newest_of_history"])
    execute(conn, QUERIES["refresh_latest_from_staging"])
    execute(conn, QUERIES["empty_staging"])


def event_types_by_device(conn: Connection) -> list[DeviceEventType]:
    """(device, event type) of every stored event, once each."""
    return [DeviceEventType(row["device_id"], row["type"]) for row in fetch_all(conn, QUERIES["event_types_by_device"])]
