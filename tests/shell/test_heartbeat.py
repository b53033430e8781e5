"""Heartbeats of the ingester and the engine, and /health reporting them, against the real database and broker."""

from __future__ import annotations

import copy
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import psycopg2
import pytest
from fastapi.testclient import TestClient
from psycopg2 import sql

from careloop import metrics
from careloop.app import create_app
from careloop.db import Database, execute, fetch_all
from careloop.heartbeat import STALE_AFTER_INTERVALS, Heartbeat, process_health
from careloop.mqtt import telemetry_topic
from ingest.subscriber import forget_session
from rules.engine import Engine, EssentialThreadDied, Schedule
from tests.factories import make_device
from tests.helpers import publish_all, reading, start_careloop, wait_until

pytestmark = pytest.mark.integration
ADMIN = "admin-token-for-tests"
RARELY = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600)


@pytest.fixture
def client(database, mqtt_url) -> TestClient:
    return TestClient(create_app(database, admin_token=ADMIN, mqtt_url=mqtt_url))


def processes(client: TestClient) -> dict[str, dict]:
    answer = client.get("/health")
    assert answer.status_code == 200
    return {process["process"]: process for process in answer.json()["processes"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_running_ingesters_heartbeat_shows_in_health_with_its_last_commit_and_counters(
    conn, database, mqtt_url, run_ingester, client
) -> None:
    device = make_device(conn)
    conn.commit()
    name = f"test-{uuid.uuid4().hex[:8]}"
    heartbeat = Heartbeat(database, process=f"ingest:{name}", kind="ingest", interval_s=0.2)
    ingester = run_ingester(name, heartbeat=heartbeat)
    heartbeat.start()
    try:
        wait_until(lambda: f"ingest:{name}" in processes(client), what="the ingester's first heartbeat")
        time.sleep(0.5)  # the broker's retained status messages of other tests' devices arrive on subscribing
        base = copy.deepcopy(ingester.totals)

        topic = telemetry_topic(device.id)
        sent = [(topic, reading(seq, fan_current_a=0.5, run_hours=float(seq))) for seq in (1, 2, 3)]
        publish_all(mqtt_url, sent)
        # What other runs publish on a shared broker reaches this ingester too: only this device's counts are exact.
        wait_until(lambda: ingester.totals.readings_stored == base.readings_stored + 6, what="three messages stored")
        publish_all(mqtt_url, [sent[0], (telemetry_topic(device.id), b"{not json")])  # a redelivery, a bad message
        wait_until(lambda: ingester.totals.readings_duplicate == base.readings_duplicate + 2
                   and ingester.totals.quarantined.get("invalid_json", 0) >= base.quarantined["invalid_json"] + 1,
                   what="the redelivery and the bad message")
        wait_until(
            lambda: processes(client)[f"ingest:{name}"]["details"].get("duplicates")
            == base.readings_duplicate + base.events_duplicate + 2,
            what="a heartbeat written after the last batch",
        )
        answer = client.get("/health").json()
        process = {p["process"]: p for p in answer["processes"]}[f"ingest:{name}"]
        assert answer["status"] == "ok"
        assert process["kind"] == "ingest" and process["pid"] == os.getpid() and process["stale"] is False
        details = process["details"]
        assert details["messages"] >= base.messages + 5
        assert details["readings"] == base.readings_stored + 6  # three messages of two metrics
        assert details["events"] == base.events_stored
        assert details["duplicates"] == base.readings_duplicate + base.events_duplicate + 2
        assert details["quarantined"].get("invalid_json", 0) >= base.quarantined["invalid_json"] + 1
        committed = dt.datetime.fromisoformat(process["last_commit_at"])
        assert dt.timedelta(0) <= dt.datetime.now(dt.UTC) - committed < dt.timedelta(seconds=10)
        assert 0 <= process["lag_s"] < 5
        assert process["queue_depth"] == 0
    finally:
        heartbeat.stop()
    assert f"ingest:{name}" not in processes(client), "a clean stop removes the process from /health"


def test_a_heartbeat_older_than_three_intervals_makes_health_degraded_for_that_process(database, client) -> None:
    now = dt.datetime.now(dt.UTC)
    fresh = Heartbeat(database, process="ingest:fresh", kind="ingest", interval_s=10)
    fresh.beat()
    # Written 31 s ago by a process that meant to write every 10 s: one second past the limit.
    late = now - dt.timedelta(seconds=STALE_AFTER_INTERVALS * 10 + 1)
    gone = Heartbeat(database, process="engine:gone-1", kind="engine", interval_s=10, clock=lambda: late)
    gone.beat()

    answer = client.get("/health")
    assert answer.status_code == 200, "a stale process degrades /health; only a database down makes it 503"
    body = answer.json()
    assert body["status"] == "degraded"
    by_name = {p["process"]: p for p in body["processes"]}
    assert by_name["engine:gone-1"]["stale"] is True and by_name["engine:gone-1"]["state"] == "stale"
    assert by_name["engine:gone-1"]["age_s"] >= 31
    assert by_name["ingest:fresh"]["stale"] is False and by_name["ingest:fresh"]["state"] == "ok"

    # The limit is three of the process's own intervals, measured at the time asked about.
    with database.connection() as check:
        at_limit = {p.process: p.stale for p in process_health(check, late + dt.timedelta(seconds=30))}
        past_limit = {p.process: p.stale for p in process_health(check, late + dt.timedelta(seconds=30.5))}
    assert at_limit["engine:gone-1"] is False and past_limit["engine:gone-1"] is True

    gone.stop()  # a clean stop forgets the row: nothing stale is left
    assert client.get("/health").json()["status"] == "ok"


def test_the_heartbeat_thread_lives_through_a_database_outage_and_writes_again_after_it(
    database_url, database_server_url
) -> None:
    heartbeat_database = Database(database_url, max_connections=1)
    heartbeat = Heartbeat(heartbeat_database, process="ingest:outage", kind="ingest", interval_s=0.1)
    name = psycopg2.extensions.parse_dsn(database_url)["dbname"]
    admin = psycopg2.connect(**{**psycopg2.extensions.parse_dsn(database_server_url), "dbname": "postgres"})
    admin.autocommit = True
    failures_before = metrics.HEARTBEAT_FAILURES._value.get()

    def allow_connections(allowed: bool) -> None:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)))
            if not allowed:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    def written() -> bool:
        with psycopg2.connect(database_url) as check, check.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM process_heartbeats WHERE process = 'ingest:outage'")
            found = cursor.fetchone()[0] == 1
        check.close()
        return found

    heartbeat.start()
    try:
        wait_until(written, what="a first write")
        try:
            allow_connections(False)
        except psycopg2.errors.InsufficientPrivilege as error:
            pytest.skip(f"this database role cannot refuse connections to its database: {error}")
        wait_until(lambda: metrics.HEARTBEAT_FAILURES._value.get() >= failures_before + 3, what="failed writes")
        assert heartbeat.dead_thread() is None, "the database being down does not end the heartbeat thread"
        assert heartbeat.age_s() > 0.2
        allow_connections(True)
        wait_until(lambda: heartbeat.age_s() < 0.2, what="a write after the outage")
        assert heartbeat.dead_thread() is None
    finally:
        allow_connections(True)
        heartbeat.stop()
        heartbeat_database.close()
        admin.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_a_heartbeat_thread_that_dies_is_noticed_by_the_ingester_and_the_engine(
    database, database_url, mqtt_url, run_ingester
) -> None:
    broken = threading.Event()

    def clock() -> dt.datetime:
        if broken.is_set():
            raise RuntimeError("a defect in the heartbeat")
        return dt.datetime.now(dt.UTC)

    ingest_heartbeat = Heartbeat(database, process="ingest:doomed", kind="ingest", interval_s=0.05, clock=clock)
    engine_heartbeat = Heartbeat(database, process="engine:doomed", kind="engine", interval_s=0.05, clock=clock)
    ingester = run_ingester(heartbeat=ingest_heartbeat)
    engine = Engine(database, schedule=RARELY, heartbeat=engine_heartbeat)
    stop = threading.Event()
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            engine.serve(stop, database_url=database_url, poll_s=0.05)
        except BaseException as error:
            raised.append(error)

    ingest_heartbeat.start()
    engine_heartbeat.start()
    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    try:
        assert engine.listening.wait(timeout=10)
        assert ingester.dead_thread() is None
        broken.set()
        wait_until(lambda: ingester.dead_thread() is not None, what="the ingester to notice")
        assert ingester.dead_thread() == "ingest:doomed-heartbeat"
        serving.join(timeout=10)
        assert not serving.is_alive(), "the engine stops serving when its heartbeat thread is gone"
        assert len(raised) == 1 and isinstance(raised[0], EssentialThreadDied)
        assert "heartbeat" in str(raised[0])
    finally:
        stop.set()
        serving.join(timeout=10)


def test_an_engines_heartbeat_reports_its_job_runs_and_counts(conn, database, client) -> None:
    make_device(conn)
    conn.commit()
    heartbeat = Heartbeat(database, process=f"engine:test-{os.getpid()}", kind="engine", interval_s=10)
    engine = Engine(database, schedule=RARELY, heartbeat=heartbeat)
    sweeps_before = _count(metrics.ENGINE_JOB_SECONDS, "sweep")
    engine.run_once()
    heartbeat.beat()
    process = processes(client)[f"engine:test-{os.getpid()}"]
    assert set(process["details"]["runs"]) == {"baselines", "trends", "sweep", "window"}
    sweep = process["details"]["runs"]["sweep"]
    assert sweep["opened"] == 0 and sweep["seconds"] >= 0
    assert dt.datetime.fromisoformat(sweep["at"]) <= dt.datetime.fromisoformat(process["last_commit_at"])
    assert process["details"]["detections_opened"] == 0
    assert _count(metrics.ENGINE_JOB_SECONDS, "sweep") == sweeps_before + 1


def _count(histogram, job: str) -> float:
    """How many observations a labelled histogram has, read from the metric's samples."""
    for family in histogram.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("job") == job:
                return sample.value
    return 0


def test_an_engine_starting_on_a_host_forgets_the_rows_of_dead_engines_there(database) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    with database.transaction() as setup:
        for process, on_host, pid in [(f"engine:{host}-{dead_pid}", host, dead_pid),
                                      ("engine:elsewhere-1", "elsewhere", dead_pid),
                                      (f"engine:{host}-{os.getppid()}", host, os.getppid())]:
            execute(setup, "INSERT INTO process_heartbeats (process, kind, host, pid, started_at, beat_at, interval_s)"
                           " VALUES (%s, 'engine', %s, %s, now(), now(), 10)", (process, on_host, pid))
    heartbeat = Heartbeat(database, process=f"engine:{host}-{os.getpid()}", kind="engine", named_by_pid=True)
    heartbeat.beat()
    with database.connection() as check:
        left = {row["process"] for row in fetch_all(check, "SELECT process FROM process_heartbeats")}
    assert left == {"engine:elsewhere-1", f"engine:{host}-{os.getppid()}", f"engine:{host}-{os.getpid()}"}


def test_careloop_ingest_serves_metrics_writes_its_heartbeat_and_forgets_it_on_sigterm(
    conn, database, database_url, mqtt_url, tmp_path
) -> None:
    device = make_device(conn)
    conn.commit()
    name = f"test-cli-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "ingest.log"
    process = start_careloop(["ingest", "--name", name, "--share-group", name, "--metrics-port", str(port)],
                             env={"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": mqtt_url}, log=log)
    try:
        def heartbeat_rows() -> list[dict]:
            with database.connection() as check:
                return fetch_all(check, "SELECT process, details, last_commit_at FROM process_heartbeats")

        wait_until(lambda: [row["process"] for row in heartbeat_rows()] == [f"ingest:{name}"],
                   what="the ingester's heartbeat row", log=log)
        wait_until(lambda: metrics.check(url) is None, what="the metrics endpoint", log=log)
        time.sleep(1.0)  # the ingester subscribes after connecting
        publish_all(mqtt_url, [(telemetry_topic(device.id), reading(seq)) for seq in (1, 2)])
        # Readings, not messages: the broker's retained status messages count as messages too.
        wait_until(lambda: metrics.scrape(url).get("careloop_ingest_readings_total") == 2,
                   what="two readings counted on the endpoint", log=log)
        samples = metrics.scrape(url)
        assert samples["careloop_ingest_messages_total"] >= 2
        assert 0 <= samples["careloop_heartbeat_age_seconds"] < 30
        # The docker-compose health check, as the container runs it.
        healthcheck = [sys.executable, "-m", "careloop.metrics", url, "--max-heartbeat-age", "30"]
        assert subprocess.run(healthcheck, capture_output=True, timeout=30).returncode == 0
        too_strict = subprocess.run([*healthcheck[:-1], "0"], capture_output=True, text=True, timeout=30)
        assert too_strict.returncode == 1 and "heartbeat last written" in too_strict.stderr

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert heartbeat_rows() == [], "a clean stop removes the heartbeat row"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        forget_session(mqtt_url, name)
