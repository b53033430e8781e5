"""A technician's calendar, without any server: windows inside working hours, capacity, no overlaps."""

from __future__ import annotations

import datetime as dt

from service_orders.calendar import WorkingHours, soonest_window, why_not

SHANGHAI = WorkingHours("Asia/Shanghai", dt.time(8), dt.time(17), frozenset({1, 2, 3, 4, 5}), daily_capacity=2)
MONDAY_9_LOCAL = dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC)  # Monday 09:00 in Shanghai


def test_the_soonest_window_starts_within_working_hours_at_or_after_now() -> None:
    start, end = soonest_window(SHANGHAI, [], MONDAY_9_LOCAL)
    assert (start, end) == (MONDAY_9_LOCAL, MONDAY_9_LOCAL + dt.timedelta(hours=2))


def test_a_full_day_moves_the_window_to_the_next_working_day() -> None:
    booked = [(MONDAY_9_LOCAL, MONDAY_9_LOCAL + dt.timedelta(hours=2)),
              (MONDAY_9_LOCAL + dt.timedelta(hours=3), MONDAY_9_LOCAL + dt.timedelta(hours=5))]
    start, _end = soonest_window(SHANGHAI, booked, MONDAY_9_LOCAL)
    assert start == dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)  # Tuesday 08:00 local


def test_friday_evening_moves_to_monday_morning() -> None:
    friday_evening = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)  # 18:00 local
    start, _end = soonest_window(SHANGHAI, [], friday_evening)
    assert start == dt.datetime(2026, 12, 7, 0, 0, tzinfo=dt.UTC)


def test_why_a_window_does_not_fit_is_said() -> None:
    two_hours = dt.timedelta(hours=2)
    saturday = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
    assert "Saturday is not a working day" in why_not(SHANGHAI, [], saturday, saturday + two_hours)
    evening = MONDAY_9_LOCAL + dt.timedelta(hours=7)  # 16:00-18:00 local
    assert "outside working hours 08:00-17:00" in why_not(SHANGHAI, [], evening, evening + two_hours)
    booked = [(MONDAY_9_LOCAL, MONDAY_9_LOCAL + two_hours)]
    assert "overlaps" in why_not(SHANGHAI, booked, MONDAY_9_LOCAL + dt.timedelta(hours=1),
                                 MONDAY_9_LOCAL + dt.timedelta(hours=3))
    assert why_not(SHANGHAI, booked, MONDAY_9_LOCAL + two_hours, MONDAY_9_LOCAL + 2 * two_hours) is None
