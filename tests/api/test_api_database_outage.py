"""A database that is down, silent or back again: every endpoint answers a JSON 503 within a few seconds, never
a hang and never a plain-text 500, and the API works again once the database is back, without a restart."""

from __future__ import annotations

import concurrent.futures
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.db import Database, DatabaseUnavailable, SessionLimits
from careloop.deps import ApiLimits
from tests.helpers import start_careloop

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LIMITS = SessionLimits(connect_timeout_s=3, statement_timeout_s=10, lock_timeout_s=5)
FAST_ENOUGH_S = 5.0


# --- stand-ins for a database in trouble -------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on (the kernel just handed it out and it was closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SilentServer:
    """Accepts TCP connections and never says a word: a database that is frozen, or a stalled proxy."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return  # closed
            self.held.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


class Proxy:
    """A TCP proxy in front of the real PostgreSQL that can be switched off (nothing listens: the database is
    down), on (bytes flow), or silent (connections stay open, nothing flows either way)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.silent = False
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._run, daemon=True)
        self._pump.start()

    def up(self) -> None:
        """Listen (again) on the same port and forward."""
        self.silent = False
        with self._lock:
            if self._listener is None:
                self._listener = socket.create_server(("127.0.0.1", self.port))
                self._listener.settimeout(0.1)
                self._acceptor = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
                self._acceptor.start()

    def down(self) -> None:
        """Stop listening and cut every connection, as a stopped server does."""
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            pairs, self._pairs = self._pairs, []
        if self._acceptor is not None:
            # An accept() in progress keeps the listening socket alive until it returns (within its 0.1 s).
            self._acceptor.join()
            self._acceptor = None
        for client, server in pairs:
            for end in (client, server):
                end.close()

    def go_silent(self) -> None:
        self.silent = True

    def close(self) -> None:
        self.down()
        self._stop.set()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed: down()
            server = socket.create_connection(self.target)
            with self._lock:
                self._pairs.append((client, server))

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pairs = list(self._pairs)
            if self.silent or not pairs:
                time.sleep(0.01)
                continue
            ends = {end: other for client, server in pairs for end, other in ((client, server), (server, client))}
            try:
                ready, _, _ = select.select([end for end in ends if end.fileno() >= 0], [], [], 0.05)
            except (OSError, ValueError):
                continue  # a connection was cut under us
            for end in ready:
                try:
                    data = end.recv(65536)
                    if data:
                        ends[end].sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(end)

    def _drop(self, end: socket.socket) -> None:
        with self._lock:
            for pair in [pair for pair in self._pairs if end in pair]:
                self._pairs.remove(pair)
                for socket_end in pair:
                    socket_end.close()


def with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@{host}:{port}" if parts.username else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def proxy(database_url: str) -> Iterator[Proxy]:
    if psycopg2.extensions.parse_dsn(database_url).get("host", "").startswith("/"):
        pytest.skip("the database is reached through a unix socket (the embedded PostgreSQL): a proxy needs a TCP "
                    "address to stand in front of; set CARELOOP_DATABASE_URL to a TCP server to run this test")
    target = urlsplit(database_url)
    running = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    yield running
    running.close()


def api_for(dsn: str, limits: SessionLimits = LIMITS) -> tuple[TestClient, Database]:
    database = Database(dsn, limits=limits)
    # One test client stands for many callers at once here: what is tested is the outage, not one client's share
    # of the requests in progress (test_api_admission).
    app = create_app(database, admin_token=ADMIN_TOKEN, mqtt_url=None,
                     limits=ApiLimits(requests_in_progress_per_client=ApiLimits.requests_in_progress))
    return TestClient(app, raise_server_exceptions=False), database


# --- every operation, and what an outage must look like ------------------------------------------------------------


def every_operation(client: TestClient) -> list[tuple[str, str]]:
    """(method, url) for each operation in the schema, path parameters filled with a plausible value."""
    calls = []
    for path, methods in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method, spec in methods.items():
            url = path
            for parameter in spec.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", "1")
            calls.append((method, url))
    return calls


def assert_unavailable(answer: httpx.Response, elapsed_s: float, what: str) -> None:
    assert answer.status_code == 503, f"{what}: {answer.status_code} {answer.text[:200]}"
    assert answer.headers["content-type"].startswith("application/json"), f"{what}: {answer.text[:200]}"
    assert answer.json()["detail"].startswith("database unavailable: "), f"{what}: {answer.text[:200]}"
    assert elapsed_s < FAST_ENOUGH_S, f"{what} took {elapsed_s:.1f}s"


def timed(client: TestClient, method: str, url: str, **options: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = client.request(method, url, headers=ADMIN, **options)
    return answer, time.monotonic() - started


def eventually_ok(client: TestClient, url: str = "/customers") -> float:
    """Seconds until the API answers 200 again (the pool tries the database again at most once a second)."""
    started = time.monotonic()
    while (answer := client.get(url, headers=ADMIN)).status_code != 200:
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - started < FAST_ENOUGH_S, f"still {answer.status_code}: {answer.text[:200]}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_with_the_database_down_every_endpoint_answers_a_json_503_at_once() -> None:
    client, database = api_for(f"postgresql://postgres@127.0.0.1:{free_port()}/careloop")  # nothing listens
    slowest = 0.0
    for method, url in every_operation(client):
        answer, elapsed = timed(client, method, url, json={})
        assert_unavailable(answer, elapsed, f"{method.upper()} {url}")
        slowest = max(slowest, elapsed)
    print(f"database down: slowest 503 in {slowest:.3f}s")
    database.close()


def test_with_a_silent_database_every_endpoint_answers_a_json_503_within_seconds() -> None:
    silent = SilentServer()
    client, database = api_for(f"postgresql://postgres@127.0.0.1:{silent.port}/careloop")
    try:
        slowest = 0.0
        for method, url in every_operation(client):
            answer, elapsed = timed(client, method, url, json={})
            assert_unavailable(answer, elapsed, f"{method.upper()} {url}")
            slowest = max(slowest, elapsed)
        print(f"silent database: slowest 503 in {slowest:.3f}s")
        assert silent.held, "the API never even tried the silent server"
    finally:
        database.close()
        silent.close()


def test_many_requests_at_once_to_a_silent_database_all_get_their_503_within_seconds() -> None:
    """Callers do not queue behind each other's connect timeouts: the first ones wait out one connect timeout
    side by side; from then on, while the database is known to be down, the rest answer at once."""
    silent = SilentServer()
    client, database = api_for(f"postgresql://postgres@127.0.0.1:{silent.port}/careloop")
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(lambda _index: timed(client, "get", "/customers"), range(60)))
            for answer, elapsed in answers:
                assert_unavailable(answer, elapsed, "GET /customers, 30 at a time, database just gone silent")
            print(f"60 requests (30 at a time) to a silent database: slowest 503 in {max(e for _a, e in answers):.3f}s")
            answers = list(pool.map(lambda _index: timed(client, "get", "/customers"), range(60)))
            for answer, elapsed in answers:
                assert_unavailable(answer, elapsed, "GET /customers, 30 at a time, database known to be silent")
            print(f"60 more, database known to be silent: slowest 503 in {max(e for _a, e in answers):.3f}s")
    finally:
        database.close()
        silent.close()


def test_the_api_comes_back_with_the_database_without_a_restart(proxy: Proxy, database_url: str) -> None:
    client, database = api_for(with_port(database_url, "127.0.0.1", proxy.port))
    try:
        answer, elapsed = timed(client, "get", "/customers")  # the API started before the database
        assert_unavailable(answer, elapsed, "before the database is up")
        proxy.up()
        print(f"database up: API answers 200 after {eventually_ok(client):.3f}s")
        assert client.get("/health").status_code == 200
        proxy.down()  # a restart: the pooled connection is dead, nothing listens for a while
        answer, elapsed = timed(client, "get", "/customers")
        assert_unavailable(answer, elapsed, "while the database restarts")
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["detail"].startswith("database unavailable: ")
        proxy.up()
        print(f"database back: API answers 200 after {eventually_ok(client):.3f}s")
    finally:
        database.close()


def test_a_database_that_goes_silent_mid_session_gives_503_within_seconds(proxy: Proxy, database_url: str) -> None:
    """The pooled connection's socket stays open but nothing answers (a frozen server): no server-side timeout
    can fire, so the pool's own deadline on its ping cuts it."""
    client, database = api_for(with_port(database_url, "127.0.0.1", proxy.port))
    try:
        proxy.up()
        assert timed(client, "get", "/customers")[0].status_code == 200
        proxy.go_silent()
        answer, elapsed = timed(client, "get", "/customers")
        assert_unavailable(answer, elapsed, "a pooled connection to a silent database")
        print(f"database silent mid-session: 503 in {elapsed:.3f}s")
        answer, elapsed = timed(client, "get", "/customers")  # a new connection: the connect timeout
        assert_unavailable(answer, elapsed, "a new connection to a silent database")
        proxy.down()
        proxy.up()
        print(f"database answering again: API answers 200 after {eventually_ok(client):.3f}s")
    finally:
        database.close()


def test_a_statement_stuck_behind_a_lock_answers_503_at_the_lock_timeout(database_url: str) -> None:
    client, database = api_for(database_url, SessionLimits(connect_timeout_s=3, lock_timeout_s=0.5))
    blocker = psycopg2.connect(database_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        answer, elapsed = timed(client, "get", "/customers")
        assert_unavailable(answer, elapsed, "GET /customers behind a table lock")
        assert "lock timeout" in answer.json()["detail"]
        blocker.rollback()
        assert timed(client, "get", "/customers")[0].status_code == 200
    finally:
        blocker.close()
        database.close()


def test_api_connections_carry_the_configured_timeouts(database_url: str) -> None:
    database = Database(database_url, limits=SessionLimits(statement_timeout_s=0.2, lock_timeout_s=1.5,
                                                           idle_in_transaction_timeout_s=30))
    try:
        with database.transaction() as conn, conn.cursor() as cursor:
            settings = {}
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"):
                cursor.execute(f"SHOW {name}")
                settings[name] = cursor.fetchone()[0]
        assert settings == {"statement_timeout": "200ms", "lock_timeout": "1500ms",
                            "idle_in_transaction_session_timeout": "30s"}
        with pytest.raises(psycopg2.errors.QueryCanceled), database.transaction() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
    finally:
        database.close()


def test_a_pool_whose_connections_stay_busy_gives_up_instead_of_waiting_forever(database_url: str) -> None:
    database = Database(database_url, max_connections=1,
                        limits=SessionLimits(connect_timeout_s=2, statement_timeout_s=0.5))
    try:
        with database.connection():
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="busy"), database.connection():
                pass
            assert time.monotonic() - started < FAST_ENOUGH_S
    finally:
        database.close()


class CommitFails(Database):
    """A database that goes away between a request's last statement and its commit."""

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.connection() as conn:
            yield conn
            conn.rollback()
            raise psycopg2.OperationalError("server closed the connection unexpectedly")


def test_a_write_whose_commit_fails_answers_503_and_not_201(database_url: str) -> None:
    failing = CommitFails(database_url, limits=LIMITS)
    client = TestClient(create_app(failing, admin_token=ADMIN_TOKEN, mqtt_url=None), raise_server_exceptions=False)
    answer, elapsed = timed(client, "post", "/customers", json={"name": "Wang Fang"})
    assert_unavailable(answer, elapsed, "POST /customers whose commit fails")
    failing.close()
    stored, database = api_for(database_url)
    assert stored.get("/customers", headers=ADMIN).json()["total"] == 0
    database.close()


# --- the real command ------------------------------------------------------------------------------------------


@pytest.fixture
def api_process(tmp_path, proxy: Proxy, database_url: str) -> Iterator[str]:
    """`careloop api` started while its database (behind the proxy) is down; answers its base URL."""
    port = free_port()
    environment = {
        "CARELOOP_DATABASE_URL": with_port(database_url, "127.0.0.1", proxy.port),
        "CARELOOP_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "CARELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "CARELOOP_HOME": str(tmp_path / "home"),
    }
    log = tmp_path / "api.log"
    process = start_careloop(["api", "--port", str(port)], env=environment, log=log, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                httpx.get(f"{base}/openapi.json", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "careloop api did not start listening within 30s"
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_careloop_api_starts_with_the_database_down_and_serves_once_it_is_back(api_process: str, proxy: Proxy) -> None:
    for path in ("/health", "/customers", "/models"):
        started = time.monotonic()
        answer = httpx.get(f"{api_process}{path}", headers=ADMIN, timeout=30)
        assert_unavailable(answer, time.monotonic() - started, f"careloop api GET {path}")
    proxy.up()
    started = time.monotonic()
    while (answer := httpx.get(f"{api_process}/customers", headers=ADMIN, timeout=30)).status_code != 200:
        assert answer.status_code == 503 and time.monotonic() - started < FAST_ENOUGH_S, answer.text
        time.sleep(0.1)
    assert httpx.get(f"{api_process}/health", timeout=30).json()["database"]["ok"] is True


def test_a_server_that_freezes_in_the_middle_of_a_transaction_fails_it_within_the_limits(database_url: str) -> None:
    """A hung backend fires none of its own timeouts; the transaction's socket is cut at connect + statement
    timeout, and the API's handler gets an OperationalError (its 503)."""
    database = Database(database_url, max_connections=1,
                        limits=SessionLimits(connect_timeout_s=2, statement_timeout_s=1, lock_timeout_s=1))
    backend = None
    try:
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError), database.transaction() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
            try:
                os.kill(backend, signal.SIGSTOP)  # the server process stops answering mid-transaction
            except (ProcessLookupError, PermissionError) as error:
                backend = None
                pytest.skip(f"the database's backend process cannot be frozen from here: {error}")
            cursor.execute("SELECT 1")
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"the frozen transaction took {elapsed:.1f}s to fail"
    finally:
        if backend is not None:
            os.kill(backend, signal.SIGCONT)
        database.close()
