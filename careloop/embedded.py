"""Embedded services for a first run with nothing installed: PostgreSQL (pgserver) and a broker.

The broker is the `mosquitto` binary when it is on PATH (configured like deploy/mosquitto.conf), else amqtt
(MQTT 3.1.1 only: no shared subscriptions, and it loses what was in flight to a client that crashes).
`CARELOOP_EMBEDDED_BROKER=mosquitto|amqtt` chooses one instead (`auto`, the default, prefers mosquitto).

Lifetime. Each embedded service of a CARELOOP_HOME runs under a keeper: a small process of its own
(`python -m careloop.embedded keep broker|database --home H`) that starts the service, then stops it as
soon as no process that uses it is alive. The users of a service are listed in `<home>/<service>.json`,
written under a file lock: a command adds itself when it asks for the service and takes itself out when it
exits (atexit; SIGTERM is turned into a normal exit by careloop.runtime); the last one out waits until the
keeper has stopped the service. A user that dies without a word (SIGKILL) stops counting as soon as its
process is gone, so the keeper stops the service then too. Two commands of one home share the services;
the first one's exit leaves them running for the second. The keeper runs in a session of its own, so a
Ctrl-C at the terminal reaches the commands and not the services, and mosquitto is the keeper's child
with PR_SET_PDEATHSIG on Linux: a keeper killed outright takes the broker with it. The embedded
PostgreSQL is a daemon (pg_ctl); a keeper killed outright leaves it to the next keeper of the home, which
adopts it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import fcntl
import functools
import getpass
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from careloop.mqtt import (
    ACCOUNTS_FILE,
    ADMIN_USER,
    DYNSEC_FILE,
    SERVICE_USER,
    broker_accounts_for,
    find_dynsec_plugin,
    url_with_credentials,
)
from careloop.settings import redact_url

log = logging.getLogger("careloop.embedded")

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
BROKER_CHOICE_VARIABLE = "CARELOOP_EMBEDDED_BROKER"
BROKER_KINDS = ("auto", "mosquitto", "amqtt")
# amqtt keeps no session for a client without a user name ("anonymous"), so a restarted ingester would find
# nothing queued. Any user name is accepted; this one only makes the sessions persistent.
AMQTT_USER = "careloop"
KEEPER_POLL_S = 0.2
START_TIMEOUT_S = {"broker": 30.0, "database": 120.0}  # initdb on a first run takes a while
STOP_TIMEOUT_S = 60.0

Identity = list  # [pid, process start time]: a pid alone may be reused by another process


# --- helpers the tests use too ----------------------------------------------------------------------------


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


TLS_LISTENER_OPTIONS = ("certfile ", "keyfile ", "cafile ", "tls_version ", "require_certificate ", "ciphers ")


def mosquitto_config(
    port: int, data_dir: Path, *, accounts: bool = False, tls_port: int | None = None, certs: Path | None = None
) -> str:
    """deploy/mosquitto.conf with this run's port and data folder, listening on loopback only.

    With `accounts`, as shipped: anonymous clients refused, the dynamic-security plugin keeping its file in
    `data_dir` (`careloop.mqtt.broker_accounts_for(data_dir)` writes the first one). Without, a broker for a test
    or a benchmark that checks no identity: anonymous clients may do anything. The TLS listener is kept, on
    `tls_port` with the server certificate and key in `certs` (`careloop certs`), only when both are given.
    """
    lines = []
    listeners = 0
    for line in DEPLOY_CONF.read_text().splitlines():
        if not accounts and line.startswith(("plugin", "allow_anonymous ")):
            line = "allow_anonymous true" if line.startswith("allow_anonymous ") else ""
        if line.startswith("listener "):
            listeners += 1
        tls_listener = listeners > 1 and line.startswith(("listener ", *TLS_LISTENER_OPTIONS))
        if tls_listener and (tls_port is None or certs is None):
            continue
        if tls_listener:
            option, value = line.split(maxsplit=1)
            if option == "listener":
                line = f"listener {tls_port} 127.0.0.1"
            elif option in ("certfile", "keyfile", "cafile"):
                line = f"{option} {Path(certs).resolve() / Path(value).name}"
        elif line.startswith("listener "):
            line = f"listener {port} 127.0.0.1"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {data_dir}/"
        elif line.startswith("log_dest "):
            line = f"log_dest file {data_dir}/mosquitto.log"
        elif line.startswith("plugin "):
            line = f"plugin {find_dynsec_plugin() or line.split(maxsplit=1)[1]}"
        elif line.startswith("plugin_opt_config_file "):
            line = f"plugin_opt_config_file {data_dir}/{DYNSEC_FILE}"
        lines.append(line)
    # Started by root, mosquitto would switch to the `mosquitto` user, which cannot write this
    # user's data folder: no log, and no persistence, so a restart would lose every session.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


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


# --- what commands call -----------------------------------------------------------------------------------


def start_database(home: Path, database: str = "careloop") -> str:
    """Start (or join) the embedded PostgreSQL under `home` and answer the DSN of `database`."""
    from careloop.db import ensure_database

    state = _use(Path(home), "database", [])
    dsn = urlunsplit(urlsplit(state["url"])._replace(path=f"/{database}"))
    ensure_database(dsn)
    log.info("embedded PostgreSQL running in %s", Path(home).resolve() / "pgdata")
    return dsn


def start_broker(home: Path, preferred_port: int | None = 1883) -> str:
    """Start (or join) the embedded broker of `home` and answer its URL."""
    kind = broker_kind_wanted()
    state = _use(Path(home), "broker", ["--kind", kind, "--port", str(preferred_port or 0)])
    log.info("embedded %s broker at %s", state["kind"], redact_url(state["url"]))
    if state["kind"] == "amqtt":
        log.warning("the embedded amqtt broker takes any client and lets it publish on any device's topic: "
                    "device credentials are enforced by mosquitto only (install it for a broker like production's)")
    return state["url"]


def broker_kind_wanted() -> str:
    """mosquitto or amqtt, from CARELOOP_EMBEDDED_BROKER (auto: mosquitto where it is on PATH)."""
    choice = os.environ.get(BROKER_CHOICE_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in BROKER_KINDS:
        raise ValueError(f"{BROKER_CHOICE_VARIABLE}: must be one of {', '.join(BROKER_KINDS)}, not {choice!r}")
    if choice == "auto":
        return "mosquitto" if shutil.which("mosquitto") else "amqtt"
    if choice == "mosquitto" and not shutil.which("mosquitto"):
        raise RuntimeError(f"{BROKER_CHOICE_VARIABLE}=mosquitto, but there is no mosquitto binary on PATH")
    return choice


def broker_admin_url(home: Path, broker_url: str | None = None) -> str | None:
    """The URL of the account that issues device credentials on the home's embedded mosquitto; None for amqtt,
    when none runs, or when `broker_url` (the broker a command uses) is another one."""
    home = Path(home).resolve()
    state = _read_state(home, "broker")
    if state.get("kind") != "mosquitto" or not state.get("url"):
        return None
    if broker_url is not None:
        given, embedded_broker = urlsplit(broker_url), urlsplit(state["url"])
        if (given.hostname, given.port) != (embedded_broker.hostname, embedded_broker.port):
            return None
    try:
        accounts = json.loads((home / "mosquitto" / ACCOUNTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return url_with_credentials(state["url"], ADMIN_USER, accounts[ADMIN_USER])


def release(home: Path, service: str) -> None:
    """Stop using the home's embedded `service` now rather than at exit (the last user out stops it)."""
    _leave(Path(home).resolve(), service, os.getpid())


def running_broker_kind(home: Path) -> str | None:
    """The kind of embedded broker running for `home` (mosquitto, amqtt), None when there is none."""
    state = _read_state(Path(home), "broker")
    return state.get("kind") if state.get("url") and _alive(state.get("keeper")) else None


# --- users, keepers and the state file --------------------------------------------------------------------

_leaving_registered: set[tuple[Path, str]] = set()
_keeper_processes: list[subprocess.Popen] = []  # kept so that a keeper which exits early is reaped


def _started(pid: int) -> float | None:
    """When the process started, as a number that never changes for it; None once it has ended (zombie too)."""
    try:
        if sys.platform.startswith("linux"):
            # Clock ticks since boot: exact. A wall-clock start time is derived from the boot time, which
            # each process reads for itself and which drifts as the clock is adjusted.
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return None if fields[0] in ("Z", "X") else float(fields[19])
        import psutil  # installed with pgserver

        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else round(process.create_time())
    except Exception:  # no such process, or it ended while being read
        return None


def _identity(pid: int) -> Identity | None:
    started = _started(pid)
    return None if started is None else [pid, started]


def _alive(identity: Any) -> bool:
    """Whether the process named by [pid, start] still runs: not a later process that was given the same pid."""
    return bool(identity) and _started(identity[0]) == identity[1]


def _state_file(home: Path, service: str) -> Path:
    return home / f"{service}.json"


@contextlib.contextmanager
def _locked(home: Path, service: str) -> Iterator[None]:
    """The service's lock, across processes: users and keepers change the state file only under it."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{service}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_state(home: Path, service: str) -> dict[str, Any]:
    try:
        return json.loads(_state_file(home, service).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(home: Path, service: str, state: dict[str, Any]) -> None:
    # Written aside, then renamed: a reader without the lock never sees half a file.
    path = _state_file(home, service)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)


def _live_users(state: dict[str, Any], leaving: Identity | None = None) -> list[Identity]:
    return [user for user in state.get("users", []) if user != leaving and _alive(user)]


def _use(home: Path, service: str, keeper_options: list[str]) -> dict[str, Any]:
    """Count this process as a user of the home's service, starting a keeper where none runs; its ready state."""
    home = home.resolve()
    me = _identity(os.getpid())
    with _locked(home, service):
        state = _read_state(home, service)
        state["users"] = [*_live_users(state, leaving=me), me]
        if not _alive(state.get("keeper")):
            keeper = _spawn_keeper(home, service, keeper_options)
            state.update(keeper=_identity(keeper.pid), url=None, error=None)
        _write_state(home, service, state)
    if (home, service) not in _leaving_registered:
        _leaving_registered.add((home, service))
        atexit.register(_leave, home, service, os.getpid())
    deadline = time.monotonic() + START_TIMEOUT_S[service]
    while time.monotonic() < deadline:
        state = _read_state(home, service)
        if state.get("url"):
            return state
        if state.get("error") or not _alive(state.get("keeper")):
            break
        time.sleep(0.05)
    log_file = home / f"{service}-keeper.log"
    if state.get("error"):
        reason = state["error"]
    elif not _alive(state.get("keeper")):
        reason = "its keeper exited"
    else:
        reason = f"it did not start within {START_TIMEOUT_S[service]:.0f}s"
    raise RuntimeError(f"embedded {service} failed: {reason} (log: {log_file})")


def _spawn_keeper(home: Path, service: str, options: list[str]) -> subprocess.Popen:
    with open(home / f"{service}-keeper.log", "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "careloop.embedded", "keep", service, "--home", str(home), *options],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C at the terminal is for the commands, not for the services
        )
    _keeper_processes.append(process)
    return process


def _leave(home: Path, service: str, registered_by: int) -> None:
    """At exit: stop counting as a user; the last one out waits until the keeper has stopped the service."""
    if os.getpid() != registered_by:  # a forked child inherits atexit handlers; it never registered
        return
    with _locked(home, service):
        state = _read_state(home, service)
        state["users"] = _live_users(state, leaving=_identity(os.getpid()))
        _write_state(home, service, state)
        keeper = state.get("keeper") if not state["users"] else None
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while keeper and _alive(keeper) and time.monotonic() < deadline:
        for process in _keeper_processes:
            process.poll()  # a keeper this process started is its child: reap it
        time.sleep(0.05)


# --- the keeper process -----------------------------------------------------------------------------------


def keep(service: str, home: Path, kind: str = "auto", port: int = 0) -> int:
    """Run `service` for `home` until none of its users is alive (or SIGTERM/SIGINT), then stop it."""
    me = _identity(os.getpid())
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_args: stop_requested.set())
    try:
        if service == "broker":
            started = _start_broker_service(home, kind, port, _read_state(home, service).get("port"))
        else:
            started = _start_database_service(home)
    except Exception as error:
        log.exception("embedded %s did not start", service)
        with _locked(home, service):
            state = _read_state(home, service)
            if state.get("keeper") == me:
                state.update(keeper=None, url=None, error=str(error) or type(error).__name__)
                _write_state(home, service, state)
        return 1
    url, stop_service, service_alive = started
    with _locked(home, service):
        state = _read_state(home, service)
        state.update(url=url, kind=kind if service == "broker" else "postgresql", port=urlsplit(url).port)
        _write_state(home, service, state)
    log.info("embedded %s ready at %s", service, redact_url(url))
    while True:
        stop_requested.wait(KEEPER_POLL_S)
        with _locked(home, service):
            state = _read_state(home, service)
            users = _live_users(state)
            if users and service_alive() and not stop_requested.is_set():
                continue
            # Stopped while the lock is held: a command that asks meanwhile waits, then starts a new keeper.
            why = "no user left" if not users else "stop requested" if stop_requested.is_set() else "it died"
            log.info("stopping the embedded %s: %s", service, why)
            try:
                stop_service()
            except Exception:
                log.exception("the embedded %s did not stop cleanly", service)
            if state.get("keeper") == me:
                state.update(keeper=None, url=None, users=users)
                _write_state(home, service, state)
            return 0


def _start_broker_service(
    home: Path, kind: str, preferred_port: int, previous_port: int | None
) -> tuple[str, Callable[[], None], Callable[[], bool]]:
    # The port of the home's last broker first: its clients and their sessions are found at the same URL.
    port = free_port(previous_port) if previous_port else 0
    if port != previous_port:
        port = free_port(preferred_port or None)
    if kind == "mosquitto":
        return _start_mosquitto(home, port)
    return _start_amqtt(port)


def _die_with_parent(parent_pid: int) -> None:
    """preexec_fn: the kernel sends SIGTERM when the keeper dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the keeper died before the line above
            os._exit(1)


def _start_mosquitto(home: Path, port: int) -> tuple[str, Callable[[], None], Callable[[], bool]]:
    binary = shutil.which("mosquitto")
    if binary is None:
        raise RuntimeError("no mosquitto binary on PATH")
    data_dir = home / "mosquitto"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, data_dir, accounts=True))
    if find_dynsec_plugin() is None:
        raise RuntimeError("mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not installed")
    accounts = broker_accounts_for(data_dir)
    stderr_log = data_dir / "mosquitto.stderr"
    with stderr_log.open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )
    try:
        wait_for_port(port, process, stderr_log)
    except BaseException:
        stop_process(process)
        raise

    url = url_with_credentials(f"mqtt://127.0.0.1:{port}", SERVICE_USER, accounts[SERVICE_USER])
    return url, lambda: stop_process(process), lambda: process.poll() is None


def stop_process(process: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM, the clean stop (mosquitto saves its persistence file, an ingester acks the batch in hand); SIGKILL
    if it has not ended within `timeout_s`. Nothing when it has ended already."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start_amqtt(port: int) -> tuple[str, Callable[[], None], Callable[[], bool]]:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}},
    }
    loop = asyncio.new_event_loop()
    broker = Broker(config, loop=loop)
    thread = threading.Thread(target=loop.run_forever, name="amqtt-broker", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(broker.start(), loop).result(timeout=10)  # listening once it returns

    def stop() -> None:
        # amqtt keeps nothing on disk, so its slow clean shutdown (5 s for the broadcast loop) buys nothing:
        # the keeper exits right after, which closes every socket.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout=0.5)
        loop.call_soon_threadsafe(loop.stop)

    return f"mqtt://{AMQTT_USER}@127.0.0.1:{port}?protocol=3.1.1", stop, thread.is_alive


def _start_database_service(home: Path) -> tuple[str, Callable[[], None], Callable[[], bool]]:
    import pgserver  # imported here: only a newcomer's run needs it

    data_dir = home / "pgdata"
    # cleanup_mode=None: pgserver would stop the server only when its own list of users is empty, and a
    # user killed outright stays on that list for ever. The keeper decides instead.
    server = pgserver.get_server(data_dir, cleanup_mode=None)

    def stop() -> None:
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

    def running() -> bool:
        return server.get_postmaster_info().is_running()

    return server.get_uri("postgres"), stop, running


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m careloop.embedded", description="keeper of an embedded service")
    commands = parser.add_subparsers(dest="command", required=True)
    keeper = commands.add_parser("keep")
    keeper.add_argument("service", choices=["broker", "database"])
    keeper.add_argument("--home", type=Path, required=True)
    keeper.add_argument("--kind", choices=["mosquitto", "amqtt"], default="mosquitto")
    keeper.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s [%(process)d]: %(message)s")
    for noisy in ("amqtt", "transitions", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return keep(args.service, args.home.resolve(), kind=args.kind, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
