"""What the engine process runs for offers: carrying out detections' `offer` actions, releasing offers held for
service first, expiring offers, delivering the outbox, and recomputing customer segments."""

from __future__ import annotations

from careloop.jobs import ScheduledJob
from customers import service as customers_service
from offers import delivery, flows, service

JOBS = [
    # also right after each evaluation, so a detection's offer follows it within the second
    ScheduledJob("offer-actions", every_s=10, after_evaluation=True,
                 run=lambda conn, now: flows.carry_out_offer_actions(conn, now=now)),
    ScheduledJob("offers-held-release", every_s=300, run=lambda conn, now: service.release_held(conn, now=now)),
    ScheduledJob("offers-expiry", every_s=300, run=lambda conn, now: service.expire_due(conn, now=now)),
    # commits as it goes (the claim, then each message sent): see offers.delivery
    ScheduledJob("outbox-delivery", every_s=5, run=lambda conn, now: delivery.deliver_due(conn, now=now)),
    ScheduledJob("customer-segments", every_s=6 * 3600,
                 run=lambda conn, now: customers_service.refresh_segments(conn, now=now)),
]
