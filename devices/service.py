"""Devices: registration, look-ups, telemetry reads and fleet counts. Takes a connection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg2.errors

from careloop.db import Connection, savepoint
from careloop.durations import Duration
from careloop.errors import Conflict, InvalidInput
from careloop.mqtt import is_reserved_name
from careloop.pages import Page
from devices import repo
from devices.catalog import get_model, load_catalog
from devices.models import ApplianceModel, DeviceCreate, DeviceEvent, DeviceRead, TelemetryPoint

MAX_TELEMETRY_POINTS = 10_000


def register_device(conn: Any, device: DeviceCreate) -> DeviceRead:
    if is_reserved_name(device.id):
        # A device named like a broker service account, or like an ingester's client id, could take its place.
        raise InvalidInput("id", "device ids starting with 'careloop' are kept for CareLoop's own broker accounts")
    model = get_model(device.model)
    if model is None:
        raise InvalidInput("model", f"unknown model {device.model!r}; GET /models lists the known ones")
    try:
        with savepoint(conn, "register_device"):
            created = repo.insert_device(
                conn,
                device={
                    "id": device.id,
                    "model": model.code,
                    "kind": model.kind,
                    "owner_id": device.owner,
                    "purchased_on": device.purchased_on,
                    "region": device.region,
                },
            )
    except psycopg2.errors.ForeignKeyViolation:
        # The owner is a customer, and devices sit below customers: the foreign key (the row's one reference)
        # checks it, so this domain need not import customers.
        if device.owner is None:
            raise
        raise InvalidInput("owner", f"no customer with id {device.owner}") from None
    except psycopg2.errors.CheckViolation as refused:
        # An erased customer is an anonymous stub: the database refuses them as an owner (migration 020).
        if refused.diag.constraint_name != "devices_owner_not_erased":
            raise
        raise InvalidInput("owner", f"customer {device.owner} was erased: a device cannot be theirs") from None
    if not created:
        raise Conflict(f"device {device.id} already exists")
    return get_device(conn, device.id)


def get_device(conn: Connection, device_id: str) -> DeviceRead:
    return repo.list_devices(conn, device_id=device_id, limit=1).one(f"no device {device_id}")


def list_devices(conn: Connection, *, limit: int, offset: int, **filters: Any) -> Page[DeviceRead]:
    return repo.list_devices(conn, limit=limit, offset=offset, **filters)


def device_events(
    conn: Connection, device_id: str, *, since: dt.datetime | None, until: dt.datetime | None,
    types: list[str] | None, limit: int,
) -> list[DeviceEvent]:
    """A device's events in a range (default: the last day), newest first; 404 for an unknown device."""
    get_device(conn, device_id)
    until = until or dt.datetime.now(dt.UTC)
    since = since or until - dt.timedelta(days=1)
    if since >= until:
        raise InvalidInput("since", "must be before until")
    return repo.device_events(conn, device_id=device_id, since=since, until=until, types=types, limit=limit)


def device_telemetry(
    conn: Connection,
    device_id: str,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    metric: str | None,
    bucket: Duration | None,
    limit: int,
) -> list[TelemetryPoint]:
    device = get_device(conn, device_id)
    until = until or dt.datetime.now(dt.UTC)
    since = since or until - dt.timedelta(days=1)
    if since >= until:
        raise InvalidInput("since", "must be before until")
    model = get_model(device.model)
    if metric is not None and model is not None and metric not in model.metrics:
        raise InvalidInput("metric", f"{device.model} has no metric {metric!r}")
    return repo.telemetry(
        conn,
        device_id=device_id,
        since=since,
        until=until,
        metric=metric,
        bucket=bucket,
        limit=min(limit, MAX_TELEMETRY_POINTS),
    )


def models_of_devices(conn: Connection, device_ids: list[str]) -> dict[str, ApplianceModel]:
    """The catalog model of each known device among `device_ids` (unknown ones are absent)."""
    return _in_catalog(repo.device_models(conn, device_ids=device_ids))


def _in_catalog(codes: dict[str, str]) -> dict[str, ApplianceModel]:
    catalog = load_catalog()
    return {device_id: catalog[code] for device_id, code in codes.items() if code in catalog}


class DeviceModelCache:
    """models_of_devices for a process that asks about the same devices over and over (an ingester, batch after
    batch), remembering each registered device's model code. Looking a batch's 1,000 devices up among 100,000
    took 2-3 ms of its 60 ms of database time, and 12 ms where the table had no statistics yet.

    Everything remembered is dropped when the devices' revision (fact_revisions, migration 008) has moved: it
    moves in the transaction that registers, changes or deletes a device, and is read in the caller's
    transaction before anything else, so an answer is never older than a lookup made there. Only registered
    devices are remembered: an unknown one is looked up again each time, and is found from its registration on.
    """

    def __init__(self, max_devices: int = 250_000) -> None:
        self.max_devices = max_devices  # about 150 bytes each; past it, everything is dropped and read again
        self._revision: int | None = None
        self._codes: dict[str, str] = {}
        self.lookups = 0  # devices looked up in the database

    def models_of(self, conn: Connection, device_ids: list[str]) -> dict[str, ApplianceModel]:
        """As models_of_devices."""
        revision = repo.devices_revision(conn)
        if revision != self._revision or len(self._codes) > self.max_devices:
            self._codes.clear()
            self._revision = revision
        codes = self._codes
        unknown = [device_id for device_id in device_ids if device_id not in codes]
        if unknown:
            self.lookups += len(unknown)
            codes.update(repo.device_models(conn, device_ids=unknown))
        return _in_catalog({device_id: codes[device_id] for device_id in device_ids if device_id in codes})


def fleet_summary(conn: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Counts over the fleet's devices: online, offline, never seen, lost messages, readings of the last day.
    (What the ingester quarantined is ingest's to count: careloop/fleet.py composes the two.)"""
    now = now or dt.datetime.now(dt.UTC)
    day_ago = now - dt.timedelta(days=1)
    summary = dict(repo.fleet_summary(conn))
    return {
        **summary,
        "missing_seq": int(summary.get("missing_seq") or 0),
        "seq_resets": int(summary.get("seq_resets") or 0),
        "by_kind": repo.fleet_by_kind(conn),
        "readings_24h": repo.readings_since(conn, since=day_ago),
    }
