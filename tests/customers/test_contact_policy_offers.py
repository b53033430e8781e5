"""The contact policy for offers, without any server: service first, consent and the preferred channel, caps
per channel and overall, and quiet hours in the customer's zone across daylight-saving changes."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from hypothesis import given
from hypothesis import strategies as st

from customers.contact_policy import (
    CAPS,
    CHANNEL_CAPS,
    QUIET_FROM,
    QUIET_UNTIL,
    RecentContacts,
    decide_offer_contact,
    local_day_start,
    next_daytime,
)

BOTH = {("marketing", "email"): True, ("marketing", "sms"): True}
NOON_SHANGHAI = dt.datetime(2026, 11, 30, 4, 0, tzinfo=dt.UTC)


def offer(now=NOON_SHANGHAI, *, sales=True, open_service=(), channels=("email", "sms"), preferred=None,
          consents=BOTH, reachable=("email", "sms"), timezone="Asia/Shanghai", recent=RecentContacts(),
          earliest=None):
    return decide_offer_contact(sales=sales, open_service=list(open_service), channels=list(channels),
                                preferred=preferred, consents=consents, reachable=set(reachable), timezone=timezone,
                                now=now, recent=recent, earliest=earliest)


def test_a_sales_offer_is_held_while_service_is_open_and_says_what_is_open() -> None:
    decision = offer(open_service=["service order 12 (repair) for your oven is open"])
    assert not decision.allowed and decision.held
    assert decision.reason.startswith("service first: service order 12") and "wait until it is done" in decision.reason


def test_service_first_holds_only_sales_offers() -> None:
    decision = offer(sales=False, open_service=["service order 12 (repair) for your oven is open"])
    assert decision.allowed and not decision.held


def test_no_marketing_consent_refuses_and_names_the_channels() -> None:
    decision = offer(consents={("service", "email"): True, ("marketing", "sms"): False})
    assert not decision.allowed and not decision.held
    assert decision.reason == "no consent to marketing e-mail or text messages"


def test_the_preferred_channel_comes_first_where_consented_and_reachable() -> None:
    assert offer(preferred="sms").channel == "sms"
    assert "the preferred channel" in offer(preferred="sms").reason
    no_sms_consent = offer(preferred="sms", consents={("marketing", "email"): True})
    assert no_sms_consent.channel == "email"
    assert "no consent to marketing text messages, the preferred channel" in no_sms_consent.reason
    no_number = offer(preferred="sms", reachable=("email",))
    assert no_number.channel == "email" and "no mobile number on record" in no_number.reason


def test_consent_without_a_way_to_reach_refuses() -> None:
    decision = offer(consents={("marketing", "email"): True}, reachable=("sms",))
    assert not decision.allowed and decision.reason == "consent to marketing e-mail but no e-mail address on record"


def test_caps_per_channel_and_overall_push_the_contact_later() -> None:
    per_day, per_week = CAPS["marketing"]
    channel_day, channel_week = CHANNEL_CAPS["marketing"]
    free = offer()
    assert free.not_before == NOON_SHANGHAI
    on_email_today = offer(recent=RecentContacts(channel_last_day={"email": channel_day}))
    assert on_email_today.not_before >= NOON_SHANGHAI + dt.timedelta(days=1) and "today" in on_email_today.reason
    overall_week = offer(recent=RecentContacts(last_week=per_week))
    assert overall_week.not_before >= NOON_SHANGHAI + dt.timedelta(days=7) and "wait a week" in overall_week.reason
    channel_week_full = offer(recent=RecentContacts(channel_last_week={"email": channel_week}))
    assert channel_week_full.not_before >= NOON_SHANGHAI + dt.timedelta(days=7)
    overall_day = offer(recent=RecentContacts(last_day=per_day, channel_last_day={"sms": 0}))
    assert overall_day.not_before >= NOON_SHANGHAI + dt.timedelta(days=1)


def test_quiet_hours_hold_the_message_until_eight_local_time_after_the_clocks_spring_forward() -> None:
    # 2026-03-08: New York moves from EST (UTC-5) to EDT (UTC-4) at 02:00. At 23:00 EST the evening before,
    # the message waits for 08:00 EDT, which is 12:00 UTC, not 13:00.
    evening = dt.datetime(2026, 3, 8, 4, 0, tzinfo=dt.UTC)  # 23:00 EST on the 7th
    decision = offer(evening, timezone="America/New_York")
    assert decision.allowed and decision.not_before == dt.datetime(2026, 3, 8, 12, 0, tzinfo=dt.UTC)
    assert "quiet hours in America/New_York: from Sun 08:00" in decision.reason


def test_quiet_hours_after_the_clocks_fall_back_end_at_eight_local_time() -> None:
    # 2026-10-25: Berlin moves from CEST (UTC+2) to CET (UTC+1) at 03:00.
    night = dt.datetime(2026, 10, 24, 22, 30, tzinfo=dt.UTC)  # 00:30 CEST on the 25th
    decision = offer(night, timezone="Europe/Berlin")
    assert decision.not_before == dt.datetime(2026, 10, 25, 7, 0, tzinfo=dt.UTC)  # 08:00 CET


def test_a_birthday_offer_waits_for_the_day_in_the_customers_zone() -> None:
    birthday = dt.date(2026, 12, 3)
    start = local_day_start(birthday, "Asia/Shanghai")
    assert start == dt.datetime(2026, 12, 3, 0, 0, tzinfo=dt.UTC)  # 08:00 in Shanghai
    decision = offer(sales=False, earliest=start)
    assert decision.not_before == start and "not before 2026-12-03 08:00 local time" in decision.reason


ZONES = ["UTC", "Asia/Shanghai", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago",
         "Asia/Kathmandu", "Pacific/Chatham"]


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1), timezones=st.just(dt.UTC)),
       st.sampled_from(ZONES), st.integers(0, 3), st.integers(0, 3), st.booleans())
def test_an_allowed_offer_goes_out_in_daytime_never_before_now_and_within_a_week_and_a_day(
    moment: dt.datetime, zone: str, today: int, this_week: int, preferred_sms: bool
) -> None:
    decision = offer(moment, timezone=zone, preferred="sms" if preferred_sms else None,
                     recent=RecentContacts(last_day=today, last_week=this_week))
    assert decision.allowed and decision.channel in ("email", "sms")
    local = decision.not_before.astimezone(zoneinfo.ZoneInfo(zone)).time()
    assert QUIET_UNTIL <= local < QUIET_FROM
    assert moment <= decision.not_before <= moment + dt.timedelta(days=7, hours=14)


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2090, 1, 1)), st.sampled_from(ZONES))
def test_the_day_start_is_on_that_local_day_in_daytime(day: dt.date, zone: str) -> None:
    start = local_day_start(day, zone)
    local = start.astimezone(zoneinfo.ZoneInfo(zone))
    assert local.date() == day and QUIET_UNTIL <= local.time() < QUIET_FROM
    assert next_daytime(start, zone) == start
