"""The one database module: a connection pool, transactions, named SQL queries, migrations."""

from __future__ import annotations

import io
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

log = logging.getLogger("careloop.db")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
TIMESCALE_DIR = MIGRATIONS_DIR / "timescale"
# Any number works as long as every process that migrates takes the same lock.
MIGRATION_LOCK_ID = 7_413_001
QUERY_HEADER = re.compile(r"^-- name: (\w+) --\s*$", re.MULTILINE)

Row = dict[str, Any]
Params = Mapping[str, Any] | tuple | list | None


def load_queries(path: Path) -> dict[str, str]:
    """Read a `queries.sql` file into {name: sql}, split on `-- name: ... --` headers."""
    text = path.read_text()
    pieces = QUERY_HEADER.split(text)
    # pieces: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(pieces[1::2], pieces[2::2], strict=True)}


class Database:
    """A thread-safe pool that hands out healthy connections, surviving a database restart."""

    def __init__(self, dsn: str, *, min_connections: int = 1, max_connections: int = 10) -> None:
        self.dsn = dsn
        self._pool = psycopg2.pool.ThreadedConnectionPool(min_connections, max_connections, dsn)
        # ThreadedConnectionPool raises when exhausted; a semaphore makes callers wait instead.
        self._slots = threading.BoundedSemaphore(max_connections)

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection for the block; broken ones are discarded rather than returned to the pool."""
        with self._slots:
            conn = self._checkout()
            broken = False
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                if not broken and not conn.closed and conn.status != psycopg2.extensions.STATUS_READY:
                    conn.rollback()
                self._pool.putconn(conn, close=broken or bool(conn.closed))

    def _checkout(self) -> psycopg2.extensions.connection:
        for _attempt in range(3):
            conn = self._pool.getconn()
            try:
                # A cheap ping: after a database restart the pooled sockets are dead.
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                conn.rollback()
                return conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                log.warning("discarding a broken database connection")
                self._pool.putconn(conn, close=True)
        return self._pool.getconn()

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection inside one transaction: committed when the block ends, rolled back on error."""
        with self.connection() as conn:
            try:
                yield conn
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    def close(self) -> None:
        self._pool.closeall()


def connect(dsn: str) -> psycopg2.extensions.connection:
    """One plain connection, for scripts and tests."""
    return psycopg2.connect(dsn)


def fetch_one(conn: Any, query: str | sql.Composable, params: Params = None) -> Row | None:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
        return dict(row) if row is not None else None


def fetch_all(conn: Any, query: str | sql.Composable, params: Params = None) -> list[Row]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
        cursor.execute(query, params)
        return [dict(row) for row in cursor.fetchall()]


def fetch_value(conn: Any, query: str | sql.Composable, params: Params = None) -> Any:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
        return row[0] if row else None


def execute(conn: Any, query: str | sql.Composable, params: Params = None) -> int:
    """Run a statement; answers the number of rows it touched."""
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.rowcount


# Errors after which the same work may succeed on a new connection or a second try: a lost or closed connection,
# a restart, a timeout, a deadlock or serialization failure (all OperationalError). Anything else is about the
# work itself and will fail again.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (psycopg2.OperationalError, psycopg2.InterfaceError)


@contextmanager
def savepoint(conn: Any, name: str = "careloop_savepoint") -> Iterator[None]:
    """A block that is undone alone when it raises, leaving the rest of the transaction usable."""
    identifier = sql.Identifier(name)
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("SAVEPOINT {}").format(identifier))
    try:
        yield
    except TRANSIENT_ERRORS:
        raise  # the connection itself is in doubt: the caller retries the whole transaction
    except BaseException:
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(identifier))
            cursor.execute(sql.SQL("RELEASE SAVEPOINT {}").format(identifier))
        raise
    with conn.cursor() as cursor:
        cursor.execute(sql.SQL("RELEASE SAVEPOINT {}").format(identifier))


def copy_columns(conn: Any, query: str, params: Params, width: int) -> list[np.ndarray]:
    """A fleet-sized query's result as `width` columns of raw text values (bytes arrays; NULL is `NULL_TEXT`).

    Read through COPY's text format and split in bulk: for a fleet's rows this is several times cheaper than
    one Python object per value. Tabs and newlines only ever separate values, so the columns must be numbers,
    booleans (t/f) or identifiers without whitespace or backslashes (device ids, model codes, rule ids)."""
    with conn.cursor() as cursor:
        statement = cursor.mogrify(query, params).decode()
        buffer = io.BytesIO()
        cursor.copy_expert(f"COPY ({statement}) TO STDOUT", buffer)
    data = buffer.getvalue()
    if not data:
        return [np.zeros(0, dtype="S1") for _ in range(width)]
    values = np.array(data[:-1].replace(b"\n", b"\t").split(b"\t"), dtype=bytes).reshape(-1, width)
    return [values[:, column] for column in range(width)]


NULL_TEXT = b"\\N"  # how COPY's text format writes NULL


def copied_floats(values: np.ndarray) -> np.ndarray:
    """A `copy_columns` column of numbers as float64, NaN for NULL."""
    if values.dtype.kind != "S":
        return np.asarray(values, dtype=np.float64)
    return np.where(values == NULL_TEXT, b"nan", values).astype(np.float64)


def copied_integers(values: np.ndarray) -> np.ndarray:
    """A `copy_columns` column of integers (never NULL) as int64."""
    return values.astype(np.int64)


# --- migrations -------------------------------------------------------------------------------


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9]*.sql"))


def timescale_files() -> list[Path]:
    return sorted(TIMESCALE_DIR.glob("[0-9]*.sql"))


def timescale_available(conn: Any) -> bool:
    return bool(fetch_value(conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"))


def migrate(dsn: str) -> list[str]:
    """Bring the schema up to date; idempotent and safe to run from several processes at once."""
    applied_now: list[str] = []
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cursor.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cursor.fetchall()}
            steps = [(path.name, path) for path in migration_files()]
            if timescale_available(conn):
                steps += [(f"timescale/{path.name}", path) for path in timescale_files()]
            else:
                pending = [p.name for p in timescale_files() if f"timescale/{p.name}" not in done]
                if pending:
                    log.info("timescaledb extension not available: skipping %s", ", ".join(pending))
            for version, path in steps:
                if version in done:
                    continue
                cursor.execute(path.read_text())
                cursor.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                conn.commit()
                log.info("applied migration %s", version)
                applied_now.append(version)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            conn.commit()
    conn.close()
    return applied_now


def ensure_database(dsn: str) -> None:
    """Create the database named in the DSN when the server does not have it yet."""
    params = psycopg2.extensions.parse_dsn(dsn)
    name = params.get("dbname", "postgres")
    try:
        psycopg2.connect(dsn).close()
        return
    except psycopg2.OperationalError as error:
        if "does not exist" not in str(error):
            raise
    admin = psycopg2.connect(**{**params, "dbname": "postgres"})
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        log.info("created database %s", name)
    except psycopg2.errors.DuplicateDatabase:
        pass
    finally:
        admin.close()
