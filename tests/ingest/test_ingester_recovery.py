"""The ingester survives its database connections dying and its broker restarting, losing nothing."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg2
import pytest

from careloop.db import Database, fetch_value
from careloop.embedded import free_port, mosquitto_config, wait_for_port
from careloop.mqtt import telemetry_topic
from ingest.subscriber import Ingester, forget_session
from tests.factories import make_device
from tests.helpers import publish_all, reading, wait_until

pytestmark = pytest.mark.integration


def stored(database: Database) -> tuple[int, int]:
    """(readings stored, distinct seqs stored)."""
    with database.connection() as conn:
        return (
            int(fetch_value(conn, "SELECT count(*) FROM telemetry")),
            int(fetch_value(conn, "SELECT count(DISTINCT seq) FROM telemetry")),
        )


def readings(device_id: str, seqs: range) -> list[tuple[str, dict]]:
    return [(telemetry_topic(device_id), reading(seq, fan_current_a=0.6)) for seq in seqs]


def test_database_connections_killed_mid_stream_lose_nothing(conn, database, database_url, mqtt_url, run_ingester):
    device = make_device(conn)
    conn.commit()
    run_ingester()
    publish_all(mqtt_url, readings(device.id, range(1, 101)))
    wait_until(lambda: stored(database)[0] == 100, what="the first 100 readings")

    # What a database restart looks like from the ingester: every server connection dies.
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    admin.close()

    publish_all(mqtt_url, readings(device.id, range(101, 201)))
    wait_until(lambda: stored(database)[0] == 200, timeout_s=60, what="all 200 readings after the connections died")
    assert stored(database) == (200, 200)


@pytest.fixture
def own_broker(tmp_path: Path):
    """A mosquitto of this test's own, with persistence, that the test may stop and start again."""
    binary = shutil.which("mosquitto")
    if binary is None:
        pytest.skip("mosquitto is not installed: the broker-restart test needs a broker it can stop and start")
    port = free_port(None)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, tmp_path))
    processes: list[subprocess.Popen] = []

    def start() -> None:
        processes.append(
            subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        wait_for_port(port, processes[-1])

    def stop() -> None:
        process = processes[-1]
        process.terminate()  # mosquitto writes its persistence file on a clean stop
        process.wait(timeout=10)

    start()
    yield f"mqtt://127.0.0.1:{port}", start, stop
    for process in processes:
        if process.poll() is None:
            process.kill()


def test_a_broker_restart_loses_nothing_queued_for_the_ingester(conn, database, own_broker):
    url, start_broker, stop_broker = own_broker
    device = make_device(conn)
    conn.commit()
    ingester = Ingester(database, url, name=f"test-{uuid.uuid4().hex[:8]}")
    ingester.start()
    try:
        assert ingester.connected.wait(timeout=10)
        time.sleep(0.2)  # let the SUBACK arrive before anything is published
        publish_all(url, readings(device.id, range(1, 51)))
        wait_until(lambda: stored(database)[0] == 50, what="readings before the restart")

        stop_broker()
        wait_until(lambda: not ingester.connected.is_set(), what="the ingester to notice the broker is gone")
        start_broker()
        wait_until(lambda: ingester.connected.is_set(), timeout_s=60, what="the ingester to reconnect")
        # Mosquitto 2.0 does not restore shared subscriptions from its persistence file: what is
        # published before the ingester has subscribed again has no subscriber (README, "How ingest works").
        time.sleep(0.3)
        publish_all(url, readings(device.id, range(51, 151)))
        wait_until(lambda: stored(database)[0] == 150, timeout_s=60, what="every reading after the restart")
        assert stored(database) == (150, 150)
    finally:
        ingester.stop()
        forget_session(url, ingester.name)
