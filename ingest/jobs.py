"""What is run on a schedule for ingest: quarantine retention.

Each ingester runs it itself, in its writer thread between batches (ingest.subscriber), rather than the engine
process: quarantine is the ingester's to fill, so a deployment of ingesters alone keeps it bounded too, and a pass
never runs beside one of the same ingester's batches. Several ingesters each running it is harmless: a pass
deletes in short chunks what is old or beyond the bound, and finds nothing left when another has done it."""

from __future__ import annotations

import datetime as dt

from careloop.jobs import ScheduledJob
from ingest import service

RETENTION_EVERY_S = 3600


def quarantine_retention(
    retention: dt.timedelta = service.QUARANTINE_RETENTION, max_rows: int = service.QUARANTINE_MAX_ROWS
) -> ScheduledJob:
    """Drop quarantined messages older than `retention` or beyond the newest `max_rows`, hourly."""
    return ScheduledJob(
        "quarantine-retention",
        every_s=RETENTION_EVERY_S,
        run=lambda conn, now: {
            "removed": service.prune_quarantine(conn, retention=retention, max_rows=max_rows, now=now)
        },
    )
