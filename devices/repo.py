"""Thin functions over devices/queries.sql."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from careloop.db import Row, fetch_all, fetch_one, fetch_value, load_queries

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


def insert_device(conn: Any, *, device: dict[str, Any]) -> bool:
    """True when the device was created, False when the id was already taken."""
    return fetch_one(conn, QUERIES["insert_device"], device) is not None


def device_models(conn: Any, *, device_ids: list[str]) -> dict[str, str]:
    return {
        row["id"]: row["model"]
        for row in fetch_all(conn, QUERIES["device_models"], {"device_ids": device_ids})
    }


def list_devices(conn: Any, *, limit: int = 100, offset: int = 0, **filters: Any) -> list[Row]:
    return fetch_all(
        conn, QUERIES["list_devices"], {**NO_FILTER, **filters, "limit": limit, "offset": offset}
    )


def telemetry(
    conn: Any,
    *,
    device_id: str,
    since: dt.datetime,
    until: dt.datetime,
    metric: str | None,
    bucket: dt.timedelta | None,
    limit: int,
) -> list[Row]:
    params = {"device_id": device_id, "since": since, "until": until, "metric": metric, "limit": limit}
    if bucket is None:
        return fetch_all(conn, QUERIES["telemetry_raw"], params)
    return fetch_all(conn, QUERIES["telemetry_bucketed"], {**params, "bucket": bucket})


def fleet_summary(conn: Any) -> Row:
    return fetch_one(conn, QUERIES["fleet_summary"]) or {}


def fleet_by_kind(conn: Any) -> list[Row]:
    return fetch_all(conn, QUERIES["fleet_by_kind"])


def readings_since(conn: Any, *, since: dt.datetime) -> int:
    return int(fetch_value(conn, QUERIES["readings_since"], {"since": since}))
