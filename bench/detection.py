"""`careloop bench detection`: how well the rule engine finds faults, against the simulator's ground truth.

A simulated fleet with injected faults replays days of history through the real ingest and engine code on a
simulated clock, and is scored per fault code (recall, precision, time to detect); then faults published over
MQTT time the live path (publish → ingester → commit → engine → detection). In a database of its own, dropped
afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
import uuid
from collections import defaultdict

from tqdm import tqdm

from bench.fixtures import jobs_run_since, register_devices, temporary_database
from bench.replay import Fault, Replay, collect_faults, fault_codes_of
from careloop.db import Database, fetch_all
from careloop.demo import register_fleet
from careloop.mqtt import events_topic, make_connection
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from ingest.subscriber import Ingester, forget_session
from rules.engine import Engine, Schedule
from rules.evaluation import active_rules
from rules.service import load_builtin_catalog
from simulators.fleet import make_fleet
from simulators.simulation import Simulation


def replay(database: Database, fleet, *, start: dt.datetime, days: float, step_s: int, faults: str, seed: int):
    """Run the fleet's history through ingest and the engine on a simulated clock; answers the ground truth."""
    simulation = Simulation(fleet, seed=seed, start=start, faults=faults)
    truth: dict[tuple[str, str, str], Fault] = {}
    finished = Replay(database, simulation, start=start).run(
        start,
        int(days * 86400 // step_s),
        step_s,
        after_step=lambda _moment: collect_faults(simulation.take_fault_transitions(), truth),
    )
    return list(truth.values()), finished


def score(truth: list[Fault], detections: list[dict], codes_of_rule: dict[str, set[str]], end: dt.datetime):
    """Per fault code: recall, precision and time to detect; plus unmatched fault detections."""
    by_device: dict[str, list[Fault]] = defaultdict(list)
    for fault in truth:
        by_device[fault.device_id].append(fault)
    rows: dict[str, dict] = {}
    for fault in truth:
        row = rows.setdefault(
            fault.code, {"kind": fault.kind, "faults": 0, "found": 0, "detections": 0, "true": 0, "delays": []}
        )
        row["faults"] += 1
    matched: set[int] = set()
    false_detections = 0
    for detection in detections:
        codes = codes_of_rule.get(detection["rule_id"], set())
        if not codes:
            continue
        hits = [
            fault
            for fault in by_device.get(detection["device_id"], [])
            if fault.code in codes and fault.started_at <= detection["opened_at"] <= (fault.cleared_at or end)
        ]
        for code in {fault.code for fault in hits} or codes & rows.keys():
            rows.setdefault(code, {"kind": "", "faults": 0, "found": 0, "detections": 0, "true": 0, "delays": []})
            rows[code]["detections"] += 1
            rows[code]["true"] += bool(hits)
        if not hits:
            false_detections += 1
        for fault in hits:
            if id(fault) not in matched:
                matched.add(id(fault))
                rows[fault.code]["found"] += 1
                rows[fault.code]["delays"].append((detection["opened_at"] - fault.started_at).total_seconds())
    return rows, false_detections


def _minutes(seconds: list[float], quantile: float) -> str:
    if not seconds:
        return "-"
    ordered = sorted(seconds)
    return f"{ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] / 60:.1f}"


def measure_live_latency(database: Database, database_url: str, mqtt_url: str, count: int) -> list[float]:
    """Seconds from publishing a fault over MQTT to its detection, through the real ingester and engine."""
    devices = [f"LATENCY-{n:04d}" for n in range(count)]
    with database.transaction() as conn:
        register_devices(conn, devices)
    ingester = Ingester(database, mqtt_url, name=f"bench-{uuid.uuid4().hex[:8]}", share_group="bench-latency")
    engine = Engine(database, schedule=Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600))
    stop = threading.Event()
    started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    listener = threading.Thread(target=engine.serve, args=(stop,), kwargs={"database_url": database_url}, daemon=True)
    ingester.start()
    listener.start()
    ingester.connected.wait(timeout=10)
    engine.listening.wait(timeout=10)
    # The engine runs its scheduled jobs once at start; time the live path after them, not behind them.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not {"sweep", "window"} <= jobs_run_since(database, started_at):
        time.sleep(0.2)
    published: dict[str, float] = {}
    connection = make_connection(mqtt_url, f"bench-publisher-{uuid.uuid4().hex[:8]}")
    connection.connect()
    connection.client.loop_start()
    for device in tqdm(devices, desc="publish → detection", unit="fault"):
        event = {"seq": 1, "ts": dt.datetime.now(dt.UTC).isoformat(), "type": "fault", "code": "E21"}
        published[device] = time.time()
        connection.client.publish(events_topic(device), json.dumps(event), qos=1).wait_for_publish(10)
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    opened: dict[str, float] = {}
    while len(opened) < count and time.monotonic() < deadline:
        with database.connection() as conn:
            rows = fetch_all(
                conn,
                "SELECT device_id, extract(epoch FROM created_at) AS at FROM detections WHERE device_id = ANY(%s)",
                (devices,),
            )
        opened = {row["device_id"]: float(row["at"]) for row in rows}
        time.sleep(0.1)
    connection.client.loop_stop()
    connection.client.disconnect()
    stop.set()
    listener.join(timeout=30)
    ingester.stop()
    forget_session(mqtt_url, ingester.name)
    return [opened[device] - published[device] for device in devices if device in opened]


def bench_detection(args: argparse.Namespace) -> int:
    urls = resolve_services(get_settings(), need_broker=True)
    fleet = make_fleet(args.devices, args.seed)
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=args.days)
    print(
        f"careloop bench detection: {len(fleet)} simulated devices, {args.days:g} days from {start:%Y-%m-%d %H:%M}Z, "
        f"step {args.step}s, faults {args.faults!r}, seed {args.seed}"
    )
    with temporary_database(urls.database_url) as database_url:
        register_fleet(database_url, fleet, seed=args.seed)
        database = Database(database_url, max_connections=2)
        with database.transaction() as conn:
            load_builtin_catalog(conn)
            rules = active_rules(conn)
        started = time.perf_counter()
        truth, finished = replay(
            database, fleet, start=start, days=args.days, step_s=args.step, faults=args.faults, seed=args.seed
        )
        seconds = time.perf_counter() - started
        with database.connection() as conn:
            detections = fetch_all(conn, "SELECT rule_id, device_id, opened_at, cleared_at FROM detections")
        latencies = measure_live_latency(database, database_url, urls.mqtt_url, args.live_faults)
        database.close()
    codes_of_rule = {rule.id: fault_codes_of(rule.compiled.rule.when) for rule in rules}
    rows, false_detections = score(truth, detections, codes_of_rule, finished)
    device_days = len(fleet) * args.days
    print(f"replayed in {seconds:.0f} s; {len(truth)} injected faults, {len(detections)} detections in all\n")
    print(
        f"{'fault':<6} {'kind':<16} {'faults':>6} {'found':>6} {'recall':>7} {'detections':>10} {'precision':>9} "
        f"{'detect min p50':>14} {'p95':>6}"
    )
    for code in sorted(rows):
        row = rows[code]
        recall = row["found"] / row["faults"] if row["faults"] else float("nan")
        precision = row["true"] / row["detections"] if row["detections"] else float("nan")
        print(
            f"{code:<6} {row['kind']:<16} {row['faults']:>6} {row['found']:>6} {recall:>7.2f} {row['detections']:>10} "
            f"{precision:>9.2f} {_minutes(row['delays'], 0.5):>14} {_minutes(row['delays'], 0.95):>6}"
        )
    total_faults = sum(row["faults"] for row in rows.values())
    total_found = sum(row["found"] for row in rows.values())
    total_detections = sum(row["detections"] for row in rows.values())
    total_true = sum(row["true"] for row in rows.values())
    all_delays = [delay for row in rows.values() for delay in row["delays"]]
    print(
        f"{'all':<6} {'':<16} {total_faults:>6} {total_found:>6} {total_found / max(total_faults, 1):>7.2f} "
        f"{total_detections:>10} {total_true / max(total_detections, 1):>9.2f} "
        f"{_minutes(all_delays, 0.5):>14} {_minutes(all_delays, 0.95):>6}"
    )
    print(
        f"\nfalse fault detections: {false_detections} in {device_days:,.0f} device-days = "
        f"{1000 * false_detections / device_days:.2f} per 1,000 device-days"
    )
    if latencies:
        ordered = sorted(latencies)
        print(
            f"live path, publish over MQTT -> ingest commit -> engine -> detection: {len(latencies)} of "
            f"{args.live_faults} faults detected; p50 {ordered[len(ordered) // 2] * 1000:.0f} ms, "
            f"p95 {ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000:.0f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms"
        )
    other = defaultdict(int)
    for detection in detections:
        if not codes_of_rule.get(detection["rule_id"]):
            other[detection["rule_id"]] += 1
    if other:
        print("other rules (maintenance, trade-in, offline, anomaly, trend, birthday; no ground truth):")
        for rule_id, count in sorted(other.items(), key=lambda item: -item[1]):
            print(f"  {rule_id:<32} {count:>6}")
    return 0
