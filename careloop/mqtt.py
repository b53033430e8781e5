"""The MQTT connection: topics of the contract and a paho-mqtt 2.x client built from a URL."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TOPIC_ROOT = "careloop/v1/devices"
CHANNELS = ("telemetry", "events", "status")
# A device id as the contract allows it in a topic; devices.models checks the same at registration.
DEVICE_ID = r"[A-Za-z0-9_-]{1,64}"
DEVICE_TOPIC = re.compile(rf"^{re.escape(TOPIC_ROOT)}/({DEVICE_ID})/({'|'.join(CHANNELS)})$")


def device_topic(device_id: str, channel: str) -> str:
    """The topic of one of a device's channels; `+` for the device matches them all in a subscription."""
    return f"{TOPIC_ROOT}/{device_id}/{channel}"


def telemetry_topic(device_id: str) -> str:
    return device_topic(device_id, "telemetry")


def events_topic(device_id: str) -> str:
    return device_topic(device_id, "events")


def status_topic(device_id: str) -> str:
    return device_topic(device_id, "status")


TELEMETRY_TOPIC = telemetry_topic("+")
EVENTS_TOPIC = events_topic("+")
STATUS_TOPIC = status_topic("+")


def device_named_in(topic: str) -> str | None:
    """The device a topic names, valid or not (cut to 64 characters), to label a message that is rejected; None
    for a topic outside the devices' tree."""
    prefix = f"{TOPIC_ROOT}/"
    if not topic.startswith(prefix):
        return None
    return topic[len(prefix):].split("/", 1)[0][:64]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    mqtt5: bool = True  # `?protocol=3.1.1` in the URL for brokers without MQTT 5 (amqtt)

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme in ("mqtts", "ssl")
        query = parse_qs(parts.query)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            mqtt5=query.get("protocol", ["5"])[0] != "3.1.1",
        )


@dataclass
class MqttConnection:
    """A paho client (callback API 2) with what it needs to connect and reconnect.

    A non-zero `session_expiry_s` keeps the session (subscriptions and queued QoS 1 messages)
    on the broker while the client is away, so a restarted process gets what it missed.
    """

    client: mqtt.Client
    address: BrokerAddress
    properties: Properties | None
    persistent: bool

    def connect(self, keepalive: int = 30) -> None:
        if self.address.mqtt5:
            self.client.connect(
                self.address.host,
                self.address.port,
                keepalive=keepalive,
                clean_start=not self.persistent,
                properties=self.properties,
            )
        else:
            self.client.connect(self.address.host, self.address.port, keepalive=keepalive)


def make_connection(
    url: str, client_id: str, *, session_expiry_s: int = 0, receive_maximum: int | None = None
) -> MqttConnection:
    address = BrokerAddress.from_url(url)
    persistent = session_expiry_s > 0
    if address.mqtt5:
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = session_expiry_s
        if receive_maximum:
            properties.ReceiveMaximum = receive_maximum
    else:
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        properties = None
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return MqttConnection(client=client, address=address, properties=properties, persistent=persistent)
