"""`careloop bench chaos`: ingest under faults, against a real Mosquitto and PostgreSQL of the benchmark's own.

Devices publish readings at QoS 1 at a steady rate while the ingester is SIGKILLed (once between a batch's
commit and its acknowledgement), PostgreSQL is restarted in immediate mode (a crash as far as its data goes) and
Mosquitto is stopped cleanly and started again. The publishers follow the devices' rule: a reading is kept until
the broker acknowledges it with success, and one acked "No matching subscribers" (0x10: a restarted Mosquitto
before the ingester's shared subscription is back) is sent again after a back-off (simulators.delivery). Then it
counts what the database holds against what the broker acknowledged to the devices: readings stored, duplicates,
the redeliveries the ingester skipped, the longest time nothing was committed, and every gap in the devices' seq
counters. It prints figures and says which guarantee held; it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2.extras import execute_values
from tqdm import tqdm

from bench.services import OwnMosquitto, OwnPostgres
from careloop.db import ensure_database, migrate
from careloop.embedded import stop_process
from careloop.mqtt import make_connection, telemetry_topic
from simulators.delivery import ConfirmedPublisher

RATE_PER_S = 1_000  # readings published per second, all devices together
MIN_PUBLISH_S = 20.0  # small runs still leave room for every fault and its recovery
PUBLISHERS = 2
MODEL, KIND, METRIC = "RH-900", "range_hood", "fan_current_a"  # one metric per message: a message is a reading
PUBLISHER_SESSION_S = 600  # publishers keep their session, so a broker restart forgets nothing they sent
PUBLISHER_INFLIGHT = 200
PUBLISHER_DRAIN_S = 120.0  # after its last publish, how long a publisher waits for the broker's acks
COUNTERS = 6  # per publisher: see _publish_share
RESENT_LABEL = "  re-sent after 'no matching subscribers'"
SAMPLE_S = 0.1  # how often the stored count is read, for the stall figure
QUIET_S = 15.0  # once publishing is over, this long without a commit ends the wait (the retry back-off is 10 s)
RECOVERY_TIMEOUT_S = 60.0
KILL_TRIGGER_TIMEOUT_S = 30.0
EXTRA_TIME_S = 300.0  # beyond the publishing window, the most the run may take

KILL, KILL_BEFORE_ACK, RESTART_POSTGRES, RESTART_MOSQUITTO = "kill", "kill_before_ack", "postgres", "mosquitto"
FAULT_NAMES = {
    KILL: "SIGKILL ingester",
    KILL_BEFORE_ACK: "SIGKILL ingester, between commit and ack",
    RESTART_POSTGRES: "restart PostgreSQL (-m immediate)",
    RESTART_MOSQUITTO: "restart Mosquitto (SIGTERM, start)",
}


class Closing(Exception):
    """The run is being torn down (Ctrl-C, error): fault injection stops where it is."""


# --- the workload --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Reading `index` comes from device index % devices with seq index // devices + 1, at start + index / rate."""

    readings: int
    devices: int
    publishers: int
    seconds: float

    @staticmethod
    def device_id(device: int) -> str:
        return f"CHAOS-{device + 1:05d}"

    def readings_of(self, device: int) -> int:
        return len(range(device, self.readings, self.devices))

    def published_by(self, publisher: int) -> Iterator[tuple[int, int, int]]:
        """(index, device, seq) of the readings one publisher sends: whole devices, so each keeps its order."""
        for index in range(self.readings):
            device = index % self.devices
            if device % self.publishers == publisher:
                yield index, device, index // self.devices + 1


def _publish_share(
    mqtt_url: str,
    client_id: str,
    publisher: int,
    workload: Workload,
    start_at,
    ready,
    go,
    counters,
    dropped_span,
) -> None:
    """One publishing process: its devices' readings at QoS 1 on the workload's timeline, then every ack awaited.

    Like a device, it keeps each reading until the broker acknowledges it with success, and sends again (same
    seq and ts) what the broker acked with 'no matching subscribers' (0x10), after 0.5 s doubling to 5 s.

    counters: [publish calls, acked with success, acks with 'no matching subscribers', connections,
    re-sends after such an ack, readings given up];
    dropped_span: [first, last] wall-clock time of an ack with 'no matching subscribers'.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us itself, after Ctrl-C too
    connection = make_connection(mqtt_url, client_id, session_expiry_s=PUBLISHER_SESSION_S)
    client = connection.client
    client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
    client.max_queued_messages_set(0)  # paho keeps what the broker has not acked, resending it after a reconnect
    # Nothing given up in a run: every reading of the publisher may wait for a re-send.
    delivery = ConfirmedPublisher(client, max_waiting=max(workload.readings, 1), name=client_id)
    tally: Counter = Counter()  # written on paho's network thread only

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            tally["connections"] += 1

    published = 0
    reported_at = 0.0

    def report() -> None:
        stats = delivery.stats()
        with counters.get_lock():
            counters[0], counters[1] = published, stats.delivered
            counters[2], counters[3] = stats.no_subscribers, tally["connections"]
            counters[4], counters[5] = stats.resent, stats.given_up + stats.refused
        with dropped_span.get_lock():
            dropped_span[0], dropped_span[1] = stats.first_no_subscribers_at, stats.last_no_subscribers_at

    client.on_connect = on_connect
    connection.connect()
    client.loop_start()
    deadline = time.monotonic() + 30
    while not tally["connections"] and time.monotonic() < deadline:
        time.sleep(0.02)
    ready.set()
    go.wait()
    interval = workload.seconds / workload.readings
    for index, device, seq in workload.published_by(publisher):
        delay = start_at.value + index * interval - time.time()
        if delay > 0.002:
            time.sleep(delay)
        ts = dt.datetime.now(dt.UTC).isoformat()
        body = json.dumps({"seq": seq, "ts": ts, "metrics": {METRIC: round(0.5 + (index % 100) / 100, 2)}})
        delivery.publish(telemetry_topic(workload.device_id(device)), body.encode())
        published += 1
        if time.monotonic() - reported_at > 0.02:
            report()
            reported_at = time.monotonic()
    deadline = time.monotonic() + PUBLISHER_DRAIN_S
    while not delivery.wait_delivered(0.05) and time.monotonic() < deadline:
        report()
    delivery.close(0)
    report()
    client.disconnect()
    client.loop_stop()


# --- the faults ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFault:
    kind: str
    at_s: float  # seconds after the first publish


@dataclass
class Fault:
    kind: str
    at: float  # wall clock
    recovered: float
    note: str = ""

    @property
    def name(self) -> str:
        return FAULT_NAMES[self.kind]


def plan_faults(kills: int, rng: random.Random, seconds: float) -> list[PlannedFault]:
    """Every fault once at a seeded moment, spread over 10-85 % of the publishing window, one after another.

    One kill (the first when there are any) comes between commit and ack; never last, so batches still flow.
    """
    kinds = [KILL_BEFORE_ACK] * min(kills, 1) + [KILL] * max(kills - 1, 0) + [RESTART_POSTGRES, RESTART_MOSQUITTO]
    rng.shuffle(kinds)
    if len(kinds) > 1 and kinds[-1] == KILL_BEFORE_ACK:
        kinds[0], kinds[-1] = kinds[-1], kinds[0]
    spacing = 0.75 * seconds / len(kinds)
    return [
        PlannedFault(kind, 0.10 * seconds + spacing * (number + 0.5) + rng.uniform(-0.25, 0.25) * spacing)
        for number, kind in enumerate(kinds)
    ]


# --- what the ingester says ----------------------------------------------------------------------------------


@dataclass
class Journal:
    """Reads the chaos ingester's journal (bench.chaos_ingester) as it grows."""

    path: Path
    offset: int = 0
    batches: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    killed_batches: list[dict] = field(default_factory=list)
    # (commit time, readings newly stored, redelivered ones skipped) per batch: the ingester's own clock, which a
    # sampler of the database cannot match while PostgreSQL is down
    commits: list[tuple[float, int, int]] = field(default_factory=list)
    connection_events: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self) -> None:
        with self.lock:
            if not self.path.exists():
                return
            with self.path.open("rb") as journal:
                journal.seek(self.offset)
                chunk = journal.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for the next poll
            self.offset += len(complete)
            for line in complete.splitlines():
                entry = json.loads(line)
                if entry["event"] == "batch":
                    self.batches += 1
                    self.commits.append((entry["t"], entry["stored"], entry["duplicates"]))
                    self.messages += entry["messages"]
                    self.stored += entry["stored"]
                    self.duplicates += entry["duplicates"]
                    self.quarantined += entry["quarantined"]
                    if entry["killed_before_ack"]:
                        self.killed_batches.append(entry)
                else:
                    self.connection_events.append(entry)

    def connected_since(self, pid: int, since: float) -> float | None:
        """When the process connected (and subscribed) after `since`, if its latest word since then is that."""
        self.poll()
        with self.lock:
            events = [e for e in self.connection_events if e["pid"] == pid and e["t"] >= since]
        return events[-1]["t"] if events and events[-1]["event"] == "connected" else None


# --- the run -------------------------------------------------------------------------------------------------


class ChaosRun:
    """Owns every server, process and folder of one run, and tears them all down in close()."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.workload = Workload(
            readings=args.readings,
            devices=args.devices,
            publishers=min(PUBLISHERS, args.devices),
            seconds=max(MIN_PUBLISH_S, args.readings / RATE_PER_S),
        )
        self.rng = random.Random(args.seed)
        self.plan = plan_faults(args.kills, self.rng, self.workload.seconds)
        self.run_id = uuid.uuid4().hex[:8]
        self.folder = Path(tempfile.mkdtemp(prefix="careloop-chaos-"))
        self.folder.chmod(0o711)  # PostgreSQL's own user must pass through to its folder
        self.kill_file = self.folder / "kill-before-ack"
        self.journal = Journal(self.folder / "ingester.journal")
        self.closing = threading.Event()
        self.lock = threading.Lock()  # the ingester process handle and whether its exit is ours
        self.ingester: subprocess.Popen | None = None
        self.exit_expected = False
        self.unexpected_exits: list[tuple[float, int]] = []
        self.faults: list[Fault] = []
        self.chaos_error: BaseException | None = None
        self.progress: list[tuple[float, int]] = []  # (time, readings stored) at each change: progress and the end
        self.postgres: OwnPostgres | None = None
        self.mosquitto: OwnMosquitto | None = None
        self.database_url = ""
        self.publishers: list = []
        self.counters: list = []
        self.dropped_spans: list = []
        self.threads: list[threading.Thread] = []
        self.started = 0.0
        self.context = multiprocessing.get_context("spawn")
        self.go = self.context.Event()  # publishers start together, at start_at
        self.start_at = self.context.Value("d", 0.0)

    # --- servers and processes ---

    def start_services(self) -> None:
        self.postgres = OwnPostgres(self.folder / "postgres")
        self.postgres.initialise()
        self.postgres.start()
        self.mosquitto = OwnMosquitto(self.folder / "mosquitto")
        self.mosquitto.start()
        self.database_url = self.postgres.url("careloop")
        ensure_database(self.database_url)
        migrate(self.database_url)
        rows = [(self.workload.device_id(device), MODEL, KIND) for device in range(self.workload.devices)]
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cursor:
            execute_values(cursor, "INSERT INTO devices (id, model, kind) VALUES %s", rows)
        conn.close()

    def start_ingester(self) -> subprocess.Popen:
        """A chaos ingester under the run's one name, so each restart finds the session the broker kept."""
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        command = [
            sys.executable,
            "-m",
            "bench.chaos_ingester",
            "--database-url",
            self.database_url,
            "--mqtt-url",
            self.mosquitto.url,
            "--name",
            f"chaos-{self.run_id}",
            "--share-group",
            f"chaos-{self.run_id}",
            "--journal",
            str(self.journal.path),
            "--kill-file",
            str(self.kill_file),
        ]
        with self.lock:
            if self.closing.is_set():
                raise Closing
            with (self.folder / "ingester.log").open("ab") as output:
                self.ingester = subprocess.Popen(
                    command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            self.exit_expected = False
            return self.ingester

    def wait_connected(self, pid: int, since: float) -> float:
        deadline = time.time() + RECOVERY_TIMEOUT_S
        while time.time() < deadline:
            if self.closing.is_set():
                raise Closing
            connected_at = self.journal.connected_since(pid, since)
            if connected_at is not None:
                return connected_at
            time.sleep(0.02)
        raise RuntimeError(
            f"the ingester did not connect within {RECOVERY_TIMEOUT_S:.0f}s; its log ends:\n{self.ingester_log_tail()}"
        )

    def ingester_log_tail(self, lines: int = 15) -> str:
        """The end of the chaos ingesters' output (the run's folder is deleted afterwards)."""
        path = self.folder / "ingester.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(f"    | {line}" for line in text.splitlines()[-lines:])

    def start_publishers(self) -> None:
        ready_events = []
        for number in range(self.workload.publishers):
            ready = self.context.Event()
            counters = self.context.Array("q", COUNTERS)
            dropped_span = self.context.Array("d", 2)
            process = self.context.Process(
                target=_publish_share,
                args=(
                    self.mosquitto.url,
                    f"chaos-publisher-{self.run_id}-{number}",
                    number,
                    self.workload,
                    self.start_at,
                    ready,
                    self.go,
                    counters,
                    dropped_span,
                ),
                daemon=True,
            )
            process.start()
            self.publishers.append(process)
            self.counters.append(counters)
            self.dropped_spans.append(dropped_span)
            ready_events.append(ready)
        for ready in ready_events:
            if not ready.wait(timeout=60):
                raise RuntimeError("a publisher did not connect to the broker within 60 s")

    def publisher_totals(self) -> list[int]:
        """[publish calls, acked with success, acks with no subscriber, connections, re-sends, given up] over every
        publisher."""
        totals = [0] * COUNTERS
        for counters in self.counters:
            with counters.get_lock():
                for position in range(COUNTERS):
                    totals[position] += counters[position]
        return totals

    # --- fault injection (its own thread) ---

    def _pause(self, seconds: float) -> None:
        if self.closing.wait(timeout=max(seconds, 0)):
            raise Closing

    def _inject_faults(self) -> None:
        try:
            for planned in self.plan:
                self._pause(self.started + planned.at_s - time.time())
                fault = self._inject(planned.kind)
                self.faults.append(fault)
                tqdm.write(
                    f"  {fault.at - self.started:6.1f} s  {fault.name}: back after "
                    f"{fault.recovered - fault.at:.2f} s{'; ' + fault.note if fault.note else ''}"
                )
        except Closing:
            pass
        except BaseException as error:  # handed to the main thread, which stops the run
            self.chaos_error = error

    def _inject(self, kind: str) -> Fault:
        if kind in (KILL, KILL_BEFORE_ACK):
            return self._kill_ingester(between_commit_and_ack=kind == KILL_BEFORE_ACK)
        if kind == RESTART_POSTGRES:
            at = time.time()
            self.postgres.stop("immediate")
            self._pause(self.rng.uniform(0.5, 2.0))
            self.postgres.start()  # replays the WAL, then accepts connections
            return Fault(kind, at, time.time())
        at = time.time()
        self.mosquitto.stop()
        self._pause(self.rng.uniform(0.2, 1.0))
        self.mosquitto.start()
        # Back means: the ingester has connected and subscribed again.
        return Fault(kind, at, self.wait_connected(self.ingester.pid, at))

    def _kill_ingester(self, *, between_commit_and_ack: bool) -> Fault:
        with self.lock:
            process = self.ingester
            self.exit_expected = True
        note = ""
        kind = KILL_BEFORE_ACK if between_commit_and_ack else KILL
        if between_commit_and_ack:
            killed_before = len(self.journal.killed_batches)
            self.kill_file.touch()  # the ingester's before_ack hook SIGKILLs itself at its next committed batch
            try:
                process.wait(timeout=KILL_TRIGGER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill_file.unlink(missing_ok=True)
                process.kill()
                process.wait()
                kind, note = KILL, "no batch committed within 30 s: killed at a random moment instead"
            at = time.time()
            self.journal.poll()
            if len(self.journal.killed_batches) > killed_before:
                batch = self.journal.killed_batches[-1]
                at = batch["t"]
                note = f"its batch of {batch['messages']:,} messages was committed, never acknowledged"
        else:
            at = time.time()
            process.send_signal(signal.SIGKILL)
            process.wait()
        self._pause(self.rng.uniform(0.5, 3.0))  # the broker queues for the ingester's session meanwhile
        restarted = self.start_ingester()
        return Fault(kind, at, self.wait_connected(restarted.pid, at), note)

    def supervise(self) -> None:
        """An ingester that exits without being killed is a finding: count it, and restart it as systemd would."""
        with self.lock:
            process = self.ingester
            died = process is not None and process.poll() is not None and not self.exit_expected
            if died:
                self.exit_expected = True
        if died and not self.closing.is_set():
            self.unexpected_exits.append((time.time(), process.returncode))
            tqdm.write(f"  the ingester exited by itself (code {process.returncode}); restarting it. Its log ends:")
            tqdm.write(self.ingester_log_tail())
            self.start_ingester()

    # --- the stored count, sampled (its own thread) ---

    def _sample_progress(self) -> None:
        conn = None
        last = 0
        while not self.closing.wait(timeout=SAMPLE_S):
            try:
                if conn is None:
                    conn = psycopg2.connect(self.database_url, connect_timeout=2)
                    conn.autocommit = True
                with conn.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM telemetry")
                    stored = cursor.fetchone()[0]
            except psycopg2.Error:  # PostgreSQL is restarting: the gap in samples is part of the stall
                if conn is not None:
                    conn.close()
                conn = None
                continue
            if stored != last:
                self.progress.append((time.time(), stored))
                last = stored
        if conn is not None:
            conn.close()

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # --- the run ---

    def execute(self) -> Report:
        workload = self.workload
        self.start_services()
        print(
            f"careloop bench chaos: {workload.readings:,} readings at QoS 1 from {workload.devices} devices "
            f"({workload.publishers} publishers, {workload.readings / workload.seconds:,.0f}/s for "
            f"{workload.seconds:.0f} s); own PostgreSQL {self.postgres.version} on :{self.postgres.port}, "
            f"own Mosquitto {self.mosquitto.version} on :{self.mosquitto.port}"
        )
        first = self.start_ingester()
        self.wait_connected(first.pid, 0)
        time.sleep(0.5)  # the SUBACK, before anything is published
        self.start_publishers()
        self.start_at.value = self.started = time.time() + 0.2
        self.go.set()
        self._spawn(self._sample_progress, "chaos-sampler")
        chaos = threading.Thread(target=self._inject_faults, name="chaos-faults", daemon=True)
        chaos.start()
        self.threads.append(chaos)
        print("faults:")
        deadline = self.started + workload.seconds + EXTRA_TIME_S
        timed_out = False
        quiet = not sys.stderr.isatty()
        bar_options = {"total": workload.readings, "unit": "reading", "leave": False, "disable": quiet}
        bars = [
            tqdm(desc="acked by broker", position=0, **bar_options),
            tqdm(desc="stored", position=1, **bar_options),
        ]
        try:
            while True:
                time.sleep(0.1)
                self.journal.poll()
                if self.chaos_error is not None:
                    raise self.chaos_error
                self.supervise()
                acked = self.publisher_totals()[1]
                stored, last_change = (self.progress[-1][1], self.progress[-1][0]) if self.progress else (0, 0.0)
                bars[0].update(acked - bars[0].n)
                bars[1].update(stored - bars[1].n)
                settled = not chaos.is_alive() and not any(process.is_alive() for process in self.publishers)
                accounted = stored >= workload.readings
                if settled and (accounted or time.time() - max(last_change, self.started) > QUIET_S):
                    break
                if time.time() > deadline:
                    timed_out = True
                    break
        finally:
            for bar in bars:
                bar.close()
        self.stop_ingester()
        self.closing.set()
        for thread in self.threads:
            thread.join(timeout=10)
        return self.report(timed_out)

    def stop_ingester(self) -> None:
        """SIGTERM: the clean stop of careloop ingest, which acks the batch in hand."""
        with self.lock:
            process, self.exit_expected = self.ingester, True
        if process is not None:
            stop_process(process, timeout_s=30)

    def close(self) -> None:
        """Every process, server and folder of the run, whatever state it is in (Ctrl-C, errors)."""
        self.closing.set()
        for thread in self.threads:
            thread.join(timeout=70)  # a fault half-way (a server starting) finishes its step first
        with self.lock:
            process = self.ingester
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        for publisher in self.publishers:
            if publisher.is_alive():
                publisher.kill()
            publisher.join(timeout=5)
        for server in (self.mosquitto, self.postgres):
            if server is not None:
                server.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- the figures ---

    def report(self, timed_out: bool) -> Report:
        conn = psycopg2.connect(self.database_url)
        with conn.cursor() as cursor:
            cursor.execute("SELECT count(*), count(DISTINCT (device_id, seq, metric)) FROM telemetry")
            stored, distinct = cursor.fetchone()
            cursor.execute("SELECT device_id, seq, ts FROM telemetry")
            rows = cursor.fetchall()
            cursor.execute("SELECT device_id, first_seq, last_seq, seq_count FROM device_state")
            states = {row[0]: row[1:] for row in cursor.fetchall()}
            cursor.execute("SELECT count(*) FROM quarantine")
            quarantined = cursor.fetchone()[0]
        conn.close()
        published, acked, no_subscribers, connections, resent, given_up = self.publisher_totals()
        return Report(
            workload=self.workload,
            started=self.started,
            faults=self.faults,
            journal=self.journal,
            published=published,
            acked=acked,
            acked_no_subscribers=no_subscribers,
            resent=resent,
            given_up=given_up,
            no_subscribers_span=(
                min((span[0] for span in self.dropped_spans if span[0]), default=0.0),
                max((span[1] for span in self.dropped_spans), default=0.0),
            ),
            publisher_connections=connections,
            stored=stored,
            duplicates=stored - distinct,
            quarantined=quarantined,
            gaps=find_gaps(self.workload, rows, states),
            unexpected_exits=self.unexpected_exits,
            timed_out=timed_out,
        )


# --- gaps and stalls -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    device_id: str
    first: int
    last: int
    after_ts: float | None  # publish time of the stored reading before the gap
    before_ts: float | None  # and after it

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass
class Gaps:
    ranges: list[Gap]
    missing_by_device_state: int  # sum of last_seq - first_seq + 1 - seq_count
    devices_with_state_gaps: int
    bookkeeping_mismatches: list[str]  # devices whose device_state disagrees with their stored seqs


def find_gaps(workload: Workload, rows: list[tuple], states: dict[str, tuple]) -> Gaps:
    """Missing seqs per device against what was published, and what device_state's counter shows of them."""
    seen: dict[str, dict[int, float]] = {}
    for device_id, seq, ts in rows:
        seen.setdefault(device_id, {})[seq] = ts.timestamp()
    ranges: list[Gap] = []
    mismatches: list[str] = []
    state_missing = state_devices = 0
    for device in range(workload.devices):
        device_id = workload.device_id(device)
        stored = seen.get(device_id, {})
        first_seq, last_seq, seq_count = states.get(device_id, (None, None, 0))
        if stored and (first_seq, last_seq, seq_count) != (min(stored), max(stored), len(stored)):
            mismatches.append(device_id)
        if first_seq is not None:
            missing = last_seq - first_seq + 1 - seq_count
            state_missing += missing
            state_devices += missing > 0
        seq, expected = 1, workload.readings_of(device)
        while seq <= expected:
            if seq in stored:
                seq += 1
                continue
            start = seq
            while seq <= expected and seq not in stored:
                seq += 1
            ranges.append(Gap(device_id, start, seq - 1, stored.get(start - 1), stored.get(seq)))
    return Gaps(ranges, state_missing, state_devices, mismatches)


@dataclass(frozen=True)
class Stall:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


def stalls(commits: list[tuple[float, int, int]], started: float) -> list[Stall]:
    """Intervals without a commit of new readings, from the first publish to the last commit. Devices publish
    without a pause over that whole span, so readings are outstanding throughout it."""
    moments = [started, *sorted(moment for moment, stored, _duplicates in commits if stored)]
    return [Stall(start, end) for start, end in zip(moments, moments[1:], strict=False)]


def fault_before(faults: list[Fault], moment: float) -> Fault | None:
    """The last fault injected before a moment: what a stall ending then is blamed on."""
    injected = [fault for fault in faults if fault.at <= moment]
    return injected[-1] if injected else None


def fault_near(faults: list[Fault], start: float, end: float, slack_s: float = 0.0) -> Fault | None:
    """The latest fault whose outage, from its injection to its recovery plus slack_s, overlaps [start, end]."""
    candidates = [fault for fault in faults if fault.at <= end and fault.recovered + slack_s >= start]
    return candidates[-1] if candidates else None


# --- the report ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    workload: Workload
    started: float
    faults: list[Fault]
    journal: Journal
    published: int
    acked: int
    acked_no_subscribers: int
    resent: int  # readings the publishers sent again after an ack with "no matching subscribers"
    given_up: int  # readings a publisher stopped trying to deliver (refused by the broker, or at its end)
    no_subscribers_span: tuple[float, float]  # when the first and the last of those acks came
    publisher_connections: int
    stored: int
    duplicates: int
    quarantined: int
    gaps: Gaps
    unexpected_exits: list[tuple[float, int]]
    timed_out: bool

    def at(self, moment: float) -> float:
        return moment - self.started

    def lines(self) -> list[str]:
        expected = self.workload.readings
        intervals = stalls(self.journal.commits, self.started)
        lines = [
            "",
            f"{'at s':>7}  {'fault':<40} {'back after s':>12} {'1st commit s':>12} {'stall s':>8} "
            f"{'redelivered':>11}  note",
        ]
        for number, fault in enumerate(self.faults):
            until = self.faults[number + 1].at if number + 1 < len(self.faults) else float("inf")
            overlapping = [s.seconds for s in intervals if fault.at <= s.end < until]
            resumed = next((t for t, _s, _d in self.journal.commits if t > fault.recovered), None)
            redelivered = sum(d for t, _s, d in self.journal.commits if fault.at <= t < until)
            lines.append(
                f"{self.at(fault.at):>7.1f}  {fault.name:<40} {fault.recovered - fault.at:>12.2f} "
                f"{resumed - fault.at if resumed else float('nan'):>12.2f} {max(overlapping, default=0.0):>8.2f} "
                f"{redelivered:>11,}  {fault.note}"
            )
        lines += [
            "back after: until the ingester had connected and subscribed again (PostgreSQL: accepted connections);",
            "1st commit: the first batch committed after that (seconds from the fault); stall: the longest time",
            "without a commit of new readings, ending before the next fault; redelivered: readings the ingester",
            "received again and skipped as duplicates, until the next fault",
        ]
        longest = max(intervals, key=lambda s: s.seconds, default=None)
        if longest is not None:
            cause = fault_before(self.faults, longest.end)
            stall_text = f"{longest.seconds:.2f} s from {self.at(longest.start):.1f} s" + (
                f" ({cause.name})" if cause else " (before any fault)"
            )
        else:
            stall_text = "none"
        steady = [s.seconds for s in intervals if fault_before(self.faults, s.end) is None]
        commit_times = [t for t, _s, _d in self.journal.commits]
        first_drop, last_drop = (self.at(moment) for moment in self.no_subscribers_span)
        dropped_when = f" (acks came {first_drop:.2f} - {last_drop:.2f} s)" if self.acked_no_subscribers else ""
        last_commit = self.at(max(commit_times)) if commit_times else 0.0
        lines += [
            "",
            f"{'readings published (QoS 1, acked with success)':<52} {self.acked:>10,} of {self.published:,} sent",
            f"{'  acks with reason no matching subscribers (0x10)':<52} {self.acked_no_subscribers:>10,}{dropped_when}",
            f"{RESENT_LABEL:<52} {self.resent:>10,}",
            f"{'  given up by the publishers':<52} {self.given_up:>10,}",
            f"{'readings stored':<52} {self.stored:>10,} of {expected:,}",
            f"{'duplicates stored':<52} {self.duplicates:>10,}",
            f"{'redeliveries seen (duplicates the ingester skipped)':<52} {self.journal.duplicates:>10,}",
            f"{'messages the ingester committed (with redeliveries)':<52} {self.journal.messages:>10,} "
            f"in {self.journal.batches:,} batches",
            f"{'quarantined':<52} {self.quarantined:>10,}",
            f"{'longest ingest stall':<52} {stall_text}",
            f"{'longest stall before the first fault':<52} {max(steady, default=0.0):>10.2f} s",
            f"{'publisher connections (first + reconnects)':<52} {self.publisher_connections:>10,}",
            f"{'ingester exits nobody caused':<52} {len(self.unexpected_exits):>10,}",
            f"{'last commit':<52} {last_commit:>10.1f} s after the first publish",
        ]
        lines += self.gap_lines()
        lines += self.guarantee_lines(intervals)
        return lines

    def gap_lines(self) -> list[str]:
        gaps = self.gaps
        missing = sum(gap.size for gap in gaps.ranges)
        lines = [
            f"{'seq gaps shown by device_state':<52} {gaps.missing_by_device_state:>10,} missing on "
            f"{gaps.devices_with_state_gaps} devices (last_seq - first_seq + 1 - seq_count)",
            f"{'readings missing against what was published':<52} {missing:>10,} in {len(gaps.ranges):,} gaps",
        ]
        if gaps.bookkeeping_mismatches:
            lines.append(
                f"device_state disagrees with the stored seqs on {len(gaps.bookkeeping_mismatches)} devices, "
                f"e.g. {', '.join(gaps.bookkeeping_mismatches[:5])}"
            )
        by_fault: Counter = Counter()
        for gap in gaps.ranges:
            low = gap.after_ts if gap.after_ts is not None else self.started
            high = gap.before_ts if gap.before_ts is not None else float("inf")
            cause = fault_near(self.faults, low, high, slack_s=1.0)  # what paho held back goes out on reconnect
            by_fault[cause.name if cause else "no fault near"] += gap.size
        for cause, count in by_fault.most_common():
            lines.append(f"  {count:,} readings lost around: {cause}")
        for gap in gaps.ranges[:20]:
            ends = (gap.after_ts, gap.before_ts)
            window = " - ".join(f"{self.at(ts):.2f} s" if ts is not None else "?" for ts in ends)
            lines.append(f"  {gap.device_id} seq {gap.first}-{gap.last} ({gap.size}), published between {window}")
        if len(gaps.ranges) > 20:
            lines.append(f"  ... and {len(gaps.ranges) - 20:,} more gaps")
        return lines

    def guarantee_lines(self, intervals: list[Stall]) -> list[str]:
        expected = self.workload.readings
        kinds = Counter(fault.kind for fault in self.faults)

        def mark(held: bool) -> str:
            return "✓" if held else "✗"

        kills = kinds[KILL] + kinds[KILL_BEFORE_ACK]
        lines = [
            "",
            "guarantees:",
            f"  faults injected: {kills} ingester SIGKILLs ({kinds[KILL_BEFORE_ACK]} between commit and ack), "
            f"{kinds[RESTART_POSTGRES]} PostgreSQL restart, {kinds[RESTART_MOSQUITTO]} Mosquitto restart",
            f"  every reading acknowledged by the broker with success: {self.acked:,} of {self.published:,} "
            f"{mark(self.acked == self.published == expected)}",
            f"  every 'no matching subscribers' ack answered by a re-send: {self.resent:,} of "
            f"{self.acked_no_subscribers:,}, {self.given_up:,} given up "
            f"{mark(self.resent == self.acked_no_subscribers and not self.given_up)}",
            f"  stored {self.stored:,} of {expected:,} {mark(self.stored == expected)}",
            f"  duplicates {self.duplicates:,} {mark(self.duplicates == 0)}",
            f"  redelivery path exercised: {self.journal.duplicates:,} redelivered readings skipped "
            f"{mark(self.journal.duplicates > 0)}",
            f"  seq gaps {sum(g.size for g in self.gaps.ranges):,} "
            f"(device_state shows {self.gaps.missing_by_device_state:,}) {mark(not self.gaps.ranges)}",
            f"  device_state seq bookkeeping agrees with telemetry on "
            f"{self.workload.devices - len(self.gaps.bookkeeping_mismatches)} of {self.workload.devices} devices "
            f"{mark(not self.gaps.bookkeeping_mismatches)}",
        ]
        if self.timed_out:
            lines.append(f"  the run hit its time limit ({EXTRA_TIME_S:.0f} s past the publishing window) ✗")
        return lines


def bench_chaos(args: argparse.Namespace) -> int:
    if args.readings < 1 or args.devices < 1 or args.kills < 0:
        raise SystemExit("careloop bench chaos: --readings and --devices must be positive, --kills at least 0")
    run = ChaosRun(args)

    def terminate(_signum, _frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)  # a SIGTERM cleans up like Ctrl-C does
    try:
        report = run.execute()
    finally:
        with suppress(KeyboardInterrupt):
            run.close()
        signal.signal(signal.SIGTERM, previous)
    print("\n".join(report.lines()))
    return 0

