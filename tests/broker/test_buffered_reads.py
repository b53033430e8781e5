"""careloop's paho clients read the broker's stream into a buffer, many packets a read (careloop.mqtt _Client and
_BufferedSocket): every message still arrives whole and in order, however the stream is cut into reads, and none
waits in the buffer after the broker has gone quiet."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from careloop.mqtt import _BufferedSocket, _Client, make_connection
from ingest.subscriber import forget_session
from tests.helpers import publish_all

pytestmark = pytest.mark.integration


def receive(mqtt_url: str, topic: str, count: int, publish) -> tuple[list[bytes], float]:
    """Subscribe with a careloop client and a session the broker keeps, go away, run `publish`, come back: the
    broker sends what it queued meanwhile in one burst. Answers the payloads received (up to `count`, waiting at
    most 10 s) and the seconds from coming back to the last of them."""
    name = f"test-buffered-{uuid.uuid4().hex[:8]}"
    client_id = f"careloop-{name}"  # as forget_session names it
    received: list[bytes] = []
    subscribed, done = threading.Event(), threading.Event()

    def on_message(_client, _userdata, message) -> None:
        received.append(message.payload)
        if len(received) == count:
            done.set()

    def connected(session_present: bool):
        connection = make_connection(mqtt_url, client_id, session_expiry_s=60)
        connection.client.on_connect = (lambda client, *_args: subscribed.set() if session_present
                                        else client.subscribe(topic, qos=1))
        connection.client.on_subscribe = lambda *_args: subscribed.set()
        connection.client.on_message = on_message
        connection.connect()
        connection.client.loop_start()
        assert subscribed.wait(10), "the subscriber could not subscribe"
        return connection

    away = connected(session_present=False)
    away.client.disconnect()
    away.client.loop_stop()
    subscribed.clear()
    publish()
    back = connected(session_present=True)
    returned = time.monotonic()
    try:
        done.wait(10)
        return received, time.monotonic() - returned
    finally:
        back.client.disconnect()
        back.client.loop_stop()
        forget_session(mqtt_url, name)


def bench_topic() -> str:
    return f"careloop-bench/buffered-reads/{uuid.uuid4().hex[:8]}"  # a tree the service account may use


def test_a_burst_of_more_packets_than_one_loop_read_parses_arrives_at_once(mqtt_url, monkeypatch) -> None:
    # Three packets a loop_read, so most of the burst is still in the buffer when each call returns, and the
    # broker sends nothing more once the burst is out: unless paho's loop sees them pending, they wait for a ping.
    monkeypatch.setattr(_Client, "READ_PACKETS", 3)
    topic = bench_topic()
    payloads = [f"message {index}".encode() for index in range(300)]
    received, seconds = receive(mqtt_url, topic, len(payloads),
                                lambda: publish_all(mqtt_url, [(topic, payload) for payload in payloads]))
    assert received == payloads
    assert seconds < 5


@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_messages_cut_anywhere_by_the_reads_arrive_whole_and_in_order(mqtt_url, monkeypatch, read_size) -> None:
    # 100 kB takes paho more than the 100 reads it allows itself for one packet at 1 and 7 bytes a read
    monkeypatch.setattr(_BufferedSocket, "READ_SIZE", read_size)
    topic = bench_topic()
    payloads = [b"", b"x", bytes(range(256)) * 3, b"\x00" * 100_000, b'{"seq": 1}']
    received, _seconds = receive(mqtt_url, topic, len(payloads),
                                 lambda: publish_all(mqtt_url, [(topic, payload) for payload in payloads]))
    assert received == payloads
