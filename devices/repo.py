"""Thin functions over devices/queries.sql; rows leave as the domain's models."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from careloop.db import Connection, fetch_all, fetch_one, fetch_value, load_queries
from careloop.durations import Duration
from careloop.pages import Page, paginate
from devices.models import DeviceEvent, DeviceRead, FleetCounts, KindCount, TelemetryPoint

QUERIES = load_queries(Path(__file__).with_name("queries.sql"))
NO_FILTER: dict[str, Any] = {
    "device_id": None,
    "kind": None,
    "model": None,
    "region": None,
    "owner": None,
    "online": None,
    "q": None,
}


def insert_device(conn: Connection, *, device: dict[str, Any]) -> bool:
    """True when the device was created, False when the id was already taken."""
    return fetch_one(conn, QUERIES["insert_device"], device) is not None


def device_models(conn: Connection, *, device_ids: list[str]) -> dict[str, str]:
    return {
        row["id"]: row["model"]
        for row in fetch_all(conn, QUERIES["device_models"], {"device_ids": device_ids})
    }


def devices_revision(conn: Connection) -> int:
    return int(fetch_value(conn, QUERIES["devices_revision"]))


def list_devices(conn: Connection, *, limit: int = 100, offset: int = 0, **filters: Any) -> Page[DeviceRead]:
    rows = fetch_all(conn, QUERIES["list_devices"], {**NO_FILTER, **filters, "limit": limit, "offset": offset})
    return paginate(rows, DeviceRead.model_validate)


def telemetry(
    conn: Connection,
    *,
    device_id: str,
    since: dt.datetime,
    until: dt.datetime,
    metric: str | None,
    bucket: Duration | None,
    limit: int,
) -> list[TelemetryPoint]:
    """Readings in [since, until), newest first; with `bucket`, each metric's average per bucket."""
    params = {"device_id": device_id, "since": since, "until": until, "metric": metric, "limit": limit}
    if bucket is None:
        rows = fetch_all(conn, QUERIES["telemetry_raw"], params)
    else:
        width = dt.timedelta(seconds=bucket.seconds)
        rows = fetch_all(conn, QUERIES["telemetry_bucketed"], {**params, "bucket": width})
    label = None if bucket is None else str(bucket)
    return [TelemetryPoint(ts=row["ts"], metric=row["metric"], value=row["value"], bucket=label) for row in rows]


def device_events(
    conn: Connection, *, device_id: str, since: dt.datetime, until: dt.datetime, types: list[str] | None, limit: int
) -> list[DeviceEvent]:
    """Events in [since, until), newest first."""
    params = {"device_id": device_id, "since": since, "until": until, "types": types, "limit": limit}
    return [DeviceEvent.model_validate(row) for row in fetch_all(conn, QUERIES["device_events"], params)]


def fleet_summary(conn: Connection) -> FleetCounts:
    return FleetCounts.model_validate(fetch_one(conn, QUERIES["fleet_summary"]))


def fleet_by_kind(conn: Connection) -> list[KindCount]:
    return [KindCount.model_validate(row) for row in fetch_all(conn, QUERIES["fleet_by_kind"])]


def readings_since(conn: Connection, *, since: dt.datetime) -> int:
    return int(fetch_value(conn, QUERIES["readings_since"], {"since": since}))


# --- broker credentials ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialRow:
    device_id: str
    issued_at: dt.datetime
    issued_by: str | None
    rotations: int


@dataclass(frozen=True)
class StoredPasswordRow:
    device_id: str
    salt: str
    password_hash: str
    iterations: int


def store_device_credential(
    conn: Connection, *, device_id: str, salt: str, password_hash: str, iterations: int, issued_by: str | None
) -> CredentialRow:
    row = fetch_one(conn, QUERIES["store_device_credential"], {
        "device_id": device_id, "salt": salt, "password_hash": password_hash, "iterations": iterations,
        "issued_by": issued_by,
    })
    return CredentialRow(**row)


def device_credential(conn: Connection, *, device_id: str) -> CredentialRow | None:
    row = fetch_one(conn, QUERIES["device_credential"], {"device_id": device_id})
    return CredentialRow(**row) if row else None


def stored_device_passwords(conn: Connection) -> list[StoredPasswordRow]:
    return [StoredPasswordRow(**row) for row in fetch_all(conn, QUERIES["stored_device_passwords"])]
