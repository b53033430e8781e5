"""`careloop bench ingest`: MQTT publish-to-commit throughput of the real ingester, against the raw limits, and its
latency at fixed offered rates.

Four figures for the same messages: one client draining the broker (no database), twice: paho as shipped, and the
product's own client (careloop.mqtt, paho reading many packets a syscall); a COPY of the same rows into telemetry
(no broker); and publish → ingester → commit. Each drain queues the messages in the receivers'
persistent sessions first and times the draining alone, so the publishers, which share the machine's cores, are
not in the figure. `--mode live` then publishes at fixed shares of the ingest drain rate just measured (open loop:
message i is due at start + i/rate, whatever became of the ones before) and times each message from its due time
to the moment its commit is seen. A figure, never a pass or fail."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import multiprocessing
import select
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg2
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from bench.fixtures import register_devices, temporary_database
from bench.processes import Started, careloop_process, percentile, service_env
from bench.publisher import PacedPublisher, first_due_time
from bench.storage import compress_telemetry, telemetry_bytes
from careloop.db import Database, fetch_value
from careloop.embedded import free_port
from careloop.mqtt import make_connection, telemetry_topic
from careloop.notify import devices_in, listen_for_changed_devices
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from ingest.subscriber import Ingester, forget_session

SPAWN = multiprocessing.get_context("spawn")  # publishers start clean, without this process's threads
RAW_TOPIC_ROOT = "careloop-bench/raw"
METRICS_PER_MESSAGE = 5
# One process writes the live rates: pre-encoded (bench.publisher), it keeps 20,000 messages/s on schedule with a
# few per cent of a core, and every process more is one more waking up on the cores the ingesters are measured on.
LIVE_PUBLISHERS = 1


# --- the workload ------------------------------------------------------------------------------


def device_ids(count: int, prefix: str = "BENCH") -> list[str]:
    return [f"{prefix}-{index:06d}" for index in range(1, count + 1)]


def message_body(index: int, devices: list[str], start: dt.datetime, spacing_s: float = 0.001) -> tuple[str, bytes]:
    """Message `index` of the run: (device id, payload), its ts `index` spacings after `start`. Device i's k-th
    message has seq k."""
    device = devices[index % len(devices)]
    seq = index // len(devices) + 1
    ts = start + dt.timedelta(seconds=index * spacing_s)
    metrics = {
        "run_hours": 100 + seq / 60,
        "fan_current_a": 0.6 + (index % 7) / 100,
        "fan_speed_rpm": 1200.0 + index % 50,
        "airflow_m3h": 600.0 - (index % 30),
        "grease_load_pct": 20 + (index % 10) / 10,
    }
    return device, json.dumps({"seq": seq, "ts": ts.isoformat(), "metrics": metrics}).encode()


def _publisher_client(mqtt_url: str) -> mqtt.Client:
    """A connected paho client for one publishing process, its network loop running: up to 1,000 messages in
    flight, none queued past that (publish waits instead)."""
    connection = make_connection(mqtt_url, f"bench-publisher-{uuid.uuid4().hex[:8]}")
    client = connection.client
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    connection.connect()
    client.loop_start()
    connected.wait(timeout=10)
    return client


def _publish_share(
    share: range,
    ready: multiprocessing.Event,
    go: multiprocessing.Event,
    mqtt_url: str,
    devices: list[str],
    start: dt.datetime,
    raw: bool,
) -> None:
    """One publishing process: QoS 1, as fast as the broker acknowledges."""
    bodies = [message_body(index, devices, start) for index in share]
    client = _publisher_client(mqtt_url)
    ready.set()
    go.wait()
    last = None
    for device, body in bodies:
        topic = f"{RAW_TOPIC_ROOT}/{device}/telemetry" if raw else telemetry_topic(device)
        last = client.publish(topic, body, qos=1)
    if last is not None:
        last.wait_for_publish(timeout=600)
    client.disconnect()
    client.loop_stop()


def _start_publishers(target, publishers: int, messages: int, *args) -> tuple[multiprocessing.Event, list]:
    """`publishers` processes, each running target(share, ready, go, *args) for its share of the run's messages,
    range(number, messages, publishers); answers (go-event, processes) once all are connected."""
    go = SPAWN.Event()
    processes, readies = [], []
    for number in range(publishers):
        ready = SPAWN.Event()
        process = SPAWN.Process(target=target, args=(range(number, messages, publishers), ready, go, *args))
        process.start()
        processes.append(process)
        readies.append(ready)
    for ready in readies:
        ready.wait(timeout=60)
    return go, processes


def _publish(mqtt_url: str, messages: int, publishers: int, devices: list[str], start: dt.datetime, raw: bool):
    """Start the publishing processes; answers (go-event, processes) once all are connected."""
    return _start_publishers(_publish_share, publishers, messages, mqtt_url, devices, start, raw)


@dataclass
class Figure:
    name: str
    seconds: float
    messages: int
    rows: int

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


STALL_S = 15.0


def _stalled(count: int, last: tuple[int, float]) -> tuple[int, float] | None:
    """The new (count, time) of the last progress, or None when nothing moved for STALL_S."""
    now = time.perf_counter()
    if count != last[0]:
        return (count, now)
    return None if now - last[1] > STALL_S else last


# --- the three measurements ---------------------------------------------------------------------


def _subscribe_and_leave(mqtt_url: str, client_id: str, topic: str) -> None:
    """A persistent session subscribed to `topic`, left without its client: the broker queues for it."""
    connection = make_connection(mqtt_url, client_id, session_expiry_s=600)
    subscribed = threading.Event()
    connection.client.on_subscribe = lambda *_args: subscribed.set()
    connection.client.on_connect = lambda client, *_args: client.subscribe(topic, qos=1)
    connection.connect()
    connection.client.loop_start()
    if not subscribed.wait(timeout=10):
        raise SystemExit(f"careloop bench ingest: the broker did not confirm the subscription of {client_id}")
    connection.client.disconnect()
    connection.client.loop_stop()


def _queue_while_away(mqtt_url: str, messages: int, publishers: int, devices: list[str], raw: bool) -> None:
    """Publish every message while the receiving sessions are away: the broker queues them all."""
    go, processes = _publish(mqtt_url, messages, publishers, devices, dt.datetime.now(dt.UTC), raw=raw)
    with tqdm(total=publishers, desc="queueing in the broker", unit="publisher", leave=False) as bar:
        go.set()
        for process in processes:
            process.join()
            bar.update(1)


def measure_broker_drain(
    mqtt_url: str, messages: int, publishers: int, devices: list[str], *, buffered: bool = True
) -> Figure:
    """One client draining the broker, no database: the ceiling the broker and the client set; the product's client
    (careloop.mqtt), or paho's own with `buffered=False`. The messages wait in its persistent session first, so the
    publishers' work is not in the figure."""
    name = f"bench-drain-{uuid.uuid4().hex[:8]}"
    client_id = f"careloop-{name}"  # an ingester's client id for `name`: forget_session ends its session
    _subscribe_and_leave(mqtt_url, client_id, f"{RAW_TOPIC_ROOT}/+/telemetry")
    _queue_while_away(mqtt_url, messages, publishers, devices, raw=True)
    connection = make_connection(mqtt_url, client_id, receive_maximum=2000, session_expiry_s=600, buffered=buffered)
    received = 0
    done = threading.Event()

    def on_message(_client, _userdata, _message) -> None:
        nonlocal received
        received += 1
        if received >= messages:
            done.set()

    connection.client.on_message = on_message
    connection.client.on_connect = lambda client, *_args: client.subscribe(f"{RAW_TOPIC_ROOT}/+/telemetry", qos=1)
    started = time.perf_counter()
    connection.connect()
    connection.client.loop_start()
    last_progress = (0, time.perf_counter())
    with tqdm(total=messages, desc="broker drain", unit="msg", leave=False) as bar:
        while not done.wait(timeout=0.2):
            bar.update(received - bar.n)
            last_progress = _stalled(received, last_progress)
            if last_progress is None:
                break
    seconds = time.perf_counter() - started - (STALL_S if last_progress is None else 0)
    if received < messages:
        print(f"broker drain: the broker dropped {messages - received:,} of {messages:,} messages queued for a "
              "client (its max_queued_messages limit, 1000 by default; deploy/mosquitto.conf sets none)")
    connection.client.disconnect()
    connection.client.loop_stop()
    forget_session(mqtt_url, name)
    client = "careloop client" if buffered else "paho as shipped"
    return Figure(f"broker drain ({client}, no database)", seconds, received, received * METRICS_PER_MESSAGE)


def measure_copy(database_url: str, messages: int, devices: list[str]) -> Figure:
    """COPY of the same rows into telemetry, no broker: the ceiling the database sets."""
    start = dt.datetime.now(dt.UTC)
    buffer = io.StringIO()
    for index in range(messages):
        device, body = message_body(index, devices, start)
        document = json.loads(body)
        for metric, value in document["metrics"].items():
            buffer.write(f"{document['ts']}\t{device}\t{metric}\t{value!r}\t{document['seq']}\n")
    conn = psycopg2.connect(database_url)
    with conn.cursor() as cursor:
        cursor.execute("TRUNCATE telemetry")
        conn.commit()
        buffer.seek(0)
        started = time.perf_counter()
        cursor.copy_expert("COPY telemetry (ts, device_id, metric, value, seq) FROM STDIN", buffer)
        conn.commit()
        seconds = time.perf_counter() - started
        cursor.execute("TRUNCATE telemetry")
        conn.commit()
    conn.close()
    return Figure("COPY into telemetry (no broker)", seconds, messages, messages * METRICS_PER_MESSAGE)


def _start_ingesters(database: Database, mqtt_url: str, group: str, count: int) -> list[Ingester]:
    """`count` ingesters as threads of this process, on one shared subscription."""
    started = [Ingester(database, mqtt_url, name=f"{group}-{n}", share_group=group) for n in range(count)]
    for ingester in started:
        ingester.start()
    return started


def _start_subscribed_ingesters(database: Database, mqtt_url: str, group: str, count: int) -> list[Ingester]:
    """_start_ingesters, once each is connected and a moment more for the SUBACKs: from then on the sessions hold
    the shared subscription, and the broker keeps their messages."""
    started = _start_ingesters(database, mqtt_url, group, count)
    for ingester in started:
        ingester.connected.wait(timeout=10)
    time.sleep(0.5)
    return started


def measure_ingest(
    database_url: str, mqtt_url: str, messages: int, publishers: int, devices: list[str], ingesters: int,
) -> tuple[Figure, int, int]:
    """Publish over MQTT, ingest, commit; answers the figure, the rows stored and telemetry's bytes on disk. The
    messages wait in the ingesters' sessions first; from the ingesters' start to the last commit, what the
    ingesters alone can do."""
    database = Database(database_url, max_connections=ingesters + 2)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    running = _start_subscribed_ingesters(database, mqtt_url, group, ingesters)
    expected_rows = messages * METRICS_PER_MESSAGE
    for ingester in running:
        ingester.stop()
    _queue_while_away(mqtt_url, messages, publishers, devices, raw=False)
    started = time.perf_counter()
    running = _start_ingesters(database, mqtt_url, group, ingesters)
    stored = 0
    last_progress = (0, time.perf_counter())
    with tqdm(total=expected_rows, desc="publish → commit", unit="row", leave=False) as bar:
        while stored < expected_rows and last_progress is not None:
            time.sleep(0.05)
            stored = sum(ingester.totals.readings_stored for ingester in running)
            bar.update(stored - bar.n)
            last_progress = _stalled(stored, last_progress)
    seconds = time.perf_counter() - started
    if last_progress is None:
        seconds -= STALL_S
    for ingester in running:
        ingester.stop()
        forget_session(mqtt_url, ingester.name)
    with database.connection() as conn:
        rows = int(fetch_value(conn, "SELECT count(*) FROM telemetry"))
        size = telemetry_bytes(conn)
    database.close()
    return Figure(f"MQTT → {ingesters} ingester(s) → commit (drain)", seconds, messages, stored), rows, size


@dataclass
class IngestProcess:
    """A `careloop ingest` process of a run, and the port of its Prometheus endpoint."""

    started: Started
    metrics_port: int

    def messages_committed(self) -> int:
        """Its `careloop_ingest_messages_total`: what it has committed, read from its own counter, so that
        watching it costs the database nothing (a sum over device_state took 15 ms a poll at 100,000 devices,
        a tenth of a core at ten polls a second, taken from the cores the ingesters are measured on)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:  # URLError, a refused or reset connection
            self.started.check_alive()
            return 0  # still starting: not serving its metrics yet, so nothing committed
        return int(sum(
            sample.value
            for family in text_string_to_metric_families(text) if family.name == "careloop_ingest_messages"
            for sample in family.samples if sample.name == "careloop_ingest_messages_total"
        ))


@contextmanager
def _ingest_processes(database_url: str, mqtt_url: str, group: str, count: int) -> Iterator[list[IngestProcess]]:
    """`careloop ingest` as `count` processes of their own in one shared-subscription group, as deployed: each
    with its own interpreter, so they do not take turns on one GIL; stopped with SIGTERM when the block ends."""
    env = service_env(database_url, mqtt_url)
    with ExitStack() as stack:
        processes = []
        for number in range(count):
            port = free_port()
            started = stack.enter_context(careloop_process(
                "ingest", ["--name", f"{group}-{number}", "--share-group", group, "--metrics-port", str(port)], env))
            processes.append(IngestProcess(started, port))
        yield processes


def _wait_subscribed(processes: list[IngestProcess], timeout_s: float = 120) -> None:
    """Until each ingest process has logged its subscription (a loaded machine can take many seconds to start
    one), and a moment more for the SUBACKs: the broker keeps their messages from then on."""
    deadline = time.monotonic() + timeout_s
    while not all("subscribed" in process.started.tail(100_000) for process in processes):
        for process in processes:
            process.started.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit("careloop bench ingest: an ingest process did not subscribe:\n"
                             + processes[0].started.tail())
        time.sleep(0.2)
    time.sleep(0.5)


def measure_ingest_processes(
    database_url: str, mqtt_url: str, messages: int, publishers: int, devices: list[str], ingesters: int,
) -> tuple[Figure, int, int]:
    """As measure_ingest, with each ingester a `careloop ingest` process. Timed from the first commit to the last:
    a process's start (imports, connecting) is not ingest work. What the first commit held is left out of the
    count, so the rate is of messages committed within the timed span."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    with _ingest_processes(database_url, mqtt_url, group, ingesters) as first_run:
        _wait_subscribed(first_run)
    # the first run left the sessions and their shared subscription; the broker queues while they are away
    _queue_while_away(mqtt_url, messages, publishers, devices, raw=False)
    with _ingest_processes(database_url, mqtt_url, group, ingesters) as running:
        seconds, timed = _time_commits(running, messages)
    conn = psycopg2.connect(database_url)
    for number in range(ingesters):
        forget_session(mqtt_url, f"{group}-{number}")
    rows = int(fetch_value(conn, "SELECT count(*) FROM telemetry"))
    size = telemetry_bytes(conn)
    conn.close()
    name = f"MQTT → {ingesters} ingest process(es) → commit (drain)"
    return Figure(name, seconds, timed, timed * METRICS_PER_MESSAGE), rows, size


def _time_commits(processes: list[IngestProcess], messages: int) -> tuple[float, int]:
    """(seconds, messages) from the first commit seen to the last, or until nothing moved for STALL_S."""
    first: tuple[int, float] | None = None
    stored = 0
    last_progress = (0, time.perf_counter())
    with tqdm(total=messages, desc="publish → commit", unit="msg", leave=False) as bar:
        while stored < messages and last_progress is not None:
            time.sleep(0.1)
            stored = sum(process.messages_committed() for process in processes)
            if first is None and stored:
                first = (stored, time.perf_counter())
            bar.update(stored - bar.n)
            last_progress = _stalled(stored, last_progress)
    ended = time.perf_counter() - (STALL_S if last_progress is None else 0)
    counted, since = first if first is not None else (0, ended)
    return ended - since, stored - counted


# --- live: latency at fixed offered rates ------------------------------------------------------


def _publish_paced(
    share: range, ready, go, mqtt_url: str, devices: list[str], rate: float, start_at, late_ms,
) -> None:  # fmt: skip
    """One publishing process of a live run: message i is published at its due time, start_at + i / rate (open
    loop), with that due time as its ts. The worst lateness behind that schedule, in ms, goes to its place in
    `late_ms` (share.start: the publisher's number). Pre-encoded packets (bench.publisher), not paho: the
    generator must not take the cores the ingesters are measured on."""
    publisher = PacedPublisher(mqtt_url)
    ready.set()
    go.wait()
    start = start_at.value
    first = dt.datetime.fromtimestamp(start, dt.UTC)
    messages = [message_body(index, devices, first, 1 / rate) for index in share]
    packets = PacedPublisher.encode([(telemetry_topic(device), body) for device, body in messages])
    late = publisher.publish_paced(packets, [start + index / rate for index in share])
    publisher.close(len(packets))
    late_ms[share.start] = late * 1000


@dataclass
class LiveFigure:
    share: float  # of the ingest drain rate
    rate: float  # offered, messages/s
    published: int
    latencies: list[float]  # seconds from each message's due time to its commit seen
    publishers_late_s: float  # how far behind their schedule the publishers fell at worst

    def quantile_ms(self, share: float) -> str:
        value = percentile(self.latencies, share)
        return "-" if value is None else f"{value * 1000:.1f}"


def measure_live(
    database_url: str, mqtt_url: str, *, share: float, rate: float, seconds: float, publishers: int,
    devices: list[str],
) -> LiveFigure:  # fmt: skip
    """`rate` messages/s for `seconds` from `devices` (registered, none of their messages stored yet) into the
    running ingesters; each message timed from its due time to the moment its commit is seen.

    A commit is seen through the ingesters' own notification of the devices each batch changed (careloop.notify,
    delivered once the batch has committed): the devices it names are looked up in device_state, and a device
    whose count of stored messages rose by n has had its n oldest messages not yet counted committed. Messages
    of one device that two ingesters commit out of order are counted in order, which can swap their latencies
    between them, never lengthen or shorten their sum; with many devices (--live-devices) a device's messages
    come far enough apart for that to be rare."""
    messages = int(rate * seconds)
    index_of = {device: number for number, device in enumerate(devices)}
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    listen_for_changed_devices(listener)
    reader = psycopg2.connect(database_url)
    reader.autocommit = True
    start_at, late_ms = SPAWN.Value("d", 0.0), SPAWN.Array("d", publishers)
    go, processes = _start_publishers(_publish_paced, publishers, messages, mqtt_url, devices, rate, start_at, late_ms)
    start = first_due_time(messages)
    start_at.value = start
    go.set()
    counted = [0] * len(devices)  # messages of each device seen committed so far
    latencies: list[float] = []
    last_progress = (0, time.perf_counter())
    with tqdm(total=messages, desc=f"live at {share:.0%} ({rate:,.0f} msg/s)", unit="msg", leave=False) as bar:
        while len(latencies) < messages and last_progress is not None:
            stored_counts, seen = _stored_counts_on_commit(listener, reader, index_of)
            for number, stored in stored_counts:
                for k in range(counted[number], min(stored, messages)):
                    latencies.append(seen - (start + (k * len(devices) + number) / rate))
                counted[number] = max(counted[number], stored)
            bar.update(len(latencies) - bar.n)
            # the clock for a stall starts at the first due time, not while the publishers build their payloads
            last_progress = _stalled(len(latencies), last_progress) if time.time() > start else last_progress
    for process in processes:
        process.join()
    listener.close()
    reader.close()
    if any(process.exitcode != 0 for process in processes):
        raise RuntimeError(f"a publisher failed at {share:.0%} ({rate:,.0f} messages/s): its error is above")
    return LiveFigure(share, rate, messages, latencies, max(late_ms) / 1000)


def _stored_counts_on_commit(listener, reader, index_of: dict[str, int]) -> tuple[list[tuple[int, int]], float]:
    """Waits up to 0.2 s for the ingesters' notification of committed batches on `listener`; answers, for the
    devices of `index_of` they name, (device number, messages stored) from device_state, and when it was read."""
    if not select.select([listener], [], [], 0.2)[0]:
        return [], time.time()
    listener.poll()
    changed = {device for note in listener.notifies for device in devices_in(note.payload)}
    listener.notifies.clear()
    wanted = [device for device in changed if device in index_of]
    if not wanted:
        return [], time.time()
    with reader.cursor() as cursor:
        cursor.execute("SELECT device_id, seq_count FROM device_state WHERE device_id = ANY(%s)", (wanted,))
        rows = cursor.fetchall()
    return [(index_of[device], int(stored)) for device, stored in rows], time.time()


@contextmanager
def _running_ingesters(database_url: str, mqtt_url: str, count: int, processes: bool) -> Iterator[None]:
    """`count` ingesters on one shared subscription, subscribed, for the block: `careloop ingest` processes or
    threads of this process; their sessions are ended afterwards."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    if processes:
        with _ingest_processes(database_url, mqtt_url, group, count) as started:
            _wait_subscribed(started)
            yield
    else:
        database = Database(database_url, max_connections=count + 2)
        running = _start_subscribed_ingesters(database, mqtt_url, group, count)
        try:
            yield
        finally:
            for ingester in running:
                ingester.stop()
            database.close()
    for number in range(count):
        forget_session(mqtt_url, f"{group}-{number}")


def measure_live_shares(
    database_url: str, mqtt_url: str, drain_rate: float, shares: list[float], *, seconds: float, publishers: int,
    devices_per_share: int, ingesters: int, processes: bool,
) -> list[LiveFigure]:  # fmt: skip
    """measure_live at each share of `drain_rate`, each from devices of its own, into the same ingesters."""
    fleets = [device_ids(devices_per_share, prefix=f"LIVE{number}") for number in range(len(shares))]
    conn = psycopg2.connect(database_url)
    with conn:
        for fleet in fleets:
            register_devices(conn, fleet)
    conn.close()
    figures = []
    with _running_ingesters(database_url, mqtt_url, ingesters, processes):
        for share, fleet in zip(shares, fleets, strict=True):
            figures.append(measure_live(database_url, mqtt_url, share=share, rate=share * drain_rate,
                                        seconds=seconds, publishers=publishers, devices=fleet))
    return figures


def bench_ingest(args: argparse.Namespace) -> int:
    urls = resolve_services(get_settings())
    devices = device_ids(args.devices)
    expected = args.messages * METRICS_PER_MESSAGE
    live = args.mode == "live"
    shares = [float(share) / 100 for share in str(args.rates).split(",")] if live else []
    with temporary_database(urls.database_url) as database_url:
        conn = psycopg2.connect(database_url)
        with conn:
            register_devices(conn, devices)
        conn.close()
        print(
            f"careloop bench ingest ({args.mode}): {args.messages:,} messages x {METRICS_PER_MESSAGE} metrics from "
            f"{args.publishers} publisher processes, {args.devices} devices, {args.ingesters} ingester(s)"
            + (" as processes of their own" if args.processes else " in this process")
            + "; queued in the broker first, then drained"
            + (f"; then {args.seconds:g} s at each of {args.rates}% of the ingest drain rate, from "
               f"{args.live_devices:,} devices a rate by one paced publisher" if live else "")
        )
        paho_drain = measure_broker_drain(urls.mqtt_url, args.messages, args.publishers, devices, buffered=False)
        drain = measure_broker_drain(urls.mqtt_url, args.messages, args.publishers, devices)
        copy = measure_copy(database_url, args.messages, devices)
        measure = measure_ingest_processes if args.processes else measure_ingest
        ingest, stored, size = measure(database_url, urls.mqtt_url, args.messages, args.publishers, devices,
                                       args.ingesters)
        print(f"{'measurement':<40} {'seconds':>8} {'messages/s':>12} {'readings/s':>12}")
        for figure in (paho_drain, drain, copy, ingest):
            print(
                f"{figure.name:<40} {figure.seconds:>8.2f} {figure.messages_per_s:>12,.0f} "
                f"{figure.rows_per_s:>12,.0f}"
            )
        print(
            f"ingest / broker drain: {ingest.messages_per_s / paho_drain.messages_per_s:.2f} of paho's, "
            f"{ingest.messages_per_s / drain.messages_per_s:.2f} of the careloop client's   "
            f"ingest / COPY: {ingest.rows_per_s / copy.rows_per_s:.2f}"
        )
        verdict = "every reading stored once" if stored == expected else "MISMATCH"
        print(f"rows in telemetry: {stored:,} of {expected:,} expected ({verdict})")
        if stored:
            print(f"storage: {size / stored:.0f} bytes per reading in telemetry with its indexes "
                  f"({size / 2**20:.1f} MiB)")
        drain_rate = args.drain_rate or ingest.messages_per_s
        if live and drain_rate <= 0:
            print("live: not run: the drain committed too few messages within a timed span to give a rate; run "
                  "with more --messages, or give --drain-rate")
        elif live:
            figures = measure_live_shares(
                database_url, urls.mqtt_url, drain_rate, shares, seconds=args.seconds,
                publishers=LIVE_PUBLISHERS, devices_per_share=args.live_devices, ingesters=args.ingesters,
                processes=args.processes,
            )
            print(f"live: publish → commit, each message from its due time to its commit seen; rates as shares of "
                  f"{drain_rate:,.0f} messages/s" + (" (--drain-rate)" if args.drain_rate else " (the ingest drain)"))
            print(f"{'share':>5} {'offered/s':>10} {'messages':>9} {'committed':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'max ms':>8} {'publishers late ms':>18}")
            for figure in figures:
                print(
                    f"{figure.share:>5.0%} {figure.rate:>10,.0f} {figure.published:>9,} {len(figure.latencies):>9,} "
                    f"{figure.quantile_ms(0.5):>8} {figure.quantile_ms(0.99):>8} {figure.quantile_ms(1.0):>8} "
                    f"{figure.publishers_late_s * 1000:>18.0f}"
                )
        compress_s = compress_telemetry(database_url)
        if compress_s is None:
            print("storage after compression: not measured (telemetry is a plain table here: no TimescaleDB)")
        elif stored:
            conn = psycopg2.connect(database_url)
            try:
                size = telemetry_bytes(conn)
            finally:
                conn.close()
            print(f"storage after TimescaleDB compression: {size / stored:.0f} bytes per reading "
                  f"({size / 2**20:.1f} MiB for {stored:,} readings; compressed in {compress_s:.1f} s)")
    return 0
