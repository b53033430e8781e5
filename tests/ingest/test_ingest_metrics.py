"""The Prometheus endpoint of an ingester and an engine, scraped over HTTP, against the real database and broker."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from careloop import metrics
from careloop.db import Database, fetch_all
from careloop.mqtt import telemetry_topic
from rules.engine import Engine, Schedule
from rules.service import create_rule
from tests.factories import make_device
from tests.helpers import inbound, publish_all, reading, store, wait_until

pytestmark = pytest.mark.integration

STALL = {
    "id": "hood-current-high",
    "applies_to": {"model": "RH-900"},
    "when": {"threshold": {"metric": "fan_current_a", "above": 3}},
    "then": [{"open_service_order": {"type": "inspection", "skill": "motor"}}],
}


@pytest.fixture
def endpoint():
    """This test process's metrics, served on a free port."""
    server = metrics.serve_metrics(0)
    yield f"http://127.0.0.1:{server.port}/metrics"
    server.close()


def scrape(url: str) -> dict[str, float]:
    """Samples by name and labels, fetched over HTTP as Prometheus would."""
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_the_metrics_endpoint_counts_messages_readings_duplicates_and_quarantines(
    conn, database, mqtt_url, run_ingester, endpoint
) -> None:
    device = make_device(conn)
    conn.commit()
    run_ingester()
    before = scrape(endpoint)

    def grew(name: str) -> float:
        return scrape(endpoint).get(name, 0) - before.get(name, 0)

    # What other runs publish on a shared broker reaches this ingester too: only this device's outcomes are exact.
    topic = telemetry_topic(device.id)
    sent = [(topic, reading(seq, fan_current_a=0.5, run_hours=float(seq))) for seq in range(1, 5)]
    publish_all(mqtt_url, sent)
    wait_until(lambda: grew("careloop_ingest_readings_total") == 8, what="four readings of two metrics stored")
    publish_all(mqtt_url, [sent[0], sent[1], (topic, b"\xff not json"), (topic, {"seq": 9, "metrics": {}})])
    own_quarantine = f"SELECT reason FROM quarantine WHERE topic = '{topic}' ORDER BY reason"
    wait_until(lambda: _reasons(database, own_quarantine) == ["invalid_json", "invalid_payload"],
               what="the two bad messages quarantined")
    wait_until(lambda: grew('careloop_ingest_duplicates_total{kind="reading"}') == 4,
               what="the two redelivered messages of two metrics counted as duplicates")

    after = scrape(endpoint)
    assert grew("careloop_ingest_messages_total") >= 8
    assert grew("careloop_ingest_readings_total") == 8
    assert grew('careloop_ingest_duplicates_total{kind="event"}') == 0
    assert grew('careloop_ingest_quarantined_total{reason="invalid_json"}') >= 1
    assert grew('careloop_ingest_quarantined_total{reason="invalid_payload"}') >= 1
    assert after["careloop_ingest_batch_seconds_count"] - before.get("careloop_ingest_batch_seconds_count", 0) >= 2
    assert after["careloop_ingest_batch_seconds_sum"] > before.get("careloop_ingest_batch_seconds_sum", 0)
    assert after["careloop_ingest_queue_depth"] == 0
    assert 0 <= after["careloop_ingest_lag_seconds"] < 5
    assert abs(after["careloop_ingest_last_commit_timestamp_seconds"] - time.time()) < 10


def test_the_metrics_endpoint_counts_engine_jobs_and_the_detections_they_open(conn, database, endpoint) -> None:
    device = make_device(conn)
    create_rule(conn, STALL)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    store(database, [inbound(telemetry_topic(device.id), reading(1, at=now, fan_current_a=4.2), now)], now=now)
    before = scrape(endpoint)
    engine = Engine(database, schedule=Schedule())
    engine.evaluate_batch([device.id])
    engine.sweep()
    after = scrape(endpoint)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('careloop_engine_detections_opened_total{job="batch"}') == 1
    assert grew('careloop_engine_detections_opened_total{job="sweep"}') == 0  # already open: nothing twice
    assert grew('careloop_engine_job_seconds_count{job="batch"}') == 1
    assert grew('careloop_engine_job_seconds_count{job="sweep"}') == 1
    assert abs(after['careloop_engine_job_last_run_timestamp_seconds{job="sweep"}'] - time.time()) < 10


def _reasons(database: Database, query: str) -> list[str]:
    with database.connection() as check:
        return [row["reason"] for row in fetch_all(check, query)]
