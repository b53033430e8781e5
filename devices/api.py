"""HTTP endpoints for models, devices and telemetry; thin handlers over devices.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import Field

from careloop.auth import technician_device_ids
from careloop.db import BIGINT_MAX, BIGINT_MIN
from careloop.deps import Caller, Conn, Limit, Moment, Offset
from careloop.durations import Duration
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page, whole
from devices import service
from devices.catalog import load_catalog
from devices.credentials import DeviceAccounts, DeviceCredential, issue_device_credential
from devices.models import (
    DEVICE_ID_PATTERN,
    ApplianceModel,
    DeviceCreate,
    DeviceEvent,
    DeviceRead,
    TelemetrySeries,
)

router = APIRouter(tags=["devices"], responses=EVERY_ROUTE)
DeviceId = Annotated[str, Query(pattern=DEVICE_ID_PATTERN)]


@router.get("/models")
def list_models() -> Page[ApplianceModel]:
    """The appliance models known, with their metrics, fault codes, life and maintenance interval."""
    return whole(list(load_catalog().values()))


class DeviceRegistered(DeviceRead):
    """The device as registered, with its broker credentials (shown this once)."""

    credentials: DeviceCredential | None = Field(
        None, description="user name, password (shown once), client id and topics; null where the API has no "
        "broker credential issuer (CARELOOP_MQTT_ADMIN_URL)")


def _broker_accounts(request: Request) -> DeviceAccounts | None:
    return getattr(request.app.state, "broker_accounts", None)


@router.post("/devices", status_code=201, responses=answers(403, 409, 503))
def create_device(device: DeviceCreate, conn: Conn, caller: Caller, request: Request) -> DeviceRegistered:
    """Register a device and issue its broker credentials in the same step: when the broker cannot take them, a 503
    and nothing is registered."""
    registered = service.register_device(conn, device)
    accounts = _broker_accounts(request)
    issued = None
    if accounts is not None:
        issued = issue_device_credential(conn, registered.id, accounts=accounts, issued_by=caller.name)
    return DeviceRegistered(**registered.model_dump(), credentials=issued)


@router.post("/devices/{device_id}/credentials", status_code=201, responses=answers(403, 404, 503))
def rotate_device_credentials(
    device_id: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)], conn: Conn, caller: Caller, request: Request
) -> DeviceCredential:
    """A new broker password for the device, shown this once; it replaces the previous one at once (the broker
    closes the connection opened with it)."""
    service.get_device(conn, device_id)  # an unknown device is a 404 whether or not an issuer is configured
    accounts = _broker_accounts(request)
    if accounts is None:
        raise HTTPException(503, "the API has no broker credential issuer: set CARELOOP_MQTT_ADMIN_URL")
    return issue_device_credential(conn, device_id, accounts=accounts, issued_by=caller.name)


@router.get("/devices")
def list_devices(
    conn: Conn,
    caller: Caller,
    kind: str | None = None,
    model: str | None = None,
    region: str | None = None,
    owner: Annotated[int | None, Query(ge=BIGINT_MIN, le=BIGINT_MAX)] = None,
    online: bool | None = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DeviceRead]:
    """Devices, filtered; a technician's token lists only the devices of orders assigned to them, a customer's
    only the devices they own."""
    if caller.role == "customer":
        if owner is not None and owner != caller.customer_id:
            return Page[DeviceRead](items=[], total=0)
        owner = caller.customer_id
    if caller.role == "technician":
        return technicians_devices(conn, caller, kind=kind, model=model, region=region, owner=owner, online=online,
                                   q=q, limit=limit, offset=offset)
    return service.list_devices(
        conn,
        kind=kind,
        model=model,
        region=region,
        owner=owner,
        online=online,
        q=q,
        limit=limit,
        offset=offset,
    )


@router.get("/devices/{device_id}", responses=answers(404))
def get_device(device_id: str, conn: Conn) -> DeviceRead:
    return service.get_device(conn, device_id)


@router.get("/devices/{device_id}/telemetry", responses=answers(404))
def device_telemetry(
    device_id: str,
    conn: Conn,
    since: Moment | None = None,
    until: Moment | None = None,
    metric: str | None = None,
    bucket: Annotated[str | None, Query(description="average per bucket, e.g. 5m, 1h, 1d")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> TelemetrySeries:
    """Readings in a range (default: the last day), newest first; with `bucket`, averages per bucket."""
    try:
        bucket_size = Duration.parse(bucket) if bucket else None
        if bucket_size is not None and bucket_size.seconds == 0:
            raise ValueError("a bucket must be longer than zero")
    except ValueError as error:
        raise HTTPException(422, f"bucket: {error}") from None
    points = service.device_telemetry(
        conn, device_id, since=since, until=until, metric=metric, bucket=bucket_size, limit=limit
    )
    return TelemetrySeries(items=points)


EventType = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


@router.get("/devices/{device_id}/events", responses=answers(404))
def device_events(
    device_id: str,
    conn: Conn,
    since: Moment | None = None,
    until: Moment | None = None,
    type: Annotated[list[EventType] | None, Query(description="only these types, e.g. fault, maintenance_done")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Page[DeviceEvent]:
    """What the device reported happening in a range (default: the last day), newest first: faults with their
    codes, faults cleared, maintenance done, power on and off."""
    return whole(service.device_events(conn, device_id, since=since, until=until, types=type, limit=limit))


def technicians_devices(
    conn: Conn, caller: Caller, *, kind: str | None, model: str | None, region: str | None, owner: int | None,
    online: bool | None, q: str | None, limit: int, offset: int,
) -> Page[DeviceRead]:
    """The devices of a technician's orders (a handful), with the list's filters applied to them."""
    wanted = {"kind": kind, "model": model, "region": region, "owner": owner, "online": online}
    devices = [service.get_device(conn, device_id) for device_id in technician_device_ids(conn, caller.technician_id)]
    devices = [
        device for device in devices
        if all(value is None or getattr(device, name) == value for name, value in wanted.items())
        and (q is None or q.lower() in device.id.lower())
    ]
    return Page[DeviceRead](items=devices[offset : offset + limit], total=len(devices))
