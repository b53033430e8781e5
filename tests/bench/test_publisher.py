"""bench.publisher, the live run's load generator: its packets are MQTT 3.1.1's, byte for byte, and a paced run
against the real broker delivers every message, in order, to a real subscriber (paho) at QoS 1."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from bench.publisher import MAX_PACKET_ID, PacedPublisher, _remaining_length, connect_packet, publish_packet
from careloop.mqtt import make_connection


@pytest.mark.parametrize(("length", "encoded"), [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                                                 (16_383, b"\xff\x7f"), (16_384, b"\x80\x80\x01"),
                                                 (268_435_455, b"\xff\xff\xff\x7f")])
def test_remaining_length_is_the_specifications_variable_length_integer(length, encoded) -> None:
    # the examples of MQTT 3.1.1, table 2.4
    assert _remaining_length(length) == encoded


def test_publish_packet_is_qos1_with_topic_id_and_payload() -> None:
    packet = publish_packet("a/b", b"{}", 10)
    assert packet == b"\x32\x09" + b"\x00\x03a/b" + b"\x00\x0a" + b"{}"


def test_connect_packet_carries_credentials_only_when_given() -> None:
    bare = connect_packet("c1", None, None)
    assert bare[0] == 0x10 and bare[2:10] == b"\x00\x04MQTT\x04\x02" and bare.endswith(b"\x00\x02c1")
    with_login = connect_packet("c1", "user", "secret")
    assert with_login[9] == 0x02 | 0x80 | 0x40 and with_login.endswith(b"\x00\x04user\x00\x06secret")


def test_packet_ids_wrap_and_are_never_zero() -> None:
    packets = PacedPublisher.encode([("t", b"x")] * (MAX_PACKET_ID + 2))
    ids = [int.from_bytes(packet[5:7], "big") for packet in (packets[0], packets[MAX_PACKET_ID - 1],
                                                            packets[MAX_PACKET_ID], packets[MAX_PACKET_ID + 1])]
    assert ids == [1, MAX_PACKET_ID, 1, 2]


@pytest.mark.integration
def test_a_paced_run_reaches_a_subscriber_in_order_and_on_schedule(mqtt_url) -> None:
    topic = f"careloop-bench/publisher-test/{uuid.uuid4().hex[:8]}"  # a tree the service account may use
    received: list[bytes] = []
    subscribed, done = threading.Event(), threading.Event()
    count = 300

    def on_message(_client, _userdata, message) -> None:
        received.append(message.payload)
        if len(received) == count:
            done.set()

    connection = make_connection(mqtt_url, f"test-sub-{uuid.uuid4().hex[:8]}")
    client = connection.client
    client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_message = on_message
    connection.connect()
    client.loop_start()
    try:
        assert subscribed.wait(10), "the subscriber could not subscribe"
        publisher = PacedPublisher(mqtt_url)
        start = time.time() + 0.2
        due = [start + index / 1000 for index in range(count)]  # 1,000 messages a second
        packets = PacedPublisher.encode([(topic, str(index).encode()) for index in range(count)])
        late = publisher.publish_paced(packets, due)
        finished = time.time()
        assert publisher.close(count) == count
        assert done.wait(10), f"{len(received)} of {count} messages arrived"
    finally:
        client.disconnect()
        client.loop_stop()
    assert received == [str(index).encode() for index in range(count)]
    assert finished >= due[-1]  # nothing was sent ahead of its time
    assert late < 1.0
