"""Engine partitions (`careloop engine --partition I/N`) against the real database and broker: together they open
exactly what one engine over the whole fleet opens, none twice, none missed, and a partition's process killed and
started again goes on where it stopped."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg2 import sql

from careloop.db import Database, fetch_all
from careloop.demo import register_fleet
from careloop.heartbeat import Heartbeat, process_health
from careloop.mqtt import events_topic
from careloop.partitions import Partition
from ingest.service import InboundMessage
from rules.engine import Engine, Schedule
from rules.partition import devices_in_partition
from rules.service import create_rule, load_builtin_catalog
from simulators.fleet import make_fleet
from simulators.simulation import Simulation
from tests.conftest import _admin_connection, _clone, _with_database
from tests.factories import make_device
from tests.helpers import event, publish_all, start_careloop, store, wait_until

pytestmark = pytest.mark.integration

THREE = [Partition(index, 3) for index in range(3)]
RARELY = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600)
FAN_STALL = {
    "id": "hood-stall",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"call_customer": {"reason": "stalled fan"}}],
    "severity": "critical",
    "cooldown": "1d",
}


# ---------------------------------------------------------------- the partition value and the hash


@pytest.mark.parametrize(
    ("text", "problem"),
    [("3/3", "from 0 to 2"), ("-1/3", "write I/N"), ("1/0", "from 1 to"), ("a/b", "write I/N"), ("", "write I/N")],
)
def test_a_partition_that_cannot_be_says_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Partition.parse(text)


def test_a_partition_reads_as_written() -> None:
    assert Partition.parse(" 2 / 5 ") == Partition(2, 5)
    assert str(Partition(2, 5)) == "2/5"


def test_partitions_hold_every_device_once_and_share_the_fleet_evenly(conn) -> None:
    devices = {make_device(conn).id for _ in range(300)}
    conn.commit()
    held = [set(devices_in_partition(conn, partition=partition)) for partition in THREE]
    assert set.union(*held) == devices
    assert sum(len(share) for share in held) == len(devices)  # no device in two partitions
    assert all(70 <= len(share) <= 130 for share in held), [len(share) for share in held]
    # Asked about a few devices, a partition answers those of its own, the same as for the whole fleet.
    some = sorted(devices)[:40]
    assert set(devices_in_partition(conn, partition=THREE[1], device_ids=some)) == held[1] & set(some)
    assert devices_in_partition(conn, partition=Partition(0, 1)) == sorted(devices)


def test_an_engine_names_the_running_engines_whose_partition_count_differs(database: Database) -> None:
    beats = [Heartbeat(database, process=f"engine[{partition}]:test", kind="engine") for partition in ("0/2", "1/3")]
    beats.append(Heartbeat(database, process="engine:test", kind="engine"))
    for beat, partition in zip(beats, ["0/2", "1/3", "all"], strict=True):
        beat.record(partition=partition)
        beat.beat()
    assert Engine(database, partition=THREE[0]).partitions_disagreeing() == ["engine[0/2]:test (0/2)"]
    assert Engine(database, partition=Partition(1, 2)).partitions_disagreeing() == ["engine[1/3]:test (1/3)"]
    assert Engine(database).partitions_disagreeing() == []


# ---------------------------------------------------------------- three partitions against one engine


@pytest.fixture
def twin_database(database_server_url: str, template_database: str) -> Iterator[Database]:
    """A second fresh database, beside the test's own: one engine works in one, three partitions in the other."""
    name = f"careloop_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection(database_server_url)
    _clone(admin, name, template_database)
    database = Database(_with_database(database_server_url, name), max_connections=4)
    yield database
    database.close()
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


def stored_outcomes(database: Database) -> dict[str, list[dict]]:
    """Everything the engine writes, in an order that does not depend on which engine wrote first."""
    queries = {
        "detections": "SELECT rule_id, rule_version, device_id, severity, status, opened_at, cleared_at, dedup_key, "
        "explanation, clear_explanation, actions FROM detections ORDER BY dedup_key",
        "trend_fits": "SELECT device_id, metric, seconds, slope, fitted, points, fitted_at FROM trend_fits "
        "ORDER BY device_id, metric, seconds",
        "baselines": "SELECT model, metric, centre, spread, samples, learned_at FROM model_baselines "
        "ORDER BY model, metric",
    }
    with database.connection() as conn:
        return {name: fetch_all(conn, query) for name, query in queries.items()}


def test_three_partitions_open_exactly_what_one_engine_opens_over_days_of_a_simulated_fleet(
    database: Database, database_url: str, twin_database: Database
) -> None:
    """Days of a simulated fleet with injected faults go, step by step, into two databases alike. In one, a single
    engine evaluates each batch and runs its schedule; in the other, three partitions do the same at the same
    instants, side by side. Every detection (opened, cleared, explained, its actions), trend fit and baseline
    is the same in both."""
    seed, devices, days, step_s = 7, 90, 3, 3600
    fleet = make_fleet(devices, seed)
    for target in (database, twin_database):
        register_fleet(target.dsn, fleet, seed=seed)
        with target.transaction() as conn:
            load_builtin_catalog(conn)
    end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    start = end - dt.timedelta(days=days)
    simulation = Simulation(fleet, seed=seed, start=start, faults="all:0.3")
    clock = {"now": start}
    single = Engine(database, schedule=RARELY, clock=lambda: clock["now"])
    partitions = [
        Engine(twin_database, schedule=RARELY, clock=lambda: clock["now"], partition=partition)
        for partition in THREE
    ]

    def side_by_side(job) -> None:
        """One job of every partition at once, as three processes would run it."""
        with ThreadPoolExecutor(max_workers=3) as workers:
            list(workers.map(job, partitions))

    for step in range(days * 86400 // step_s):
        moment = start + dt.timedelta(seconds=(step + 1) * step_s)
        clock["now"] = moment
        messages = [InboundMessage(message.topic, message.encode(), moment)
                    for message in simulation.step(moment, step_s)]
        outcome = store(database, messages, now=moment)
        store(twin_database, messages, now=moment)
        changed = sorted(outcome.devices | outcome.status_devices)
        single.evaluate_batch(changed)
        side_by_side(lambda engine, changed=changed: engine.evaluate_batch(changed))
        if step % 24 == 23:  # daily: what the window rules read first, then the window itself
            single.learn_baselines()
            partitions[0].learn_baselines()  # only partition 0 runs it
            for engine in [single, *partitions]:
                assert engine.runs_fleet_wide_jobs == (engine.partition is None or engine.partition.index == 0)
            single.learn_trends()
            side_by_side(Engine.learn_trends)
            single.window()
            side_by_side(Engine.window)
        elif step % 4 == 3:
            single.sweep()
            side_by_side(Engine.sweep)

    one, three = stored_outcomes(database), stored_outcomes(twin_database)
    assert len(one["detections"]) >= 40, "the simulated fleet should give the engines work"
    assert three["detections"] == one["detections"]
    assert three["trend_fits"] == one["trend_fits"]
    assert three["baselines"] == one["baselines"]

    # The work really was shared: each partition opened detections of its own devices, by event and by schedule.
    with twin_database.connection() as conn:
        owner = {device: partition for partition in THREE for device in devices_in_partition(conn, partition=partition)}
        jobs = {row["job"]: row["summary"] for row in fetch_all(conn, "SELECT job, summary FROM engine_jobs")}
    detections = three["detections"]
    assert {owner[d["device_id"]] for d in detections} == set(THREE)
    kinds = {rule.id: rule.event_driven for rule in single_rules(database)}
    assert {kinds[d["rule_id"]] for d in detections} == {True, False}, "both event-driven and scheduled rules opened"
    assert any(d["status"] == "cleared" for d in detections)
    per_partition = {f"{job} {partition}" for job in ("sweep", "window", "trends") for partition in THREE}
    assert jobs.keys() == per_partition | {"baselines"}
    # Each scheduled run covered its own share of the fleet and no more: devices evaluated, trends fitted.
    share = {partition: sum(1 for owning in owner.values() if owning == partition) for partition in THREE}
    for partition in THREE:
        assert jobs[f"sweep {partition}"]["devices"] == jobs[f"window {partition}"]["devices"] == share[partition]
    fitted = [jobs[f"trends {partition}"]["fits"] for partition in THREE]
    assert sum(fitted) == len(three["trend_fits"]) and all(fitted), fitted


def single_rules(database: Database):
    from rules.evaluation import active_rules

    with database.connection() as conn:
        return active_rules(conn)


# ---------------------------------------------------------------- per batch, over the broker


def serve(engine: Engine, database_url: str) -> threading.Event:
    """Serve an engine in a thread until the returned event is set."""
    stop = threading.Event()
    threading.Thread(target=engine.serve, args=(stop,), kwargs={"database_url": database_url, "poll_s": 0.05},
                     daemon=True).start()
    assert engine.listening.wait(timeout=10), "the engine did not start listening"
    return stop


def detections_by_device(database: Database, rule_id: str) -> dict[str, int]:
    with database.connection() as conn:
        rows = fetch_all(conn, "SELECT device_id, count(*) AS n FROM detections WHERE rule_id = %s GROUP BY device_id",
                         (rule_id,))
    return {row["device_id"]: row["n"] for row in rows}


def test_each_partition_evaluates_the_batches_of_its_own_devices(
    conn, database: Database, database_url: str, mqtt_url: str, run_ingester
) -> None:
    create_rule(conn, FAN_STALL)
    devices = [make_device(conn).id for _ in range(15)]
    conn.commit()
    run_ingester()
    engines = []
    for partition in THREE:
        heartbeat = Heartbeat(database, process=f"engine[{partition}]:test", kind="engine")  # counted, not written
        engines.append(Engine(database, schedule=RARELY, heartbeat=heartbeat, partition=partition))
    stops = [serve(engine, database_url) for engine in engines]
    try:
        wait_until(lambda: all(engine.heartbeat.row()["details"].get("runs", {}).get("window") for engine in engines),
                   what="each partition's first scheduled runs")
        now = dt.datetime.now(dt.UTC)
        faults = [(events_topic(device), event(1, at=now, kind="fault", code="E21")) for device in devices]
        publish_all(mqtt_url, faults + faults[:5])  # five delivered twice
        wait_until(lambda: len(detections_by_device(database, "hood-stall")) == len(devices),
                   what="a detection for every faulted device")
        wait_until(lambda: sum(engine.heartbeat.row()["details"].get("detections_opened", 0) for engine in engines)
                   == len(devices), what="every partition's count of what it opened")
    finally:
        for stop in stops:
            stop.set()
    assert detections_by_device(database, "hood-stall") == dict.fromkeys(devices, 1)
    with database.connection() as reader:
        for engine in engines:
            own = devices_in_partition(reader, partition=engine.partition, device_ids=devices)
            assert engine.heartbeat.row()["details"]["detections_opened"] == len(own), engine.partition


# ---------------------------------------------------------------- a partition's process killed and started again


def sweeps_logged(log) -> int:
    return sum(1 for line in log.read_text().splitlines() if "sweep 1/3:" in line)


def heartbeat_rows(database: Database, process_prefix: str) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(conn, "SELECT process, pid, details FROM process_heartbeats WHERE process LIKE %s",
                         (process_prefix + "%",))


def test_a_partition_killed_and_started_again_catches_up_without_opening_anything_twice(
    conn, database: Database, database_url: str, mqtt_url: str, run_ingester, tmp_path
) -> None:
    create_rule(conn, FAN_STALL)
    devices = [make_device(conn).id for _ in range(30)]
    conn.commit()
    mine = devices_in_partition(conn, partition=THREE[1], device_ids=devices)
    others = devices_in_partition(conn, partition=THREE[0], device_ids=devices)
    assert len(mine) >= 3 and others, "30 devices spread over three partitions"
    run_ingester()
    neighbour = Engine(database, schedule=RARELY, partition=THREE[0])
    stops = [serve(neighbour, database_url)]
    log = tmp_path / "engine-1of3.log"
    arguments = ["engine", "--partition", "1/3", "--metrics-port", "0", "--sweep-every", "2s"]
    env = {"CARELOOP_DATABASE_URL": database_url, "CARELOOP_ENGINE_PARTITION": None}

    def fault(device: str, seq: int) -> tuple[str, dict]:
        return events_topic(device), event(seq, at=dt.datetime.now(dt.UTC), kind="fault", code="E21")

    process = start_careloop(arguments, env=env, log=log)
    try:
        wait_until(lambda: heartbeat_rows(database, "engine[1/3]:"), what="the partition's heartbeat", log=log,
                   timeout_s=60)
        [row] = heartbeat_rows(database, "engine[1/3]:")
        assert row["pid"] == process.pid and row["details"]["partition"] == "1/3"
        with database.connection() as reader:  # what GET /health lists
            [health] = [p for p in process_health(reader, dt.datetime.now(dt.UTC)) if p.process == row["process"]]
        assert (health.kind, health.stale, health.details["partition"]) == ("engine", False, "1/3")
        publish_all(mqtt_url, [fault(mine[0], 1)])
        wait_until(lambda: detections_by_device(database, "hood-stall").get(mine[0]) == 1, what="the first fault",
                   log=log)

        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # While it is down: its own devices wait for it (no other partition takes them), the neighbour's do not.
        publish_all(mqtt_url, [fault(mine[1], 1), fault(mine[2], 1), fault(mine[0], 1), fault(others[0], 1)])
        wait_until(lambda: others[0] in detections_by_device(database, "hood-stall"), what="the neighbour's fault")
        assert set(detections_by_device(database, "hood-stall")) == {mine[0], others[0]}

        sweeps_before = sweeps_logged(log)
        process = start_careloop(arguments, env=env, log=log)
        wait_until(lambda: {mine[1], mine[2]} <= set(detections_by_device(database, "hood-stall")),
                   what="the restarted partition's catching up", log=log, timeout_s=60)
        publish_all(mqtt_url, [fault(mine[2], 2)])  # the same fault reported again once it is back
        # Its predecessor's heartbeat is gone (its pid no longer runs); the new one names the partition.
        wait_until(lambda: [r["pid"] for r in heartbeat_rows(database, "engine[1/3]:")] == [process.pid],
                   what="one heartbeat of the partition, the new process's", log=log)
        wait_until(lambda: sweeps_logged(log) >= sweeps_before + 3, what="three sweeps of the restarted partition",
                   log=log)
    finally:
        for stop in stops:
            stop.set()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert detections_by_device(database, "hood-stall") == {mine[0]: 1, mine[1]: 1, mine[2]: 1, others[0]: 1}
    assert process.returncode == 0, log.read_text()[-2000:]
