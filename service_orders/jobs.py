"""What the engine process runs for service orders: carrying out detections' actions, the SLA clock, and the
check that a completed repair really cleared its fault."""

from __future__ import annotations

from careloop.jobs import ScheduledJob
from service_orders import flows, service

JOBS = [
    # also right after each evaluation: a fault's order and call task follow its detection within the second
    ScheduledJob("service-order-actions", every_s=10, after_evaluation=True,
                 run=lambda conn, now: flows.carry_out_detection_actions(conn, now=now)),
    ScheduledJob("sla-escalation", every_s=60,
                 run=lambda conn, now: {"escalated": service.escalate_overdue(conn, now=now)}),
    ScheduledJob("completion-check", every_s=300, run=lambda conn, now: service.verify_completions(conn, now=now)),
]
