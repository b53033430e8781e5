"""`careloop bench storage`: what a reading costs on disk, and what a device's chart costs to read, before and after
TimescaleDB compression.

A generated fleet (bench engine's fixture: every model's metrics, gauges with noise around a level, counters that
only grow) with `--days` of readings every `--every` seconds, in a database of its own. Then: the bytes telemetry
takes with its indexes per reading, and the time of a device's chart (`devices.service.device_telemetry`, as
`GET /devices/{id}/telemetry?metric=M&bucket=6h` over the whole history calls it) for random (device, metric)
pairs. Where telemetry is a TimescaleDB hypertable, every chunk is then compressed with migration 102's settings
(segmented by device and metric, ordered by time), as the compression policy does once a chunk is a week old, and
both are measured again. On plain PostgreSQL the run says it measured no compression.

How well compression does depends on how many readings a segment holds in a chunk (TimescaleDB packs at most
1,000 into a batch): a device reporting each metric every 60 s puts 1,440 a day into a one-day chunk."""

from __future__ import annotations

import argparse
import datetime as dt
import random
import time
from dataclasses import dataclass

import psycopg2

from bench.engine import generate_fleet, vacuum
from bench.fixtures import temporary_database
from bench.processes import percentile
from careloop.db import Connection, Database, fetch_all, fetch_value
from careloop.durations import Duration
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from devices import service as devices_service
from devices.catalog import load_catalog

CHART_BUCKET = Duration.parse("6h")


def is_hypertable(conn: Connection) -> bool:
    timescale = fetch_value(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    return bool(timescale) and bool(fetch_value(
        conn, "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'telemetry'"))


def telemetry_bytes(conn: Connection) -> int:
    """Bytes telemetry takes on disk with its indexes: a hypertable's chunks, compressed ones included, where
    TimescaleDB has made it one (hypertable_size), else the plain table's."""
    if is_hypertable(conn):
        return int(fetch_value(conn, "SELECT hypertable_size('telemetry')") or 0)
    return int(fetch_value(conn, "SELECT pg_total_relation_size('telemetry')"))


def compress_telemetry(database_url: str) -> float | None:
    """Where telemetry is a hypertable: every chunk compressed now, by migration 102's settings, as the compression
    policy would once a chunk is old enough; answers the seconds it took. None on plain PostgreSQL.
    compress_chunk and show_chunks: TimescaleDB 2.0 and later (2.28 still has both)."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        if not is_hypertable(conn):
            return None
        started = time.perf_counter()
        with conn.cursor() as cursor:
            cursor.execute("SELECT compress_chunk(chunk, if_not_compressed => true) "
                           "FROM show_chunks('telemetry') AS chunk")
            cursor.execute("ANALYZE telemetry")
        return time.perf_counter() - started
    finally:
        conn.close()


@dataclass
class ChartFigures:
    seconds: list[float]
    points: int  # in all the charts read: none would mean nothing was measured

    def ms(self, share: float) -> str:
        value = percentile(self.seconds, share)
        return "-" if value is None else f"{value * 1000:.1f}"


@dataclass
class StorageFigures:
    devices: int
    readings: int
    days: float
    every_s: int
    load_s: float
    bytes_before: int
    chart_before: ChartFigures
    hypertable: bool
    compress_s: float | None = None
    bytes_after: int | None = None
    chart_after: ChartFigures | None = None

    def bytes_per_reading(self, size: int | None) -> float | None:
        return None if size is None or not self.readings else size / self.readings

    def as_dict(self) -> dict:
        return {
            "devices": self.devices, "readings": self.readings, "days": self.days, "every_s": self.every_s,
            "timescaledb": self.hypertable, "bytes_per_reading": self.bytes_per_reading(self.bytes_before),
            "compressed_bytes_per_reading": self.bytes_per_reading(self.bytes_after),
            "compress_s": self.compress_s,
            "chart_p50_s": percentile(self.chart_before.seconds, 0.5),
            "chart_p99_s": percentile(self.chart_before.seconds, 0.99),
            "compressed_chart_p50_s": percentile(self.chart_after.seconds, 0.5) if self.chart_after else None,
            "compressed_chart_p99_s": percentile(self.chart_after.seconds, 0.99) if self.chart_after else None,
        }  # fmt: skip

    def lines(self) -> list[str]:
        out = [f"{'telemetry':<34} {'bytes/reading':>13} {'MiB':>9} {'chart p50 ms':>12} {'chart p99 ms':>12}"]
        rows = [("as written" + (" (hypertable)" if self.hypertable else " (plain table)"), self.bytes_before,
                 self.chart_before)]
        if self.bytes_after is not None and self.chart_after is not None:
            rows.append((f"compressed in {self.compress_s:.1f} s", self.bytes_after, self.chart_after))
        for label, size, chart in rows:
            out.append(f"{label:<34} {size / max(self.readings, 1):>13.1f} {size / 2**20:>9.1f} "
                       f"{chart.ms(0.5):>12} {chart.ms(0.99):>12}")
        if self.bytes_after:
            out.append(f"compression: {self.bytes_before / self.bytes_after:.1f}x smaller")
        else:
            out.append("compression: not measured (telemetry is a plain table here: no TimescaleDB)")
        return out


def chart_pairs(database_url: str, count: int, seed: int) -> list[tuple[str, str]]:
    """Random (device, metric) pairs, each metric one the device's model has."""
    catalog = load_catalog()
    conn = psycopg2.connect(database_url)
    try:
        devices = fetch_all(conn, "SELECT id, model FROM devices ORDER BY id")
    finally:
        conn.close()
    rng = random.Random(seed)
    return [(row["id"], rng.choice(sorted(catalog[row["model"]].metrics)))
            for row in rng.choices(devices, k=count)]


def time_charts(database_url: str, pairs: list[tuple[str, str]], *, since: dt.datetime,
                until: dt.datetime) -> ChartFigures:
    """Each pair's chart over [since, until) in 6-hour averages, through the service the API calls, timed alone."""
    database = Database(database_url, max_connections=1)
    seconds, points = [], 0
    try:
        for device_id, metric in pairs:
            started = time.perf_counter()
            with database.transaction() as conn:
                chart = devices_service.device_telemetry(conn, device_id, since=since, until=until, metric=metric,
                                                         bucket=CHART_BUCKET, limit=2000)
            seconds.append(time.perf_counter() - started)
            points += len(chart)
    finally:
        database.close()
    return ChartFigures(seconds, points)


def measure_storage(server_url: str, *, devices: int, days: float, every_s: int, charts: int = 200,
                    seed: int = 7) -> StorageFigures:
    """A fleet in a database of its own: bytes and chart reads as written, then compressed where TimescaleDB is."""
    with temporary_database(server_url) as database_url:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        started = time.perf_counter()
        conn = psycopg2.connect(database_url)
        try:
            readings = generate_fleet(conn, devices, days=days, every_s=every_s, now=now)
        finally:
            conn.close()
        vacuum(database_url)
        load_s = time.perf_counter() - started
        pairs = chart_pairs(database_url, charts, seed)
        since, until = now - dt.timedelta(days=days), now + dt.timedelta(seconds=1)
        conn = psycopg2.connect(database_url)
        try:
            hypertable, size = is_hypertable(conn), telemetry_bytes(conn)
        finally:
            conn.close()
        figures = StorageFigures(devices, readings, days, every_s, load_s, size,
                                 time_charts(database_url, pairs, since=since, until=until), hypertable)
        figures.compress_s = compress_telemetry(database_url)
        if figures.compress_s is not None:
            conn = psycopg2.connect(database_url)
            try:
                figures.bytes_after = telemetry_bytes(conn)
            finally:
                conn.close()
            figures.chart_after = time_charts(database_url, pairs, since=since, until=until)
    return figures


def bench_storage(args: argparse.Namespace) -> int:
    urls = resolve_services(get_settings(), need_broker=False)
    print(f"careloop bench storage: {args.devices:,} devices, {args.days:g} days of every metric every {args.every} s; "
          f"{args.charts} charts of one metric over the whole history in 6-hour averages, before and after compression")
    figures = measure_storage(urls.database_url, devices=args.devices, days=args.days, every_s=args.every,
                              charts=args.charts)
    print(f"{figures.readings:,} readings loaded in {figures.load_s:.0f} s")
    print("\n".join(figures.lines()))
    return 0
