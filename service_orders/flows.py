"""What crosses domains: a detection's `open_service_order` and `call_customer` actions carried out.

The engine stores each detection with its actions pending, each with its own key. This relay takes the pending
ones (locked, so a second engine skips them), carries each out through the service functions, keyed so a retry
finds the order or call task already made, and marks it done with what it made, in one transaction: an action is
done exactly when its effect exists. Detections opened before this relay existed are carried out too.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from careloop.db import Connection
from rules import service as rules_service
from rules.models import DetectionToCarryOut
from service_orders import service

log = logging.getLogger("careloop.service_orders")

KINDS = ["open_service_order", "call_customer"]


def carry_out_detection_actions(conn: Connection, *, now: dt.datetime, limit: int = 200) -> dict[str, int]:
    """Carry out the pending order and call actions of up to `limit` detections; the caller commits."""
    counts = {"detections": 0, "orders_opened": 0, "orders_joined": 0, "call_tasks": 0}
    for detection in rules_service.detections_with_pending_actions(conn, kinds=KINDS, limit=limit):
        counts["detections"] += 1
        # The order first, whatever the rule's order of actions: the call names it.
        actions = sorted(
            (a for a in detection.actions if a.status == "pending" and a.action in KINDS),
            key=lambda a: KINDS.index(a.action),
        )
        order_id = _order_made_before(detection)
        for action in actions:
            if action.action == "open_service_order":
                order, opened = service.open_order_for_detection(conn, detection, action.params,
                                                                 key=action.key, now=now)
                order_id = order.id
                counts["orders_opened" if opened else "orders_joined"] += 1
                result: dict[str, Any] = {"order_id": order.id}
            else:
                task = service.open_call_task(conn, device_id=detection.device_id,
                                              reason=action.params["reason"], key=action.key,
                                              order_id=order_id, now=now)
                counts["call_tasks"] += 1
                result = {"call_task_id": task.id, "call_status": task.status}
            rules_service.mark_action_done(conn, detection_id=detection.id, key=action.key, result=result)
    if counts["detections"]:
        log.info("carried out detection actions: %s", counts)
    return counts


def _order_made_before(detection: DetectionToCarryOut) -> int | None:
    """The order this detection's `open_service_order` made on an earlier pass, if any."""
    for action in detection.actions:
        if action.action == "open_service_order" and action.status == "done":
            return (action.result or {}).get("order_id")
    return None
