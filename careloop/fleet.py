"""GET /fleet/summary: counts over the whole fleet, composed from the domains that keep them.

Devices count what their rows say (online, offline, never seen, lost messages, readings); ingest counts what it
quarantined. Devices sit below ingest, so the two meet here, in the composition root, not in either domain."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter

from careloop.deps import Conn, Role
from devices import service as devices_service
from ingest import service as ingest_service

router = APIRouter(tags=["devices"])


@router.get("/devices/fleet/summary", include_in_schema=False)
@router.get("/fleet/summary")
def fleet_summary(conn: Conn, _role: Role) -> dict:
    """Counts over the fleet: online, offline, never seen, lost messages, quarantine, readings."""
    now = dt.datetime.now(dt.UTC)
    summary = devices_service.fleet_summary(conn, now=now)
    quarantined = ingest_service.quarantined_since(conn, since=now - dt.timedelta(days=1))
    return {**summary, "quarantined_24h": quarantined}
