"""The contact policy: may we contact this customer, for this purpose, on this channel, now? Pure.

One gate for every contact (a service call, an offer's message), so service orders and offers share it without
knowing each other. It answers with a reason a person can read, and the time from which the contact may be made:

- no contact without the customer's consent for that purpose on that channel;
- calls and messages only in the customer's daytime, in their own time zone (quiet hours otherwise);
- no more than a few contacts of a purpose in a day and a week (frequency caps).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from customers.models import Channel, Purpose

QUIET_FROM = dt.time(21, 0)  # local time: no calls from 21:00 ...
QUIET_UNTIL = dt.time(8, 0)  # ... to 08:00
# (per day, per week) contacts of a purpose before the next one waits
CAPS: dict[str, tuple[int, int]] = {"service": (3, 10), "marketing": (1, 2)}
CHANNEL_WORDS = {"phone": "calls", "sms": "text messages", "email": "e-mail"}


@dataclass(frozen=True)
class ContactDecision:
    allowed: bool
    reason: str
    not_before: dt.datetime | None = None  # UTC; set when allowed only later (quiet hours, a cap)


def decide_contact(
    *,
    purpose: Purpose,
    channel: Channel,
    consents: Mapping[tuple[str, str], bool],
    timezone: str,
    now: dt.datetime,
    contacts_last_day: int,
    contacts_last_week: int,
) -> ContactDecision:
    """Whether and from when a contact may be made; `consents` maps (purpose, channel) to granted."""
    words = f"{purpose} {CHANNEL_WORDS[channel]}"
    if not consents.get((purpose, channel), False):
        return ContactDecision(False, f"no consent to {words}")
    per_day, per_week = CAPS[purpose]
    if contacts_last_week >= per_week:
        return ContactDecision(
            True, f"{contacts_last_week} {words} this week, the most we make: wait a week",
            not_before=now + dt.timedelta(days=7),
        )
    not_before = now
    reason = f"consent to {words}"
    if contacts_last_day >= per_day:
        not_before = now + dt.timedelta(days=1)
        reason += f"; {contacts_last_day} today, the most we make in a day: from tomorrow"
    daytime = next_daytime(not_before, timezone)
    if daytime > not_before:
        local = daytime.astimezone(_zone(timezone))
        reason += f"; quiet hours in {timezone}: from {local:%a %H:%M} local time"
    else:
        reason += f"; daytime in {timezone}"
    return ContactDecision(True, reason, not_before=daytime)


def next_daytime(moment: dt.datetime, timezone: str) -> dt.datetime:
    """`moment` itself when it falls in the customer's daytime, else the next end of quiet hours (UTC)."""
    zone = _zone(timezone)
    local = moment.astimezone(zone)
    clock = local.time()
    if QUIET_UNTIL <= clock < QUIET_FROM:
        return moment
    day = local.date() if clock < QUIET_UNTIL else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, QUIET_UNTIL, tzinfo=zone).astimezone(dt.UTC)


def _zone(timezone: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")
