"""A technician's calendar: appointment windows inside working hours, in the technician's own time zone. Pure.

A day holds at most `daily_capacity` appointments; windows never overlap. `soonest_window` finds the first free
window from a moment on; `why_not` says why a window a dispatcher chose does not fit (or None when it does).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

APPOINTMENT = dt.timedelta(hours=2)
HORIZON_DAYS = 21


@dataclass(frozen=True)
class WorkingHours:
    timezone: str
    start: dt.time
    end: dt.time
    days: frozenset[int]  # ISO weekdays, 1 = Monday
    daily_capacity: int

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


Booking = tuple[dt.datetime, dt.datetime]


def why_not(hours: WorkingHours, booked: Sequence[Booking], start: dt.datetime, end: dt.datetime) -> str | None:
    """Why the window [start, end) does not fit this calendar, or None when it does."""
    if end <= start:
        return "the window must end after it starts"
    local_start, local_end = start.astimezone(hours.zone), end.astimezone(hours.zone)
    if local_start.date() != local_end.date() and local_end.time() != dt.time(0):
        return "the window must fall within one working day"
    if local_start.isoweekday() not in hours.days:
        return f"{local_start:%A} is not a working day ({hours.timezone})"
    if local_start.time() < hours.start or local_end.time() > hours.end:
        return (f"{local_start:%H:%M}-{local_end:%H:%M} is outside working hours "
                f"{hours.start:%H:%M}-{hours.end:%H:%M} ({hours.timezone})")
    same_day = [b for b in booked if b[0].astimezone(hours.zone).date() == local_start.date()]
    if len(same_day) >= hours.daily_capacity:
        return f"{hours.daily_capacity} appointments already on {local_start:%a %d %b}, the daily capacity"
    for booked_start, booked_end in booked:
        if booked_start < end and start < booked_end:
            return f"overlaps the appointment {booked_start:%H:%M}-{booked_end:%H:%M} UTC"
    return None


def soonest_window(
    hours: WorkingHours, booked: Sequence[Booking], after: dt.datetime, length: dt.timedelta = APPOINTMENT
) -> Booking | None:
    """The first free window of `length` starting at or after `after` (on the hour), within the horizon."""
    local = after.astimezone(hours.zone)
    day = local.date()
    for _ in range(HORIZON_DAYS):
        start = dt.datetime.combine(day, hours.start, tzinfo=hours.zone)
        closing = dt.datetime.combine(day, hours.end, tzinfo=hours.zone)
        while start + length <= closing:
            if start >= after and why_not(hours, booked, start, start + length) is None:
                return start.astimezone(dt.UTC), (start + length).astimezone(dt.UTC)
            start += dt.timedelta(hours=1)
        day += dt.timedelta(days=1)
    return None
