"""The contact policy, without any server: consent, the customer's daytime in their own zone, frequency caps."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from hypothesis import given
from hypothesis import strategies as st

from customers.contact_policy import QUIET_FROM, QUIET_UNTIL, decide_contact, next_daytime

SERVICE_PHONE = {("service", "phone"): True}


def decide(now: dt.datetime, *, consents=SERVICE_PHONE, timezone="Asia/Shanghai", day=0, week=0, purpose="service",
           channel_day=0, channel_week=0):
    return decide_contact(purpose=purpose, channel="phone", consents=consents, timezone=timezone, now=now,
                          contacts_last_day=day, contacts_last_week=week, channel_last_day=channel_day,
                          channel_last_week=channel_week)


def test_no_consent_means_no_call_and_says_so() -> None:
    decision = decide(dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC), consents={("service", "phone"): False})
    assert not decision.allowed and decision.reason == "no consent to service calls"
    assert not decide(dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC), purpose="marketing").allowed


def test_a_call_in_the_customers_daytime_is_due_now() -> None:
    now = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)  # 11:00 in Shanghai
    decision = decide(now)
    assert decision.allowed and decision.not_before == now and "daytime in Asia/Shanghai" in decision.reason


def test_a_call_in_quiet_hours_waits_for_eight_in_the_morning_local_time() -> None:
    now = dt.datetime(2026, 11, 30, 14, 0, tzinfo=dt.UTC)  # 22:00 in Shanghai
    decision = decide(now)
    assert decision.allowed
    assert decision.not_before == dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)  # 08:00 the next day there
    assert "quiet hours" in decision.reason and "08:00" in decision.reason


def test_frequency_caps_push_the_next_contact_later() -> None:
    now = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
    assert decide(now, day=3).not_before >= now + dt.timedelta(days=1)
    assert decide(now, week=10).not_before >= now + dt.timedelta(days=7)


def test_service_calls_keep_to_their_per_channel_caps_too() -> None:
    now = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)  # 11:00 in Shanghai
    assert decide(now, day=2, channel_day=1).not_before == now
    two_calls = decide(now, day=2, channel_day=2)
    assert two_calls.not_before >= now + dt.timedelta(days=1)
    assert "2 service calls today, the most we make in a day: from tomorrow" in two_calls.reason
    a_week = decide(now, day=0, week=7, channel_week=7)
    assert a_week.not_before >= now + dt.timedelta(days=7) and "7 service calls this week" in a_week.reason


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)),
       st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]))
def test_the_next_daytime_is_never_earlier_and_always_in_daytime(moment: dt.datetime, zone: str) -> None:
    daytime = next_daytime(moment, zone)
    local = daytime.astimezone(zoneinfo.ZoneInfo(zone)).time()
    assert daytime >= moment and daytime - moment <= dt.timedelta(hours=13)
    assert QUIET_UNTIL <= local < QUIET_FROM
