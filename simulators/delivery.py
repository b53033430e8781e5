"""QoS 1 delivery as a device must do it against an MQTT 5 broker: keep each message until the broker acknowledges
it with success, and send it again when the PUBACK says "No matching subscribers" (reason code 0x10).

Why: Mosquitto 2.0 restores a persistent session after a restart but not its shared (`$share/...`)
subscription, so what reaches a restarted broker before the ingesters have subscribed again goes to nobody,
and the broker says so in the PUBACK, with 0x10 (README, Guarantees). Mosquitto 2.0 says the same whenever
nothing at all subscribes to the topic. A message acked with 0x10 was not delivered: it is published again,
unchanged (same seq and ts, so the ingester's dedup key (device_id, seq, metric, ts) makes a repeat harmless),
after a back-off of 0.5 s doubling to 5 s, until a PUBACK says success.

How the reason code reaches us in paho-mqtt 2.x: only through `on_publish(client, userdata, mid, reason_code,
properties)` (CallbackAPIVersion.VERSION2), where `reason_code` is the ReasonCode decoded from the PUBACK
(0x10 is not a failure to paho: `is_failure` is only >= 0x80). `MQTTMessageInfo`, what `publish()` returns,
holds no reason code: its `rc` is the client's own error code and `is_published()` turns True on a 0x10 ack
as on a success. So this class owns the client's `on_publish` and matches acks to messages by mid. paho calls
on_publish on its network thread, holding its own message lock, and may handle the PUBACK before `publish()`
has returned the mid; such an ack waits aside until the mid is registered. This class never holds its own lock
while calling into paho, so the two locks cannot deadlock.

MQTT 3.1.1 (the amqtt fallback, `?protocol=3.1.1`) has no reason codes: paho reports every PUBACK as success
and nothing is ever sent again. A retained message acked with 0x10 is not sent again either: the broker stored
it for later subscribers. What waits for a re-send is bounded (`max_waiting`, as a device's memory is): past it
the message that has waited longest is given up, and counted.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from careloop.mqtt import DEVICE_TOPIC

logger = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: accepted, and delivered to nobody
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
MAX_WAITING = 10_000
LOG_EVERY_S = 5.0
DEVICES_NAMED = 10  # a summary line names at most this many devices


@dataclass
class _Outgoing:
    order: int  # unique, rising in the order messages were first published
    topic: str
    payload: bytes
    retain: bool
    device: str
    resends: int = 0


@dataclass
class DeliveryStats:
    published: int = 0  # distinct messages handed to publish()
    delivered: int = 0  # acked with success (a retained message acked with 0x10 counts: the broker kept it)
    no_subscribers: int = 0  # PUBACKs with 0x10 for a message that was then sent again
    resent: int = 0  # publishes of a message again
    refused: int = 0  # acked with a failure (>= 0x80, e.g. not authorized): not sent again
    given_up: int = 0  # waiting for a re-send past max_waiting, or at close
    first_no_subscribers_at: float = 0.0  # wall clock of the first and the last 0x10 ack, 0 if none
    last_no_subscribers_at: float = 0.0

    @property
    def outstanding(self) -> int:
        return self.published - self.delivered - self.refused - self.given_up


def device_of_topic(topic: str) -> str:
    match = DEVICE_TOPIC.match(topic)
    return match.group(1) if match else topic


def backoff_s(resends: int, first_s: float = FIRST_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> float:
    """How long a message acked with 0x10 waits before its next send, after `resends` earlier re-sends."""
    return min(first_s * 2 ** min(resends, 32), max_s)


def _name_devices(counts: Counter) -> str:
    named = ", ".join(
        f"{device} ({count})" if count > 1 else device for device, count in counts.most_common(DEVICES_NAMED)
    )
    more = len(counts) - DEVICES_NAMED
    return named + (f" and {more} more" if more > 0 else "")


class ConfirmedPublisher:
    """Publishes QoS 1 messages on a paho client and sees each one delivered: re-sends it after a 0x10 PUBACK.

    Every publish on the client must go through `publish()` (this class sets the client's on_publish).
    """

    def __init__(
        self,
        client: mqtt.Client,
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_waiting: int = MAX_WAITING,
        log_every_s: float = LOG_EVERY_S,
        name: str = "publisher",
    ) -> None:
        if max_waiting < 1:
            raise ValueError(f"max_waiting must be at least 1, not {max_waiting}")
        self._client = client
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_waiting = max_waiting
        self._log_every_s = log_every_s
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._orders = itertools.count()
        self._stats = DeliveryStats()
        self._unacked: dict[int, _Outgoing] = {}  # by mid: handed to paho, no PUBACK yet
        self._early_acks: dict[int, Any] = {}  # by mid: PUBACKs handled before publish() returned the mid
        self._waiting: dict[int, _Outgoing] = {}  # by order: acked with 0x10, to be sent again; longest wait first
        self._due: list[tuple[float, int]] = []  # heap of (monotonic due time, order) over _waiting
        self._resent_unlogged: Counter = Counter()  # device -> re-sends since the last summary line
        self._given_up_unlogged: Counter = Counter()
        self._logged_at = time.monotonic()
        self._closed = False
        client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._resend_loop, name=f"{name}-resend", daemon=True)
        self._thread.start()

    # --- the caller's side ---

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: publish after close")
            self._stats.published += 1
            message = _Outgoing(next(self._orders), topic, payload, retain, device_of_topic(topic))
        self._send(message)

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(**vars(self._stats))

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Until every message published was acknowledged with success (or refused, or given up)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._stats.outstanding > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left if left is None else min(left, 1.0))
            return True

    def close(self, timeout: float) -> DeliveryStats:
        """Wait (bounded) for delivery, then stop re-sending: what still waits for a re-send is given up."""
        self.wait_delivered(timeout)
        with self._changed:
            self._closed = True
            for message in self._waiting.values():
                self._stats.given_up += 1
                self._given_up_unlogged[message.device] += 1
            self._waiting.clear()
            self._due.clear()
            self._changed.notify_all()
        self._thread.join(timeout=5)
        self._log_summary()
        return self.stats()

    # --- paho's network thread ---

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any, _properties: Any) -> None:
        with self._changed:
            message = self._unacked.pop(mid, None)
            if message is None:
                self._early_acks[mid] = reason_code
            else:
                self._settle(message, reason_code)

    # --- internals ---

    def _send(self, message: _Outgoing) -> None:
        """Hand a message to paho (never under our lock: paho takes its own) and register its mid."""
        try:
            info = self._client.publish(message.topic, message.payload, qos=1, retain=message.retain)
        except Exception:
            with self._changed:
                if message.resends == 0:
                    self._stats.published -= 1  # a bad topic or payload: the caller gets the error
                else:
                    self._stats.given_up += 1
                self._changed.notify_all()
            raise
        with self._changed:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho did not keep it (its queue, or a mid in use)
                self._wait(message)
                return
            # Kept by paho: sent now, or (MQTT_ERR_NO_CONN) when the connection is back.
            reason_code = self._early_acks.pop(info.mid, None)
            if reason_code is None:
                self._unacked[info.mid] = message
            else:
                self._settle(message, reason_code)

    def _settle(self, message: _Outgoing, reason_code: Any) -> None:
        """A PUBACK for the message (under the lock)."""
        if reason_code == NO_MATCHING_SUBSCRIBERS and not message.retain:
            now = time.time()
            self._stats.no_subscribers += 1
            self._stats.first_no_subscribers_at = self._stats.first_no_subscribers_at or now
            self._stats.last_no_subscribers_at = now
            if self._closed:
                self._stats.given_up += 1
                self._given_up_unlogged[message.device] += 1
            else:
                self._wait(message)
        elif getattr(reason_code, "is_failure", False):
            self._stats.refused += 1
            logger.warning(
                "%s: the broker refused a message to %s: %s; not sent again", self._name, message.topic, reason_code
            )
        else:
            self._stats.delivered += 1
        self._changed.notify_all()

    def _wait(self, message: _Outgoing) -> None:
        """Schedule a re-send after the back-off (under the lock); past max_waiting, give up the longest waiting."""
        self._waiting[message.order] = message
        heapq.heappush(
            self._due,
            (time.monotonic() + backoff_s(message.resends, self._first_backoff_s, self._max_backoff_s), message.order),
        )
        while len(self._waiting) > self._max_waiting:
            oldest = self._waiting.pop(next(iter(self._waiting)))
            self._stats.given_up += 1
            self._given_up_unlogged[oldest.device] += 1
        self._changed.notify_all()

    def _take_due(self) -> tuple[list[_Outgoing], float]:
        """Messages due for a re-send now, and how long until the next one (under the lock)."""
        now = time.monotonic()
        due: list[_Outgoing] = []
        while self._due and self._due[0][0] <= now:
            _at, order = heapq.heappop(self._due)
            message = self._waiting.pop(order, None)
            if message is not None:  # else given up meanwhile
                due.append(message)
        return due, (self._due[0][0] - now if self._due else self._log_every_s)

    def _resend_loop(self) -> None:
        while True:
            with self._changed:
                due, wait_s = self._take_due()
                while not due and not self._closed:
                    self._changed.wait(min(wait_s, self._log_every_s))
                    if time.monotonic() - self._logged_at >= self._log_every_s:
                        break
                    due, wait_s = self._take_due()
                if self._closed:
                    return
                for message in due:
                    message.resends += 1
                    self._stats.resent += 1
                    self._resent_unlogged[message.device] += 1
            for message in due:
                try:
                    self._send(message)
                except Exception:  # paho refused a message it took before: count it given up, keep going
                    logger.exception("%s: could not send a message to %s again", self._name, message.topic)
            if time.monotonic() - self._logged_at >= self._log_every_s:
                self._log_summary()

    def _log_summary(self) -> None:
        with self._lock:
            resent, self._resent_unlogged = self._resent_unlogged, Counter()
            given_up, self._given_up_unlogged = self._given_up_unlogged, Counter()
            self._logged_at = time.monotonic()
            waiting = len(self._waiting)
        if resent:
            logger.info(
                "%s: re-sent %d messages after PUBACK 'no matching subscribers' (0x10) for %d devices: %s; "
                "%d wait for another try",
                self._name, sum(resent.values()), len(resent), _name_devices(resent), waiting,
            )  # fmt: skip
        if given_up:
            logger.warning(
                "%s: gave up %d messages nobody subscribed to (0x10), of %d devices: %s",
                self._name, sum(given_up.values()), len(given_up), _name_devices(given_up),
            )  # fmt: skip
