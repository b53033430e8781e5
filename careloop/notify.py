"""The ingest→engine notification: which devices a committed batch changed, on one named channel.

The ingester notifies inside a batch's transaction, so listeners hear it only once the batch has committed;
the rule engine listens and evaluates the event-driven rules for just those devices. Both sides use this
module: the channel, the payload's shape (comma-separated device ids, split to fit) and the SQL live here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from psycopg2 import sql

from careloop.db import Connection, execute, load_queries

CHANGED_DEVICES_CHANNEL = "careloop_ingest"
NOTIFY_PAYLOAD_LIMIT = 7900  # PostgreSQL's limit is 8000 bytes per notification
SEPARATOR = ","

QUERIES = load_queries(Path(__file__).with_name("notify.sql"))


def _statement(name: str) -> sql.Composed:
    return sql.SQL(QUERIES[name]).format(channel=sql.Identifier(CHANGED_DEVICES_CHANNEL))


def notify_changed_devices(conn: Connection, *, device_ids: Sequence[str]) -> None:
    """Tell listeners which devices this transaction changed; delivered only if it commits."""
    for payload in changed_devices_payloads(device_ids):
        execute(conn, _statement("notify"), {"payload": payload})


def listen_for_changed_devices(conn: Connection) -> None:
    """Hear every later notification of changed devices on `conn`, which must be in autocommit mode."""
    execute(conn, _statement("listen"))


def changed_devices_payloads(device_ids: Iterable[str]) -> Iterator[str]:
    """The device ids, comma-separated, in as few payloads as fit PostgreSQL's notification limit."""
    chunk: list[str] = []
    size = 0
    for device_id in device_ids:
        if chunk and size + len(device_id) + 1 > NOTIFY_PAYLOAD_LIMIT:
            yield SEPARATOR.join(chunk)
            chunk, size = [], 0
        chunk.append(device_id)
        size += len(device_id) + 1
    if chunk:
        yield SEPARATOR.join(chunk)


def devices_in(payload: str) -> list[str]:
    """The device ids a notification names."""
    return [device_id for device_id in payload.split(SEPARATOR) if device_id]
