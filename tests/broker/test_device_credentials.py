"""Device credentials from the registry's side: issued for a registered device, replaced at once, shown once,
never stored in clear; the broker's account file rebuilt from the registry opens for the devices' passwords."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from careloop.embedded import free_port, mosquitto_config, wait_for_port
from careloop.errors import InvalidInput, NotFound
from careloop.mqtt import (
    ADMIN_USER,
    DYNSEC_FILE,
    SERVICE_USER,
    BrokerAccountError,
    dynsec_password_matches,
    new_secret,
    telemetry_topic,
)
from devices import credentials
from devices.models import DeviceCreate
from devices.service import register_device
from tests.broker.conftest import ShippedBroker, connect, publish_attempt
from tests.factories import make_device


class RecordingAccounts:
    """The broker's side, recorded; `down` makes it fail as an unreachable broker does."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.passwords: dict[str, str] = {}

    def set_device_passwords(self, passwords: dict[str, str]) -> None:
        if self.down:
            raise BrokerAccountError("broker unreachable at 127.0.0.1:1: connection refused")
        self.passwords.update(passwords)


def _stored(conn, device_id: str) -> dict | None:
    with conn.cursor() as cursor:
        cursor.execute("SELECT salt, password_hash, iterations, rotations FROM device_credentials "
                       "WHERE device_id = %s", (device_id,))
        row = cursor.fetchone()
    return None if row is None else {"salt": row[0], "password": row[1], "iterations": row[2], "rotations": row[3]}


def test_a_credential_is_issued_for_a_registered_device_and_kept_hashed(conn) -> None:
    device = make_device(conn)
    accounts = RecordingAccounts()
    issued = credentials.issue_device_credential(conn, device.id, accounts=accounts, issued_by="admin:ops")
    assert issued.username == issued.client_id == device.id
    assert len(issued.password) >= 32 and accounts.passwords == {device.id: issued.password}
    assert issued.topics == [f"careloop/v1/devices/{device.id}/{channel}" for channel in ("telemetry", "events",
                                                                                             "status")]
    stored = _stored(conn, device.id)
    assert issued.password not in json.dumps(stored)
    assert dynsec_password_matches(issued.password, stored)
    status = credentials.device_credential_status(conn, device.id)
    assert (status.issued_by, status.rotations) == ("admin:ops", 0)
    assert "password" not in status.model_dump()


def test_a_rotation_replaces_the_password_and_is_counted(conn) -> None:
    device = make_device(conn)
    accounts = RecordingAccounts()
    first = credentials.issue_device_credential(conn, device.id, accounts=accounts)
    second = credentials.issue_device_credential(conn, device.id, accounts=accounts)
    assert first.password != second.password and second.rotations == 1
    assert accounts.passwords[device.id] == second.password
    stored = _stored(conn, device.id)
    assert dynsec_password_matches(second.password, stored) and not dynsec_password_matches(first.password, stored)


def test_when_the_broker_is_away_nothing_is_issued_and_the_old_credential_stays(conn) -> None:
    device = make_device(conn)
    first = credentials.issue_device_credential(conn, device.id, accounts=RecordingAccounts())
    with pytest.raises(credentials.BrokerUnavailable, match="no credential issued") as refused:
        credentials.issue_device_credential(conn, device.id, accounts=RecordingAccounts(down=True))
    assert refused.value.status_code == 503
    stored = _stored(conn, device.id)
    assert dynsec_password_matches(first.password, stored) and stored["rotations"] == 0


def test_unknown_devices_and_reserved_ids_get_no_credential(conn) -> None:
    with pytest.raises(NotFound):
        credentials.issue_device_credential(conn, "RH-NOBODY-1", accounts=RecordingAccounts())
    with pytest.raises(NotFound):
        credentials.device_credential_status(conn, "RH-NOBODY-1")
    with pytest.raises(InvalidInput):
        credentials.issue_device_credential(conn, "careloop-ingest-1", accounts=RecordingAccounts())


@pytest.mark.parametrize("device_id", ["careloop", "careloop-ingest-1", "CareLoop-admin", "careloop_x"])
def test_device_ids_kept_for_the_services_cannot_be_registered(conn, device_id: str) -> None:
    with pytest.raises(InvalidInput, match="kept for CareLoop"):
        register_device(conn, DeviceCreate(id=device_id, model="RH-900"))


def test_issued_credentials_open_the_real_broker_for_that_device_only(conn, shipped_broker: ShippedBroker) -> None:
    device, other = make_device(conn), make_device(conn)
    issued = credentials.issue_device_credential(conn, device.id, accounts=shipped_broker.accounts)
    probe = connect(shipped_broker.port, username=issued.username, password=issued.password,
                    client_id=issued.client_id)
    assert not probe.refused, probe.reason
    probe.stop()
    rotated = credentials.issue_device_credential(conn, device.id, accounts=shipped_broker.accounts)
    assert connect(shipped_broker.port, username=device.id, password=issued.password, client_id=device.id).refused
    assert publish_attempt(shipped_broker.port, username=device.id, password=rotated.password, client_id=device.id,
                           topic=telemetry_topic(device.id)) == "acknowledged"
    assert connect(shipped_broker.port, username=other.id, password=rotated.password, client_id=other.id).refused


def test_a_fleet_gets_its_credentials_in_one_step_all_or_none(conn, shipped_broker: ShippedBroker) -> None:
    fleet = [make_device(conn).id for _ in range(20)]
    with pytest.raises(NotFound, match="RH-NOBODY-2"):
        credentials.issue_device_credentials(conn, [*fleet, "RH-NOBODY-2"], accounts=shipped_broker.accounts)
    assert all(_stored(conn, device_id) is None for device_id in fleet)
    issued = credentials.issue_device_credentials(conn, fleet, accounts=shipped_broker.accounts,
                                                  issued_by="simulator")
    for device_id, credential in issued.items():
        assert publish_attempt(shipped_broker.port, username=device_id, password=credential.password,
                               client_id=device_id, topic=telemetry_topic(device_id)) == "acknowledged"
    assert connect(shipped_broker.port, username=fleet[0], password=issued[fleet[1]].password,
                   client_id=fleet[0]).refused


def test_the_brokers_account_file_rebuilt_from_the_registry_opens_for_each_device(conn, tmp_path) -> None:
    """Lost broker state is rebuilt from the registry: a broker started on the rebuilt file lets each device in
    with the password it was last issued, and the services with theirs."""
    if shutil.which("mosquitto") is None:
        pytest.skip("no mosquitto on this machine")
    devices = [make_device(conn) for _ in range(3)]
    accounts = RecordingAccounts()
    issued = {device_id: credential.password for device_id, credential in credentials.issue_device_credentials(
        conn, [device.id for device in devices], accounts=accounts).items()}
    issued[devices[0].id] = credentials.issue_device_credential(conn, devices[0].id, accounts=accounts).password
    service_password, admin_password = new_secret(), new_secret()
    rebuilt = credentials.dynsec_file_from_registry(conn, service_password=service_password,
                                                    admin_password=admin_password)
    (tmp_path / DYNSEC_FILE).write_text(json.dumps(rebuilt))
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(mosquitto_config(port, tmp_path, accounts=True))
    process = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        for device_id, password in issued.items():
            probe = connect(port, username=device_id, password=password, client_id=device_id)
            assert not probe.refused, f"{device_id}: {probe.reason}"
            probe.stop()
        for username, password, client_id in ((SERVICE_USER, service_password, None),
                                              (ADMIN_USER, admin_password, ADMIN_USER)):
            probe = connect(port, username=username, password=password, client_id=client_id)
            assert not probe.refused
            probe.stop()
        # the issuer stays bound to its client id in the rebuilt file
        assert connect(port, username=ADMIN_USER, password=admin_password, client_id="careloop-ingest-1").refused
    finally:
        process.terminate()
        process.wait(timeout=10)
