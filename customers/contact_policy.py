"""The contact policy: may we contact this customer, for this purpose, on this channel, now? Pure.

One gate for every contact (a service call, an offer's message), so service orders and offers share it without
knowing each other. It answers with a reason a person can read, and the time from which the contact may be made:

- no contact without the customer's consent for that purpose on that channel;
- calls and messages only in the customer's daytime, in their own time zone (quiet hours otherwise);
- no more than a few contacts of a purpose in a day and a week, on all channels and on each (frequency caps);
- for offers (decide_offer_contact): service first, so no sales offer while the customer's service is open; the
  customer's preferred channel where they consented to it and we can reach them there.

Daylight-saving changes need no special case: quiet hours are local wall-clock times, turned into instants by
zoneinfo for the very day they fall on, so 08:00 is 08:00 on the morning after a clock change too.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from customers.models import Channel, Purpose

QUIET_FROM = dt.time(21, 0)  # local time: no calls from 21:00 ...
QUIET_UNTIL = dt.time(8, 0)  # ... to 08:00
# (per day, per week) contacts of a purpose before the next one waits
CAPS: dict[str, tuple[int, int]] = {"service": (3, 10), "marketing": (1, 2)}
# the same, on any one channel
CHANNEL_CAPS: dict[str, tuple[int, int]] = {"service": (2, 7), "marketing": (1, 1)}
CHANNEL_WORDS = {"phone": "calls", "sms": "text messages", "email": "e-mail"}
REACH_WORDS = {"phone": "phone number", "sms": "mobile number", "email": "e-mail address"}


@dataclass(frozen=True)
class ContactDecision:
    allowed: bool
    reason: str
    not_before: dt.datetime | None = None  # UTC; set when allowed only later (quiet hours, a cap)
    channel: str | None = None  # the channel chosen, where the policy chose among several
    held: bool = False  # not now, nor refused: asked again once what holds it back (open service) is done


@dataclass(frozen=True)
class RecentContacts:
    """Contacts of one purpose allowed lately (scheduled ones included): on all channels, and on each."""

    last_day: int = 0
    last_week: int = 0
    channel_last_day: Mapping[str, int] = field(default_factory=dict)
    channel_last_week: Mapping[str, int] = field(default_factory=dict)


def decide_contact(
    *,
    purpose: Purpose,
    channel: Channel,
    consents: Mapping[tuple[str, str], bool],
    timezone: str,
    now: dt.datetime,
    contacts_last_day: int,
    contacts_last_week: int,
    channel_last_day: int = 0,
    channel_last_week: int = 0,
) -> ContactDecision:
    """Whether and from when a contact may be made; `consents` maps (purpose, channel) to granted. The caps count
    the contacts of the purpose lately on all channels (`contacts_*`) and on this one (`channel_*`)."""
    words = f"{purpose} {CHANNEL_WORDS[channel]}"
    if not consents.get((purpose, channel), False):
        return ContactDecision(False, f"no consent to {words}")
    recent = RecentContacts(contacts_last_day, contacts_last_week, {channel: channel_last_day},
                            {channel: channel_last_week})
    return _scheduled(purpose, channel, f"consent to {words}", timezone=timezone, now=now, recent=recent)


def decide_offer_contact(
    *,
    sales: bool,
    open_service: Sequence[str],
    channels: Sequence[Channel],
    preferred: Channel | None,
    consents: Mapping[tuple[str, str], bool],
    reachable: Collection[str],
    timezone: str,
    now: dt.datetime,
    recent: RecentContacts,
    earliest: dt.datetime | None = None,
) -> ContactDecision:
    """Whether, on which channel and from when an offer (a marketing contact) may be sent.

    `channels` are the ones the offer may use, in its order; `open_service` names what the customer has open
    (service orders, fault detections): a sales offer waits for it (held). The preferred channel comes first
    where the customer consented to marketing on it and we can reach them there (`reachable`). `earliest`: not
    before then (a birthday coupon, on the day)."""
    if sales and open_service:
        return ContactDecision(
            False, f"service first: {'; '.join(open_service)}; sales offers wait until it is done", held=True
        )
    order = sorted(channels, key=lambda channel: channel != preferred)  # stable: the offer's order otherwise
    consented = [channel for channel in order if consents.get(("marketing", channel), False)]
    if not consented:
        either = " or ".join(CHANNEL_WORDS[channel] for channel in order)
        return ContactDecision(False, f"no consent to marketing {either}")
    usable = [channel for channel in consented if channel in reachable]
    if not usable:
        missing = " or ".join(REACH_WORDS[channel] for channel in consented)
        return ContactDecision(False, f"consent to marketing {CHANNEL_WORDS[consented[0]]} but no {missing} on record")
    channel = usable[0]
    reason = f"consent to marketing {CHANNEL_WORDS[channel]}"
    if preferred is not None and channel != preferred:
        if preferred not in channels:
            reason += f" (this offer is not sent by {CHANNEL_WORDS[preferred]}, the preferred channel)"
        elif preferred not in consented:
            reason += f" (no consent to marketing {CHANNEL_WORDS[preferred]}, the preferred channel)"
        else:
            reason += f" (no {REACH_WORDS[preferred]} on record for {CHANNEL_WORDS[preferred]}, the preferred channel)"
    elif channel == preferred:
        reason += ", the preferred channel"
    start = now
    if earliest is not None and earliest > now:
        start = earliest
        reason += f"; not before {earliest.astimezone(_zone(timezone)):%Y-%m-%d %H:%M} local time"
    return _scheduled("marketing", channel, reason, timezone=timezone, now=start, recent=recent)


def _scheduled(
    purpose: str, channel: str, reason: str, *, timezone: str, now: dt.datetime, recent: RecentContacts
) -> ContactDecision:
    """An allowed contact, from the first moment the frequency caps (all channels, then this one) and the
    customer's daytime allow."""
    words = f"{purpose} {CHANNEL_WORDS[channel]}"
    per_day, per_week = CAPS[purpose]
    channel_day, channel_week = CHANNEL_CAPS[purpose]
    on_channel_day = recent.channel_last_day.get(channel, 0)
    on_channel_week = recent.channel_last_week.get(channel, 0)
    if recent.last_week >= per_week or on_channel_week >= channel_week:
        counted = (f"{recent.last_week} {purpose} contacts this week" if recent.last_week >= per_week
                   else f"{on_channel_week} {words} this week")
        return ContactDecision(
            True, f"{reason}; {counted}, the most we make: wait a week",
            not_before=next_daytime(now + dt.timedelta(days=7), timezone), channel=channel,
        )
    not_before = now
    if recent.last_day >= per_day:
        not_before = now + dt.timedelta(days=1)
        reason += f"; {recent.last_day} today, the most we make in a day: from tomorrow"
    elif on_channel_day >= channel_day:
        not_before = now + dt.timedelta(days=1)
        reason += f"; {on_channel_day} {words} today, the most we make in a day: from tomorrow"
    daytime = next_daytime(not_before, timezone)
    if daytime > not_before:
        local = daytime.astimezone(_zone(timezone))
        reason += f"; quiet hours in {timezone}: from {local:%a %H:%M} local time"
    else:
        reason += f"; daytime in {timezone}"
    return ContactDecision(True, reason, not_before=daytime, channel=channel)


def next_daytime(moment: dt.datetime, timezone: str) -> dt.datetime:
    """`moment` itself when it falls in the customer's daytime, else the next end of quiet hours (UTC)."""
    zone = _zone(timezone)
    local = moment.astimezone(zone)
    clock = local.time()
    if QUIET_UNTIL <= clock < QUIET_FROM:
        return moment
    day = local.date() if clock < QUIET_UNTIL else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, QUIET_UNTIL, tzinfo=zone).astimezone(dt.UTC)


def local_day_start(day: dt.date, timezone: str) -> dt.datetime:
    """The first daytime moment (the end of quiet hours) of a calendar day in the customer's zone, in UTC."""
    return next_daytime(dt.datetime.combine(day, dt.time(0, 0), tzinfo=_zone(timezone)), timezone)


def local_today(now: dt.datetime, timezone: str) -> dt.date:
    """The date it is in the customer's zone."""
    return now.astimezone(_zone(timezone)).date()


def _zone(timezone: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")
