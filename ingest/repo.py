"""Thin functions over ingest/queries.sql."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

from careloop.db import Row, execute, fetch_all, fetch_value, load_queries
from ingest.payloads import QuarantineRow

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def stage_readings(conn: Any, *, rows: Iterable[tuple[dt.datetime, str, str, float, int]]) -> None:
    """COPY readings (ts, device_id, metric, value, seq) into this connection's staging table."""
    buffer = io.StringIO()
    for ts, device_id, metric, value, seq in rows:
        # Device ids and metric names are validated before this point: no tabs or newlines.
        buffer.write(f"{ts.isoformat()}\t{device_id}\t{metric}\t{value!r}\t{seq}\n")
    buffer.seek(0)
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["create_staging"])
        cursor.copy_expert(QUERIES["copy_staging"], buffer)


def insert_staged_telemetry(conn: Any) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["insert_telemetry_from_staging"])
        return cursor.fetchall()


def insert_events(conn: Any, *, rows: Sequence[tuple]) -> list[tuple]:
    if not rows:
        return []
    with conn.cursor() as cursor:
        return execute_values(cursor, QUERIES["insert_events"], rows, page_size=len(rows), fetch=True)


def upsert_device_progress(conn: Any, *, rows: Sequence[tuple]) -> None:
    """rows: (device_id, last_seen, first_seq, last_seq, seq_count, seq_resets)."""
    if rows:
        with conn.cursor() as cursor:
            execute_values(cursor, QUERIES["upsert_device_progress"], rows, page_size=len(rows))


def upsert_device_latest(conn: Any, *, rows: Sequence[tuple]) -> None:
    """rows: (device_id, metric, value, ts, seq), at most one per (device, metric), in that order."""
    if rows:
        with conn.cursor() as cursor:
            execute_values(cursor, QUERIES["upsert_device_latest"], rows, page_size=len(rows))


def record_event_counters(
    conn: Any,
    *,
    events: Sequence[tuple[str, str, str]],
    earliest_readings: Sequence[tuple[str, str, dt.datetime]],
) -> None:
    """Refresh event_counters for new events, given as (device_id, event_type, counter metric), and for
    newly stored readings, given as (device_id, metric, earliest ts stored in this batch)."""
    if not events and not earliest_readings:
        return
    event_devices, event_types, event_metrics = _columns(events, 3)
    reading_devices, reading_metrics, reading_ts = _columns(earliest_readings, 3)
    execute(
        conn,
        QUERIES["record_event_counters"],
        {
            "event_devices": event_devices,
            "event_types": event_types,
            "event_metrics": event_metrics,
            "reading_devices": reading_devices,
            "reading_metrics": reading_metrics,
            "reading_ts": reading_ts,
        },
    )


def _columns(rows: Sequence[tuple], width: int) -> list[list]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def set_device_status(conn: Any, *, device_id: str, online: bool, changed_at: dt.datetime) -> None:
    execute(
        conn,
        QUERIES["set_device_status"],
        {"device_id": device_id, "online": online, "changed_at": changed_at},
    )


def insert_quarantine(conn: Any, *, rows: Sequence[QuarantineRow]) -> None:
    if rows:
        values = [
            (r.received_at, r.topic, r.device_id, r.reason, r.detail, r.payload, r.payload_bytes, r.dedup_key,
             psycopg2.Binary(r.payload_raw))
            for r in rows
        ]
        with conn.cursor() as cursor:
            execute_values(cursor, QUERIES["insert_quarantine"], values, page_size=len(values))


def prune_quarantine(conn: Any, *, cutoff: dt.datetime, max_rows: int, chunk: int = 10_000) -> int:
    """Delete quarantined messages received before `cutoff` or beyond the newest `max_rows`; answers how many."""
    return execute(conn, QUERIES["prune_quarantine"], {"cutoff": cutoff, "max_rows": max_rows, "chunk": chunk})


def quarantine_by_reason(conn: Any, *, since: dt.datetime) -> list[Row]:
    return fetch_all(conn, QUERIES["quarantine_by_reason"], {"since": since})


def list_quarantine(conn: Any, *, reason: str | None, limit: int, offset: int) -> list[Row]:
    return fetch_all(conn, QUERIES["list_quarantine"], {"reason": reason, "limit": limit, "offset": offset})


def missing_seq_total(conn: Any) -> int:
    return int(fetch_value(conn, QUERIES["missing_seq_total"]))


def seq_resets_total(conn: Any) -> int:
    return int(fetch_value(conn, QUERIES["seq_resets_total"]))


def derive_last_seen(conn: Any) -> None:
    """Each device's last seen from every stored reading and event of its own (history stored in bulk)."""
    execute(conn, QUERIES["derive_last_seen"])


def derive_device_latest(conn: Any) -> None:
    """Each device's newest stored reading of each metric (history stored in bulk)."""
    execute(conn, QUERIES["derive_device_latest"])


def event_types_by_device(conn: Any) -> list[tuple[str, str]]:
    """(device_id, event type) of every stored event, once each."""
    return [(row["device_id"], row["type"]) for row in fetch_all(conn, QUERIES["event_types_by_device"])]
