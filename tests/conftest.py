"""Shared fixtures: the real PostgreSQL and broker (from the environment, else embedded ones).

Each test that needs the database gets a fresh clone of a template built from the migrations.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from psycopg2 import sql

from careloop.db import Database, migrate
from ingest.subscriber import Ingester, forget_session

TEMPLATE = f"careloop_test_template_{os.getpid()}"


def _admin_connection(server_url: str):
    params = psycopg2.extensions.parse_dsn(server_url)
    conn = psycopg2.connect(**{**params, "dbname": "postgres"})
    conn.autocommit = True
    return conn


def _with_database(server_url: str, name: str) -> str:
    """The server's URL naming another database."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def database_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CARELOOP_DATABASE_URL, else an embedded PostgreSQL started for this run."""
    url = os.environ.get("CARELOOP_DATABASE_URL")
    if url:
        return url
    try:
        from careloop.embedded import start_database

        return start_database(tmp_path_factory.mktemp("careloop-home"), database="postgres")
    except Exception as error:  # any failure to start means: skip, and say what is missing
        pytest.skip(f"no database: CARELOOP_DATABASE_URL is unset and embedded PostgreSQL (pgserver) failed: {error}")


def _drop_database(admin, name: str) -> None:
    """Drop a database even when it is marked as a template or has sessions."""
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cursor.fetchone() is None:
            return
        cursor.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _close_template(admin, name: str) -> None:
    """Keep the template free of sessions, so that cloning it never meets "being accessed by other users".

    On TimescaleDB a background scheduler connects to every database that has the extension, the template
    included. A template that refuses connections is one the launcher skips and a scheduler leaves at once;
    the ones already in are ended here (and again before each retry of a clone).
    """
    with admin.cursor() as cursor:
        cursor.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").format(sql.Identifier(name))
        )
    _end_sessions(admin, name)


def _end_sessions(admin, name: str) -> None:
    # A role without the right to end them: the clone's retries wait for the sessions to leave instead.
    with admin.cursor() as cursor, contextlib.suppress(psycopg2.errors.InsufficientPrivilege):
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _clone(admin, name: str, template: str, *, timeout_s: float = 30) -> None:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with admin.cursor() as cursor:
                cursor.execute(statement)
            return
        except psycopg2.errors.ObjectInUse:
            # A background worker slipped in between (it leaves as soon as it sees the template flag).
            if time.monotonic() > deadline:
                raise
            _end_sessions(admin, template)
            time.sleep(0.1)


@pytest.fixture(scope="session")
def template_database(database_server_url: str) -> Iterator[str]:
    try:
        admin = _admin_connection(database_server_url)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no database: cannot connect to {database_server_url}: {error}")
    _drop_database(admin, TEMPLATE)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate(_with_database(database_server_url, TEMPLATE))
    _close_template(admin, TEMPLATE)
    yield TEMPLATE
    _drop_database(admin, TEMPLATE)
    admin.close()


@contextlib.contextmanager
def _database_of_its_own(server_url: str, template: str | None) -> Iterator[str]:
    """A new database, cloned from `template` or empty, dropped afterwards."""
    name = f"careloop_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection(server_url)
    if template is None:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    else:
        _clone(admin, name, template)
    try:
        yield _with_database(server_url, name)
    finally:
        _drop_database(admin, name)
        admin.close()


@pytest.fixture
def database_url(database_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh database cloned from the migrated template, dropped after the test."""
    with _database_of_its_own(database_server_url, template_database) as url:
        yield url


@pytest.fixture
def empty_database_url(database_server_url: str) -> Iterator[str]:
    """A fresh database with no migration applied (what a new deployment starts from), dropped after the test."""
    try:
        _admin_connection(database_server_url).close()
    except psycopg2.OperationalError as error:
        pytest.skip(f"no database: cannot connect to {database_server_url}: {error}")
    with _database_of_its_own(database_server_url, None) as url:
        yield url


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url, max_connections=4)
    yield db
    db.close()


@pytest.fixture
def conn(database: Database) -> Iterator:
    """A connection whose work is committed, so other connections (an ingester, the API) see it."""
    with database.transaction() as connection:
        yield connection


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(URL, kind): CARELOOP_MQTT_URL ("external"), else an embedded broker started for this run
    (mosquitto or amqtt, as careloop.embedded chooses: CARELOOP_EMBEDDED_BROKER)."""
    url = os.environ.get("CARELOOP_MQTT_URL")
    if url:
        return url, "external"
    from careloop import embedded

    home = tmp_path_factory.mktemp("careloop-broker")
    try:
        url = embedded.start_broker(home, preferred_port=None)
    except Exception as error:
        if os.environ.get(embedded.BROKER_CHOICE_VARIABLE):
            raise  # a broker asked for by name (as CI does) must not turn the run into skips
        pytest.skip(f"no broker: CARELOOP_MQTT_URL is unset and no embedded broker could start: {error}")
    return url, embedded.running_broker_kind(home) or "unknown"


@pytest.fixture(scope="session")
def mqtt_url(mqtt_broker: tuple[str, str]) -> str:
    return mqtt_broker[0]


@pytest.fixture
def run_ingester(database: Database, mqtt_url: str):
    """Start in-process ingesters with names and a share group of their own; stop and forget them after."""
    started: list[Ingester] = []
    group = f"test-{uuid.uuid4().hex[:8]}"

    def start(name: str | None = None, **options) -> Ingester:
        ingester = Ingester(database, mqtt_url, name=name or f"test-{uuid.uuid4().hex[:8]}", share_group=group,
                            **options)
        ingester.start()
        assert ingester.connected.wait(timeout=10), "ingester could not connect"
        time.sleep(0.2)  # let the SUBACK arrive before anything is published
        started.append(ingester)
        return ingester

    yield start
    for ingester in started:
        ingester.stop()
        forget_session(mqtt_url, ingester.name)


@pytest.fixture
def run_engine(database: Database, database_url: str):
    """Start engines listening for ingest batches in threads (with the domains' jobs given); stop them after."""
    from rules.engine import Engine, Schedule

    running: list[tuple[threading.Event, threading.Thread]] = []
    # The scheduled jobs run once at start; the tests call them when they need them.
    rarely = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600)

    def start(jobs=()) -> Engine:
        engine = Engine(database, schedule=rarely, jobs=jobs)
        stop = threading.Event()
        thread = threading.Thread(
            target=engine.serve, args=(stop,), kwargs={"database_url": database_url, "poll_s": 0.05}, daemon=True
        )
        thread.start()
        assert engine.listening.wait(timeout=10), "the engine did not start listening"
        running.append((stop, thread))
        return engine

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(timeout=30)

