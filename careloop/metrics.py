"""Prometheus metrics of the long-running processes, each served on a port of the process's own.

Every name starts with `careloop_`. Counters count from the process's start (Prometheus copes with restarts);
several ingesters are told apart by the scraper's `instance` label, not by a label of ours. The shell imports
no domain, so the ingester and the engine hand in plain numbers.

`python -m careloop.metrics URL [--max-heartbeat-age S]` is the container health check: it exits 0 when the
endpoint answers and, with the option, when the process wrote its heartbeat within S seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("careloop.metrics")

DEFAULT_HOST = "127.0.0.1"  # scraped from the same machine or container unless told otherwise

# --- ingest -----------------------------------------------------------------------------------

INGEST_MESSAGES = Counter(
    "careloop_ingest_messages_total", "MQTT messages committed: stored, duplicate or quarantined"
)
INGEST_READINGS = Counter("careloop_ingest_readings_total", "Metric values newly stored in telemetry")
INGEST_EVENTS = Counter("careloop_ingest_events_total", "Device events newly stored")
INGEST_DUPLICATES = Counter(
    "careloop_ingest_duplicates_total", "Redelivered readings and events skipped by their dedup key", ["kind"]
)
for _kind in ("reading", "event"):  # listed at 0 from the start, so rates work before the first duplicate
    INGEST_DUPLICATES.labels(kind=_kind)
INGEST_QUARANTINED = Counter("careloop_ingest_quarantined_total", "Messages quarantined, by reason", ["reason"])
INGEST_BATCH_SECONDS = Histogram(
    "careloop_ingest_batch_seconds",
    "From taking a batch off the inbox to its acknowledgement: store, commit, ack (database retries included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
INGEST_LAG = Gauge(
    "careloop_ingest_lag_seconds",
    "At the last commit: how long the batch's newest message waited between reaching the ingester and its commit",
)
INGEST_QUEUE_DEPTH = Gauge("careloop_ingest_queue_depth", "Messages received from the broker and not yet stored")
INGEST_LAST_COMMIT = Gauge("careloop_ingest_last_commit_timestamp_seconds", "Unix time of the last batch commit")

# --- engine -----------------------------------------------------------------------------------

ENGINE_JOB_SECONDS = Histogram(
    "careloop_engine_job_seconds",
    "Duration of engine jobs (batch, sweep, window, baselines, trends), commit included",
    ["job"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ENGINE_DETECTIONS_OPENED = Counter(
    "careloop_engine_detections_opened_total", "Detections opened, by the job that opened them", ["job"]
)
ENGINE_DETECTIONS_CLEARED = Counter(
    "careloop_engine_detections_cleared_total", "Detections cleared, by the job that cleared them", ["job"]
)
ENGINE_LAST_RUN = Gauge("careloop_engine_job_last_run_timestamp_seconds", "Unix time a job last committed", ["job"])

# --- heartbeat ----------------------------------------------------------------------------------

HEARTBEAT_AGE = Gauge(
    "careloop_heartbeat_age_seconds", "Seconds since this process last wrote its heartbeat to the database"
)
HEARTBEAT_AGE.set(math.nan)  # NaN until a heartbeat is watched: a process without one never reads as fresh
HEARTBEAT_FAILURES = Counter(
    "careloop_heartbeat_write_failures_total", "Heartbeat writes that failed (the database was unreachable)"
)


def record_ingest_batch(
    *,
    messages: int,
    readings: int,
    events: int,
    reading_duplicates: int,
    event_duplicates: int,
    quarantined: Mapping[str, int],
    seconds: float,
    lag_s: float,
    committed_at: dt.datetime,
) -> None:
    """Count one committed and acknowledged ingest batch."""
    INGEST_MESSAGES.inc(messages)
    INGEST_READINGS.inc(readings)
    INGEST_EVENTS.inc(events)
    INGEST_DUPLICATES.labels(kind="reading").inc(reading_duplicates)
    INGEST_DUPLICATES.labels(kind="event").inc(event_duplicates)
    for reason, count in quarantined.items():
        INGEST_QUARANTINED.labels(reason=reason).inc(count)
    INGEST_BATCH_SECONDS.observe(seconds)
    INGEST_LAG.set(lag_s)
    INGEST_LAST_COMMIT.set(committed_at.timestamp())


def watch_ingest_queue(depth: Callable[[], float]) -> None:
    """Report the ingester's queue depth as read at each scrape, so a stuck writer shows its growing queue."""
    INGEST_QUEUE_DEPTH.set_function(depth)


def record_engine_job(job: str, *, seconds: float, opened: int = 0, cleared: int = 0) -> None:
    """Count one committed engine job."""
    ENGINE_JOB_SECONDS.labels(job=job).observe(seconds)
    ENGINE_DETECTIONS_OPENED.labels(job=job).inc(opened)
    ENGINE_DETECTIONS_CLEARED.labels(job=job).inc(cleared)
    ENGINE_LAST_RUN.labels(job=job).set_to_current_time()


def watch_heartbeat_age(age_s: Callable[[], float]) -> None:
    HEARTBEAT_AGE.set_function(age_s)


# --- serving ------------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server in its own daemon thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def process_registry() -> CollectorRegistry:
    """Only the process's own figures (CPU, memory, open files, start time, garbage collection), for a process
    that counts nothing of CareLoop's, such as the simulator."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve_metrics(port: int, host: str = DEFAULT_HOST, *, registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve /metrics on host:port (port 0: any free port, see `.port`); the commands treat 0 as off instead.

    Without `registry`, everything the process registered: the careloop_ metrics and the process's own."""
    server, thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
    served = MetricsServer(server, thread)
    log.info("metrics at http://%s:%d/metrics", host, served.port)
    return served


def scrape(url: str, *, timeout_s: float = 4) -> dict[str, float]:
    """The samples a metrics endpoint serves, keyed by name with labels as Prometheus writes them."""
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def check(url: str, *, max_heartbeat_age_s: float | None = None) -> str | None:
    """Why the process behind a metrics endpoint is unhealthy, or None when it is healthy."""
    try:
        samples = scrape(url)
    except OSError as error:
        return f"{url} does not answer: {error}"
    if max_heartbeat_age_s is None:
        return None
    age = samples.get("careloop_heartbeat_age_seconds")
    if age is None or math.isnan(age):
        return "no careloop_heartbeat_age_seconds: this process keeps no heartbeat"
    if age > max_heartbeat_age_s:
        return f"heartbeat last written {age:.0f}s ago (limit {max_heartbeat_age_s:.0f}s)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m careloop.metrics", description=check.__doc__)
    parser.add_argument("url", help="e.g. http://127.0.0.1:9101/metrics")
    parser.add_argument("--max-heartbeat-age", type=float, default=None, help="seconds; unhealthy beyond it")
    args = parser.parse_args(argv)
    problem = check(args.url, max_heartbeat_age_s=args.max_heartbeat_age)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
