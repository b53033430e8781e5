"""HTTP endpoints for models, devices and telemetry; thin handlers over devices.service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from careloop.auth import technician_device_ids
from careloop.db import BIGINT_MAX, BIGINT_MIN
from careloop.deps import Caller, Conn, Limit, Moment, Offset
from careloop.durations import Duration
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page, whole
from devices import service
from devices.catalog import load_catalog
from devices.models import DEVICE_ID_PATTERN, ApplianceModel, DeviceCreate, DeviceRead, TelemetrySeries

router = APIRouter(tags=["devices"], responses=EVERY_ROUTE)
DeviceId = Annotated[str, Query(pattern=DEVICE_ID_PATTERN)]


@router.get("/models")
def list_models() -> Page[ApplianceModel]:
    """The appliance models known, with their metrics, fault codes, life and maintenance interval."""
    return whole(list(load_catalog().values()))


@router.post("/devices", status_code=201, responses=answers(403, 409))
def create_device(device: DeviceCreate, conn: Conn) -> DeviceRead:
    return service.register_device(conn, device)


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
