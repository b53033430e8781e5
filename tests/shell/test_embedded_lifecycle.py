"""No embedded broker or database outlives the commands of its CARELOOP_HOME, however they end.

Real commands (`careloop api`, `careloop ingest`) run as subprocesses with CARELOOP_MQTT_URL unset and
CARELOOP_HOME in tmp_path; the embedded processes are found by the home path on their command lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from careloop import embedded
from careloop.embedded import free_port
from careloop.mqtt import telemetry_topic
from ingest.subscriber import Ingester
from tests.factories import make_device
from tests.helpers import publish_all, reading, wait_until

pytestmark = pytest.mark.integration

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None,
    reason="mosquitto is not installed: these tests watch the embedded mosquitto process of a command",
)


def embedded_processes(home: Path, what: str) -> list[psutil.Process]:
    """Running processes of this home: `mosquitto`, `keeper` (careloop.embedded) or `postgres`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(home) not in cmdline or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if (
            (what == "mosquitto" and process.info["name"] == "mosquitto")
            or (what == "keeper" and "careloop.embedded" in cmdline)
            or (what == "postgres" and process.info["name"] == "postgres")
        ):
            found.append(process)
    return found


def all_gone(home: Path) -> bool:
    return not any(embedded_processes(home, what) for what in ("mosquitto", "keeper", "postgres"))


class Command:
    """A `careloop` command run as a subprocess, its output in a file beside the home."""

    def __init__(self, home: Path, arguments: list[str], *, database_url: str | None, broker: str) -> None:
        unset = ("CARELOOP_MQTT_URL", "CARELOOP_DATABASE_URL")
        env = {key: value for key, value in os.environ.items() if key not in unset}
        env |= {"CARELOOP_HOME": str(home), "CARELOOP_EMBEDDED_BROKER": broker}
        if database_url:
            env["CARELOOP_DATABASE_URL"] = database_url
        home.mkdir(parents=True, exist_ok=True)
        self.output = home.parent / f"{arguments[0]}-{time.monotonic_ns()}.log"
        with self.output.open("wb") as sink:
            # cwd: no .env of the checkout may point the command at a broker
            self.process = subprocess.Popen(
                [sys.executable, "-m", "careloop.cli", *arguments], env=env, cwd=home.parent, stdout=sink, stderr=sink
            )

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 60) -> None:
        wait_until(lambda: text in self.log() or self.process.poll() is not None, timeout_s=timeout_s, what=text)
        assert text in self.log(), f"the command exited ({self.process.returncode}) before {text!r}:\n{self.log()}"

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def api(home: Path, *, database_url: str | None, broker: str = "mosquitto") -> tuple[Command, int]:
    port = free_port(None)
    command = Command(home, ["api", "--port", str(port)], database_url=database_url, broker=broker)
    wait_until(lambda: answers(port) or command.process.poll() is not None, timeout_s=120, what="the API")
    assert command.process.poll() is None, command.log()
    return command, port


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def broker_ok(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["broker"]["ok"]


def ingest(home: Path, *, database_url: str | None, broker: str = "mosquitto") -> Command:
    command = Command(home, ["ingest", "--name", f"lifecycle-{time.monotonic_ns()}"], database_url=database_url,
                      broker=broker)
    command.wait_for("connected to the broker, subscribed")
    return command


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "careloop-home"
    yield home
    # Whatever a failed test left behind must not outlive it either.
    for what in ("mosquitto", "keeper", "postgres"):
        for process in embedded_processes(home, what):
            process.kill()


@needs_mosquitto
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_api_stopped_by_a_signal_stops_the_mosquitto_it_started(home, database_url, signum) -> None:
    command, _port = api(home, database_url=database_url)
    assert len(embedded_processes(home, "mosquitto")) == 1
    command.stop(signum)
    assert all_gone(home), "the embedded broker is still running right after the command exited"


@needs_mosquitto
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_ingester_stopped_by_a_signal_stops_the_mosquitto_it_started(home, database_url, signum) -> None:
    command = ingest(home, database_url=database_url)
    assert len(embedded_processes(home, "mosquitto")) == 1
    assert command.stop(signum) == 0
    assert all_gone(home), "the embedded broker is still running right after the command exited"


@needs_mosquitto
def test_two_commands_of_one_home_share_the_broker_until_the_last_one_exits(home, database_url) -> None:
    first = ingest(home, database_url=database_url)
    [broker] = embedded_processes(home, "mosquitto")
    second, port = api(home, database_url=database_url)
    assert embedded_processes(home, "mosquitto") == [broker], "the second command started a broker of its own"
    assert first.stop(signal.SIGTERM) == 0
    time.sleep(1)  # the keeper looks for users five times a second
    assert broker.is_running(), "the broker stopped while the API still used it"
    assert broker_ok(port)
    second.stop(signal.SIGTERM)
    assert all_gone(home)


@needs_mosquitto
def test_a_command_that_fails_after_starting_the_broker_stops_it(home, database_url) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = Command(home, ["api", "--port", str(port)], database_url=database_url, broker="mosquitto")
        assert command.process.wait(timeout=60) != 0, "the API started on a port that is taken"
    assert "embedded mosquitto broker" in command.log()  # it did start one
    assert all_gone(home)


@needs_mosquitto
def test_a_command_killed_outright_leaves_no_broker_behind(home, database_url) -> None:
    command, _port = api(home, database_url=database_url)
    [broker] = embedded_processes(home, "mosquitto")
    command.stop(signal.SIGKILL)  # no handler, no atexit: the keeper sees the process gone
    wait_until(lambda: all_gone(home), timeout_s=10, what="the keeper to stop the broker")
    assert not broker.is_running()


@needs_mosquitto
def test_a_killed_keeper_takes_its_mosquitto_along(home, database_url) -> None:
    command = ingest(home, database_url=database_url)
    [keeper] = embedded_processes(home, "keeper")
    [broker] = embedded_processes(home, "mosquitto")
    keeper.kill()
    wait_until(lambda: not broker.is_running(), timeout_s=10, what="mosquitto to follow its keeper (PDEATHSIG)")
    command.stop(signal.SIGTERM)
    assert all_gone(home)


def test_the_amqtt_fallback_is_shared_and_stopped_the_same_way(home, database_url) -> None:
    first = ingest(home, database_url=database_url, broker="amqtt")
    [keeper] = embedded_processes(home, "keeper")  # amqtt runs inside its keeper
    second, port = api(home, database_url=database_url, broker="amqtt")
    assert embedded_processes(home, "keeper") == [keeper]
    assert first.stop(signal.SIGINT) == 0
    time.sleep(1)
    assert keeper.is_running() and broker_ok(port)
    second.stop(signal.SIGTERM)
    assert all_gone(home)


def test_the_embedded_postgresql_stops_with_the_last_command_and_keeps_its_data(home) -> None:
    migrate = Command(home, ["migrate"], database_url=None, broker="amqtt")
    assert migrate.process.wait(timeout=120) == 0, migrate.log()
    assert all_gone(home), "PostgreSQL still runs after the only command that used it exited"
    first = ingest(home, database_url=None, broker="amqtt")
    assert embedded_processes(home, "postgres"), "no embedded PostgreSQL under the home"
    again = Command(home, ["migrate"], database_url=None, broker="amqtt")  # a second user, which exits
    assert again.process.wait(timeout=120) == 0, again.log()
    assert "(0 migration(s) applied" in again.log(), "the data did not survive the restart"
    assert embedded_processes(home, "postgres"), "PostgreSQL stopped while the ingester still used it"
    assert first.stop(signal.SIGTERM) == 0
    assert all_gone(home)


def test_the_amqtt_fallback_keeps_what_is_queued_for_an_ingester_that_stopped_cleanly(
    home, monkeypatch, conn, database
) -> None:
    monkeypatch.setenv(embedded.BROKER_CHOICE_VARIABLE, "amqtt")
    url = embedded.start_broker(home, preferred_port=None)
    try:
        device = make_device(conn)
        conn.commit()
        name = f"lifecycle-{time.monotonic_ns()}"

        def started() -> Ingester:
            ingester = Ingester(database, url, name=name)
            ingester.start()
            assert ingester.connected.wait(timeout=10)
            time.sleep(0.3)  # the SUBACK
            return ingester

        started().stop()  # its session (subscriptions, and from now on a queue) stays with the broker
        publish_all(url, [(telemetry_topic(device.id), reading(seq)) for seq in range(1, 101)])
        ingester = started()
        try:
            with database.connection() as check, check.cursor() as cursor:

                def stored() -> int:
                    cursor.execute("SELECT count(*) FROM telemetry")
                    check.rollback()
                    return cursor.fetchone()[0]

                wait_until(lambda: stored() == 100, what="the 100 readings queued while the ingester was away")
        finally:
            ingester.stop()
    finally:
        embedded.release(home, "broker")
    assert all_gone(home)
