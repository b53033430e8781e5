"""Telemetry on TimescaleDB, where the server has it (skipped on plain PostgreSQL): migrations 101 and 102 make a
hypertable compressed by device and metric, a late reading lands in a compressed chunk and is stored once however
often it is redelivered, and the hourly aggregate is real-time."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from careloop.db import fetch_all, fetch_value
from careloop.mqtt import telemetry_topic
from ingest.service import InboundMessage
from tests.factories import make_device
from tests.helpers import store

pytestmark = pytest.mark.integration

METRICS = {"run_hours": 10.0, "fan_current_a": 0.6, "fan_speed_rpm": 1200.0, "airflow_m3h": 600.0,
           "grease_load_pct": 20.0}


@pytest.fixture
def hypertable(conn):
    if not fetch_value(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
        pytest.skip("no TimescaleDB on this server: telemetry is a plain table (CARELOOP_DATABASE_URL names one "
                    "with the extension preloaded to run these)")
    return conn


def reading(device_id: str, seq: int, at: dt.datetime, received: dt.datetime) -> InboundMessage:
    body = {"seq": seq, "ts": at.isoformat(), "metrics": METRICS}
    return InboundMessage(telemetry_topic(device_id), json.dumps(body).encode(), received)


def test_the_migrations_make_hypertables_compressed_by_device_and_metric(hypertable) -> None:
    settings = {row["hypertable"]: (row["segmentby"], row["orderby"]) for row in fetch_all(
        hypertable, "SELECT hypertable::text, segmentby, orderby FROM "
                    "timescaledb_information.hypertable_compression_settings")}  # fmt: skip
    assert settings["telemetry"] == ("device_id,metric", "ts DESC,seq DESC")
    assert settings["events"] == ("device_id", "ts DESC,seq DESC")
    assert fetch_value(hypertable, "SELECT materialized_only FROM timescaledb_information.continuous_aggregates "
                                   "WHERE view_name = 'telemetry_hourly'") is False


def test_a_late_reading_into_a_compressed_chunk_is_stored_once_however_often_it_comes(database, hypertable) -> None:
    device = make_device(hypertable).id
    hypertable.commit()
    now = dt.datetime.now(dt.UTC)
    ten_days_ago = (now - dt.timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    first = [reading(device, seq, ten_days_ago + dt.timedelta(seconds=30 * seq), now) for seq in (1, 2)]
    assert store(database, first, now=now).readings_stored == 10
    with database.transaction() as admin:  # as the compression policy would, once the chunk is 7 days old
        compressed = fetch_all(admin, "SELECT compress_chunk(chunk, if_not_compressed => true) AS chunk "
                                      "FROM show_chunks('telemetry', older_than => now() - INTERVAL '7 days') AS chunk")
    assert compressed, "the readings ten days old are in a chunk that compresses"
    # the ones stored before, redelivered, and one more late message into the same compressed chunk
    late = reading(device, 3, ten_days_ago + dt.timedelta(seconds=90), now)
    for _ in range(2):
        outcome = store(database, [*first, late], now=now)
    assert (outcome.readings_stored, outcome.readings_duplicate) == (0, 15)
    with database.connection() as reader:
        rows = fetch_all(reader, "SELECT seq, count(*) AS readings FROM telemetry WHERE device_id = %s "
                                 "GROUP BY seq ORDER BY seq", (device,))
        hourly = fetch_value(reader, "SELECT sum(readings) FROM telemetry_hourly WHERE device_id = %s", (device,))
        in_compressed = fetch_value(reader, "SELECT count(*) FROM timescaledb_information.chunks WHERE "
                                            "hypertable_name = 'telemetry' AND is_compressed")
    assert [(row["seq"], row["readings"]) for row in rows] == [(1, 5), (2, 5), (3, 5)]
    assert hourly == 15, "the aggregate is real-time: it counts the readings no refresh has materialized yet"
    assert in_compressed >= 1
