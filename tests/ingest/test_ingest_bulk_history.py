"""History stored in bulk (an import, a benchmark's fixture) leaves ingest's per-device state as ingesting it would."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg2 import sql

from careloop.db import Database, execute, fetch_all
from careloop.mqtt import events_topic, telemetry_topic
from ingest.service import derive_state_from_history
from tests.factories import make_device
from tests.helpers import event, inbound, reading, store

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _state(database: Database) -> dict[str, list[dict]]:
    with database.connection() as conn:
        return {
            "last_seen": fetch_all(conn, "SELECT device_id, last_seen FROM device_state ORDER BY device_id"),
            "latest": fetch_all(
                conn, "SELECT device_id, metric, value, ts, seq FROM device_latest ORDER BY device_id, metric"
            ),
            "counters": fetch_all(
                conn,
                "SELECT device_id, event_type, metric, event_ts, value, reading_ts FROM event_counters "
                "ORDER BY device_id, event_type, metric",
            ),
        }


def test_derived_state_of_history_stored_in_bulk_equals_what_ingesting_it_kept(database: Database) -> None:
    with database.transaction() as conn:
        devices = [make_device(conn).id, make_device(conn).id]
    messages = []
    for number, device_id in enumerate(devices):
        for seq in range(1, 25):
            at = NOW - dt.timedelta(hours=30 - seq)
            metrics = {"run_hours": 100 + seq + number, "fan_current_a": 0.5 + seq / 100, "grease_load_pct": seq}
            messages.append(inbound(telemetry_topic(device_id), reading(seq, at=at, **metrics), at))
        cleaned = NOW - dt.timedelta(hours=20, minutes=number)
        messages.append(inbound(events_topic(device_id), event(100, at=cleaned, kind="maintenance_done"), cleaned))
    stalled = NOW - dt.timedelta(minutes=30)
    messages.append(inbound(events_topic(devices[0]), event(101, at=stalled, kind="fault", code="E21"), stalled))
    store(database, messages, now=NOW)
    ingested = _state(database)
    assert len(ingested["latest"]) == 6 and len(ingested["counters"]) == 3

    # The same history with ingest's per-device state gone, as a bulk load leaves it: derived again.
    with database.transaction() as conn:
        for table in ("device_state", "latest_readings", "event_counters"):
            execute(conn, sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        derive_state_from_history(conn)
    assert _state(database) == ingested
