"""What crosses domains: a detection's `offer` action carried out.

The relay takes the detections whose `offer` actions are pending (locked, so a second engine skips them), issues
each through offers.service, keyed by the action's key (or, for a birthday, by customer and year, so an owner of
three appliances gets one coupon), and marks the action done with what it made, in one transaction: an action is
done exactly when its offer, its place in the holdout, or the reason it was skipped is stored.
"""

from __future__ import annotations

import datetime as dt
import logging

from careloop.db import Connection
from offers import service
from rules import service as rules_service

log = logging.getLogger("careloop.offers")

KINDS = ["offer"]


def carry_out_offer_actions(conn: Connection, *, now: dt.datetime, limit: int = 200) -> dict[str, int]:
    """Carry out the pending `offer` actions of up to `limit` detections; the caller commits."""
    counts = {"detections": 0, "offers": 0, "holdouts": 0, "skipped": 0}
    for detection in rules_service.detections_with_pending_actions(conn, kinds=KINDS, limit=limit):
        counts["detections"] += 1
        for action in detection.actions:
            if action.status != "pending" or action.action not in KINDS:
                continue
            outcome = service.offer_for_detection(conn, detection, action.params, key=action.key, now=now)
            counts["offers" if outcome.kind == "offer" else "holdouts" if outcome.kind == "holdout" else "skipped"] += 1
            rules_service.mark_action_done(conn, detection_id=detection.id, key=action.key, result=outcome.result())
    if counts["detections"]:
        log.info("carried out offer actions: %s", counts)
    return counts
