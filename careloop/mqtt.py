"""The MQTT connection: topics of the contract and a paho-mqtt 2.x client built from a URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers

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
    """The device a topic names, valid or not, to label a message that is rejected; None for a topic outside the
    devices' tree. A name past 64 characters is cut there and ends in "…", which no device id holds: cut bare, a
    registered id with a character added would label the message as that device's."""
    prefix = f"{TOPIC_ROOT}/"
    if not topic.startswith(prefix):
        return None
    named = topic[len(prefix):].split("/", 1)[0]
    return named if len(named) <= 64 else named[:63] + "…"


class _PacketProperties(Properties):
    """paho's MQTT 5 properties as careloop's clients decode them: lookup tables built once per process, and a
    received PUBLISH's property block stepped over rather than read.

    paho builds three tables in every Properties it makes and clears 27 attributes before reading: 40 microseconds
    a message, a third of an ingester's time holding the interpreter lock. This class shares one copy of the tables
    (paho only reads them). careloop reads no property of a message it receives, and paho's reading of them let
    any device stop an ingester: it refuses strings the broker passes on (U+FEFF, which MQTT 5 allows), and a
    refusal drops the connection, after which the broker sends the same message again, for ever; and it takes
    time growing with the square of the number of user properties (3.6 s for 32,000). So a PUBLISH's block is
    stepped over by its length, checked as paho checks it; other packets' properties are read by paho's code.
    """

    _tables: Properties | None = None

    def __init__(self, packetType: int) -> None:
        tables = _PacketProperties._tables
        if tables is None:
            tables = _PacketProperties._tables = Properties(packetType)
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", tables.types)
        object.__setattr__(self, "names", tables.names)
        object.__setattr__(self, "properties", tables.properties)

    def unpack(self, buffer):
        if self.packetType != PacketTypes.PUBLISH:
            return super().unpack(buffer)
        length, length_bytes = VariableByteIntegers.decode(buffer)  # MalformedPacket when cut short or too long
        if length_bytes + length > len(buffer):
            raise MalformedPacket(f"a property length of {length} bytes runs past the end of the packet")
        return self, length_bytes + length


def _decode_with_packet_properties() -> None:
    """paho decodes received packets in paho.mqtt._packet (paho 2.2, the oldest careloop takes); from here on it
    makes _PacketProperties there."""
    from paho.mqtt import _packet

    if _packet.Properties is Properties:
        _packet.Properties = _PacketProperties


_decode_with_packet_properties()


class _CallbackFilters(MQTTMatcher):
    """paho's per-topic callbacks (message_callback_add), asked for every message received.

    paho's matcher walks its tree with a recursive closure made anew for each message: a reference cycle that only
    the cycle collector frees, so an ingester spent a sixth of its time collecting. With no per-topic callback
    (careloop registers none) nothing can match, and the walk is skipped.
    """

    def iter_match(self, topic):
        root = self._root
        if not root._children and root._content is None:
            return iter(())
        return super().iter_match(topic)


def _without_cycles_per_message(client: mqtt.Client) -> None:
    if type(getattr(client, "_on_message_filtered", None)) is MQTTMatcher:
        client._on_message_filtered = _CallbackFilters()


class _BufferedSocket:
    """A connected socket (plain or TLS) read READ_SIZE bytes at a time into a buffer that paho's small reads are
    served from; `pending()` counts the buffer, as an SSL socket's counts what TLS has decrypted, and paho's loop
    reads on without waiting in select() while anything is pending. Everything else is the socket's own."""

    READ_SIZE = 65536

    def __init__(self, sock) -> None:
        self._sock = sock
        self._buffer = bytearray()

    def recv(self, size: int) -> bytes:
        if not self._buffer:
            data = self._sock.recv(self.READ_SIZE)  # BlockingIOError, TLS's wants and OSError reach paho as before
            if not data:
                return b""  # closed by the broker
            self._buffer += data
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    def pending(self) -> int:
        pending = getattr(self._sock, "pending", None)
        return len(self._buffer) + (pending() if pending is not None else 0)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


class _Client(mqtt.Client):
    """paho's client reading many packets a syscall rather than four syscalls a packet.

    paho (2.2) reads one packet each time select() finds the socket readable (loop_read reads as many packets as
    it has QoS 2 messages in flight, and at least one), and a packet in three reads: one byte of packet type, the
    length a byte at a time, then the rest. Here the socket is a _BufferedSocket, and loop_read parses packets
    while the buffer holds any, up to READ_PACKETS a call: between calls paho's loop writes the acknowledgements
    and pings, and finds the rest pending. One client draining the broker with no database read 28,000-30,000
    messages/s as paho ships and 52,000-60,000 so (`careloop bench ingest`); two ingest processes a sixth more.
    """

    READ_PACKETS = 1000

    def _create_socket(self):
        return _BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        for _ in range(self.READ_PACKETS):
            sock = self._sock
            if sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            # paho answers AGAIN for a socket with nothing to read, and for a packet too long for its 100 reads
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN and not sock.pending():
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


_PUBACK = struct.Struct("!BBH")  # type, remaining length, packet id


def ack_qos1(client: mqtt.Client, mids: list[int]) -> None:
    """PUBACKs for QoS 1 messages received with manual acks, queued to paho's writer as one write: paho's ack()
    queues and wakes its loop once per message, two syscalls each. A PUBACK of two bytes of length is MQTT 3.1.1's
    and MQTT 5's success alike."""
    if mids:
        client._packet_queue(PUBACK, b"".join(_PUBACK.pack(PUBACK, 2, mid) for mid in mids), 0, 0)


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


def broker_tls_context(ca_file: str | os.PathLike | None = None) -> ssl.SSLContext:
    """What a client trusts on an mqtts:// URL: `ca_file`, else CARELOOP_MQTT_CA, else the system's CAs; TLS 1.2 at
    least, the server's name checked."""
    if ca_file is None:
        from careloop.settings import get_settings  # here: the settings read the environment once, on first use

        ca_file = get_settings().mqtt_ca
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def make_connection(
    url: str, client_id: str, *, session_expiry_s: int = 0, receive_maximum: int | None = None,
    ca_file: str | os.PathLike | None = None, buffered: bool = True,
) -> MqttConnection:
    """A client for the broker at `url` (mqtt:// plain, mqtts:// TLS trusting `ca_file` or CARELOOP_MQTT_CA): the
    product's, reading many packets a syscall; `buffered=False` gives paho's own (a benchmark's yardstick)."""
    address = BrokerAddress.from_url(url)
    client_class = _Client if buffered else mqtt.Client
    persistent = session_expiry_s > 0
    if address.mqtt5:
        client = client_class(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = session_expiry_s
        if receive_maximum:
            properties.ReceiveMaximum = receive_maximum
    else:
        client = client_class(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        properties = None
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        # The broker's certificate must chain to CARELOOP_MQTT_CA (the system's CAs when unset) and name the host
        # of the URL; paho checks the name itself unless told not to, which nothing here does.
        client.tls_set_context(broker_tls_context(ca_file))
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    _without_cycles_per_message(client)
    return MqttConnection(client=client, address=address, properties=properties, persistent=persistent)


# --- who may use the broker: Mosquitto's dynamic-security plugin -----------------------------------------------
# Mosquitto 2.0's acl_file never checks a SUBSCRIBE (security_default.c answers every one with "allowed", a FIXME
# in its source), so any client could join `$share/<ingest group>/...` and take its share of the fleet's messages,
# which the broker then drops on the read check; nor can it tie a client id to a user. The dynamic-security plugin
# checks every subscription, `$share/...` included, and binds a client to one client id. It has no %u patterns in
# 2.0, so each device gets a role of its own naming its three topics.

DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
SERVICE_USER = "careloop"  # ingesters, the engine, the API's health probe, tools that publish for a fleet
ADMIN_USER = "careloop-admin"  # only issues and changes credentials
SERVICE_ROLE = "careloop-service"
ADMIN_ROLE = "careloop-broker-admin"
# Device ids with this prefix are refused: a device named like a service account, or like an ingester's client id
# (`careloop-<name>`), could otherwise take its place.
RESERVED_PREFIX = "careloop"
BENCH_TREE = "careloop-bench/#"
DYNSEC_ITERATIONS = 101  # the plugin's own default (PW_DEFAULT_ITERATIONS)
DYNSEC_SALT_BYTES = 12  # the plugin refuses any other length when it loads its file
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/mosquitto_dynamic_security.so",  # the eclipse-mosquitto image
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",  # Debian and Ubuntu
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/opt/homebrew/lib/mosquitto_dynamic_security.so",
)


class BrokerAccountError(RuntimeError):
    """The broker did not take a change of credentials (down, or it refused); nothing was changed there."""


class _TakenOver(Exception):
    """The issuer's connection was taken by another issuer (same client id) before the broker had answered."""


_ADMIN_CONNECTION = threading.Lock()  # one issuer's connection at a time in this process
ADMIN_ATTEMPTS = 5


def is_reserved_name(name: str) -> bool:
    """Whether a device id would collide with the service accounts or their client ids."""
    return name.lower().startswith(RESERVED_PREFIX)


def device_role(device_id: str) -> str:
    return f"device:{device_id}"


def _acl(kind: str, topic: str) -> dict[str, object]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def device_acls(device_id: str) -> list[dict[str, object]]:
    """A device publishes on its own three topics and nothing else; it may subscribe to nothing."""
    return [_acl("publishClientSend", device_topic(device_id, channel)) for channel in CHANNELS]


def service_acls() -> list[dict[str, object]]:
    tree = f"{TOPIC_ROOT}/#"
    shared = f"$share/+/{tree}"
    return [
        _acl("subscribePattern", tree),
        _acl("subscribePattern", shared),
        _acl("unsubscribePattern", tree),
        _acl("unsubscribePattern", shared),
        _acl("publishClientReceive", tree),
        # Trusted tools publish for a whole fleet (the simulator, benchmarks, tests); devices never may.
        _acl("publishClientSend", tree),
        # The broker's own figures, for health checks and monitoring.
        _acl("subscribePattern", "$SYS/#"),
        _acl("publishClientReceive", "$SYS/#"),
        # `careloop bench ingest` measures the broker alone on a tree of its own that no ingester reads.
        _acl("publishClientSend", BENCH_TREE),
        _acl("subscribePattern", BENCH_TREE),
        _acl("unsubscribePattern", BENCH_TREE),
        _acl("publishClientReceive", BENCH_TREE),
    ]


def admin_acls() -> list[dict[str, object]]:
    control = f"{DYNSEC_TOPIC}/#"
    return [
        _acl("publishClientSend", DYNSEC_TOPIC),
        _acl("subscribePattern", control),
        _acl("publishClientReceive", control),
        _acl("unsubscribePattern", control),
    ]


def dynsec_password(password: str, *, salt: bytes | None = None, iterations: int = DYNSEC_ITERATIONS) -> dict:
    """`{"salt", "password", "iterations"}` as the plugin stores a password: PBKDF2-HMAC-SHA512, base64."""
    salt = salt if salt is not None else secrets.token_bytes(DYNSEC_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {
        "salt": base64.b64encode(salt).decode(),
        "password": base64.b64encode(digest).decode(),
        "iterations": iterations,
    }


def dynsec_password_matches(password: str, stored: dict) -> bool:
    salt = base64.b64decode(stored["salt"])
    expected = dynsec_password(password, salt=salt, iterations=int(stored["iterations"]))["password"]
    return hmac.compare_digest(expected, stored["password"])


def new_secret() -> str:
    """A password for a device or a service: 192 random bits, URL-safe (it may travel inside an MQTT URL)."""
    return secrets.token_urlsafe(24)


def dynsec_config(
    *, service_password: dict, admin_password: dict, devices: dict[str, dict] | None = None
) -> dict[str, object]:
    """The plugin's whole file: the service and admin accounts, and each device (id -> stored password) bound to
    its client id; by default nothing is allowed."""
    clients: list[dict[str, object]] = [
        {"username": SERVICE_USER, "textname": "CareLoop services", "roles": [{"rolename": SERVICE_ROLE}],
         **service_password},
        # Bound to one client id, like each device: holding the issuer's password does not let it connect under an
        # ingester's client id and take its session (and the messages queued for it) away.
        {"username": ADMIN_USER, "clientid": ADMIN_USER, "textname": "CareLoop credential issuer",
         "roles": [{"rolename": ADMIN_ROLE}], **admin_password},
    ]
    roles: list[dict[str, object]] = [
        {"rolename": SERVICE_ROLE, "acls": service_acls()},
        {"rolename": ADMIN_ROLE, "acls": admin_acls()},
    ]
    for device_id, stored in sorted((devices or {}).items()):
        clients.append({"username": device_id, "clientid": device_id, "roles": [{"rolename": device_role(device_id)}],
                        **stored})
        roles.append({"rolename": device_role(device_id), "acls": device_acls(device_id)})
    return {
        "defaultACLAccess": {
            "publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": False,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def find_dynsec_plugin() -> str | None:
    """Where this machine keeps Mosquitto's dynamic-security plugin; None when it has none."""
    return next((path for path in DYNSEC_PLUGIN_PATHS if Path(path).exists()), None)


def url_with_credentials(url: str, username: str, password: str) -> str:
    """The broker URL naming this account (any account in it replaced)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class BrokerAccounts:
    """Issues and changes device credentials on the broker through the plugin's control topic, as `ADMIN_USER`.

    Each call is one connection and one control message whose commands the plugin runs in order; it answers once
    the plugin has answered every command, and raises BrokerAccountError when the broker is away or refuses.
    """

    def __init__(self, admin_url: str, *, timeout_s: float = 10) -> None:
        self.admin_url = admin_url
        self.timeout_s = timeout_s

    def set_device_password(self, device_id: str, password: str) -> None:
        """Create the device's account, or change its password: a device connected with the old one is
        disconnected at once (the plugin kicks it) and the old password no longer opens a connection."""
        self.set_device_passwords({device_id: password})

    def set_device_passwords(self, passwords: Mapping[str, str]) -> None:
        """`set_device_password` for many devices in one control message (device id -> password)."""
        commands: list[dict] = []
        for device_id, password in passwords.items():
            if not re.fullmatch(DEVICE_ID, device_id) or is_reserved_name(device_id):
                raise BrokerAccountError(f"{device_id!r} cannot be a device's account on the broker")
            role = device_role(device_id)
            commands += [
                {"command": "createRole", "rolename": role, "acls": device_acls(device_id)},
                {"command": "createClient", "username": device_id, "password": password, "clientid": device_id,
                 "roles": [{"rolename": role}]},
                # An account that existed (a rotation) keeps its client id and role and takes the new password.
                {"command": "setClientPassword", "username": device_id, "password": password},
            ]
        if commands:
            self.run(commands, tolerated={"createRole": "Role already exists",
                                          "createClient": "Client already exists"})

    def remove_device(self, device_id: str) -> None:
        """The device's account is gone and its connection closed."""
        if is_reserved_name(device_id):
            raise BrokerAccountError(f"{device_id!r} is not a device's account")
        self.run(
            [{"command": "deleteClient", "username": device_id},
             {"command": "deleteRole", "rolename": device_role(device_id)}],
            tolerated={"deleteClient": "Client not found", "deleteRole": "Role not found"},
        )

    def run(self, commands: list[dict], *, tolerated: dict[str, str] | None = None) -> list[dict]:
        """Send the commands in one control message; their answers, in order.

        The issuer has one client id (ADMIN_USER), so two issuers at once take the connection from each other: one
        at a time in this process, and a call whose connection another process took is sent again (every command
        here may run twice: a second create finds the account, a second password change sets the same one)."""
        with _ADMIN_CONNECTION:
            for attempt in range(ADMIN_ATTEMPTS):
                try:
                    return self._run_once(commands, tolerated or {})
                except _TakenOver:
                    time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))
        raise BrokerAccountError(f"another issuer kept taking the broker's {ADMIN_USER} connection; try again")

    def _run_once(self, commands: list[dict], tolerated: dict[str, str]) -> list[dict]:
        tag = uuid.uuid4().hex
        for index, command in enumerate(commands):
            command["correlationData"] = f"{tag}-{index}"
        connection = make_connection(self.admin_url, ADMIN_USER)
        answers: dict[str, dict] = {}
        subscribed, done, refused, taken_over = threading.Event(), threading.Event(), [], []

        def on_connect(client, _userdata, _flags, reason_code, _properties) -> None:
            if reason_code.is_failure:
                refused.append(str(reason_code))
                done.set()
                return
            client.subscribe(f"{DYNSEC_TOPIC}/response", qos=1)

        def on_subscribe(_client, _userdata, _mid, reason_codes, _properties) -> None:
            if any(code.is_failure for code in reason_codes):
                refused.append("may not read the plugin's answers")
                done.set()
            subscribed.set()

        def on_message(_client, _userdata, message) -> None:
            try:
                for answer in json.loads(message.payload).get("responses", []):
                    key = answer.get("correlationData", "")
                    if key.startswith(tag):
                        answers[key] = answer
            except ValueError:
                return
            if len(answers) == len(commands):
                done.set()

        def on_disconnect(_client, _userdata, _flags, reason_code, _properties) -> None:
            if not done.is_set():  # closed before the broker answered: another issuer took the client id
                taken_over.append(str(reason_code))
                subscribed.set()
                done.set()

        client = connection.client
        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        client.on_disconnect = on_disconnect
        try:
            connection.connect(keepalive=10)
        except OSError as error:
            raise BrokerAccountError(f"broker unreachable at {connection.address.host}:{connection.address.port}: "
                                     f"{error}") from None
        client.loop_start()
        try:
            if subscribed.wait(self.timeout_s) and not refused and not taken_over:
                client.publish(DYNSEC_TOPIC, json.dumps({"commands": commands}), qos=1)
            if not done.wait(self.timeout_s):
                raise BrokerAccountError(f"the broker did not answer within {self.timeout_s:.0f}s")
            if refused:
                raise BrokerAccountError(f"the broker refused {ADMIN_USER}: {refused[0]}")
            if taken_over and len(answers) < len(commands):
                raise _TakenOver(taken_over[0])
        finally:
            client.disconnect()
            client.loop_stop()
        ordered = [answers[f"{tag}-{index}"] for index in range(len(commands))]
        for answer in ordered:
            error = answer.get("error")
            if error and tolerated.get(answer.get("command", "")) != error:
                raise BrokerAccountError(f"the broker refused {answer.get('command')}: {error}")
        return ordered


# --- the broker's first accounts -------------------------------------------------------------------------------

DYNSEC_FILE = "dynamic-security.json"
ACCOUNTS_FILE = "careloop-accounts.json"  # the embedded broker's service and admin passwords, for this user only


def write_dynsec_file(path: Path, *, service_password: str, admin_password: str) -> None:
    """The plugin's first file: the two accounts with these passwords, no device yet (readable by its owner only)."""
    config = dynsec_config(service_password=dynsec_password(service_password),
                           admin_password=dynsec_password(admin_password))
    _write_private(path, json.dumps(config, indent=2))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)
    os.replace(temporary, path)


def refresh_service_roles(path: Path) -> None:
    """Bring the service and admin roles of an existing plugin file up to this version's (devices, their roles and
    every password are kept). Only while no broker runs on the file: a running one overwrites it."""
    config = json.loads(path.read_text())
    for client in config.get("clients", []):
        if client.get("username") == ADMIN_USER:  # files written before the issuer was bound to its client id
            client["clientid"] = ADMIN_USER
    ours = {SERVICE_ROLE: service_acls(), ADMIN_ROLE: admin_acls()}
    roles = [role for role in config.get("roles", []) if role.get("rolename") not in ours]
    config["roles"] = [{"rolename": name, "acls": acls} for name, acls in ours.items()] + roles
    _write_private(path, json.dumps(config, indent=2))


def broker_accounts_for(data_dir: Path) -> dict[str, str]:
    """The service and admin passwords of a broker whose plugin keeps its file in `data_dir`, chosen at random and
    written there (with the plugin's first file) the first time; the same ones afterwards."""
    accounts_file = data_dir / ACCOUNTS_FILE
    try:
        accounts = json.loads(accounts_file.read_text())
        if (data_dir / DYNSEC_FILE).exists() and {SERVICE_USER, ADMIN_USER} <= accounts.keys():
            refresh_service_roles(data_dir / DYNSEC_FILE)
            return accounts
    except (FileNotFoundError, ValueError):
        pass
    accounts = {SERVICE_USER: new_secret(), ADMIN_USER: new_secret()}
    write_dynsec_file(data_dir / DYNSEC_FILE, service_password=accounts[SERVICE_USER],
                      admin_password=accounts[ADMIN_USER])
    _write_private(accounts_file, json.dumps(accounts))
    return accounts


def main(argv: list[str] | None = None) -> int:
    """`python -m careloop.mqtt init FILE`: the plugin's first file, with the passwords of
    CARELOOP_MQTT_SERVICE_PASSWORD and CARELOOP_MQTT_ADMIN_PASSWORD; a file already there is kept (it holds the
    devices' accounts; only the service roles are brought up to date) unless --force."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m careloop.mqtt", description="the broker's first accounts")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="write the dynamic-security plugin's first file")
    init.add_argument("file", type=Path)
    init.add_argument("--force", action="store_true", help="replace a file that exists (every device's account "
                      "is lost: issue their credentials again)")
    init.add_argument("--owner", metavar="UID:GID", help="hand the file and its folder to the broker's user "
                      "(1883:1883 in the eclipse-mosquitto image), which rewrites the file on every change")
    args = parser.parse_args(argv)
    passwords = {}
    for account, variable in ((SERVICE_USER, "CARELOOP_MQTT_SERVICE_PASSWORD"),
                              (ADMIN_USER, "CARELOOP_MQTT_ADMIN_PASSWORD")):
        value = os.environ.get(variable, "")
        if len(value) < 16:
            print(f"{variable}: set a password of at least 16 characters for the broker's {account} account",
                  file=sys.stderr)
            return 2
        passwords[account] = value
    if args.file.exists() and not args.force:
        refresh_service_roles(args.file)
        print(f"{args.file} exists: kept (it holds the devices' accounts); the service roles brought up to date")
    else:
        write_dynsec_file(args.file, service_password=passwords[SERVICE_USER], admin_password=passwords[ADMIN_USER])
        print(f"{args.file} written: accounts {SERVICE_USER} and {ADMIN_USER}, no device yet")
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        for path in (args.file.parent, args.file):
            os.chown(path, int(uid), int(gid or uid))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
