"""Shared fixtures: the real PostgreSQL and broker (from the environment, else embedded ones).

Each test that needs the database gets a fresh clone of a template built from the migrations.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def template_database(database_server_url: str) -> Iterator[str]:
    try:
        admin = _admin_connection(database_server_url)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no database: cannot connect to {database_server_url}: {error}")
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrate(_with_database(database_server_url, TEMPLATE))
    yield TEMPLATE
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
    admin.close()


@pytest.fixture
def database_url(database_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh database cloned from the migrated template, dropped after the test."""
    name = f"careloop_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection(database_server_url)
    with admin.cursor() as cursor:
        cursor.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_database))
        )
    yield _with_database(database_server_url, name)
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()


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
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CARELOOP_MQTT_URL, else an embedded broker started for this run."""
    url = os.environ.get("CARELOOP_MQTT_URL")
    if url:
        return url
    try:
        from careloop.embedded import start_broker

        return start_broker(tmp_path_factory.mktemp("careloop-broker"), preferred_port=None)
    except Exception as error:
        pytest.skip(f"no broker: CARELOOP_MQTT_URL is unset and no embedded broker could start: {error}")


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
