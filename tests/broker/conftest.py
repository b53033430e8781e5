"""A real Mosquitto started with the shipped configuration (deploy/mosquitto.conf) on a free port, with a data
folder of its own: whatever broker CARELOOP_MQTT_URL names, these tests prove what the shipped one enforces."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop.embedded import free_port, mosquitto_config, stop_process, wait_for_port
from careloop.mqtt import (
    ADMIN_USER,
    SERVICE_USER,
    BrokerAccounts,
    broker_accounts_for,
    find_dynsec_plugin,
    url_with_credentials,
)
from careloop.tls import CertificateFiles, write_certificates


@dataclass
class ShippedBroker:
    port: int
    data_dir: Path
    passwords: dict[str, str]
    tls_port: int | None = None  # the TLS listener (8883 as shipped), with `certs` from `careloop certs`
    certs: CertificateFiles | None = None

    def tls_url(self, username: str, password: str, host: str = "localhost") -> str:
        return url_with_credentials(f"mqtts://{host}:{self.tls_port}", username, password)

    @property
    def service_url(self) -> str:
        return url_with_credentials(f"mqtt://127.0.0.1:{self.port}", SERVICE_USER, self.passwords[SERVICE_USER])

    @property
    def admin_url(self) -> str:
        return url_with_credentials(f"mqtt://127.0.0.1:{self.port}", ADMIN_USER, self.passwords[ADMIN_USER])

    @property
    def accounts(self) -> BrokerAccounts:
        return BrokerAccounts(self.admin_url)

    def log(self) -> str:
        path = self.data_dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def shipped_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedBroker]:
    yield from _run_shipped_broker(tmp_path_factory.mktemp("shipped-mosquitto"))


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedBroker]:
    """The shipped configuration with its TLS listener too, on certificates `careloop certs` writes (for
    localhost and 127.0.0.1)."""
    data_dir = tmp_path_factory.mktemp("tls-mosquitto")
    certs = write_certificates(data_dir / "certs", ["localhost", "127.0.0.1"])
    yield from _run_shipped_broker(data_dir, certs=certs)


def _run_shipped_broker(data_dir: Path, certs: CertificateFiles | None = None) -> Iterator[ShippedBroker]:
    binary = shutil.which("mosquitto")
    if binary is None or find_dynsec_plugin() is None:
        pytest.skip("no mosquitto with its dynamic-security plugin on this machine")
    port = free_port()
    tls_port = free_port() if certs is not None else None
    passwords = broker_accounts_for(data_dir)
    conf = data_dir / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, data_dir, accounts=True, tls_port=tls_port,
                                     certs=certs.folder if certs else None))
    stderr_log = data_dir / "mosquitto.stderr"
    with stderr_log.open("wb") as stderr:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_port(port, process, stderr_log)
        if tls_port is not None:
            wait_for_port(tls_port, process, stderr_log)
        yield ShippedBroker(port=port, data_dir=data_dir, passwords=passwords, tls_port=tls_port, certs=certs)
    finally:
        stop_process(process)


@dataclass
class Probe:
    """A paho client (MQTT 5 unless told) that records what happens to it."""

    client: mqtt.Client
    connack: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    refused: bool = False
    disconnected: threading.Event = field(default_factory=threading.Event)
    received: list[str] = field(default_factory=list)
    suback: list[bool] = field(default_factory=list)  # per filter: granted?
    subscribed: threading.Event = field(default_factory=threading.Event)
    puback: dict[int, bool] = field(default_factory=dict)  # mid -> accepted?
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int, *, username: str | None, password: str | None, client_id: str | None = None,
    mqtt5: bool = True, persistent: bool = False, wait_s: float = 5,
) -> Probe:
    """Connect and wait for the broker's answer; `.refused` tells whether it refused."""
    client_id = client_id if client_id is not None else f"test-{uuid.uuid4().hex[:8]}"
    if mqtt5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                             clean_session=not persistent)
    tracker = Probe(client)
    if username is not None:
        client.username_pw_set(username, password)

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        tracker.refused = reason_code.is_failure
        tracker.reason = str(reason_code)
        tracker.connack.set()

    def on_disconnect(_client, _userdata, _flags, reason_code, _properties) -> None:
        if not tracker.connack.is_set():
            tracker.refused, tracker.reason = True, str(reason_code)
            tracker.connack.set()
        tracker.disconnected.set()

    def on_message(_client, _userdata, message) -> None:
        with tracker.lock:
            tracker.received.append(message.topic)

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties) -> None:
        tracker.suback.extend(not code.is_failure for code in reason_codes)
        tracker.subscribed.set()

    def on_publish(_client, _userdata, mid, reason_code, _properties) -> None:
        with tracker.lock:
            tracker.puback[mid] = not reason_code.is_failure

    client.on_connect, client.on_disconnect, client.on_message = on_connect, on_disconnect, on_message
    client.on_subscribe, client.on_publish = on_subscribe, on_publish
    client.reconnect_delay_set(min_delay=60, max_delay=60)  # a refused client must not come back by itself
    properties = None
    if mqtt5 and persistent:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
    if mqtt5:
        client.connect("127.0.0.1", port, keepalive=30, clean_start=not persistent, properties=properties)
    else:
        client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    assert tracker.connack.wait(wait_s), f"no answer to the CONNECT of {client_id!r}"
    if tracker.refused:
        client.loop_stop()
    return tracker


def _string(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        digit, length = length % 128, length // 128
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            return bytes([kind]) + encoded + body


def publish_attempt(port: int, *, username: str, password: str, client_id: str, topic: str) -> str:
    """One MQTT 3.1.1 connection that publishes one QoS 1 message: "acknowledged" (a PUBACK, which MQTT 3.1.1 also
    sends for a publish the broker drops: only what subscribers receive tells), "closed" or "refused" (at
    CONNECT). Plain sockets, no client library: thousands of these take seconds."""
    connect_body = _string("MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    connect_body += _string(client_id) + _string(username) + _string(password)
    publish_body = _string(topic) + (1).to_bytes(2, "big") + b'{"seq": 1}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_packet(0x10, connect_body))
        connack = _read_exactly(sock, 4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            return "refused"
        sock.sendall(_packet(0x32, publish_body))
        answer = _read_exactly(sock, 4)
        if answer[:1] == b"\x40":
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return "acknowledged"
        return "closed"


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    try:
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data
