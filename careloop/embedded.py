"""Embedded services for a first run with nothing installed: PostgreSQL (pgserver) and a broker.

The broker is the `mosquitto` binary when it is on PATH (configured like deploy/mosquitto.conf),
else amqtt in a background thread (MQTT 3.1.1 only: no shared subscriptions there).
"""

from __future__ import annotations

import asyncio
import atexit
import getpass
import logging
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from careloop.db import ensure_database

log = logging.getLogger("careloop.embedded")

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
_keep_alive: list[object] = []  # handles that must live as long as the process


def free_port(preferred: int | None = None) -> int:
    """The preferred port when nothing listens on it, else any free one."""
    candidates = ([preferred] if preferred else []) + [0]
    for port in candidates:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1")


def start_database(home: Path, database: str = "careloop") -> str:
    """Start (or join) the embedded PostgreSQL under `home` and answer the DSN of `database`."""
    import pgserver  # imported here: only a newcomer's run needs it

    data_dir = (home / "pgdata").resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _keep_alive.append(server)
    dsn = server.get_uri(database)
    ensure_database(dsn)
    log.info("embedded PostgreSQL running in %s", data_dir)
    return dsn


def mosquitto_config(port: int, data_dir: Path) -> str:
    """deploy/mosquitto.conf with this run's port and data folder."""
    lines = []
    for line in DEPLOY_CONF.read_text().splitlines():
        if line.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {data_dir}/"
        elif line.startswith("log_dest "):
            line = f"log_dest file {data_dir}/mosquitto.log"
        lines.append(line)
    # Started by root, mosquitto would switch to the `mosquitto` user, which cannot write this
    # user's data folder: no log, and no persistence, so a restart would lose every session.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


def start_broker(home: Path, preferred_port: int | None = 1883) -> str:
    """Start an embedded broker and answer its URL."""
    port = free_port(preferred_port)
    binary = shutil.which("mosquitto")
    if binary:
        data_dir = (home / "mosquitto").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        conf = data_dir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port, data_dir))
        stderr_log = data_dir / "mosquitto.stderr"
        with stderr_log.open("wb") as stderr:
            process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        atexit.register(_stop_process, process)
        _keep_alive.append(process)
        wait_for_port(port, process, stderr_log)
        log.info("embedded mosquitto on 127.0.0.1:%d (data in %s)", port, data_dir)
        return f"mqtt://127.0.0.1:{port}"
    _start_amqtt(port)
    log.info("embedded amqtt broker on 127.0.0.1:%d (MQTT 3.1.1)", port)
    return f"mqtt://127.0.0.1:{port}?protocol=3.1.1"


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, stderr_log: Path | None = None, timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            error = stderr_log.read_text().strip() if stderr_log else ""
            raise RuntimeError(f"embedded broker exited at start: {error}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"embedded broker did not listen on port {port} within {timeout_s:.0f}s")


def _stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def _start_amqtt(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    broker = Broker(config, loop=loop)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.start())
        loop.run_forever()

    thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
    thread.start()
    _keep_alive.append((broker, loop, thread))
    wait_for_port(port)
