"""The long-running ingester: paho-mqtt network thread in, one writer thread out.

The network thread only queues messages, in a bounded inbox (it waits for room when the writer is behind). The
writer takes them in batches, stores a batch in one transaction and, only after the commit, acknowledges each
message (paho's manual ack). A crash before the commit leaves the messages unacknowledged in the broker session,
which delivers them again; the dedup keys make that harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt

from careloop import metrics
from careloop.db import TRANSIENT_ERRORS, Database
from careloop.heartbeat import Heartbeat
from careloop.jobs import ScheduledJob
from careloop.mqtt import EVENTS_TOPIC, STATUS_TOPIC, TELEMETRY_TOPIC, MqttConnection, ack_qos1, make_connection
from devices.service import DeviceModelCache
from ingest import jobs
from ingest.service import (
    QUARANTINE_MAX_ROWS,
    QUARANTINE_RETENTION,
    BatchOutcome,
    InboundMessage,
    ingest_batch,
)

log = logging.getLogger("careloop.ingest")

SHARE_GROUP = "careloop-ingest"
SESSION_EXPIRY_S = 7 * 24 * 3600  # a restarted ingester finds what was queued while it was away
RECEIVE_MAXIMUM = 2000  # unacknowledged messages the broker may send us: bounds a batch
# What the network thread may hold for the writer. The receive maximum bounds QoS 1 and 2 deliveries only: a device
# publishing at QoS 0 is delivered at QoS 0, and a flood of it once grew an ingester to 3.9 GiB. Past these the
# network thread waits for the writer, and the broker's queue (its own limits) takes the wait.
INBOX_MESSAGES = 20_000
INBOX_BYTES = 64 * 2**20
MESSAGE_OVERHEAD_BYTES = 512  # a queued message's objects beside its payload, about
WAIT_S = 0.5  # how long the network thread waits for room at a time, then looks whether the ingester stops


class Inbox:
    """The network thread's queue to the writer, bounded by messages and by bytes: `put` waits while it is full
    (a message larger than the whole bound still goes in alone). A queue.Queue's get/get_nowait/qsize/empty."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._changed = threading.Condition()

    def put(self, item: object, size: int, timeout: float) -> bool:
        """Queue `item` of `size` bytes once there is room; False when there was none within `timeout` s."""
        with self._changed:
            if not self._room_for(size) and not self._changed.wait_for(lambda: self._room_for(size), timeout):
                return False
            self._items.append((item, size))
            self._bytes += size
            # One thread puts and one gets, and never do both wait (the inbox cannot be full and empty at once).
            self._changed.notify()
            return True

    def _room_for(self, size: int) -> bool:
        return not self._items or (len(self._items) < self.max_messages and self._bytes + size <= self.max_bytes)

    def get(self, timeout: float | None = None):
        with self._changed:
            if not self._items and not self._changed.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            item, size = self._items.popleft()
            self._bytes -= size
            self._changed.notify()
            return item

    def get_nowait(self):
        return self.get(timeout=0)

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def held_bytes(self) -> int:
        return self._bytes


class Ingester:
    """Subscribes to device topics and stores what arrives, in batches, acking after commit."""

    def __init__(
        self,
        database: Database,
        mqtt_url: str,
        *,
        name: str = "ingest-1",
        share_group: str = SHARE_GROUP,
        batch_size: int = 1000,
        batch_wait_s: float = 0.05,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        before_ack: Callable[[BatchOutcome], None] | None = None,
        quarantine_retention: dt.timedelta = QUARANTINE_RETENTION,
        quarantine_max_rows: int = QUARANTINE_MAX_ROWS,
        heartbeat: Heartbeat | None = None,
        inbox_messages: int = INBOX_MESSAGES,
        inbox_bytes: int = INBOX_BYTES,
    ) -> None:
        self.database = database
        self.name = name
        self.share_group = share_group
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.on_batch = on_batch
        # Called after a batch commits and before its messages are acknowledged: the one moment where a crash
        # must cost redeliveries and never data. Fault-injection benchmarks hook in here.
        self.before_ack = before_ack
        # Ingest's scheduled jobs (quarantine retention), run by the writer between batches: see ingest.jobs.
        self.jobs = [jobs.quarantine_retention(quarantine_retention, quarantine_max_rows)]
        self._next_run = {job.id: 0.0 for job in self.jobs}  # monotonic time of each job's next run
        self.totals = BatchOutcome()
        self.device_models = DeviceModelCache()  # used by the writer thread alone
        self.inbox = Inbox(inbox_messages, inbox_bytes)
        # Updated after each commit; its owner starts and stops it, and dead_thread() watches its thread.
        self.heartbeat = heartbeat
        if heartbeat is not None:
            heartbeat.queue_depth_from(self.inbox.qsize)
        metrics.watch_ingest_queue(self.inbox.qsize)
        self.connection: MqttConnection = make_connection(
            mqtt_url, f"careloop-{name}", session_expiry_s=SESSION_EXPIRY_S, receive_maximum=RECEIVE_MAXIMUM
        )
        self.connected = threading.Event()
        self._stopping = threading.Event()
        # Bumped on every connect and disconnect: a packet id from an older connection must not be acked on
        # a newer one, where the broker has already sent the message again (or, the session gone, where the id
        # names another message). The lock keeps a bump from falling between the writer's check and its acks.
        self._generation = 0
        self._ack_lock = threading.Lock()
        client = self.connection.client
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # Set when a thread the ingester cannot live without ends unexpectedly; the process then exits.
        self.failure: BaseException | None = None
        self._writer = threading.Thread(target=self._run_writer, name=f"{name}-writer", daemon=True)

    # --- network thread ---------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("%s: broker refused the connection: %s", self.name, reason_code)
            return
        with self._ack_lock:
            self._generation += 1
        # Subscribing here means a reconnect subscribes again. Telemetry and events are shared
        # among ingesters; status is retained, which shared subscriptions do not deliver.
        shared = self.connection.address.mqtt5
        topics = [TELEMETRY_TOPIC, EVENTS_TOPIC]
        subscriptions = [(f"$share/{self.share_group}/{t}" if shared else t, 1) for t in topics]
        client.subscribe([*subscriptions, (STATUS_TOPIC, 1)])
        self.connected.set()
        log.info("%s: connected to the broker, subscribed", self.name)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        with self._ack_lock:
            self._generation += 1
        if not self._stopping.is_set():
            log.warning("%s: lost the broker (%s); reconnecting", self.name, reason_code)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        try:
            item = (self._generation, message, dt.datetime.now(dt.UTC))
            size = len(message.payload) + MESSAGE_OVERHEAD_BYTES
            while not self.inbox.put(item, size, timeout=WAIT_S):
                if self._stopping.is_set():
                    return  # not queued, so never acknowledged: the broker sends it again (QoS 1 and 2)
        except Exception:  # never let an exception reach paho's network loop
            log.exception("%s: could not queue a message on %s", self.name, _topic_of(message))

    # --- writer thread ----------------------------------------------------------------------

    def _next_batch(self) -> list[tuple[int, mqtt.MQTTMessage, dt.datetime]]:
        try:
            batch = [self.inbox.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self.inbox.get(timeout=max(remaining, 0)) if remaining > 0 else self.inbox.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run_writer(self) -> None:
        try:
            self._write_loop()
        except BaseException as error:
            log.critical("%s: the writer thread died; nothing more is stored", self.name, exc_info=True)
            self.failure = error
            raise

    def dead_thread(self) -> str | None:
        """The name of an essential thread that ended without being asked to, or None while all run."""
        if self.failure is not None or (self._writer.ident is not None and not self._writer.is_alive()
                                         and not self._stopping.is_set()):
            return self._writer.name
        network = getattr(self.connection.client, "_thread", None)  # paho's loop_start thread
        if network is not None and not network.is_alive() and not self._stopping.is_set():
            return network.name
        if self.heartbeat is not None:
            return self.heartbeat.dead_thread()
        return None

    def _write_loop(self) -> None:
        while not (self._stopping.is_set() and self.inbox.empty()):
            self._run_jobs_when_due()
            batch = self._next_batch()
            if not batch:
                continue
            if self._stopping.is_set() and self._abandon_if_disconnected(batch):
                return
            started = time.perf_counter()
            outcome = self._store_with_retry(batch)
            if outcome is None:
                return  # stopping while the database is down: nothing acked, the broker keeps them
            if self.before_ack is not None:
                self.before_ack(outcome)
            with self._ack_lock:
                # a message of an earlier connection is not acknowledged: the broker sends it again on this one
                current = [message for generation, message, _received_at in batch if generation == self._generation]
                ack_qos1(self.connection.client, [message.mid for message in current if message.qos == 1])
                for message in current:
                    if message.qos == 2:
                        self.connection.client.ack(message.mid, message.qos)
            self.totals.add(outcome)
            self._observe(batch, outcome, time.perf_counter() - started)
            if self.on_batch is not None:
                self.on_batch(outcome)

    def _observe(self, batch: list[tuple[int, mqtt.MQTTMessage, dt.datetime]], outcome: BatchOutcome,
                 seconds: float) -> None:
        """Metrics and heartbeat of a committed, acknowledged batch."""
        committed_at = dt.datetime.now(dt.UTC)
        # Lag: how long the batch's newest message waited between reaching this ingester and its commit (inbox,
        # batching, storing). Time spent queued in the broker before delivery is not in it.
        lag_s = max((committed_at - max(received for _g, _m, received in batch)).total_seconds(), 0.0)
        metrics.record_ingest_batch(
            messages=outcome.messages,
            readings=outcome.readings_stored,
            events=outcome.events_stored,
            reading_duplicates=outcome.readings_duplicate,
            event_duplicates=outcome.events_duplicate,
            quarantined=outcome.quarantined,
            seconds=seconds,
            lag_s=lag_s,
            committed_at=committed_at,
        )
        if self.heartbeat is not None:
            totals = self.totals
            self.heartbeat.record(
                last_commit_at=committed_at,
                lag_s=lag_s,
                messages=totals.messages,
                readings=totals.readings_stored,
                events=totals.events_stored,
                duplicates=totals.readings_duplicate + totals.events_duplicate,
                quarantined=dict(totals.quarantined),
            )

    def _run_jobs_when_due(self) -> None:
        for job in self.jobs:
            if time.monotonic() >= self._next_run[job.id]:
                self._next_run[job.id] = time.monotonic() + job.every_s
                self._run_job(job)

    def _run_job(self, job: ScheduledJob) -> None:
        try:
            with self.database.transaction() as conn:
                result = job.run(conn, dt.datetime.now(dt.UTC))
        except TRANSIENT_ERRORS as error:  # housekeeping waits for its next run; ingest goes on
            log.warning("%s: %s skipped: %s", self.name, job.id, error)
            return
        if any(result.values()):
            log.info("%s: %s: %s", self.name, job.id, result)

    def _abandon_if_disconnected(self, batch: list) -> bool:
        # Without a connection the acks could not be sent; the broker will send these again.
        return not self.connected.is_set()

    def _store_with_retry(
        self, batch: list[tuple[int, mqtt.MQTTMessage, dt.datetime]]
    ) -> BatchOutcome | None:
        messages = [
            InboundMessage(topic=_topic_of(m), payload=m.payload, received_at=received, mid=m.mid, qos=m.qos)
            for _g, m, received in batch
        ]
        delay = 0.5
        while True:
            try:
                with self.database.transaction() as conn:
                    return ingest_batch(conn, messages, device_models=self.device_models)
            except TRANSIENT_ERRORS as error:
                if self._stopping.is_set():
                    log.warning("%s: stopping with %d messages unstored: %s", self.name, len(batch), error)
                    return None
                log.warning(
                    "%s: database unavailable (%s); retrying the batch in %.1fs", self.name, error, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 10)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._writer.start()
        self.connection.connect()
        self.connection.client.loop_start()

    def stop(self, timeout_s: float = 30) -> None:
        """Finish the batch in hand, ack it, then disconnect; unacked messages stay with the broker."""
        self._stopping.set()
        self._writer.join(timeout=timeout_s)
        self.connection.client.disconnect()
        self.connection.client.loop_stop()
        log.info(
            "%s: stopped; %d messages, %d readings stored, %d duplicates, %d quarantined",
            self.name,
            self.totals.messages,
            self.totals.readings_stored,
            self.totals.readings_duplicate,
            sum(self.totals.quarantined.values()),
        )


def _topic_of(message: mqtt.MQTTMessage) -> str:
    # paho decodes the topic as strict UTF-8; a broker that passes on anything else must not stop the writer.
    try:
        return message.topic
    except UnicodeDecodeError:
        return message._topic.decode("utf-8", errors="backslashreplace")


def forget_session(mqtt_url: str, name: str) -> None:
    """Drop an ingester's persistent session on the broker (its queue and subscriptions)."""
    connection = make_connection(mqtt_url, f"careloop-{name}")
    connected = threading.Event()
    connection.client.on_connect = lambda *_args: connected.set()
    connection.connect()
    connection.client.loop_start()
    connected.wait(timeout=5)
    connection.client.disconnect()
    connection.client.loop_stop()
