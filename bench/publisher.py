"""A load generator's MQTT publisher, cheaper than the system it loads: the QoS 1 PUBLISH packets of a run are
encoded before the clock starts, and every packet due is written to the socket in one call.

Why not paho here: paho spends about 100 µs of Python on each publish. At the live rates of `bench ingest` four
paho publishers took a core of the two the ingesters run on, so the run measured the generator as much as the
ingester. Here a message costs a slice of one write and the broker's PUBACKs are only counted, a few µs each.
MQTT 3.1.1, the packets of its specification (CONNECT, PUBLISH, PUBACK, PINGREQ, DISCONNECT); the broker's
address, credentials and TLS are read as the product's own clients read them (careloop.mqtt).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Sequence

from careloop.mqtt import BrokerAddress, broker_tls_context

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 60
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PUBACK_TYPE = 0x40
MAX_PACKET_ID = 65535
MAX_IN_FLIGHT = 60_000  # below MAX_PACKET_ID: an id comes round again only after its PUBACK
# The shortest sleep between writes: every packet due within it goes in the next write. Waking for each packet
# took a tenth of a core at 2,000 messages/s; the price is up to this much of each message's measured latency.
TICK_S = 0.001
LEAD_S = 2.0  # from the start of a paced run to its first due time, and a second more per BUILT_PER_S messages:
BUILT_PER_S = 50_000  # the publisher builds and encodes its messages first, about 100,000 a second


def _remaining_length(length: int) -> bytes:
    """The variable-length integer of an MQTT fixed header (MQTT 3.1.1, 2.2.3)."""
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    """CONNECT, MQTT 3.1.1, clean session (MQTT 3.1.1, 3.1)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", KEEPALIVE_S) + _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1, not retained (MQTT 3.1.1, 3.3)."""
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + _remaining_length(len(body)) + body


def first_due_time(messages: int) -> float:
    """When the first of `messages` paced messages is due: time enough from now to build and encode them all."""
    return time.time() + LEAD_S + messages / BUILT_PER_S


class PacedPublisher:
    """One connection publishing pre-encoded QoS 1 messages on a schedule, counting the broker's PUBACKs. One
    thread: the acknowledgements are read while it waits for the next due time (a TLS connection must not be read
    and written by two threads at once)."""

    def __init__(self, mqtt_url: str) -> None:
        address = BrokerAddress.from_url(mqtt_url)
        sock = socket.create_connection((address.host, address.port), timeout=CONNECT_TIMEOUT_S)
        if address.tls:
            sock = broker_tls_context().wrap_socket(sock, server_hostname=address.host)
        sock.sendall(connect_packet(f"bench-publisher-{uuid.uuid4().hex[:8]}", address.username, address.password))
        connack = _read_exactly(sock, 4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the publisher: CONNACK {connack.hex()}")
        sock.setblocking(False)
        self._sock = sock
        self._acked = 0
        self._unparsed = b""

    @staticmethod
    def encode(messages: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """(topic, payload) pairs as PUBLISH packets, packet ids 1, 2, ... wrapping at 65,535."""
        return [publish_packet(topic, payload, number % MAX_PACKET_ID + 1)
                for number, (topic, payload) in enumerate(messages)]

    def publish_paced(self, packets: Sequence[bytes], due: Sequence[float]) -> float:
        """Writes packet i at wall-clock time due[i] (ascending), every packet already due in one write; answers
        the worst lateness behind that schedule, in seconds. At most MAX_IN_FLIGHT unacknowledged: a packet id is
        not used again before its PUBACK."""
        self._send(PINGREQ)  # the keepalive restarts: the wait before the first due time may be long
        late, sent, count = 0.0, 0, len(packets)
        while sent < count:
            now = time.time()
            wait = due[sent] - now
            if wait > 0 or sent - self._acked >= MAX_IN_FLIGHT:
                self._read_acks(max(wait, TICK_S))
                continue
            late = max(late, -wait)
            upto = sent + 1
            while upto < count and due[upto] <= now and upto - self._acked < MAX_IN_FLIGHT:
                upto += 1
            self._send(b"".join(packets[sent:upto]))
            sent = upto
        return late

    def close(self, sent: int, timeout_s: float = 60) -> int:
        """Waits until the broker has acknowledged `sent` messages (or `timeout_s`), disconnects; answers how many
        it acknowledged, and raises RuntimeError, naming both counts, when that is fewer."""
        deadline = time.monotonic() + timeout_s
        try:
            while self._acked < sent and time.monotonic() < deadline:
                self._read_acks(min(0.1, max(deadline - time.monotonic(), 0)))
            self._send(DISCONNECT)
        except OSError:
            pass  # the connection broke (ConnectionError too): what was acknowledged before it is the answer
        finally:
            self._sock.close()
        if self._acked < sent:
            raise RuntimeError(f"the broker acknowledged {self._acked:,} of {sent:,} messages")
        return self._acked

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._read_acks(TICK_S)  # the broker is slow to read: take its acknowledgements meanwhile

    def _read_acks(self, timeout_s: float) -> None:
        """Counts the PUBACKs that arrive within `timeout_s` (the broker sends those and one PINGRESP, framed by
        a one-byte remaining length); raises ConnectionError when the broker has closed the connection."""
        pending = getattr(self._sock, "pending", None)
        if not (pending is not None and pending()) and not select.select([self._sock], [], [], timeout_s)[0]:
            return
        try:
            chunk = self._sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        if not chunk:
            raise ConnectionError(f"the broker closed the publisher's connection after {self._acked:,} PUBACKs")
        buffer = self._unparsed + chunk
        position = 0
        while len(buffer) - position >= 2 and len(buffer) - position >= 2 + buffer[position + 1]:
            if buffer[position] & 0xF0 == PUBACK_TYPE:
                self._acked += 1
            position += 2 + buffer[position + 1]
        self._unparsed = buffer[position:]


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection before its CONNACK")
        data += chunk
    return data
