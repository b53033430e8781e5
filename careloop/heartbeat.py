"""Each long-running process's heartbeat: kept in memory as the process works, written every few seconds.

The process updates its `Heartbeat` as it commits work (cheap: a lock and a few fields). A thread of the
heartbeat's own writes the row in `process_heartbeats` every `interval_s` in a short transaction of its own.
While the database is down the thread logs, counts the failure and goes on; if the thread itself ends, the
process's main loop finds it through `dead_thread()` and exits, as it does for its other essential threads.

`/health` reads the rows through `process_health`: a process whose last beat is older than
`STALE_AFTER_INTERVALS` of its own intervals is stale. A process that stops cleanly deletes its row; one that
died leaves it, stale, until it comes back under the same name (an ingester's name is stable). An engine is
named by its pid, so it never comes back under the same name: an engine starting on the same host deletes the
rows of engines there whose pid no longer runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extras import Json

from careloop import metrics
from careloop.db import Database, execute, fetch_all, load_queries

log = logging.getLogger("careloop.heartbeat")

QUERIES = load_queries(Path(__file__).with_name("heartbeat.sql"))
HEARTBEAT_INTERVAL_S = 10.0
STALE_AFTER_INTERVALS = 3
WRITE_TIMEOUT = "5s"  # a heartbeat that cannot be written quickly is better skipped than queued behind a lock


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _to_json(value: Any) -> str:
    return json.dumps(value, default=str)  # datetimes and the like as text


class Heartbeat:
    """What a running process reports about itself, written to `process_heartbeats` by a thread of its own."""

    def __init__(
        self,
        database: Database,
        *,
        process: str,
        kind: str,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        clock: Callable[[], dt.datetime] = utc_now,
        named_by_pid: bool = False,
    ) -> None:
        """`named_by_pid`: the name holds the pid, so rows of the same kind on this host whose pid no longer
        runs are this process's dead predecessors, deleted at the first write."""
        if interval_s <= 0:
            raise ValueError("a heartbeat interval must be longer than 0s")
        self.database = database
        self.process = process
        self.kind = kind
        self.interval_s = interval_s
        self.clock = clock
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = clock()
        self._lock = threading.Lock()
        self._last_commit_at: dt.datetime | None = None
        self._lag_s: float | None = None
        self._queue_depth: int | None = None
        self._read_queue_depth: Callable[[], int] | None = None
        self._details: dict[str, Any] = {}
        self._written_at = time.monotonic()  # counted from the start until the first write
        self._predecessors_checked = not named_by_pid
        self._failing = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{process}-heartbeat", daemon=True)
        # Set when the thread ends on an error it does not tolerate; the process then exits.
        self.failure: BaseException | None = None

    # --- what the process reports ---------------------------------------------------------------

    def record(
        self,
        *,
        last_commit_at: dt.datetime | None = None,
        lag_s: float | None = None,
        queue_depth: int | None = None,
        **details: Any,
    ) -> None:
        """Set the fields given (None leaves one as it was) and replace the details named."""
        with self._lock:
            if last_commit_at is not None:
                self._last_commit_at = last_commit_at
            if lag_s is not None:
                self._lag_s = lag_s
            if queue_depth is not None:
                self._queue_depth = queue_depth
            self._details.update(details)

    def count(self, **increments: int) -> None:
        """Add to counters kept in the details."""
        with self._lock:
            for name, increment in increments.items():
                self._details[name] = self._details.get(name, 0) + increment

    def note_run(self, name: str, **run: Any) -> None:
        """Keep what the last run of a job did, under details["runs"][name]."""
        with self._lock:
            self._details.setdefault("runs", {})[name] = run

    def queue_depth_from(self, read: Callable[[], int]) -> None:
        """Read the queue depth at each write, so a writer stuck on one batch still shows its queue growing."""
        self._read_queue_depth = read

    def age_s(self) -> float:
        """Seconds since the row was last written (since the start, before the first write)."""
        return time.monotonic() - self._written_at

    # --- writing ----------------------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        """The row as it would be written now."""
        with self._lock:
            queue_depth = self._read_queue_depth() if self._read_queue_depth is not None else self._queue_depth
            details = json.loads(_to_json(self._details))  # a copy, taken under the lock
            return {
                "process": self.process,
                "kind": self.kind,
                "host": self.host,
                "pid": self.pid,
                "started_at": self.started_at,
                "beat_at": self.clock(),
                "interval_s": self.interval_s,
                "last_commit_at": self._last_commit_at,
                "lag_s": self._lag_s,
                "queue_depth": queue_depth,
                "details": details,
            }

    def beat(self) -> None:
        """Write the row once, in a transaction of its own; raises what the database raises."""
        row = self.row()
        with self.database.transaction() as conn:
            execute(conn, "SELECT set_config('statement_timeout', %s, true)", (WRITE_TIMEOUT,))
            if not self._predecessors_checked:
                self._forget_dead_predecessors(conn)
            execute(conn, QUERIES["upsert_heartbeat"], {**row, "details": Json(row["details"], dumps=_to_json)})
        self._predecessors_checked = True
        self._written_at = time.monotonic()

    def _forget_dead_predecessors(self, conn: Any) -> None:
        # A process named by its pid that restarts would leave its predecessor's row stale forever. Same kind,
        # same host, and that pid no longer runs here: it is gone. (A row of another machine with the same
        # host name that this deletes is written again at its own process's next beat.)
        rows = fetch_all(conn, QUERIES["heartbeats_on_host"], {"kind": self.kind, "host": self.host,
                                                               "process": self.process})
        for row in rows:
            if not _pid_runs(row["pid"]):
                execute(conn, QUERIES["delete_heartbeat"], {"process": row["process"]})
                log.info("%s: removed the heartbeat of %s, whose pid %d no longer runs", self.process,
                         row["process"], row["pid"])

    def _beat_tolerantly(self) -> None:
        try:
            self.beat()
        except psycopg2.Error as error:
            metrics.HEARTBEAT_FAILURES.inc()
            if not self._failing:  # once per outage, not every few seconds
                log.warning("%s: cannot write the heartbeat (%s); retrying every %.0fs", self.process,
                            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                            self.interval_s)
            self._failing = True
            return
        if self._failing:
            log.info("%s: heartbeat written again", self.process)
            self._failing = False

    def _run(self) -> None:
        try:
            while True:
                self._beat_tolerantly()
                if self._stopping.wait(self.interval_s):
                    return
        except BaseException as error:
            log.critical("%s: the heartbeat thread died; the process stops", self.process, exc_info=True)
            self.failure = error
            raise

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start writing every `interval_s`, the first time at once; `careloop_heartbeat_age_seconds` follows."""
        metrics.watch_heartbeat_age(self.age_s)
        self._thread.start()

    def stop(self, *, forget: bool = True, timeout_s: float = 10) -> None:
        """Stop writing; with `forget` (a clean stop) delete the row, so /health no longer lists the process."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout_s)
        if not forget:
            return
        try:
            with self.database.transaction() as conn:
                execute(conn, QUERIES["delete_heartbeat"], {"process": self.process})
        except psycopg2.Error as error:
            log.warning("%s: could not remove the heartbeat (%s); it will read as stale", self.process, error)

    def dead_thread(self) -> str | None:
        """The heartbeat thread's name when it ended without being asked to, else None."""
        if self.failure is not None or (
            self._thread.ident is not None and not self._thread.is_alive() and not self._stopping.is_set()
        ):
            return self._thread.name
        return None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it runs, under another user
        return True
    return True


# --- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessHealth:
    """A process's last heartbeat as /health reports it."""

    process: str
    kind: str
    host: str
    pid: int
    started_at: dt.datetime
    beat_at: dt.datetime
    interval_s: float
    last_commit_at: dt.datetime | None
    lag_s: float | None
    queue_depth: int | None
    details: dict[str, Any]
    age_s: float  # since beat_at
    stale: bool  # age_s beyond STALE_AFTER_INTERVALS intervals

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: times in ISO 8601, seconds rounded to milliseconds."""
        return {
            "process": self.process,
            "kind": self.kind,
            "host": self.host,
            "pid": self.pid,
            "state": "stale" if self.stale else "ok",
            "stale": self.stale,
            "started_at": self.started_at.isoformat(),
            "beat_at": self.beat_at.isoformat(),
            "age_s": round(self.age_s, 3),
            "interval_s": self.interval_s,
            "last_commit_at": self.last_commit_at.isoformat() if self.last_commit_at else None,
            "lag_s": round(self.lag_s, 3) if self.lag_s is not None else None,
            "queue_depth": self.queue_depth,
            "details": self.details,
        }


def process_health(conn: Any, now: dt.datetime) -> list[ProcessHealth]:
    """Every process's last heartbeat at `now`, stale when older than STALE_AFTER_INTERVALS of its intervals."""
    answers = []
    for row in fetch_all(conn, QUERIES["process_heartbeats"]):
        age_s = (now - row["beat_at"]).total_seconds()
        answers.append(
            ProcessHealth(**row, age_s=age_s, stale=age_s > STALE_AFTER_INTERVALS * row["interval_s"])
        )
    return answers
