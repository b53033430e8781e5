"""The simulator signs each device in with its own credentials on the shipped broker, as appliances do."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from careloop.mqtt import new_secret
from simulators.fleet import make_fleet
from simulators.run import run_simulation
from tests.broker.conftest import ShippedBroker
from tests.broker.test_broker_identity import _service, _wait_for


def _fleet(count: int):
    prefix = f"SIMID{uuid.uuid4().hex[:6].upper()}"
    fleet = make_fleet(count, seed=5)
    return [dataclasses.replace(device, device_id=f"{prefix}-{n}") for n, device in enumerate(fleet)]


def test_each_simulated_device_connects_with_its_own_credentials(shipped_broker: ShippedBroker) -> None:
    fleet = _fleet(4)
    passwords = {device.device_id: new_secret() for device in fleet}
    for device_id, password in passwords.items():
        shipped_broker.accounts.set_device_password(device_id, password)
    watcher = _service(shipped_broker, "careloop/v1/devices/#")
    try:
        summary = run_simulation(shipped_broker.service_url.replace("careloop:", "nobody:"), fleet, rate=2.0,
                                 seed=5, duration=3, device_passwords=passwords)
        assert _wait_for(lambda: len(watcher.received) >= summary.messages)
    finally:
        watcher.stop()
    assert summary.messages > len(fleet) * 3 and (summary.resent, summary.undelivered) == (0, 0)
    by_device = {device_id: [topic for topic in watcher.received if f"/{device_id}/" in topic]
                 for device_id in passwords}
    assert all(topics for topics in by_device.values()), "a device published nothing"
    log = shipped_broker.log()
    for device_id in passwords:
        assert f"as {device_id} " in log and f"u'{device_id}'" in log, "the device did not sign in as itself"


def test_a_simulated_device_with_a_wrong_password_is_named(shipped_broker: ShippedBroker) -> None:
    fleet = _fleet(2)
    passwords = {device.device_id: new_secret() for device in fleet}
    shipped_broker.accounts.set_device_password(fleet[0].device_id, passwords[fleet[0].device_id])
    with pytest.raises(ConnectionError, match=fleet[1].device_id):
        run_simulation(shipped_broker.service_url, fleet, duration=1, device_passwords=passwords)


def test_the_simulator_wants_a_credential_for_every_device() -> None:
    fleet = _fleet(3)
    with pytest.raises(ValueError, match="no credentials for 1 devices"):
        run_simulation("mqtt://127.0.0.1:1", fleet, duration=1,
                       device_passwords={device.device_id: "x" for device in fleet[:2]})
