"""A deterministic demo fleet and its owners: devices of every simulated model, and customers.

`make_customers(n, seed)` and `make_fleet(n, seed)` agree with each other for the same seed: a
device's `owner_index` points into the customer list and the device lives in its owner's region.
Names and numbers are fake, built from small lists (no external data): phones use the 555-01xx
numbers reserved for fiction, e-mails the reserved example.com domain.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from devices.catalog import load_catalog
from simulators.appliances import PHYSICS_BY_KIND
from simulators.device import SimDevice

# region -> (timezone of the customers there, its standard UTC offset, a phone area code)
REGIONS: dict[str, tuple[str, float, str]] = {
    "north": ("America/Denver", -7.0, "303"),
    "south": ("America/Chicago", -6.0, "713"),
    "east": ("America/New_York", -5.0, "212"),
    "west": ("America/Los_Angeles", -8.0, "415"),
    "central": ("America/Chicago", -6.0, "312"),
}
FIRST_NAMES = (
    "Ada", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kate", "Luis",
    "Mei", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Adams", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Johnson", "Kim",
    "Lopez", "Miller", "Nguyen", "Okafor", "Patel", "Quinn", "Rossi", "Smith", "Tanaka", "Walker", "Young",
)  # fmt: skip
# Chance that a customer grants each purpose on each channel: service contact is welcome far
# more often than marketing.
CONSENT_RATES: dict[tuple[str, str], float] = {
    ("service", "phone"): 0.95,
    ("service", "sms"): 0.85,
    ("service", "email"): 0.9,
    ("marketing", "phone"): 0.15,
    ("marketing", "sms"): 0.35,
    ("marketing", "email"): 0.55,
}
# How common each kind is among the fleet's devices (hoods sell best).
KIND_WEIGHTS = {
    "range_hood": 3.0,
    "oven": 2.0,
    "dishwasher": 1.5,
    "water_heater": 1.5,
    "air_conditioner": 2.0,
}
FLEET_AGE_YEARS = 9
DEVICES_PER_CUSTOMER = 1.6

# Separate random streams, so adding customers never shifts the devices and vice versa.
_REGION_STREAM, _CUSTOMER_STREAM, _FLEET_STREAM = 1, 2, 3


def customer_regions(n: int, seed: int) -> list[str]:
    """The region of each of n customers, as make_customers(n, seed) gives them."""
    rng = np.random.default_rng([seed, _REGION_STREAM])
    names = list(REGIONS)
    return [names[choice] for choice in rng.integers(0, len(names), n).tolist()]


def make_customers(n: int, seed: int, *, today: dt.date | None = None) -> list[dict[str, Any]]:
    """n plausible fake customers as CONTRACT.md customer documents."""
    if n < 0:
        raise ValueError(f"the number of customers must not be negative, not {n}")
    today = today or dt.date.today()
    rng = np.random.default_rng([seed, _CUSTOMER_STREAM])
    first = rng.integers(0, len(FIRST_NAMES), n).tolist()
    last = rng.integers(0, len(LAST_NAMES), n).tolist()
    ages_days = rng.integers(22 * 365, 85 * 365, n).tolist()
    phone_suffix = rng.integers(100, 200, n).tolist()
    consent_draws = rng.random((n, len(CONSENT_RATES))) < np.array(list(CONSENT_RATES.values()))
    customers = []
    for index, region in enumerate(customer_regions(n, seed)):
        first_name, last_name = FIRST_NAMES[first[index]], LAST_NAMES[last[index]]
        timezone, _, area_code = REGIONS[region]
        customers.append(
            {
                "name": f"{first_name} {last_name}",
                "phone": f"+1-{area_code}-555-{phone_suffix[index]:04d}",
                # The index keeps e-mails unique however often a name repeats.
                "email": f"{first_name}.{last_name}.{index}@example.com".lower(),
                "birthday": (today - dt.timedelta(days=ages_days[index])).isoformat(),
                "timezone": timezone,
                "region": region,
                "consents": [
                    {"purpose": purpose, "channel": channel, "granted": bool(granted)}
                    for (purpose, channel), granted in zip(CONSENT_RATES, consent_draws[index], strict=True)
                ],
            }
        )
    return customers


def default_customer_count(devices: int) -> int:
    """How many customers own a fleet of that many devices (households own one to a few)."""
    return max(1, math.ceil(devices / DEVICES_PER_CUSTOMER))


def make_fleet(
    n: int, seed: int, *, customers: int | None = None, today: dt.date | None = None
) -> list[SimDevice]:
    """n demo devices: every simulated catalog model at least once (n permitting), ids like RH-000123.

    Owners index into make_customers(customers, seed); `customers` defaults to
    default_customer_count(n). Every customer owns at least one device while there are enough.
    """
    if n < 0:
        raise ValueError(f"the number of devices must not be negative, not {n}")
    owners = customers if customers is not None else default_customer_count(n)
    if owners < 1:
        raise ValueError(f"a fleet needs at least one customer, not {owners}")
    today = today or dt.date.today()
    models = [model for code, model in sorted(load_catalog().items()) if model.kind in PHYSICS_BY_KIND]
    rng = np.random.default_rng([seed, _FLEET_STREAM])
    # Each kind's weight is shared among its models, so a kind with more models is not more common.
    weights = np.array(
        [KIND_WEIGHTS.get(m.kind, 1.0) / sum(o.kind == m.kind for o in models) for m in models]
    )
    picks = rng.choice(len(models), size=n, p=weights / weights.sum())
    picks[: min(n, len(models))] = np.arange(min(n, len(models)))  # cover the catalog first
    ages_days = rng.integers(0, FLEET_AGE_YEARS * 365, n).tolist()
    owner_of = np.where(np.arange(n) < owners, np.arange(n), rng.integers(0, owners, n)).tolist()
    regions = customer_regions(owners, seed)
    fleet = []
    for index, pick in enumerate(picks.tolist()):
        model = models[pick]
        region = regions[owner_of[index]]
        fleet.append(
            SimDevice(
                device_id=f"{model.code.split('-')[0]}-{index + 1:06d}",
                model=model.code,
                kind=model.kind,
                purchased_on=today - dt.timedelta(days=ages_days[index]),
                region=region,
                owner_index=owner_of[index],
                utc_offset_hours=REGIONS[region][1],
            )
        )
    return fleet
