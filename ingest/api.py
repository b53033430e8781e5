"""HTTP endpoints for what the ingester rejected and lost."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from careloop.deps import EARLIEST_MOMENT, Conn, Moment, Offset, Role
from ingest import repo

router = APIRouter(tags=["ingest"])


@router.get("/ingest/quarantine")
def list_quarantine(
    conn: Conn,
    _role: Role,
    reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> dict:
    """Rejected messages, newest first, with topic, reason, detail and the (truncated) payload."""
    rows = repo.list_quarantine(conn, reason=reason, limit=limit, offset=offset)
    total = rows[0]["total"] if rows else 0
    return {"items": [{k: v for k, v in row.items() if k != "total"} for row in rows], "total": total}


@router.get("/ingest/stats")
def ingest_stats(conn: Conn, _role: Role, since: Moment | None = None) -> dict:
    """Quarantined messages per reason (default: ever) and messages lost in transit (seq gaps)."""
    since = since or EARLIEST_MOMENT
    return {
        "quarantine_by_reason": repo.quarantine_by_reason(conn, since=since),
        "missing_seq": repo.missing_seq_total(conn),
    }
