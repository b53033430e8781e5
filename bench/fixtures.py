"""What the benchmarks set up before they measure: a database of their own, devices registered in it; and when
a serving engine's jobs have run."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from careloop.db import Connection, Database, ensure_database, fetch_all, migrate
from devices import service as devices_service
from devices.models import DeviceCreate


@contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """A migrated database of its own for one benchmark run, dropped afterwards."""
    parts = urlsplit(server_url)
    name = f"careloop_bench_{uuid.uuid4().hex[:8]}"
    database_url = urlunsplit(parts._replace(path=f"/{name}"))
    ensure_database(database_url)
    try:
        migrate(database_url)
        yield database_url
    finally:
        admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


# Devices registered per transaction: each registration is a savepoint, and a transaction of a hundred thousand
# of them slows to minutes (PostgreSQL tracks every subtransaction of a transaction until it ends).
REGISTER_PER_COMMIT = 1000


def register_devices(conn: Connection, device_ids: Iterable[str], *, model: str = "RH-900") -> None:
    """Register devices of one model, with no owner, as POST /devices does: committed a thousand at a time, the
    last ones left for the caller to commit. Then ANALYZE devices, as autovacuum does after many new rows: without
    statistics, the ingester's lookup of a batch's thousand devices among 100,000 is planned as a scan of them
    all (a server may run with autovacuum off, as this machine's shared one does)."""
    for number, device_id in enumerate(device_ids, start=1):
        devices_service.register_device(conn, DeviceCreate(id=device_id, model=model))
        if number % REGISTER_PER_COMMIT == 0:
            conn.commit()
    with conn.cursor() as cursor:
        cursor.execute("ANALYZE devices")


def jobs_run_since(database: Database, since: dt.datetime) -> set[str]:
    """The engine jobs (its own and the domains') that have run since a moment, as engine_jobs records them."""
    with database.connection() as conn:
        return {row["job"] for row in fetch_all(conn, "SELECT job FROM engine_jobs WHERE last_run_at >= %s", (since,))}
