"""The demo fleet and its customers: coverage, ids, dates, regions, owners, determinism."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest

from devices.catalog import load_catalog
from devices.models import DeviceCreate
from simulators.fleet import REGIONS, default_customer_count, make_customers, make_fleet
from tests.simulators.simhelpers import TODAY

PREFIX_OF_KIND = {
    "range_hood": "RH",
    "oven": "OV",
    "dishwasher": "DW",
    "water_heater": "WH",
    "air_conditioner": "AC",
}


def test_a_small_fleet_covers_every_catalog_model() -> None:
    fleet = make_fleet(len(load_catalog()), seed=1, today=TODAY)
    assert {device.model for device in fleet} == set(load_catalog())


def test_device_ids_are_unique_and_prefixed_by_kind() -> None:
    fleet = make_fleet(2000, seed=1, today=TODAY)
    assert len({device.device_id for device in fleet}) == len(fleet)
    for device in fleet:
        assert re.fullmatch(r"[A-Z]{2}-\d{6}", device.device_id)
        assert device.device_id[:2] == PREFIX_OF_KIND[device.kind]
        assert load_catalog()[device.model].kind == device.kind


def test_purchases_spread_over_about_nine_years_and_regions_are_known() -> None:
    fleet = make_fleet(2000, seed=1, today=TODAY)
    ages = [(TODAY - device.purchased_on).days for device in fleet]
    assert min(ages) >= 0 and max(ages) <= 9 * 365 and max(ages) > 8 * 365
    assert {device.region for device in fleet} == set(REGIONS)


def test_every_device_has_an_owner_in_the_customer_list_living_in_its_region() -> None:
    fleet = make_fleet(500, seed=4, today=TODAY)
    customers = make_customers(default_customer_count(500), seed=4, today=TODAY)
    assert {device.owner_index for device in fleet} == set(range(len(customers)))
    for device in fleet:
        assert customers[device.owner_index]["region"] == device.region
        assert device.utc_offset_hours == REGIONS[device.region][1]


def test_device_documents_are_valid_api_input() -> None:
    for device in make_fleet(20, seed=1, today=TODAY):
        DeviceCreate.model_validate(device.document(owner=7))


def test_customers_are_plausible_contract_documents() -> None:
    customers = make_customers(300, seed=2, today=TODAY)
    assert len({customer["email"] for customer in customers}) == 300
    for customer in customers:
        assert set(customer) == {"name", "phone", "email", "birthday", "timezone", "region", "consents"}
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", customer["name"])
        assert re.fullmatch(r"\+1-\d{3}-555-01\d\d", customer["phone"])
        assert customer["email"].endswith("@example.com")
        age_years = (TODAY - dt.date.fromisoformat(customer["birthday"])).days / 365.25
        assert 21 < age_years < 86
        zoneinfo.ZoneInfo(customer["timezone"])
        assert {(c["purpose"], c["channel"]) for c in customer["consents"]} == {
            (purpose, channel)
            for purpose in ("service", "marketing")
            for channel in ("phone", "sms", "email")
        }
    granted = [c for customer in customers for c in customer["consents"] if c["granted"]]
    assert sum(c["purpose"] == "service" for c in granted) > sum(c["purpose"] == "marketing" for c in granted)


def test_fleet_and_customers_are_deterministic_by_seed() -> None:
    assert make_fleet(100, seed=3, today=TODAY) == make_fleet(100, seed=3, today=TODAY)
    assert make_fleet(100, seed=3, today=TODAY) != make_fleet(100, seed=4, today=TODAY)
    assert make_customers(50, seed=3, today=TODAY) == make_customers(50, seed=3, today=TODAY)


@pytest.mark.parametrize("call", [lambda: make_fleet(-1, seed=1), lambda: make_customers(-1, seed=1)])
def test_negative_sizes_are_refused(call) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        call()
