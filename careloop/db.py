"""The one database module: a connection pool, transactions, named SQL queries, migrations."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import orjson
import psycopg2
import psycopg2.extras
from psycopg2 import sql

log = logging.getLogger("careloop.db")

# JSON and jsonb columns are read with orjson, several times faster than the json module: on wide pages (the
# dispatch board) their decoding was a seventh of the request. orjson reads an integer outside [-2**63, 2**64) as
# a float, though, so a document with a run of 19 digits (-2**63 - 1 has 19) is read by the json module, exactly,
# as is anything orjson refuses. ASCII digits only: JSON's numbers have no others, and the class is cheaper.
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def _json_loads(text: str) -> Any:
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


psycopg2.extras.register_default_json(globally=True, loads=_json_loads)
psycopg2.extras.register_default_jsonb(globally=True, loads=_json_loads)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
TIMESCALE_DIR = MIGRATIONS_DIR / "timescale"
# Any number works as long as every process that migrates takes the same lock.
MIGRATION_LOCK_ID = 7_413_001
QUERY_HEADER = re.compile(r"^-- name: (\w+) --\s*$", re.MULTILINE)

Row = dict[str, Any]
Params = Mapping[str, Any] | tuple | list | None
# What repos, services and API handlers take: one psycopg2 connection, inside the caller's transaction.
Connection: TypeAlias = psycopg2.extensions.connection


def load_queries(path: Path) -> dict[str, str]:
    """Read a `queries.sql` file into {name: sql}, split on `-- name: ... --` headers."""
    text = path.read_text()
    pieces = QUERY_HEADER.split(text)
    # pieces: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(pieces[1::2], pieces[2::2], strict=True)}


# After a failed attempt to reach the database, callers fail at once for this long before one tries again.
RETRY_AFTER_S = 1.0
# The range of a PostgreSQL bigint: ids, offsets and counters beyond it are the caller's mistake.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def _adapt_int(value: int) -> psycopg2.extensions.ISQLQuote:
    """psycopg2 writes -9223372036854775808 as it is, and PostgreSQL reads `-9223372036854775808::bigint` as
    minus 9223372036854775808::bigint, out of range: the smallest bigint in a query with a cast was an error
    where any other id is found or not. In parentheses, the cast applies to the whole number."""
    return psycopg2.extensions.AsIs(f"({value})") if value == BIGINT_MIN else psycopg2.extensions.Int(value)


psycopg2.extensions.register_adapter(int, _adapt_int)


@dataclass(frozen=True)
class SessionLimits:
    """How long a connection waits on the database, so an outage becomes a quick error instead of a hang.

    0 switches a limit off, as it does in libpq and PostgreSQL."""

    connect_timeout_s: int = 3  # opening a connection, and a pooled one's ping; libpq waits at least 2 s
    statement_timeout_s: float = 10
    lock_timeout_s: float = 5
    idle_in_transaction_timeout_s: float = 60

    def connect_kwargs(self, dsn: str) -> dict[str, Any]:
        """libpq parameters for psycopg2.connect, keeping any `options` the DSN already carries."""
        server_settings = {
            "statement_timeout": self.statement_timeout_s,
            "lock_timeout": self.lock_timeout_s,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout_s,
        }
        options = [psycopg2.extensions.parse_dsn(dsn).get("options", "")]
        options += [f"-c {name}={round(seconds * 1000)}" for name, seconds in server_settings.items()]
        kwargs: dict[str, Any] = {"options": " ".join(option for option in options if option)}
        if self.connect_timeout_s:
            kwargs["connect_timeout"] = self.connect_timeout_s
        if self.connect_timeout_s and self.statement_timeout_s:
            # A network that drops packets mid-statement: the kernel gives up on unacknowledged data after this.
            kwargs["tcp_user_timeout"] = round((self.connect_timeout_s + self.statement_timeout_s) * 1000)
        return kwargs


class DatabaseUnavailable(psycopg2.OperationalError):
    """No connection could be had in time; an OperationalError, so callers that retry on those retry on this."""


class _Deadline:
    """One call on a connection that must finish by `at` (time.monotonic)."""

    def __init__(self, socket_fd: int, seconds: float) -> None:
        self.socket_fd = socket_fd
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = False


class _Watchdog:
    """Cuts the socket of a connection whose call outlives its deadline.

    libpq waits forever for a server that accepted the connection and then stopped answering (frozen,
    overloaded, behind a stalled proxy): no server-side timeout can fire there. Shutting the socket down
    makes the blocked call fail at once with an OperationalError. One thread serves every deadline."""

    def __init__(self) -> None:
        self._deadlines: set[_Deadline] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @contextmanager
    def deadline(self, conn: psycopg2.extensions.connection, seconds: float) -> Iterator[_Deadline]:
        entry = _Deadline(conn.fileno(), seconds)
        with self._changed:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="careloop-db-watchdog", daemon=True)
                self._thread.start()
            self._deadlines.add(entry)
            self._changed.notify()
        try:
            yield entry
        finally:
            # Under the lock: once removed, the socket is never touched, even if the deadline is just passing.
            with self._changed:
                self._deadlines.discard(entry)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while not self._stopping:
                now = time.monotonic()
                for entry in [entry for entry in self._deadlines if entry.at <= now]:
                    self._deadlines.discard(entry)
                    entry.expired = True
                    _shut_down_socket(entry.socket_fd)
                next_at = min((entry.at for entry in self._deadlines), default=None)
                self._changed.wait(timeout=None if next_at is None else max(next_at - now, 0.01))


def _shut_down_socket(socket_fd: int) -> None:
    # On a duplicate of the descriptor: shutdown() acts on the shared socket, closing the duplicate does not, so
    # libpq still owns (and later closes) its descriptor and no other file can take its number meanwhile.
    try:
        with socket.socket(fileno=os.dup(socket_fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError as error:
        log.warning("could not cut a database connection that stopped answering: %s", error)


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


class Database:
    """A thread-safe pool that hands out healthy connections, surviving a database restart.

    Connections are opened on first use, never in the constructor, so a process starts while the database is
    down and works once it is back. With `limits`, every wait on the database is bounded (SessionLimits)."""

    def __init__(self, dsn: str, *, max_connections: int = 10, limits: SessionLimits | None = None) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self.limits = limits
        self._connect_kwargs = limits.connect_kwargs(dsn) if limits is not None else {}
        self._idle: list[psycopg2.extensions.connection] = []  # the most recently used last: its socket is warm
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)  # callers wait for a free connection
        self._closed = False
        # While the database is down, one caller at a time, at most once a RETRY_AFTER_S, tries to connect; the
        # rest fail at once with the reason it last gave, instead of each waiting out a connect timeout (and
        # holding a thread meanwhile).
        self._down_because: str | None = None
        self._probing = False
        self._retry_at = 0.0
        self._watchdog = _Watchdog() if limits is not None and limits.connect_timeout_s else None

    @property
    def _slot_wait_s(self) -> float | None:
        # Long enough for a connection in use to finish its statement; without limits, as long as that takes.
        if self.limits is None or not self.limits.statement_timeout_s:
            return None
        return self.limits.connect_timeout_s + self.limits.statement_timeout_s

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection for the block; broken ones are discarded rather than returned to the pool."""
        if not self._slots.acquire(timeout=self._slot_wait_s):
            raise DatabaseUnavailable(f"all {self.max_connections} connections stayed busy for {self._slot_wait_s}s")
        try:
            conn = self._checkout()
            broken = False
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                self._checkin(conn, broken=broken)
        finally:
            self._slots.release()

    def _checkout(self) -> psycopg2.extensions.connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._open()
            if self._answers(conn):
                return conn
            log.warning("discarding a broken database connection")
            _close_quietly(conn)

    def _answers(self, conn: psycopg2.extensions.connection) -> bool:
        """A cheap ping: after a database restart the pooled sockets are dead."""
        if conn.closed:
            return False
        with self._ping_deadline(conn) as watched:
            try:
                _ping(conn)
                return True
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                if watched is None or not watched.expired:
                    return False  # dead after a restart: the caller discards it and takes another
                reason = f"no answer within {watched.seconds:g}s"
                cause = error
        # The server holds the socket open but says nothing: every pooled connection waits on the same silence.
        # Drop them all and mark it down, so the next callers fail at once while one of them tries to reconnect.
        log.warning("the database stopped answering: %s", reason)
        with self._lock:
            self._down_because = reason
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            stale, self._idle = self._idle, []
        for other in (conn, *stale):
            _close_quietly(other)
        raise DatabaseUnavailable(reason) from cause

    def _ping_deadline(self, conn: psycopg2.extensions.connection) -> AbstractContextManager[_Deadline | None]:
        if self._watchdog is None or self.limits is None:
            return nullcontext(None)
        return self._watchdog.deadline(conn, self.limits.connect_timeout_s)

    def _open(self) -> psycopg2.extensions.connection:
        with self._lock:
            probing = self._down_because is not None
            if probing:
                if self._probing or time.monotonic() < self._retry_at:
                    raise DatabaseUnavailable(self._down_because)
                self._probing = True
        try:
            conn = psycopg2.connect(self.dsn, **self._connect_kwargs)
        except psycopg2.OperationalError as error:
            with self._lock:
                self._down_because = _first_line(error)
                self._retry_at = time.monotonic() + RETRY_AFTER_S
            raise
        finally:
            if probing:
                with self._lock:
                    self._probing = False
        with self._lock:
            if self._down_because is not None:
                log.info("the database answers again")
            self._down_because = None
        return conn

    def _checkin(self, conn: psycopg2.extensions.connection, *, broken: bool) -> None:
        if not broken and not conn.closed and conn.status != psycopg2.extensions.STATUS_READY:
            try:
                conn.rollback()
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
        with self._lock:
            if not (broken or conn.closed or self._closed):
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def _transaction_deadline(self, conn: psycopg2.extensions.connection) -> AbstractContextManager[_Deadline | None]:
        # A server that stops answering in the middle of a transaction (a frozen backend, a stalled proxy) fires
        # none of its own timeouts: the whole transaction gets the slot wait, after which its socket is cut.
        if self._watchdog is None or self._slot_wait_s is None:
            return nullcontext(None)
        return self._watchdog.deadline(conn, self._slot_wait_s)

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection inside one transaction: committed when the block ends, rolled back on error. With
        limits, a transaction that outlasts connect + statement timeout fails with an OperationalError."""
        with self.connection() as conn, self._transaction_deadline(conn):
            try:
                yield conn
                conn.commit()
            except BaseException:
                if not conn.closed:
                    # A connection that died with the work cannot roll back: the error that killed it is the one
                    # to raise.
                    with suppress(psycopg2.OperationalError, psycopg2.InterfaceError):
                        conn.rollback()
                raise

    def close(self) -> None:
        """Close the idle connections now and the ones in use when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)
        if self._watchdog is not None:
            self._watchdog.stop()


def _ping(conn: psycopg2.extensions.connection) -> None:
    # Outside a transaction: one round trip, where BEGIN, SELECT and ROLLBACK took three on every checkout.
    autocommit, conn.autocommit = conn.autocommit, True
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        if not conn.closed:
            conn.autocommit = autocommit


def _close_quietly(conn: psycopg2.extensions.connection) -> None:
    with suppress(psycopg2.Error):  # a connection already broken has nothing left to close cleanly
        conn.close()


def connect(dsn: str) -> psycopg2.extensions.connection:
    """One plain connection, for scripts and tests."""
    return psycopg2.connect(dsn)


# Rows as dicts built from plain tuples: psycopg2's RealDictCursor sets each value through a Python __setitem__,
# which for a page of a few hundred wide rows cost more than the query itself.
def fetch_one(conn: Any, query: str | sql.Composable, params: Params = None) -> Row | None:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
        return dict(zip(_column_names(cursor), row, strict=True)) if row is not None else None


def fetch_all(conn: Any, query: str | sql.Composable, params: Params = None) -> list[Row]:
    with conn.cursor() as cursor:
        cursor.execute(query, params)
        names = _column_names(cursor)
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _column_names(cursor: Any) -> list[str]:
    return [column.name for column in cursor.description]


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


TIMESCALE_STATE_QUERY = """
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS created,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS installed,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries') AS preload_libraries,
       current_setting('timescaledb.bgw_launcher_poll_time', true) IS NOT NULL AS loader_running
"""


@dataclass(frozen=True)
class TimescaleState:
    """What the server says about TimescaleDB, enough to tell whether CREATE EXTENSION would work."""

    created: bool  # the extension already exists in this database
    installed: bool  # listed in pg_available_extensions: its files are on the server
    # shared_preload_libraries; None where this role may not read it (it needs pg_read_all_settings)
    preload_libraries: str | None
    # a setting the TimescaleDB loader defines only when it was preloaded: the answer for such a role
    loader_running: bool

    @property
    def preloaded(self) -> bool:
        if self.preload_libraries is None:
            return self.loader_running
        return "timescaledb" in preloaded_library_names(self.preload_libraries)

    def missing(self) -> str | None:
        """Why the TimescaleDB migrations cannot run here, or None when they can."""
        if self.created:
            return None
        if not self.installed:
            return "the timescaledb extension is not installed on the server"
        if not self.preloaded:
            # CREATE EXTENSION would end the session (FATAL: extension "timescaledb" must be preloaded)
            return "timescaledb is installed but not in shared_preload_libraries"
        return None


def preloaded_library_names(setting: str) -> set[str]:
    """The library names in a shared_preload_libraries value: `'$libdir/timescaledb.so', x` -> {timescaledb, x}."""
    names = set()
    for item in setting.split(","):
        name = item.strip().strip("'\"").rsplit("/", 1)[-1]
        names.add(name.removesuffix(".so").removesuffix(".dylib").removesuffix(".dll"))
    return names - {""}


def timescale_state(conn: Any) -> TimescaleState:
    row = fetch_one(conn, TIMESCALE_STATE_QUERY)
    assert row is not None
    return TimescaleState(**row)


def timescale_available(conn: Any) -> bool:
    """Whether the TimescaleDB steps can run: the extension exists here, or is installed and preloaded."""
    return timescale_state(conn).missing() is None


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
            timescale_missing = timescale_state(conn).missing()
            if timescale_missing is None:
                steps += [(f"timescale/{path.name}", path) for path in timescale_files()]
            else:
                pending = [p.name for p in timescale_files() if f"timescale/{p.name}" not in done]
                if pending:
                    log.info("%s: skipping the TimescaleDB migrations %s", timescale_missing, ", ".join(pending))
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
