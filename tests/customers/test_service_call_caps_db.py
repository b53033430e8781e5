"""Service calls keep to the per-channel caps as offers do, against the real database: the gate counts the
customer's service contacts lately on the channel asked about, not only on all channels."""

from __future__ import annotations

import datetime as dt

import pytest

from customers import service
from tests.factories import make_customer

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)  # 11:00 in Shanghai


def test_a_third_service_call_in_a_day_waits_for_tomorrow_by_the_phones_own_cap(conn) -> None:
    customer = make_customer(conn, consents=[{"purpose": "service", "channel": "phone", "granted": True},
                                             {"purpose": "service", "channel": "sms", "granted": True}])
    def ask(channel: str, n: int):
        return service.decide_contact(conn, customer_id=customer.id, purpose="service", channel=channel,
                                      subject=f"{channel}:test:{n}", now=NOW + dt.timedelta(minutes=n))

    assert [ask("phone", n).not_before for n in range(2)] == [NOW, NOW + dt.timedelta(minutes=1)]
    third_call = ask("phone", 2)  # 2 calls today: the all-channel cap (3 a day) is not reached, the phone's is
    assert third_call.not_before >= NOW + dt.timedelta(days=1)
    assert "2 service calls today, the most we make in a day" in third_call.reason
    text = ask("sms", 3)  # now three service contacts are counted today (the call scheduled tomorrow included)
    assert text.not_before >= NOW + dt.timedelta(days=1) and "3 today" in text.reason
