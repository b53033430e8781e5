"""Factories for test data, in one place."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from careloop.db import Connection
from customers import service as customers_service
from customers.models import CustomerCreate
from devices import service as devices_service
from devices.models import DeviceCreate

_serial = itertools.count(1)
# Device ids differ between test runs: runs share one broker, and a run's ingester stores what another run
# publishes for a device id its own database also holds.
_RUN = uuid.uuid4().hex[:6].upper()


def make_customer(conn: Connection, **overrides: Any):
    fields = {
        "name": "Li Na",
        "phone": "+86 138 0000 0000",
        "email": "li.na@example.com",
        "birthday": "1980-05-17",
        "timezone": "Asia/Shanghai",
        "region": "east",
        "consents": [{"purpose": "service", "channel": "phone", "granted": True}],
        **overrides,
    }
    return customers_service.create_customer(conn, CustomerCreate.model_validate(fields))


def make_device(conn: Connection, **overrides: Any):
    fields = {"id": f"RH-{_RUN}-{next(_serial):06d}", "model": "RH-900", "purchased_on": "2021-03-01", "region": "east"}
    fields.update(overrides)
    return devices_service.register_device(conn, DeviceCreate.model_validate(fields))
