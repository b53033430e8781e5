"""careloop's paho clients read the broker's stream into a buffer, many packets a read (careloop.mqtt _Client and
_BufferedSocket): every message still arrives whole and in order, however the stream is cut into reads, and none
waits in the buffer after the broker has gone quiet; and one write of PUBACKs acknowledges every message it
names."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from careloop.mqtt import _BufferedSocket, _Client, ack_qos1, make_connection
from ingest.subscriber import forget_session
from tests.helpers import publish_all, wait_until

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
    # broker sends nothing more once the burst is out: unless paho's loop sees them pending, they wait in select()
    # for its one-second timeout, a pass of three packets each time.
    monkeypatch.setattr(_Client, "READ_PACKETS", 3)
    topic = bench_topic()
    payloads = [f"message {index}".encode() for index in range(300)]
    received, seconds = receive(mqtt_url, topic, len(payloads),
                                lambda: publish_all(mqtt_url, [(topic, payload) for payload in payloads]))
    assert received == payloads
    assert seconds < 2


@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_messages_cut_anywhere_by_the_reads_arrive_whole_and_in_order(mqtt_url, monkeypatch, read_size) -> None:
    # 100 kB takes paho more than the 100 reads it allows itself for one packet at 1 and 7 bytes a read
    monkeypatch.setattr(_BufferedSocket, "READ_SIZE", read_size)
    topic = bench_topic()
    payloads = [b"", b"x", bytes(range(256)) * 3, b"\x00" * 100_000, b'{"seq": 1}']
    received, _seconds = receive(mqtt_url, topic, len(payloads),
                                 lambda: publish_all(mqtt_url, [(topic, payload) for payload in payloads]))
    assert received == payloads


@pytest.mark.parametrize("acknowledged", [True, False])
def test_one_write_of_pubacks_acknowledges_every_message_it_names(mqtt_url, mqtt_broker, acknowledged) -> None:
    """An ingester acknowledges a committed batch with ack_qos1; a message acknowledged so is not sent again on the
    next connection of the session, and one not acknowledged is."""
    if mqtt_broker[1] == "amqtt":
        pytest.skip("the amqtt fallback broker drops the QoS 1 messages a client had not acknowledged when it left, "
                    "so it sends none again either way; this test needs a broker that keeps them in the session, "
                    "such as mosquitto")
    name = f"test-acks-{uuid.uuid4().hex[:8]}"
    topic = bench_topic()
    # fewer than Mosquitto's default of 20 messages in flight to a client: all arrive before any is acknowledged
    payloads = [f"message {index}".encode() for index in range(15)]
    received: list[mqtt.MQTTMessage] = []
    subscribed = threading.Event()

    def session(session_present: bool):
        connection = make_connection(mqtt_url, f"careloop-{name}", session_expiry_s=60)
        connection.client.manual_ack_set(True)
        connection.client.on_connect = (lambda client, *_args: subscribed.set() if session_present
                                        else client.subscribe(topic, qos=1))
        connection.client.on_subscribe = lambda *_args: subscribed.set()
        connection.client.on_message = lambda _client, _userdata, message: received.append(message)
        connection.connect()
        connection.client.loop_start()
        assert subscribed.wait(10), "the subscriber could not subscribe"
        return connection

    try:
        first = session(session_present=False)
        publish_all(mqtt_url, [(topic, payload) for payload in payloads])
        wait_until(lambda: len(received) == len(payloads), what="every message")
        if acknowledged:
            ack_qos1(first.client, [message.mid for message in received])
        time.sleep(0.5)  # the acknowledgements leave
        first.client.disconnect()
        first.client.loop_stop()
        received.clear()
        subscribed.clear()
        second = session(session_present=True)
        if acknowledged:
            time.sleep(1.5)  # what the broker would send again comes at once
        else:
            wait_until(lambda: len(received) == len(payloads), what="the messages sent again")
        second.client.disconnect()
        second.client.loop_stop()
    finally:
        forget_session(mqtt_url, name)
    assert [message.payload for message in received] == ([] if acknowledged else payloads)
