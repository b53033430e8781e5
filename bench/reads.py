"""`careloop bench reads`: how fast a real `careloop api` answers the dashboard's three heaviest reads over a large
fleet, under a fixed request rate.

The fleet is generated in bulk by `bench engine`'s fixture (customers, devices of every model, 30 days of every
metric's readings, the devices' status, cleanings and faults through ingest); the engine's sweep then opens the
faults' detections, and the service-order jobs their orders and call tasks, as a running engine would. A real
`careloop api` serves it on loopback, and an open-loop load generator sends --rate requests a second (each rate of a
list in turn, for --seconds each) to these in turn:

- `GET /customers/{id}/360` of a random owner;
- `GET /devices/{id}/telemetry?metric=M&since=30 days ago&bucket=6h&limit=2000` of a random device and one of its
  metrics (the device drill-down's 30-day chart);
- `GET /service-orders?status=open&limit=500` (the dispatch board's queue).

Open loop: request k is due at start + k/rate whatever became of the ones before, and its latency is counted from
that due time, so a slow answer that delays the requests behind it counts against them too (no coordinated
omission); a request unanswered after REQUEST_TIMEOUT_S counts as a timeout, not a latency. DISPATCHERS
dispatchers' tokens in turn, as the dashboard would hold them (the API admits only a share of its requests in
progress from any one token, 8 of 32). Before the rates, a CHECKPOINT writes out what the bulk load left dirty and
WARM_UP_REQUESTS of each endpoint, one after another, warm the server: what is measured is a server that has been
serving, not the minute after a bulk load. Figures: p50, p99 and max per endpoint and rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import orjson
import psycopg2

from bench.engine import generate_fleet, vacuum
from bench.fixtures import temporary_database
from bench.processes import careloop_api, percentile, service_env
from careloop.auth import create_token
from careloop.db import Database, fetch_all, fetch_value
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from devices.catalog import load_catalog
from rules.engine import Engine
from rules.service import load_builtin_catalog
from service_orders.jobs import JOBS

P99_TARGET_S = 0.050
HISTORY_DAYS = 30
TELEMETRY_BUCKET = "6h"  # the device drill-down's automatic bucket for 30 days (dashboard/views/device.py)
BOARD_LIMIT = 500  # the dispatch board's queue (dashboard/views/dispatch.py)
WARMUP_S = 2.0
REQUEST_TIMEOUT_S = 10.0
WARM_UP_REQUESTS = 20  # of each endpoint, one after another, before the rates
ENDPOINTS = ("customer 360", "device telemetry 30 d", "dispatch board")
DISPATCHERS = 8


@dataclass
class EndpointFigures:
    name: str
    seconds: list[float] = field(default_factory=list)  # from each request's due time to its answer
    statuses: dict[int | str, int] = field(default_factory=dict)
    items: int = 0  # items answered in all: the answers are not empty

    def quantile(self, share: float) -> float | None:
        return percentile(self.seconds, share)

    def as_dict(self) -> dict:
        return {
            "requests": len(self.seconds), "p50_s": self.quantile(0.5), "p99_s": self.quantile(0.99),
            "max_s": max(self.seconds) if self.seconds else None,
            "statuses": {str(status): count for status, count in self.statuses.items()},
        }  # fmt: skip


@dataclass
class RateRun:
    """One fixed rate's load: the figures per endpoint."""

    rate: float
    late_s: float  # how far behind its schedule the generator itself fell at worst
    endpoints: dict[str, EndpointFigures]
    workers: int = 1  # `careloop api --workers`


@dataclass
class ReadFigures:
    customers: int
    devices: int
    readings: int
    open_orders: int
    load_seconds: float
    seconds: float
    runs: list[RateRun]

    def lines(self) -> list[str]:
        out = [
            f"{'workers':>7} {'rate/s':>6} {'endpoint':<22} {'requests':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'p99 ≤ 50 ms':>11}  answers"
        ]
        for run in self.runs:
            for figures in run.endpoints.values():
                p99 = figures.quantile(0.99)
                mark = "-" if p99 is None else ("✓" if p99 <= P99_TARGET_S else "✗")
                out.append(
                    f"{run.workers:>7} {run.rate:>6g} {figures.name:<22} {len(figures.seconds):>8} "
                    f"{_ms(figures.quantile(0.5)):>7} "
                    f"{_ms(p99):>7} {_ms(max(figures.seconds) if figures.seconds else None):>7} {mark:>11}  "
                    f"{figures.statuses}"
                )
        out.append(
            "the load generator fell at most "
            + ", ".join(f"{run.late_s * 1000:.0f} ms at {run.rate:g}/s ({run.workers} workers)" for run in self.runs)
            + " behind its own schedule"
        )
        return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


# ---------------------------------------------------------------- the fleet


def load_fleet(database_url: str, *, customers: int, devices: int, readings: int) -> tuple[int, int]:
    """Customers, devices and about `readings` readings over HISTORY_DAYS (bench engine's bulk fixture), then the
    faults' orders and call tasks opened by the engine's sweep and the service-order jobs; answers (readings,
    open orders)."""
    catalog = load_catalog()
    metrics_per_device = sum(len(model.metrics) for model in catalog.values()) / len(catalog)
    every_s = max(60, int(HISTORY_DAYS * 86400 * devices * metrics_per_device / readings))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    conn = psycopg2.connect(database_url)
    stored = generate_fleet(conn, devices, days=HISTORY_DAYS, every_s=every_s, now=now, owners=customers)
    conn.close()
    vacuum(database_url)
    database = Database(database_url, max_connections=2)
    try:
        with database.transaction() as setup:
            load_builtin_catalog(setup)
        # The fault rules over the fleet, and the detections' orders and call tasks, as a running engine makes
        # them (the time-window rules are left out: they would open a maintenance or trade-in detection for most
        # of a generated fleet at once, which no running fleet has).
        engine = Engine(database, clock=lambda: now, jobs=JOBS)
        engine.sweep()
        # A running engine carries out the actions every 10 s, a few hundred detections at a time, until none is
        # left: so here, before the board is read.
        actions = next(job for job in JOBS if job.after_evaluation)
        while engine.run_job(actions).get("detections"):
            pass
        vacuum(database_url)
        with database.connection() as conn:
            open_orders = int(fetch_value(conn, "SELECT count(*) FROM service_orders WHERE status NOT IN "
                                                "('completed', 'cancelled')"))
    finally:
        database.close()
    return stored, open_orders


def request_targets(database_url: str, count: int, seed: int) -> tuple[list[int], list[tuple[str, str]]]:
    """Random owners for the 360 and random (device, metric) pairs for the telemetry, chosen before the clock
    starts so the generator only sends."""
    catalog = load_catalog()
    database = Database(database_url, max_connections=1)
    try:
        with database.connection() as conn:
            owners = [row["owner_id"] for row in fetch_all(
                conn, "SELECT owner_id FROM devices WHERE owner_id IS NOT NULL ORDER BY random() LIMIT %s",
                (count,))]  # fmt: skip
            devices = fetch_all(
                conn, "SELECT id, model FROM devices ORDER BY random() LIMIT %s", (count,)
            )
    finally:
        database.close()
    rng = random.Random(seed)
    rng.shuffle(owners)
    pairs = [(row["id"], rng.choice(sorted(catalog[row["model"]].metrics))) for row in devices]
    rng.shuffle(pairs)
    return owners, pairs


def settle(database_url: str) -> None:
    """Write out what the bulk load left dirty now, rather than under the load: a checkpoint (a superuser's, so
    skipped, saying so, where the role may not)."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute("CHECKPOINT")
    except psycopg2.Error as error:
        print(f"no CHECKPOINT after the load ({error.pgerror or error}); the first requests may meet its writes")
    finally:
        conn.close()


def warm_up(base_url: str, tokens: Sequence[str], *, owners: Sequence[int], pairs: Sequence[tuple[str, str]]) -> None:
    """WARM_UP_REQUESTS of each endpoint one after another, not counted, under each token in turn: a server that
    has been serving, its caches warm and every dispatcher known to it, is what the rates measure, not the first
    minute after a bulk load."""
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=HISTORY_DAYS)).replace(microsecond=0).isoformat()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for index in range(max(WARM_UP_REQUESTS, len(tokens))):
            client.headers["Authorization"] = f"Bearer {tokens[index % len(tokens)]}"
            device_id, metric = pairs[-1 - index % len(pairs)]
            client.get(f"/customers/{owners[-1 - index % len(owners)]}/360")
            client.get(f"/devices/{device_id}/telemetry",
                       params={"metric": metric, "since": since, "bucket": TELEMETRY_BUCKET, "limit": 2000})
            client.get("/service-orders", params={"status": "open", "limit": BOARD_LIMIT})


# ---------------------------------------------------------------- the load


async def generate_load(
    base_url: str, tokens: Sequence[str], *, rate: float, seconds: float, owners: Sequence[int],
    pairs: Sequence[tuple[str, str]],
) -> tuple[dict[str, EndpointFigures], float]:  # fmt: skip
    """Open loop at `rate` requests/s over the three endpoints in turn; a warm-up of WARMUP_S first, not counted.
    Answers the figures per endpoint and the generator's own worst lateness."""
    figures = {name: EndpointFigures(name) for name in ENDPOINTS}
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=HISTORY_DAYS)).replace(microsecond=0).isoformat()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as client:

        dispatchers = [{"Authorization": f"Bearer {token}"} for token in tokens]

        def request(index: int) -> tuple[str, str, dict]:
            name = ENDPOINTS[index % len(ENDPOINTS)]
            if name == "customer 360":
                return name, f"/customers/{owners[index % len(owners)]}/360", {}
            if name == "device telemetry 30 d":
                device_id, metric = pairs[index % len(pairs)]
                params = {"metric": metric, "since": since, "bucket": TELEMETRY_BUCKET, "limit": 2000}
                return name, f"/devices/{device_id}/telemetry", params
            return name, "/service-orders", {"status": "open", "limit": BOARD_LIMIT}

        async def send(index: int, due: float, counted: bool) -> None:
            name, path, params = request(index)
            try:
                answer = await client.get(path, params=params, headers=dispatchers[index % len(dispatchers)])
                answered = time.perf_counter()  # the whole answer is in: the client's own parsing is not the server's
                status: int | str = answer.status_code
                # orjson: the board's answer is 300 kB, and the json module's few milliseconds per parse
                # would hold up this one event loop, and the timing of every other request with it
                body = orjson.loads(answer.content) if status == 200 else {}
            except httpx.HTTPError as error:
                answered, status, body = time.perf_counter(), type(error).__name__, {}
            if counted:
                endpoint = figures[name]
                if status == 200:
                    endpoint.seconds.append(answered - due)
                endpoint.statuses[status] = endpoint.statuses.get(status, 0) + 1
                endpoint.items += len(body.get("items", [])) + len(body.get("devices", []))

        warmup = int(WARMUP_S * rate)
        total = warmup + int(seconds * rate)
        started = time.perf_counter()
        late = 0.0
        tasks = []
        for index in range(total):
            due = started + index / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                late = max(late, -wait)
            tasks.append(asyncio.create_task(send(index, due, counted=index >= warmup)))
        await asyncio.gather(*tasks)
    return figures, late


def measure_reads(
    *, customers: int, devices: int, readings: int, rates: Sequence[float], seconds: float, seed: int = 21,
    workers: Sequence[int] = (1,),
) -> ReadFigures:
    """The whole benchmark in a database of its own; answers its figures."""
    urls = resolve_services(get_settings(), need_broker=False)
    with temporary_database(urls.database_url) as database_url:
        started = time.perf_counter()
        stored, open_orders = load_fleet(database_url, customers=customers, devices=devices, readings=readings)
        load_seconds = time.perf_counter() - started
        print(
            f"loaded {customers:,} customers, {devices:,} devices, {stored:,} readings over {HISTORY_DAYS} days, "
            f"{open_orders:,} open service orders in {load_seconds:.0f} s",
            flush=True,
        )
        owners, pairs = request_targets(database_url, max(100, int(max(rates) * seconds)), seed)
        admin_token = secrets.token_urlsafe(24)
        database = Database(database_url, max_connections=1)
        with database.transaction() as conn:
            tokens = [create_token(conn, role="dispatcher", name=f"bench reads {n + 1}") for n in range(DISPATCHERS)]
        database.close()
        # The broker is not what is measured: one that refuses at once keeps /health's probe out of it.
        env = service_env(database_url, str(urls.mqtt_url or "mqtt://127.0.0.1:1"), admin_token)
        settle(database_url)
        runs = []
        for processes in workers:
            with careloop_api(env, workers=processes) as api:
                warm_up(api.base_url, tokens, owners=owners, pairs=pairs)
                for rate in rates:
                    logged = api.started.logged_size()
                    endpoints, late = asyncio.run(
                        generate_load(api.base_url, tokens, rate=rate, seconds=seconds, owners=owners, pairs=pairs)
                    )
                    runs.append(RateRun(rate, late, endpoints, processes))
                    problems = api.started.problems_since(logged)
                    if problems:
                        print(f"`careloop api --workers {processes}` at {rate:g} requests/s logged:", *problems,
                              sep="\n  ", flush=True)
                    api.started.check_alive()
                    time.sleep(2)  # what piled up at one rate is not the next one's
    return ReadFigures(customers, devices, stored, open_orders, load_seconds, seconds, runs)


def bench_reads(args: argparse.Namespace) -> int:
    print(
        f"careloop bench reads: {args.customers:,} customers, {args.devices:,} devices, about {args.readings:,} "
        f"readings; a real `careloop api` on loopback (--workers {args.api_workers}), {args.rate} requests/s open-loop "
        f"for {args.seconds:g} s over the customer 360, a device's 30-day telemetry in 6 h buckets and the dispatch "
        "board's open orders",
        flush=True,
    )
    figures = measure_reads(
        customers=args.customers, devices=args.devices, readings=args.readings,
        rates=[float(rate) for rate in str(args.rate).split(",")], seconds=args.seconds,
        workers=[int(count) for count in str(args.api_workers).split(",")],
    )
    print("\n".join(figures.lines()))
    return 0
