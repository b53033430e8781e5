"""MQTT over TLS on the shipped configuration's TLS listener, with certificates from `careloop certs`: devices and
ingesters connect over it trusting CARELOOP_MQTT_CA; a client trusting another CA, and a plaintext client, get
nothing; a burst read through careloop's buffered reads over TLS arrives whole and at once."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from careloop.db import Database
from careloop.mqtt import ADMIN_USER, SERVICE_USER, BrokerAccounts, _Client, make_connection, telemetry_topic
from careloop.settings import get_settings
from careloop.tls import write_certificates
from devices import credentials
from ingest.subscriber import Ingester, forget_session
from tests.broker.conftest import ShippedBroker, connect, publish_attempt
from tests.broker.test_buffered_reads import bench_topic, receive
from tests.factories import make_device
from tests.helpers import publish_all, wait_until


@pytest.fixture
def trusted_ca(tls_broker: ShippedBroker, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """CARELOOP_MQTT_CA names the test broker's CA, as an operator sets it; the settings are read afresh."""
    assert tls_broker.certs is not None
    monkeypatch.setenv("CARELOOP_MQTT_CA", str(tls_broker.certs.ca_cert))
    get_settings.cache_clear()
    yield tls_broker.certs.ca_cert
    monkeypatch.delenv("CARELOOP_MQTT_CA")
    get_settings.cache_clear()


def _connect_over_tls(url: str, client_id: str, *, ca_file: Path | None = None):
    """A paho client connected over TLS and its loop started; the CONNACK's reason code."""
    connection = make_connection(url, client_id, ca_file=ca_file)
    answered, reasons = threading.Event(), []

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        reasons.append(reason_code)
        answered.set()

    connection.client.on_connect = on_connect
    connection.connect()
    connection.client.loop_start()
    assert answered.wait(10), f"no CONNACK for {client_id} over TLS"
    return connection, reasons[0]


def test_a_device_over_tls_is_stored_by_an_ingester_over_tls(
    database: Database, tls_broker: ShippedBroker, trusted_ca: Path
) -> None:
    """The credential is issued through the admin account over TLS, the ingester and the device connect over TLS
    by host name (the certificate's name is checked), and the reading ends up in telemetry."""
    admin = BrokerAccounts(tls_broker.tls_url(ADMIN_USER, tls_broker.passwords[ADMIN_USER]))
    with database.transaction() as conn:
        device = make_device(conn)
        issued = credentials.issue_device_credential(conn, device.id, accounts=admin)
    service_url = tls_broker.tls_url(SERVICE_USER, tls_broker.passwords[SERVICE_USER])
    name = f"test-tls-{uuid.uuid4().hex[:8]}"
    ingester = Ingester(database, service_url, name=name, share_group=f"test-{uuid.uuid4().hex[:8]}")
    ingester.start()
    try:
        assert ingester.connected.wait(10), "the ingester did not connect over TLS"
        assert ingester.connection.client._ssl, "the ingester's connection is not TLS"
        appliance, reason = _connect_over_tls(tls_broker.tls_url(issued.username, issued.password), issued.client_id)
        assert not reason.is_failure, reason
        reading = {"seq": 1, "ts": "2026-11-30T10:00:00Z", "metrics": {"fan_current_a": 0.61, "run_hours": 812.4}}
        appliance.client.publish(telemetry_topic(device.id), json.dumps(reading), qos=1).wait_for_publish(10)
        appliance.client.disconnect()
        appliance.client.loop_stop()

        def stored() -> dict[str, float]:
            with database.transaction() as conn, conn.cursor() as cursor:
                cursor.execute("SELECT metric, value FROM telemetry WHERE device_id = %s", (device.id,))
                return dict(cursor.fetchall())

        wait_until(lambda: len(stored()) == 2, what="the reading sent over TLS in telemetry")
        assert stored() == {"fan_current_a": 0.61, "run_hours": 812.4}
    finally:
        ingester.stop()
        forget_session(service_url, name)


def test_a_client_trusting_another_ca_is_refused(tls_broker: ShippedBroker, tmp_path: Path) -> None:
    """A certificate from another `careloop certs` run, for the very same names, is not the broker's: the handshake
    fails on the client's side before any password is sent."""
    other = write_certificates(tmp_path / "other", ["localhost", "127.0.0.1"])
    url = tls_broker.tls_url(SERVICE_USER, tls_broker.passwords[SERVICE_USER])
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        make_connection(url, f"test-{uuid.uuid4().hex[:8]}", ca_file=other.ca_cert).connect()
    # and the system's own CAs do not vouch for it either
    with pytest.raises(ssl.SSLCertVerificationError):
        raw = socket.create_connection(("localhost", tls_broker.tls_port), timeout=5)
        with ssl.create_default_context().wrap_socket(raw, server_hostname="localhost"):
            pass


def test_a_plaintext_client_on_the_tls_port_gets_nothing(tls_broker: ShippedBroker) -> None:
    """Valid credentials in the clear on the TLS port: no CONNACK, the connection is closed; on the plain port the
    same credentials work (the listener, not the account, makes the difference)."""
    password = tls_broker.passwords[SERVICE_USER]
    outcome = publish_attempt(tls_broker.tls_port, username=SERVICE_USER, password=password,
                              client_id=f"test-{uuid.uuid4().hex[:8]}", topic=telemetry_topic("RH-TLS-PLAIN"))
    assert outcome == "refused"
    probe = connect(tls_broker.tls_port, username=SERVICE_USER, password=password)
    assert probe.refused
    assert publish_attempt(tls_broker.port, username=SERVICE_USER, password=password,
                           client_id=f"test-{uuid.uuid4().hex[:8]}", topic=telemetry_topic("RH-TLS-PLAIN")) \
        == "acknowledged"


def test_the_tls_listener_keeps_the_same_accounts(tls_broker: ShippedBroker, trusted_ca: Path) -> None:
    """TLS encrypts; it does not let anyone in: anonymous clients, wrong passwords and a device under another
    client id are refused over TLS as on the plain port."""
    device_id = f"RH-TLS{uuid.uuid4().hex[:6].upper()}"
    password = "a-device-password-0123456789"
    BrokerAccounts(tls_broker.tls_url(ADMIN_USER, tls_broker.passwords[ADMIN_USER])).set_device_password(
        device_id, password)
    attempts = {
        "anonymous": (f"mqtts://localhost:{tls_broker.tls_port}", f"test-{uuid.uuid4().hex[:8]}"),
        "a wrong password": (tls_broker.tls_url(device_id, "not-its-password"), device_id),
        "another client id": (tls_broker.tls_url(device_id, password), f"{device_id}-2"),
    }
    for what, (url, client_id) in attempts.items():
        connection, reason = _connect_over_tls(url, client_id)
        connection.client.loop_stop()
        assert reason.is_failure, f"{what} was let in over TLS"
    connection, reason = _connect_over_tls(tls_broker.tls_url(device_id, password), device_id)
    assert not reason.is_failure, reason
    connection.client.disconnect()
    connection.client.loop_stop()


def test_a_burst_read_over_tls_arrives_whole_and_at_once(
    tls_broker: ShippedBroker, trusted_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """careloop's buffered reads over TLS, where the socket read is an SSL record's and paho also asks TLS what it
    holds: a burst parsed three packets a pass arrives whole, in order and at once (in clear, where only the
    buffer's own count can wake paho: tests/broker/test_buffered_reads.py)."""
    monkeypatch.setattr(_Client, "READ_PACKETS", 3)
    service_url = tls_broker.tls_url(SERVICE_USER, tls_broker.passwords[SERVICE_USER])
    topic = bench_topic()
    payloads = [f"message {index}".encode() * 20 for index in range(300)]
    received, seconds = receive(service_url, topic, len(payloads),
                                lambda: publish_all(service_url, [(topic, payload) for payload in payloads]))
    assert received == payloads
    assert seconds < 2
