"""Delivery as a device must do it: a PUBACK "No matching subscribers" (0x10) means not delivered, so the message is
sent again after a back-off until the broker acknowledges it with success.

Against the real broker. Mosquitto 2.0 answers 0x10 to a QoS 1 publish that no subscription matches, plain or
shared ($share/...), as it does after a restart before the ingesters' shared subscriptions are back. The topics
here are a namespace of the test's own (not careloop/v1/devices/<id>/...), so that no ingester of another test
run on the same broker subscribes to them by chance. On the embedded mosquitto, which signs the tests in as the
service account and lets it publish only under careloop/v1/devices/, the namespace is a level deeper there
(careloop/v1/devices/test-delivery-.../<device>/telemetry), which no ingester's subscription matches either.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from careloop.mqtt import TOPIC_ROOT, BrokerAddress, make_connection
from simulators.delivery import ConfirmedPublisher, backoff_s, device_of_topic
from simulators.run import _Publisher
from simulators.wire import Message

pytestmark = pytest.mark.integration


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def mqtt5_url(mqtt_url: str) -> str:
    if not BrokerAddress.from_url(mqtt_url).mqtt5:
        pytest.skip(f"{mqtt_url} speaks MQTT 3.1.1: no PUBACK reason codes, so no 'no matching subscribers'")
    return mqtt_url


@pytest.fixture
def namespace(mqtt_broker: tuple[str, str]) -> str:
    if mqtt_broker[1] == "mosquitto":
        return f"{TOPIC_ROOT}/test-delivery-{uuid.uuid4().hex[:10]}"
    return f"careloop-test/delivery-{uuid.uuid4().hex[:10]}"


class Subscriber:
    """A client that subscribes, as the ingesters do, through a shared subscription, and keeps what it gets."""

    def __init__(self, mqtt_url: str, pattern: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connection = make_connection(mqtt_url, f"test-delivery-sub-{uuid.uuid4().hex[:8]}")
        self._subscribed = threading.Event()
        client = self.connection.client
        client.on_connect = lambda c, *_: c.subscribe(pattern, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = lambda _c, _u, message: self.received.append((message.topic, message.payload))

    def __enter__(self) -> Subscriber:
        self.connection.connect()
        self.connection.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"
        return self

    def __exit__(self, *_exc) -> None:
        self.connection.client.disconnect()
        self.connection.client.loop_stop()


@pytest.fixture
def simulator_publisher(mqtt5_url: str) -> Iterator[_Publisher]:
    publisher = _Publisher(mqtt5_url, f"test-delivery-pub-{uuid.uuid4().hex[:8]}")
    publisher.connect()
    yield publisher
    publisher.close()


def test_the_back_off_doubles_from_half_a_second_to_five() -> None:
    assert [backoff_s(resends) for resends in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff_s(10_000) == 5.0


def test_device_ids_are_read_from_contract_topics() -> None:
    assert device_of_topic("careloop/v1/devices/RH-000123/telemetry") == "RH-000123"
    assert device_of_topic("careloop/v1/devices/RH-000123/events") == "RH-000123"
    assert device_of_topic("elsewhere/x") == "elsewhere/x"


def test_simulator_sends_again_what_nobody_got_until_a_shared_subscriber_gets_it_once(
    simulator_publisher: _Publisher, mqtt5_url: str, namespace: str
) -> None:
    messages = [
        Message(f"{namespace}/SIM-{n}/telemetry", {"seq": 7, "ts": "2026-03-02T00:00:00.000Z", "metrics": {"x": n}})
        for n in range(3)
    ]
    delivery = simulator_publisher.delivery
    simulator_publisher.publish(messages)

    # Nobody subscribes: Mosquitto acks each with 0x10, and each is sent again after 0.5 s (then 1 s, ...).
    assert wait_until(lambda: delivery.stats().no_subscribers >= 2 * len(messages)), delivery.stats()
    stats = delivery.stats()
    assert stats.resent >= len(messages) and stats.delivered == 0 and stats.outstanding == len(messages)

    # A shared subscription, like the ingesters' after a broker restart: the next re-send reaches it.
    with Subscriber(mqtt5_url, f"$share/test-{uuid.uuid4().hex[:6]}/{namespace}/#") as subscriber:
        assert delivery.wait_delivered(10), delivery.stats()
        assert wait_until(lambda: len(subscriber.received) >= len(messages), timeout=5)
        time.sleep(0.3)  # nothing more comes: a message acked with success is not sent again
    assert Counter(subscriber.received) == Counter((m.topic, m.encode()) for m in messages)
    stats = delivery.stats()
    assert stats.delivered == len(messages) and stats.outstanding == 0 and stats.given_up == 0
    # Every 0x10 was answered by one re-send (same payload: same seq and ts), and every re-send was acked.
    assert stats.no_subscribers == stats.resent >= 2 * len(messages)


def test_resends_are_summarized_in_the_log_with_the_devices(mqtt5_url: str, namespace: str, caplog) -> None:
    connection = make_connection(mqtt5_url, f"test-delivery-log-{uuid.uuid4().hex[:8]}")
    connection.connect()
    connection.client.loop_start()
    delivery = ConfirmedPublisher(connection.client, log_every_s=0.3, name="test-device")
    topics = [f"{namespace}/DEV-{n}/telemetry" for n in range(12)]
    caplog.set_level(logging.INFO, logger="simulators.delivery")
    try:
        for topic in topics:
            delivery.publish(topic, b'{"seq": 1}')
        assert wait_until(lambda: delivery.stats().resent >= len(topics))
        assert wait_until(lambda: any("re-sent" in r.getMessage() for r in caplog.records), timeout=3)
        with Subscriber(mqtt5_url, f"{namespace}/#"):  # a plain subscription works as well
            assert delivery.wait_delivered(10)
    finally:
        delivery.close(0)  # logs what was re-sent since the last summary
        connection.client.disconnect()
        connection.client.loop_stop()
    lines = [r.getMessage() for r in caplog.records if "re-sent" in r.getMessage()]
    # A few summary lines, not one per message, each naming at most 10 devices and how many more there were.
    assert 1 <= len(lines) < delivery.stats().resent
    summary = re.compile(
        r"test-device: re-sent (\d+) messages after PUBACK 'no matching subscribers' \(0x10\) "
        r"for (\d+) devices: (.*); \d+ wait for another try"
    )
    for line in lines:
        match = summary.fullmatch(line)
        assert match, line
        devices = int(match[2])
        named = re.findall(rf"{namespace}/DEV-\d+/telemetry", match[3])
        assert len(named) == min(devices, 10)
        assert (f"and {devices - 10} more" in match[3]) == (devices > 10)
    assert sum(int(summary.fullmatch(line)[1]) for line in lines) == delivery.stats().resent


def test_a_retained_message_acked_with_no_subscribers_is_kept_by_the_broker_and_not_sent_again(
    simulator_publisher: _Publisher, mqtt5_url: str, namespace: str
) -> None:
    topic = f"{namespace}/SIM-1/status"
    simulator_publisher.publish([Message(topic, "online")])
    delivery = simulator_publisher.delivery
    assert delivery.wait_delivered(5)
    time.sleep(0.7)  # past the first back-off
    stats = delivery.stats()
    assert (stats.delivered, stats.resent, stats.no_subscribers) == (1, 0, 0)
    with Subscriber(mqtt5_url, topic) as subscriber:  # the broker kept it
        assert wait_until(lambda: subscriber.received == [(topic, b"online")], timeout=5)
        subscriber.connection.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # clean up


def test_mqtt_3_1_1_has_no_reason_codes_so_nothing_is_sent_again(mqtt_url: str, namespace: str) -> None:
    address = BrokerAddress.from_url(mqtt_url)
    url = mqtt_url if not address.mqtt5 else f"{mqtt_url.split('?')[0]}?protocol=3.1.1"
    publisher = _Publisher(url, f"test-delivery-311-{uuid.uuid4().hex[:8]}")
    publisher.connect()
    try:
        publisher.publish([Message(f"{namespace}/SIM-1/telemetry", {"seq": 1})])
        assert publisher.delivery.wait_delivered(5)
        time.sleep(0.7)
        stats = publisher.delivery.stats()
        assert (stats.delivered, stats.resent, stats.no_subscribers) == (1, 0, 0)
    finally:
        assert publisher.close() == (0, 0)


def test_what_waits_for_a_resend_is_bounded_and_given_up_at_close(mqtt5_url: str, namespace: str, caplog) -> None:
    connection = make_connection(mqtt5_url, f"test-delivery-cap-{uuid.uuid4().hex[:8]}")
    connection.connect()
    connection.client.loop_start()
    delivery = ConfirmedPublisher(connection.client, first_backoff_s=30, max_waiting=2, name="test-cap")
    try:
        for n in range(5):
            delivery.publish(f"{namespace}/DEV-{n}/telemetry", b"{}")
        assert wait_until(lambda: delivery.stats().no_subscribers == 5)
        stats = delivery.stats()
        assert (stats.given_up, stats.outstanding, stats.resent) == (3, 2, 0)
        with caplog.at_level(logging.WARNING, logger="simulators.delivery"):
            stats = delivery.close(0)
    finally:
        connection.client.disconnect()
        connection.client.loop_stop()
    assert (stats.given_up, stats.outstanding) == (5, 0)
    assert any("gave up 5 messages" in record.getMessage() for record in caplog.records)
