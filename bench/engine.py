"""`careloop bench engine`: how fast the rule engine evaluates the built-in catalog over large generated fleets.

Per fleet size: one scheduled evaluation of every rule (window, sweep) and of a batch of 500 devices, timed best
of --repeat, after the engine's first runs; the hourly baselines and trend fits once. In a database of its own,
dropped afterwards.

The fixture: owners, devices of every model and their history of readings are loaded in bulk (ingesting millions
of readings message by message would take hours and measure the ingester, not the engine); each device then says
it is online and reports its cleanings and faults through ingest, and what ingest keeps per device (last seen,
newest readings, counters at events) is derived by ingest from the stored history, never written here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass

import psycopg2
from psycopg2.extras import execute_values
from tqdm import tqdm

from bench.fixtures import temporary_database
from careloop.db import Connection, Database, fetch_all
from careloop.mqtt import events_topic, status_topic
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from devices.catalog import load_catalog
from ingest.service import InboundMessage, derive_state_from_history, ingest_batch
from rules.engine import Engine
from rules.service import load_builtin_catalog

HISTORY_SQL = """
INSERT INTO telemetry (ts, device_id, metric, value, seq)
SELECT %(start)s::timestamptz + n * %(every)s * interval '1 second', d.id, m.metric,
       CASE WHEN m.counter THEN m.lo + n * %(every)s / 3600.0 * (0.05 + 0.1 * (hashtext(d.id) & 7) / 7.0)
            ELSE m.lo + m.span * (0.3 + 0.1 * random() + 0.3 * n::float / %(steps)s * ((hashtext(d.id) & 15) = 0)::int)
       END,
       n
FROM devices AS d
JOIN bench_metrics AS m ON m.model = d.model
CROSS JOIN generate_series(0, %(steps)s - 1) AS n
WHERE d.id >= %(first)s AND d.id < %(last)s
"""


def generate_fleet(
    conn: Connection, devices: int, *, days: float, every_s: int, now: dt.datetime, owners: int | None = None
) -> int:
    """Owners with birthdays (`owners`, by default one for every two devices), devices of every model, `days` of
    readings, then status, cleanings and faults through ingest (see the module's docstring); answers telemetry
    rows."""
    catalog = load_catalog()
    models = sorted(catalog)
    owners = owners or devices // 2 + 1
    with conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO customers (name, birthday) SELECT 'Owner ' || n, DATE '1960-01-01' + (n * 37 %% 15000) "
            "FROM generate_series(1, %s) AS n",
            (owners,),
        )
        cursor.execute("SELECT min(id) FROM customers")
        first_customer = cursor.fetchone()[0]
        rows = [
            (
                f"{catalog[models[n % len(models)]].kind[:2].upper()}-{n:07d}",
                models[n % len(models)],
                catalog[models[n % len(models)]].kind,
                first_customer + n * owners // devices,
                (now - dt.timedelta(days=30 + (n * 97) % 4000)).date(),
            )
            for n in range(devices)
        ]
        execute_values(cursor, "INSERT INTO devices (id, model, kind, owner_id, purchased_on) VALUES %s", rows)
        cursor.execute(
            "CREATE TEMP TABLE bench_metrics (model text, metric text, lo float8, span float8, counter bool)"
        )
        execute_values(
            cursor,
            "INSERT INTO bench_metrics VALUES %s",
            [
                (code, name, metric.min, metric.max - metric.min, metric.counter)
                for code, model in catalog.items()
                for name, metric in model.metrics.items()
            ],
        )
        steps = int(days * 86400 // every_s)
        start = now - dt.timedelta(days=days)
        ids = sorted(row[0] for row in rows)
        chunk = 2000
        for first in tqdm(range(0, len(ids), chunk), desc=f"history of {devices:,} devices", unit="chunk"):
            last = ids[min(first + chunk, len(ids) - 1)] if first + chunk < len(ids) else ids[-1] + "~"
            cursor.execute(
                HISTORY_SQL,
                {"start": start, "every": every_s, "steps": steps, "first": ids[first], "last": last},
            )
            conn.commit()
        # What ingest keeps per device, derived by ingest from the history just stored.
        derive_state_from_history(conn)
        # Each device said it was online when its history began; a cleaning for every fourth device half-way
        # through, a fault for one in fifty an hour ago: messages through ingest, as the devices would send them.
        ingest_messages(conn, [(status_topic(device_id), b"online") for device_id, *_ in rows], at=start)
        cursor.execute("SELECT id FROM devices WHERE hashtext(id) % 4 = 0 ORDER BY id")
        cleaned = [device_id for (device_id,) in cursor.fetchall()]
        cleaned_at = now - dt.timedelta(days=days / 2)
        ingest_messages(conn, [_event(device_id, 1000000, cleaned_at, "maintenance_done") for device_id in cleaned],
                        at=cleaned_at)
        faulted_at = now - dt.timedelta(hours=1)
        faults = [
            _event(device_id, 1000001, faulted_at, "fault", sorted(catalog[model].fault_codes)[0])
            for device_id, model, *_ in rows[::50]
            if catalog[model].fault_codes
        ]
        ingest_messages(conn, faults, at=faulted_at)
        cursor.execute("SELECT count(*) FROM telemetry")
        telemetry_rows = cursor.fetchone()[0]
    conn.commit()
    return telemetry_rows


def _event(device_id: str, seq: int, at: dt.datetime, kind: str, code: str | None = None) -> tuple[str, bytes]:
    payload = {"seq": seq, "ts": at.isoformat(), "type": kind} | ({"code": code} if code else {})
    return events_topic(device_id), json.dumps(payload).encode()


def ingest_messages(conn: Connection, messages: list[tuple[str, bytes]], *, at: dt.datetime) -> None:
    """(topic, payload) messages through ingest, received at `at`, in batches as the ingester takes them."""
    batch = 1000
    for first in range(0, len(messages), batch):
        inbound = [InboundMessage(topic, payload, at) for topic, payload in messages[first:first + batch]]
        outcome = ingest_batch(conn, inbound, now=at)
        if outcome.quarantined:
            raise RuntimeError(f"ingest quarantined fixture messages: {dict(outcome.quarantined)}")


@dataclass
class EngineFigures:
    devices: int
    readings: int
    baselines_s: float
    trends_s: float
    first: dict[str, tuple[float, object]]  # job -> (seconds, EvaluationSummary) of the engine's first run
    jobs: dict[str, list[tuple[float, object]]]  # job -> [(seconds, EvaluationSummary)] per repeat


def bench_engine(args: argparse.Namespace) -> int:
    urls = resolve_services(get_settings(), need_broker=False)
    sizes = [int(size) for size in args.devices.split(",")]
    print(
        f"careloop bench engine: the built-in catalog over {', '.join(f'{s:,}' for s in sizes)} devices, "
        f"{args.days} days of history, a reading of each metric every {args.every}s; best of {args.repeat} runs"
    )
    results = [
        measure_engine(urls.database_url, size, days=args.days, every_s=args.every, repeat=args.repeat)
        for size in sizes
    ]
    print(
        f"\n{'devices':>8} {'readings':>12} {'job':<13} {'rules':>5} {'best s':>7} {'facts s':>8} "
        f"{'windows s':>9} {'evaluate s':>10} {'store s':>8} {'opened':>7} {'vs 1 s':>7}"
    )
    for figures in results:
        for job, runs in figures.jobs.items():
            best_s, best = min(runs, key=lambda run: run[0])
            parts = best.seconds
            opened = sum(run[1].opened for run in runs)
            print(
                f"{figures.devices:>8,} {figures.readings:>12,} {job:<13} {best.rules:>5} {best_s:>7.2f} "
                f"{parts.get('facts', 0):>8.2f} {parts.get('windows', 0):>9.2f} {parts.get('evaluate', 0):>10.2f} "
                f"{parts.get('store', 0):>8.2f} "
                f"{opened:>7,} {best_s:>6.2f}x"
            )
        for job, (seconds, summary) in figures.first.items():
            print(
                f"{figures.devices:>8,} {figures.readings:>12,} {'first ' + job:<13} {summary.rules:>5} "
                f"{seconds:>7.2f}  (once: reads the cache, opens {summary.opened:,})"
            )
        for job, seconds in (("baselines", figures.baselines_s), ("trend fits", figures.trends_s)):
            print(f"{figures.devices:>8,} {figures.readings:>12,} {job:<13} {'':>5} {seconds:>7.2f}  (hourly job)")
    if len(results) > 1:
        small, large = results[0], results[-1]
        ratio = min(run[0] for run in large.jobs["window"]) / min(run[0] for run in small.jobs["window"])
        print(
            f"\nwindow job: {large.devices / small.devices:.0f}x the fleet took {ratio:.1f}x the time "
            f"({small.devices:,} -> {large.devices:,} devices)"
        )
    return 0


def measure_engine(server_url: str, size: int, *, days: float, every_s: int, repeat: int) -> EngineFigures:
    """One fleet size in a database of its own: generate, vacuum, time the engine's jobs."""
    with temporary_database(server_url) as database_url:
        conn = psycopg2.connect(database_url)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        readings = generate_fleet(conn, size, days=days, every_s=every_s, now=now)
        conn.close()
        # A server that took a week of telemetry has vacuumed it (autovacuum runs on inserts too): the
        # visibility map is set, and the loader's index-only scans need not visit the table.
        vacuum(database_url)
        database = Database(database_url, max_connections=2)
        with database.transaction() as setup:
            load_builtin_catalog(setup)
        engine = Engine(database, clock=lambda now=now: now)
        baselines_s = _timed(engine.learn_baselines)[0]
        trends_s = _timed(engine.learn_trends)[0]
        with database.connection() as reader:
            some = [row["id"] for row in fetch_all(reader, "SELECT id FROM devices ORDER BY random() LIMIT 500")]
        # The engine's first runs open the fleet's detections and fill its cache of device columns and
        # trend fits; the runs after them are the steady state every minute and every five minutes.
        first = {"window": _timed(engine.window), "sweep": _timed(engine.sweep)}
        # What autovacuum does to a table that just took a hundred thousand rows.
        vacuum(database_url, "detections")
        jobs = {
            "window": [_timed(engine.window) for _ in range(repeat)],
            "sweep": [_timed(engine.sweep) for _ in range(repeat)],
            "batch of 500": [_timed(engine.evaluate_batch, some) for _ in range(repeat)],
        }
        database.close()
    return EngineFigures(size, readings, baselines_s, trends_s, first, jobs)


def vacuum(database_url: str, table: str | None = None) -> None:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" + (f" {table}" if table else ""))
    conn.close()


def _timed(job, *args):
    started = time.perf_counter()
    result = job(*args)
    return time.perf_counter() - started, result
