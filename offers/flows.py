"""What crosses domains: a detection's `offer` action carried out; a customer's objection to marketing.

The relay takes the detections whose `offer` actions are pending (locked, so a second engine skips them), issues
each through offers.service, keyed by the action's key (or, for a birthday, by customer and year, so an owner of
three appliances gets one coupon), and marks the action done with what it made, in one transaction: an action is
done exactly when its offer, its place in the holdout, or the reason it was skipped is stored.
"""

from __future__ import annotations

import datetime as dt
import logging

from careloop.db import Connection
from customers import service as customers_service
from offers import service
from offers.models import ObjectionRead
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


def object_to_marketing(
    conn: Connection, customer_id: int, *, source: str, note: str | None = None, at: dt.datetime
) -> ObjectionRead:
    """A customer's objection to marketing stops all of it at once: consent withdrawn on every channel (kept in
    the history with when and how, by customers/), their offers not yet in their hands blocked and messages not
    yet sent cancelled, saying why. Objecting again changes nothing more."""
    changed = customers_service.object_to_marketing(conn, customer_id, source=source, note=note, at=at)
    reason = f"the customer objected to marketing on {at:%Y-%m-%d %H:%M} UTC ({source})"
    stopped = service.stop_marketing(conn, customer_id, reason=reason, at=at)
    history = customers_service.consent_history(conn, customer_id)
    since = next((record.at for record in history if record.purpose == "marketing" and not record.granted), at)
    log.info("customer %d objected to marketing (%s)%s", customer_id, source, "" if changed else ": again")
    return ObjectionRead(customer_id=customer_id, objected_at=since, recorded_now=changed,
                         consents=customers_service.get_customer(conn, customer_id).consents, **stopped)
