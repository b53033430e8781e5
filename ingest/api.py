"""HTTP endpoints for what the ingester rejected and lost; thin handlers over ingest.service."""

from __future__ import annotations

from fastapi import APIRouter

from careloop.deps import EARLIEST_MOMENT, Conn, Limit, Moment, Offset, Role
from careloop.errors import EVERY_ROUTE
from careloop.pages import Page
from ingest import service
from ingest.models import IngestStats, QuarantinedMessage

router = APIRouter(tags=["ingest"], responses=EVERY_ROUTE)


@router.get("/ingest/quarantine")
def list_quarantine(
    conn: Conn,
    _role: Role,
    reason: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[QuarantinedMessage]:
    """Rejected messages, newest first, with topic, reason, detail and the (truncated) payload."""
    return service.list_quarantine(conn, reason=reason, limit=limit, offset=offset)


@router.get("/ingest/stats")
def ingest_stats(conn: Conn, _role: Role, since: Moment | None = None) -> IngestStats:
    """Quarantined messages per reason (default: ever) and messages lost in transit (seq gaps)."""
    return service.ingest_stats(conn, since=since or EARLIEST_MOMENT)
