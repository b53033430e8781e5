"""What the shipped Mosquitto configuration enforces, tried as an outside client would, against a real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from careloop.mqtt import (
    ADMIN_USER,
    SERVICE_USER,
    BrokerAccountError,
    device_topic,
    events_topic,
    new_secret,
    telemetry_topic,
)
from tests.broker.conftest import Probe, ShippedBroker, connect, publish_attempt

INGEST_GROUP = "careloop-ingest"


def _devices(broker: ShippedBroker, count: int) -> dict[str, str]:
    """`count` devices with credentials of their own on the broker: id -> password."""
    run = uuid.uuid4().hex[:6].upper()
    devices = {f"RH-{run}-{index:03d}": new_secret() for index in range(count)}
    broker.accounts.set_device_passwords(devices)
    return devices


def _service(broker: ShippedBroker, *filters: str, client_id: str | None = None, persistent: bool = False) -> Probe:
    probe = connect(broker.port, username=SERVICE_USER, password=broker.passwords[SERVICE_USER],
                    client_id=client_id, persistent=persistent)
    assert not probe.refused, probe.reason
    if filters:
        probe.client.subscribe([(topic, 1) for topic in filters])
        assert probe.subscribed.wait(5)
        assert all(probe.suback), f"the service account may subscribe to {filters}"
    return probe


def _wait_for(condition, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_fifty_devices_publishing_on_the_49_others_topics_deliver_nothing(shipped_broker: ShippedBroker) -> None:
    """Each device connects with its own credentials and tries each channel of each of the 49 others (7,350
    attempts, a connection each), then publishes once on its own telemetry topic. A service account watching the
    whole tree receives exactly the 50 own messages. Over MQTT 5 the broker answers "not authorized"."""
    devices = _devices(shipped_broker, 50)
    watcher = _service(shipped_broker, "careloop/v1/devices/#")
    outcomes: dict[str, int] = {}
    try:
        for device_id, password in devices.items():
            for other in devices:
                if other == device_id:
                    continue
                for channel in ("telemetry", "events", "status"):
                    outcome = publish_attempt(shipped_broker.port, username=device_id, password=password,
                                              client_id=device_id, topic=device_topic(other, channel))
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
            own = publish_attempt(shipped_broker.port, username=device_id, password=password, client_id=device_id,
                                  topic=telemetry_topic(device_id))
            assert own == "acknowledged", f"{device_id} could not publish on its own topic: {own}"
        assert "refused" not in outcomes and sum(outcomes.values()) == 50 * 49 * 3
        (first, password), (second, _) = list(devices.items())[:2]
        mqtt5 = connect(shipped_broker.port, username=first, password=password, client_id=first)
        mid = mqtt5.client.publish(events_topic(second), b'{"seq": 2}', qos=1).mid
        assert _wait_for(lambda: mid in mqtt5.puback) and mqtt5.puback[mid] is False, "not refused over MQTT 5"
        mqtt5.stop()
        assert _wait_for(lambda: len(watcher.received) >= 50)
        time.sleep(0.5)  # anything that would still arrive
        assert sorted(watcher.received) == sorted(telemetry_topic(device_id) for device_id in devices)
    finally:
        watcher.stop()


def test_a_device_may_subscribe_to_nothing(shipped_broker: ShippedBroker) -> None:
    (device_id, password), (other, _) = _devices(shipped_broker, 2).items()
    probe = connect(shipped_broker.port, username=device_id, password=password, client_id=device_id)
    try:
        filters = ["#", "careloop/v1/devices/+/telemetry", telemetry_topic(other), telemetry_topic(device_id),
                   f"$share/{INGEST_GROUP}/careloop/v1/devices/+/telemetry", "$share/mine/#",
                   "$CONTROL/dynamic-security/v1/response", "$SYS/#", "careloop-bench/#"]
        probe.client.subscribe([(topic, 1) for topic in filters])
        assert probe.subscribed.wait(5)
        assert probe.suback == [False] * len(filters)
    finally:
        probe.stop()


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt3.1.1"])
def test_anonymous_clients_and_wrong_passwords_are_refused(shipped_broker: ShippedBroker, mqtt5: bool) -> None:
    (device_id, password), = _devices(shipped_broker, 1).items()
    attempts = {
        "anonymous": (None, None, None),
        "anonymous with a device's client id": (None, None, device_id),
        "a device with a wrong password": (device_id, "not-its-password", device_id),
        "an unknown user": ("RH-NOBODY", password, "RH-NOBODY"),
        "the service account with a device's password": (SERVICE_USER, password, None),
        "a device without a password": (device_id, None, device_id),
    }
    for what, (username, secret, client_id) in attempts.items():
        probe = connect(shipped_broker.port, username=username, password=secret, client_id=client_id, mqtt5=mqtt5)
        assert probe.refused, f"{what} was let in"
    accepted = connect(shipped_broker.port, username=device_id, password=password, client_id=device_id, mqtt5=mqtt5)
    assert not accepted.refused, accepted.reason
    accepted.stop()


def test_user_names_and_client_ids_with_wildcards_or_slashes_are_refused(shipped_broker: ShippedBroker) -> None:
    (device_id, password), = _devices(shipped_broker, 1).items()
    for bad in ("+", "#", "/", f"{device_id}/+", f"{device_id}/#", f"{device_id}+", f"+/{device_id}", "a/b"):
        as_user = connect(shipped_broker.port, username=bad, password=password, client_id=device_id)
        assert as_user.refused, f"user name {bad!r} was let in"
        as_client_id = connect(shipped_broker.port, username=device_id, password=password, client_id=bad)
        assert as_client_id.refused, f"client id {bad!r} was let in with a device's credentials"
        with pytest.raises(BrokerAccountError):
            shipped_broker.accounts.set_device_password(bad, new_secret())


def test_a_device_may_connect_only_with_its_own_id_as_client_id(shipped_broker: ShippedBroker) -> None:
    (device_id, password), (other, _) = _devices(shipped_broker, 2).items()
    for client_id in (other, f"{device_id}-2", "careloop-ingest-1", "", device_id.lower()):
        probe = connect(shipped_broker.port, username=device_id, password=password, client_id=client_id)
        assert probe.refused, f"{device_id} connected as {client_id!r}"


def test_a_stranger_cannot_join_the_ingest_group(shipped_broker: ShippedBroker) -> None:
    """A device subscribing to the ingest group's shared subscription is refused, so the group keeps every
    message (a member that may not read would silently swallow its share)."""
    (device_id, password), = _devices(shipped_broker, 1).items()
    shared = f"$share/{INGEST_GROUP}/careloop/v1/devices/+/telemetry"
    ingesters = [_service(shipped_broker, shared) for _ in range(2)]
    stranger = connect(shipped_broker.port, username=device_id, password=password, client_id=device_id)
    try:
        stranger.client.subscribe([(shared, 1), (f"$share/{INGEST_GROUP}/#", 1)])
        assert stranger.subscribed.wait(5)
        assert stranger.suback == [False, False]
        publisher = _service(shipped_broker)
        for seq in range(200):
            publisher.client.publish(telemetry_topic(f"RH-X{seq % 7}"), f'{{"seq": {seq}}}', qos=1)
        assert _wait_for(lambda: sum(len(ingester.received) for ingester in ingesters) == 200)
        time.sleep(0.3)
        assert sum(len(ingester.received) for ingester in ingesters) == 200
        assert stranger.received == []
        publisher.stop()
    finally:
        stranger.stop()
        for ingester in ingesters:
            ingester.stop()


def test_nobody_but_the_services_can_take_an_ingesters_client_id(shipped_broker: ShippedBroker) -> None:
    (device_id, password), = _devices(shipped_broker, 1).items()
    client_id = f"careloop-ingest-{uuid.uuid4().hex[:6]}"
    ingester = _service(shipped_broker, f"$share/{INGEST_GROUP}/careloop/v1/devices/+/events",
                        client_id=client_id, persistent=True)
    try:
        attempts = [
            (None, None, True), (None, None, False),  # anonymous, MQTT 5 and 3.1.1
            (device_id, password, True), (device_id, password, False),  # a device with its own credentials
            (SERVICE_USER, "a guess", True),  # the service account's name without its password
            # the credential issuer with its own valid password: bound to its own client id, as devices are
            (ADMIN_USER, shipped_broker.passwords[ADMIN_USER], True),
            (ADMIN_USER, shipped_broker.passwords[ADMIN_USER], False),
        ]
        for username, secret, mqtt5 in attempts:
            thief = connect(shipped_broker.port, username=username, password=secret, client_id=client_id,
                            mqtt5=mqtt5)
            assert thief.refused, f"{username or 'anonymous'} took the ingester's client id"
        time.sleep(0.3)
        assert not ingester.disconnected.is_set(), "the ingester was disconnected"
        publisher = _service(shipped_broker)
        publisher.client.publish(events_topic("RH-Y1"), b'{"seq": 1}', qos=1).wait_for_publish(5)
        assert _wait_for(lambda: ingester.received == [events_topic("RH-Y1")])
        publisher.stop()
    finally:
        ingester.stop()


def test_a_rotated_credential_stops_working_at_once(shipped_broker: ShippedBroker) -> None:
    (device_id, old_password), = _devices(shipped_broker, 1).items()
    connected = connect(shipped_broker.port, username=device_id, password=old_password, client_id=device_id)
    assert not connected.refused
    new_password = new_secret()
    shipped_broker.accounts.set_device_password(device_id, new_password)
    # the connection made with the old password is closed by the broker as the change is made
    assert connected.disconnected.wait(5), "the device stayed connected with its old password"
    connected.client.loop_stop()
    again = connect(shipped_broker.port, username=device_id, password=old_password, client_id=device_id)
    assert again.refused, "the old password still opens a connection"
    fresh = connect(shipped_broker.port, username=device_id, password=new_password, client_id=device_id)
    assert not fresh.refused, fresh.reason
    fresh.stop()


def test_names_kept_for_the_services_cannot_become_device_accounts(shipped_broker: ShippedBroker) -> None:
    for name in (SERVICE_USER, "careloop-admin", "careloop-ingest-1", "CareLoop-x"):
        with pytest.raises(BrokerAccountError):
            shipped_broker.accounts.set_device_password(name, new_secret())
    # the service account still opens with its own password
    service = _service(shipped_broker)
    service.stop()


def test_removing_a_device_closes_its_connection_and_its_account(shipped_broker: ShippedBroker) -> None:
    (device_id, password), = _devices(shipped_broker, 1).items()
    connected = connect(shipped_broker.port, username=device_id, password=password, client_id=device_id)
    assert not connected.refused
    shipped_broker.accounts.remove_device(device_id)
    assert connected.disconnected.wait(5)
    connected.client.loop_stop()
    assert connect(shipped_broker.port, username=device_id, password=password, client_id=device_id).refused


def test_the_service_account_may_use_the_benchmarks_tree_and_nothing_outside_careloops(
    shipped_broker: ShippedBroker,
) -> None:
    service = _service(shipped_broker, "careloop-bench/raw/+/telemetry")
    try:
        service.client.publish("careloop-bench/raw/RH-B1/telemetry", b"{}", qos=1)
        assert _wait_for(lambda: service.received == ["careloop-bench/raw/RH-B1/telemetry"])
        service.client.subscribe([("#", 1), ("elsewhere/#", 1), ("$CONTROL/dynamic-security/v1/response", 1)])
        assert _wait_for(lambda: len(service.suback) == 4)
        assert service.suback[1:] == [False, False, False]
    finally:
        service.stop()


def test_the_credential_issuer_connects_only_as_itself(shipped_broker: ShippedBroker) -> None:
    password = shipped_broker.passwords[ADMIN_USER]
    for client_id in ("careloop-ingest-1", f"{ADMIN_USER}-2", "", "RH-000001"):
        assert connect(shipped_broker.port, username=ADMIN_USER, password=password, client_id=client_id).refused, \
            f"the issuer connected as {client_id!r}"
    own = connect(shipped_broker.port, username=ADMIN_USER, password=password, client_id=ADMIN_USER)
    assert not own.refused, own.reason
    own.stop()


def test_issuers_in_several_processes_at_once_all_get_their_credentials_through(
    shipped_broker: ShippedBroker, tmp_path
) -> None:
    """The issuer has one client id, so issuers at once take the connection from one another; each call whose
    connection was taken is sent again. Three processes issuing five batches each: every credential works."""
    import subprocess
    import sys

    run = uuid.uuid4().hex[:6].upper()
    script = (
        "import sys\n"
        "from careloop.mqtt import BrokerAccounts\n"
        "accounts = BrokerAccounts(sys.argv[1])\n"
        "for batch in range(5):\n"
        "    accounts.set_device_passwords({f'RH-{sys.argv[2]}-{batch}-{n}': f'pw-{sys.argv[2]}-{batch}-{n}-0123456789'"
        " for n in range(4)})\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script, shipped_broker.admin_url, f"{run}{worker}"],
                                  stderr=subprocess.PIPE, text=True) for worker in range(3)]
    for process in processes:
        _out, errors = process.communicate(timeout=120)
        assert process.returncode == 0, errors
    for worker in range(3):
        name = f"{run}{worker}"
        device_id = f"RH-{name}-4-3"
        assert publish_attempt(shipped_broker.port, username=device_id, password=f"pw-{name}-4-3-0123456789",
                               client_id=device_id, topic=telemetry_topic(device_id)) == "acknowledged"


def test_a_device_sending_a_packet_over_one_megabyte_is_disconnected_and_the_packet_goes_nowhere(
    shipped_broker: ShippedBroker,
) -> None:
    [(device, password)] = _devices(shipped_broker, 1).items()
    ingest = _service(shipped_broker, telemetry_topic("+"))
    sender = connect(shipped_broker.port, username=device, password=password, client_id=device)
    assert not sender.refused, sender.reason
    try:
        sender.client.publish(telemetry_topic(device), b"x" * 1_000_000, qos=1)  # within the limit
        assert _wait_for(lambda: len(ingest.received) == 1)
        sender.client.publish(telemetry_topic(device), b"x" * 1_100_000, qos=1)
        assert sender.disconnected.wait(10), "the broker kept a client that sent a packet over max_packet_size"
        time.sleep(0.5)
        assert len(ingest.received) == 1
    finally:
        sender.stop()
        ingest.stop()
