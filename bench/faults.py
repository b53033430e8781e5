"""`careloop bench faults`: from a fault published over MQTT to its service order and call task visible through the
API, while the ingester is loaded at 10%, 50% and 90% of the rate it can drain.

The drain rate is measured first in the same run (`bench ingest`'s drain: messages queued in the broker, then one
ingester empties them), or taken from --drain-rate. Then a real `careloop ingest`, `careloop engine` and
`careloop api` run as subprocesses on a database of the benchmark's own, with a simulated fleet and its owners,
and for each rate a publishing process sends the fleet's telemetry at that share of the drain rate, open-loop (each
message at its scheduled time, from packets encoded before the clock starts: bench.publisher), with --faults fault
events spread evenly among them, each on a device of its own whose rule opens an order and calls. Each fault is
timed from its scheduled publish until `GET /service-orders?device_id=`
shows its order and `GET /call-tasks?device_id=` its call task, over HTTP with a token. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import queue
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from tqdm import tqdm

from bench.fixtures import jobs_run_since, register_devices, temporary_database
from bench.ingest import METRICS_PER_MESSAGE, measure_ingest
from bench.ingest import device_ids as ingest_device_ids
from bench.proactive import action_names
from bench.processes import careloop_api, careloop_process, percentile, service_env
from bench.publisher import PacedPublisher, first_due_time
from bench.replay import fault_codes_of
from careloop.db import Database, fetch_all, fetch_value
from careloop.demo import register_fleet
from careloop.mqtt import events_topic, telemetry_topic
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from devices.catalog import load_catalog
from ingest.subscriber import forget_session
from rules.evaluation import ActiveRule, active_rules
from rules.service import load_builtin_catalog
from simulators.fleet import make_fleet
from simulators.simulation import Simulation

P99_TARGET_S = 1.0
# A fault's way, in turn: the ingester receives it; the engine opens its detection (after the batch's commit and
# notification); the actions job opens the order and the call task; the API shows both to a poll.
PHASES = ("received", "detected", "acted", "seen")
TARGET_SHARE = 0.5  # the target is read at 50% of the drain rate
VISIBLE_TIMEOUT_S = 30.0
BACKLOG_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Reporting:
    """What one device reports each time: its metrics (realistic values from the simulator), counters rising."""

    device_id: str
    metrics: dict[str, float]
    counters: tuple[str, ...]


@dataclass
class RateFigures:
    """One rate's run: faults published and how long each took to show through the API."""

    share: float
    rate: float  # messages/s asked of the publisher
    published: int = 0
    messages: int = 0  # everything the publisher sent, telemetry and faults
    publish_seconds: float = 0.0
    late_s: float = 0.0  # how far behind its schedule the publisher fell at worst
    seconds: list[float] = field(default_factory=list)  # both visible
    order_seconds: list[float] = field(default_factory=list)
    call_seconds: list[float] = field(default_factory=list)
    # where each fault's time went, from the tables' own times (seconds): publish to the ingester's receipt, to the
    # engine's detection, to the actions job's order and call task, to the API poll that saw both
    phases: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in PHASES})
    backlog_s: float = 0.0  # after the last publish, until every message sent was stored
    missing_readings: int = 0  # readings sent but not stored when the wait for the backlog gave up
    quarantined: dict[str, int] = field(default_factory=dict)  # then: the quarantine's reasons

    @property
    def achieved_rate(self) -> float:
        return self.messages / self.publish_seconds if self.publish_seconds else 0.0

    def quantile(self, share: float, values: list[float] | None = None) -> float | None:
        return percentile(self.seconds if values is None else values, share)

    def as_dict(self) -> dict:
        return {
            "share": self.share, "rate": self.rate, "achieved_rate": self.achieved_rate, "faults": self.published,
            "visible": len(self.seconds), "p50_s": self.quantile(0.5), "p99_s": self.quantile(0.99),
            "max_s": max(self.seconds) if self.seconds else None,
            "order_p99_s": self.quantile(0.99, self.order_seconds),
            "call_p99_s": self.quantile(0.99, self.call_seconds), "backlog_s": self.backlog_s,
            "phases": {name: {"p50_s": self.quantile(0.5, values), "p99_s": self.quantile(0.99, values)}
                       for name, values in self.phases.items()},
        }  # fmt: skip


@dataclass
class FaultFigures:
    drain_rate: float  # messages/s one ingester drains
    drain_measured: bool
    devices: int
    rates: list[RateFigures]
    faulted: list[tuple[str, str]] = field(default_factory=list)  # (device, fault code) published
    with_order_and_call: int = 0  # of the faulted devices, those with a service order and a call task in the tables

    def lines(self) -> list[str]:
        out = [
            f"{'share':>5} {'asked/s':>8} {'sent/s':>8} {'faults':>6} {'visible':>7} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'max ms':>7} {'order p99':>9} {'call p99':>8} {'backlog s':>9}"
        ]
        for figures in self.rates:
            row = figures.as_dict()
            out.append(
                f"{figures.share:>5.0%} {figures.rate:>8,.0f} {figures.achieved_rate:>8,.0f} {figures.published:>6} "
                f"{len(figures.seconds):>7} {_ms(row['p50_s']):>7} {_ms(row['p99_s']):>7} {_ms(row['max_s']):>7} "
                f"{_ms(row['order_p99_s']):>9} {_ms(row['call_p99_s']):>8} {figures.backlog_s:>9.1f}"
            )
        for figures in self.rates:
            out.append(
                f"{figures.share:>5.0%} where the time went, p50/p99 ms: " + ", ".join(
                    f"{name} {_ms(figures.quantile(0.5, values))}/{_ms(figures.quantile(0.99, values))}"
                    for name, values in figures.phases.items()
                )
            )
        out.append(
            f"in the tables: {self.with_order_and_call} of {len(self.faulted)} faulted devices have a service order "
            "and a call task"
        )
        at_target = next((f for f in self.rates if abs(f.share - TARGET_SHARE) < 1e-9), None)
        if at_target is not None and at_target.seconds:
            p99 = at_target.quantile(0.99)
            mark = "✓" if p99 <= P99_TARGET_S and len(at_target.seconds) == at_target.published else "✗"
            out.append(
                f"target: p99 ≤ {P99_TARGET_S * 1000:.0f} ms at {TARGET_SHARE:.0%} of the drain rate: "
                f"{_ms(p99)} ms, {len(at_target.seconds)} of {at_target.published} visible {mark}"
            )
        for figures in self.rates:
            if figures.missing_readings:
                out.append(
                    f"{figures.share:.0%}: {figures.missing_readings:,} readings sent were not stored "
                    f"{BACKLOG_TIMEOUT_S:.0f} s after the last publish; quarantine: {figures.quarantined or 'empty'}"
                )
        return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


# ---------------------------------------------------------------- the fleet


def fault_targets(fleet_models: dict[str, str], rules: Sequence[ActiveRule], count: int) -> list[tuple[str, str]]:
    """`count` devices, each with a fault code whose rule opens a service order and calls the owner; one fault per
    device, so no rule's cooldown or open detection can hide one."""
    catalog = load_catalog()
    calling = {
        code
        for rule in rules
        if {"open_service_order", "call_customer"} <= action_names(rule)
        for code in fault_codes_of(rule.compiled.rule.when)
    }
    targets = []
    for device_id, model in sorted(fleet_models.items()):
        codes = sorted(code for code in catalog[model].fault_codes if code in calling)
        if codes:
            targets.append((device_id, codes[len(targets) % len(codes)]))
        if len(targets) == count:
            break
    if len(targets) < count:
        raise SystemExit(f"careloop bench faults: only {len(targets)} devices have a calling fault rule; more devices")
    return targets


def reportings(fleet, seed: int) -> list[Reporting]:
    """Each device's metrics as the simulator reports them now: the values the background telemetry repeats."""
    now = dt.datetime.now(dt.UTC)
    simulation = Simulation(fleet, seed=seed, start=now - dt.timedelta(minutes=1), offline_per_day=0)
    catalog = load_catalog()
    latest: dict[str, dict[str, float]] = {}
    for message in simulation.step(now, 60):
        if message.topic.endswith("/telemetry") and isinstance(message.payload, dict):
            for reading in message.payload.get("readings", [message.payload]):
                latest[message.topic.split("/")[3]] = dict(reading["metrics"])
    return [
        Reporting(
            device.device_id,
            latest.get(device.device_id, {}),
            tuple(name for name, spec in catalog[device.model].metrics.items() if spec.counter),
        )
        for device in fleet
        if latest.get(device.device_id)
    ]


# ---------------------------------------------------------------- the publishing process


def publish_at_rate(
    mqtt_url: str,
    reporting: Sequence[Reporting],
    rate: float,
    seconds: float,
    faults: Sequence[tuple[str, str]],
    first_seq: int,
    results: multiprocessing.Queue,
) -> None:
    """Open-loop: message k at start + k/rate, the fleet's telemetry in turn, with that due time as its ts; fault
    i replaces the message due at (i + 0.5) * seconds / len(faults). Puts ("fault", device_id, due time) per fault
    once it is written, then ("done", messages sent, seconds, worst lateness). Pre-encoded (bench.publisher), not
    paho: the load generator must not take the cores the ingester and the engine are measured on."""
    publisher = PacedPublisher(mqtt_url)
    seq = {device.device_id: first_seq for device in reporting}
    for device_id, _code in faults:
        seq.setdefault(device_id, first_seq)
    total = max(1, int(rate * seconds))
    fault_at = {min(total - 1, int((i + 0.5) * total / max(1, len(faults)))): fault for i, fault in enumerate(faults)}
    start = first_due_time(total)
    due = [start + index / rate for index in range(total)]
    messages = []
    for index in range(total):
        stamp = dt.datetime.fromtimestamp(due[index], dt.UTC).isoformat()
        if index in fault_at:
            device_id, code = fault_at[index]
            seq[device_id] += 1
            body = {"seq": seq[device_id], "ts": stamp, "type": "fault", "code": code, "detail": "bench fault"}
            messages.append((events_topic(device_id), json.dumps(body).encode()))
            continue
        device = reporting[index % len(reporting)]
        seq[device.device_id] += 1
        metrics = dict(device.metrics)
        for name in device.counters:  # a counter never goes back: a minute of running per report
            metrics[name] = metrics[name] + seq[device.device_id] / 60
        body = {"seq": seq[device.device_id], "ts": stamp, "metrics": metrics}
        messages.append((telemetry_topic(device.device_id), json.dumps(body).encode()))
    packets = PacedPublisher.encode(messages)
    late, sent = 0.0, 0
    for index in sorted(fault_at):  # up to each fault, then the fault is reported as written
        late = max(late, publisher.publish_paced(packets[sent:index + 1], due[sent:index + 1]))
        sent = index + 1
        results.put(("fault", fault_at[index][0], due[index]))
    late = max(late, publisher.publish_paced(packets[sent:], due[sent:]))
    publisher.close(total)
    results.put(("done", total, time.time() - start, late))


# ---------------------------------------------------------------- watching the API


def _visible(client: httpx.Client, device_id: str, want: str) -> bool:
    if want == "order":
        answer = client.get("/service-orders", params={"device_id": device_id, "limit": 10})
        return any(order["detection_ids"] for order in answer.json()["items"])
    answer = client.get("/call-tasks", params={"device_id": device_id, "limit": 10})
    return bool(answer.json()["items"])


def run_rate(
    api_url: str, token: str, mqtt_url: str, database: Database, reporting: Sequence[Reporting],
    figures: RateFigures, seconds: float, faults: Sequence[tuple[str, str]], first_seq: int,
) -> None:  # fmt: skip
    """One rate: the publisher runs; each fault is polled for through the API until its order and call show."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stored_before = _stored(database)
    publisher = context.Process(
        target=publish_at_rate, args=(mqtt_url, reporting, figures.rate, seconds, faults, first_seq, results)
    )
    publisher.start()
    outstanding: dict[str, tuple[float, float | None, float | None]] = {}  # device -> (published, order, call)
    seen: dict[str, tuple[float, float]] = {}  # device -> (published, both visible)
    done = None
    bar = tqdm(total=len(faults), desc=f"{figures.share:.0%} of the drain rate", unit="fault", leave=False)
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        give_up = None
        while True:
            try:
                while True:
                    item = results.get(timeout=0.005 if outstanding else 0.05)
                    if item[0] == "fault":
                        outstanding[item[1]] = (item[2], None, None)
                        figures.published += 1
                    else:
                        done = item
                        give_up = time.time() + VISIBLE_TIMEOUT_S
            except queue.Empty:
                pass
            for device_id, (published, order_at, call_at) in list(outstanding.items()):
                if order_at is None and _visible(client, device_id, "order"):
                    order_at = time.time()
                if call_at is None and _visible(client, device_id, "call"):
                    call_at = time.time()
                if order_at is not None and call_at is not None:
                    figures.order_seconds.append(order_at - published)
                    figures.call_seconds.append(call_at - published)
                    figures.seconds.append(max(order_at, call_at) - published)
                    seen[device_id] = (published, max(order_at, call_at))
                    del outstanding[device_id]
                    bar.update(1)
                else:
                    outstanding[device_id] = (published, order_at, call_at)
            if done is not None and (not outstanding or time.time() > give_up):
                break
            if done is None and not publisher.is_alive() and results.empty():
                raise RuntimeError(f"the publishing process ended ({publisher.exitcode}) before it was done")
    bar.close()
    _phases(database, seen, figures.phases)
    publisher.join(timeout=30)
    _kind, figures.messages, figures.publish_seconds, figures.late_s = done
    # The backlog: how long after the last publish the ingester stored the last message sent (telemetry rows are
    # counted; a fault event stores no reading).
    expected = stored_before + sum(
        len(reporting[index % len(reporting)].metrics) for index in range(figures.messages)
    ) - _fault_readings(reporting, figures.messages, len(faults))
    waited_from = time.monotonic()
    while (stored := _stored(database)) < expected and time.monotonic() - waited_from < BACKLOG_TIMEOUT_S:
        time.sleep(0.2)
    figures.backlog_s = time.monotonic() - waited_from
    if stored < expected:
        figures.missing_readings = expected - stored
        with database.connection() as conn:
            figures.quarantined = {
                row["reason"]: row["n"]
                for row in fetch_all(conn, "SELECT reason, count(*) AS n FROM quarantine GROUP BY reason")
            }


def _phases(database: Database, seen: dict[str, tuple[float, float]], phases: dict[str, list[float]]) -> None:
    """Split each fault's time by the moments the tables keep: the fault event's receipt by the ingester, its
    detection's creation (the engine's transaction), its call task's (the actions job's, which opens the order in
    the same transaction)."""
    if not seen:
        return
    with database.connection() as conn:
        rows = fetch_all(conn, """
            SELECT DISTINCT ON (d.device_id) d.device_id, extract(epoch FROM e.received_at) AS received,
                   extract(epoch FROM d.created_at) AS detected, extract(epoch FROM c.created_at) AS acted
            FROM detections d
            JOIN service_orders o ON d.id = ANY(o.detection_ids)
            JOIN call_tasks c ON c.order_id = o.id
            JOIN LATERAL (SELECT received_at FROM events WHERE device_id = d.device_id AND type = 'fault'
                          ORDER BY received_at DESC LIMIT 1) e ON true
            WHERE d.device_id = ANY(%s)
            ORDER BY d.device_id, d.created_at""", (list(seen),))  # fmt: skip
    for row in rows:
        published, visible = seen[row["device_id"]]
        moments = [published, float(row["received"]), float(row["detected"]), float(row["acted"]), visible]
        for name, start, end in zip(PHASES, moments[:-1], moments[1:], strict=True):
            phases[name].append(end - start)


def _fault_readings(reporting: Sequence[Reporting], total: int, faults: int) -> int:
    """The readings of the telemetry messages the faults took the place of."""
    indices = {min(total - 1, int((i + 0.5) * total / max(1, faults))) for i in range(faults)}
    return sum(len(reporting[index % len(reporting)].metrics) for index in indices)


def _stored(database: Database) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, "SELECT count(*) FROM telemetry"))


# ---------------------------------------------------------------- the run


def measure_drain_rate(database_url: str, mqtt_url: str, messages: int) -> float:
    """Messages/s one ingester drains from the broker (`bench ingest --mode drain`'s measurement)."""
    devices = ingest_device_ids(max(20, min(400, messages // 50)))
    database = Database(database_url, max_connections=1)
    with database.transaction() as conn:
        register_devices(conn, devices)
    database.close()
    figure, _rows, _size = measure_ingest(database_url, mqtt_url, messages, 2, devices, 1)
    # From the readings stored, not the messages queued: a broker with a queue limit (Mosquitto's default keeps
    # 1,000 for an absent session) drops the rest, and measure_ingest then says so.
    return figure.rows_per_s / METRICS_PER_MESSAGE


def measure_faults(
    *, shares: Sequence[float], faults: int, seconds: float, devices: int, drain_rate: float | None,
    drain_messages: int, seed: int,
) -> FaultFigures:  # fmt: skip
    """The whole benchmark in a database of its own; answers its figures."""
    urls = resolve_services(get_settings(), need_broker=True)
    with temporary_database(urls.database_url) as database_url:
        measured = drain_rate is None
        if drain_rate is None:
            drain_rate = measure_drain_rate(database_url, urls.mqtt_url, drain_messages)
            print(f"drain rate: {drain_rate:,.0f} messages/s (one ingester emptying {drain_messages:,} queued)")
        fleet = make_fleet(max(devices, faults * len(shares) + 50), seed)
        register_fleet(database_url, fleet, seed=seed)
        database = Database(database_url, max_connections=2)
        with database.transaction() as conn:
            load_builtin_catalog(conn)
            rules = active_rules(conn)
        targets = fault_targets({device.device_id: device.model for device in fleet}, rules, faults * len(shares))
        reporting = reportings(fleet, seed)
        token = secrets.token_urlsafe(24)
        env = service_env(database_url, urls.mqtt_url, token)
        name = f"bench-faults-{uuid.uuid4().hex[:8]}"
        figures = FaultFigures(drain_rate, measured, len(fleet), [])
        ingest_args = ["--name", name, "--share-group", name, "--metrics-port", "0"]
        # The time-window rules hourly: what is measured is the path a fault takes, not the five-minute job.
        engine_args = ["--metrics-port", "0", "--window-every", "1h", "--baselines-every", "1h", "--trends-every", "1h"]
        started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        try:
            with (
                careloop_process("ingest", ingest_args, env) as ingester,
                careloop_process("engine", engine_args, env) as engine,
                careloop_api(env) as api,
            ):
                deadline = time.monotonic() + 180
                # The engine runs every job once at start: time the faults after those, not behind them.
                while not {"sweep", "window"} <= jobs_run_since(database, started_at):
                    ingester.check_alive()
                    engine.check_alive()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the engine's first jobs did not run within 180 s:\n{engine.tail()}")
                    time.sleep(0.2)
                first_seq = 0
                for number, share in enumerate(shares):
                    rate = RateFigures(share, share * drain_rate)
                    chosen = targets[number * faults:(number + 1) * faults]
                    run_rate(api.base_url, token, urls.mqtt_url, database, reporting, rate, seconds, chosen, first_seq)
                    first_seq += int(rate.rate * seconds) + 1
                    figures.rates.append(rate)
                    ingester.check_alive()
                    engine.check_alive()
                figures.faulted = targets[: faults * len(shares)]
                with database.connection() as conn:
                    # Straight from the tables, beside what the API showed: each faulted device's order and call.
                    figures.with_order_and_call = int(fetch_value(
                        conn,
                        "SELECT count(DISTINCT o.device_id) FROM service_orders o "
                        "JOIN call_tasks c ON c.device_id = o.device_id WHERE o.device_id = ANY(%s)",
                        ([device_id for device_id, _code in figures.faulted],),
                    ))
        finally:
            forget_session(urls.mqtt_url, name)
            database.close()
    return figures


def bench_faults(args: argparse.Namespace) -> int:
    shares = [int(share) / 100 for share in args.rates.split(",")]
    print(
        f"careloop bench faults: {args.faults} faults at each of {', '.join(f'{s:.0%}' for s in shares)} of the "
        f"ingest drain rate, spread over {args.seconds:g} s of fleet telemetry each; a real `careloop ingest`, "
        "`careloop engine` and `careloop api`; each fault timed from its publish to its service order and call task "
        "visible through the API",
        flush=True,
    )
    figures = measure_faults(
        shares=shares, faults=args.faults, seconds=args.seconds, devices=args.devices, drain_rate=args.drain_rate,
        drain_messages=args.drain_messages, seed=args.seed,
    )  # fmt: skip
    print(
        f"{figures.devices} devices reporting; drain rate {figures.drain_rate:,.0f} messages/s "
        f"({'measured in this run' if figures.drain_measured else 'given'})"
    )
    print("\n".join(figures.lines()))
    return 0
