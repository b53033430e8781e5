"""`careloop bench partitions`: N engine partitions sharing one fleet open what one engine opens, none twice.

Two databases of the benchmark's own get the same simulated fleet and the built-in rule catalog. Hours of the
fleet's history (readings, injected faults, offline spells) are published over MQTT round by round; in each
database a real `careloop ingest` process stores them. In one database N real `careloop engine --partition i/N`
processes share the fleet; in the other a single `careloop engine` has it all. After each round, once both
databases hold it, the benchmark waits until every engine has swept after it (each batch is evaluated as it
commits, besides). In the last round partition 1 is killed (SIGKILL) while the round's batches are stored and
evaluated, and started again once the round is stored: what it runs at start catches up. (The last round
because a starting engine runs its scheduled rules at once, so over the same history as the others' final runs;
half-way, it would evaluate them at an instant when the others do not.) At the end every engine runs its
scheduled rules once more (`--once`: partition 0 first, for the baselines the others read), and the two
databases are compared: detections opened per (rule, device), opened more than once, missed.

With `--timing-devices N`, it first times, in one process, the scheduled jobs of one engine over N generated
devices against those of each partition (what one engine's share costs, apart from the spread over processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.engine import generate_fleet, vacuum
from bench.fixtures import temporary_database
from careloop.db import Database, fetch_all, fetch_value
from careloop.demo import register_fleet
from careloop.embedded import stop_process
from careloop.heartbeat import HEARTBEAT_INTERVAL_S
from careloop.mqtt import make_connection
from careloop.partitions import Partition
from careloop.runtime import EXIT_WITH_PARENT, resolve_services
from careloop.settings import get_settings
from devices.catalog import load_catalog
from ingest.subscriber import forget_session
from rules.engine import Engine
from rules.partition import devices_in_partition
from rules.service import load_builtin_catalog
from simulators.fleet import make_fleet
from simulators.simulation import Simulation
from simulators.wire import Message

# The serving engines sweep often, so each round is evaluated soon after it is stored; their other jobs run at
# start and then by `--once` at the end, so a window never runs over a round half stored.
SERVING = ["--metrics-port", "0", "--sweep-every", "2s", "--window-every", "24h", "--trends-every", "24h",
           "--baselines-every", "24h"]
KILLED = 1  # the partition killed half-way and started again


@dataclass
class Process:
    """A `careloop` command running as a subprocess, its output kept in a file."""

    label: str
    arguments: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with self.log.open("a") as output:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "careloop.cli", *self.arguments],
                env={**self.env, EXIT_WITH_PARENT: str(os.getpid())},  # ends with the benchmark, however it ends
                stdout=output, stderr=subprocess.STDOUT,
            )
        return self

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.label} exited ({self.popen.returncode}):\n{tail}")

    def kill(self) -> None:
        """SIGKILL: no clean stop, nothing flushed; what it had not committed is rolled back."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, timeout_s=30)


@contextmanager
def running(processes: list[Process]) -> Iterator[list[Process]]:
    try:
        yield [process.start() for process in processes]
    finally:
        for process in processes:
            process.stop()


@dataclass
class Side:
    """One database and the engines that work in it."""

    name: str
    database: Database
    engines: dict[str, Process]  # by the suffix of their job names in engine_jobs: "0/3", or "" for one engine


def seqs_in(message: Message) -> int:
    """How many sequence numbers a message carries: one, a buffered batch's readings, none for a status."""
    if not isinstance(message.payload, dict):
        return 0
    return len(message.payload["readings"]) if "readings" in message.payload else 1


def stored_seqs(database: Database) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, "SELECT coalesce(sum(seq_count), 0) FROM device_state"))


def wait_stored(sides: list[Side], expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = [stored_seqs(side.database) for side in sides]
        if all(count >= expected for count in counts):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest fell behind: {expected} messages published, stored {counts}")
        time.sleep(0.1)


def swept_since(side: Side, since: dt.datetime, suffixes: list[str]) -> bool:
    """Whether each of these engines started a sweep at or after `since` (so it saw everything stored before)."""
    with side.database.connection() as conn:
        runs = {row["job"]: row["last_run_at"] for row in fetch_all(conn, "SELECT job, last_run_at FROM engine_jobs")}
    return all(runs.get(f"sweep {suffix}".strip(), dt.datetime.min.replace(tzinfo=dt.UTC)) >= since
               for suffix in suffixes)


def wait_swept(sides: list[Side], *, skip: str | None = None, timeout_s: float = 120) -> None:
    # Engines stamp a job with its start, to the second: a sweep stamped after this second began after it.
    since = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
    deadline = time.monotonic() + timeout_s
    while not all(swept_since(side, since, [s for s in side.engines if s != skip]) for side in sides):
        for side in sides:
            for suffix, engine in side.engines.items():
                if suffix != skip:
                    engine.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("an engine did not sweep within two minutes")
        time.sleep(0.2)


def publish(connection, messages: list[Message]) -> None:
    """QoS 1, each acknowledged by the broker. Statuses go unretained: nothing is left on a shared broker."""
    infos = [connection.client.publish(message.topic, message.encode(), qos=1) for message in messages]
    for info in infos:
        info.wait_for_publish(timeout=30)


def opened_by_pair(database: Database) -> tuple[Counter, set[tuple[str, str]], list[dict]]:
    """Detections opened per (rule, device); the pairs open now; every detection."""
    with database.connection() as conn:
        rows = fetch_all(conn, "SELECT rule_id, device_id, status FROM detections")
    opened = Counter((row["rule_id"], row["device_id"]) for row in rows)
    still_open = {(row["rule_id"], row["device_id"]) for row in rows if row["status"] != "cleared"}
    return opened, still_open, rows


def job_milliseconds(database: Database) -> dict[str, float]:
    with database.connection() as conn:
        rows = fetch_all(conn, "SELECT job, duration_ms FROM engine_jobs")
    return {row["job"]: float(row["duration_ms"]) for row in rows}


def inject_faults(simulation: Simulation, device_ids: list[str], moment: dt.datetime) -> list[Message]:
    """A fault of its model's catalog on each of these devices that has none open (ground truth kept)."""
    catalog = load_catalog()
    messages: list[Message] = []
    for device_id in device_ids:
        device = simulation.devices[simulation.index_of(device_id)]
        codes = sorted(catalog[device.model].fault_codes)
        if codes and simulation.open_fault_code(device_id) is None:
            messages += simulation.inject_fault(device_id, codes[0], moment)
    return messages


def database_now(database: Database) -> dt.datetime:
    with database.connection() as conn:
        return fetch_value(conn, "SELECT clock_timestamp()")


def engine_heartbeats(database: Database) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(conn, "SELECT process, pid, details FROM process_heartbeats WHERE kind = 'engine' "
                               "ORDER BY process")


def run_once(arguments: list[str], env: dict[str, str], log: Path) -> dict:
    """`careloop engine --once ...`; its JSON summary."""
    with log.open("a") as output:
        done = subprocess.run([sys.executable, "-m", "careloop.cli", "engine", "--once", *arguments], env=env,
                              stdout=subprocess.PIPE, stderr=output, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"careloop engine --once {' '.join(arguments)} failed:\n{log.read_text()[-2000:]}")
    return json.loads(done.stdout)


def time_partition_jobs(server_url: str, size: int, count: int, *, repeat: int = 3) -> None:
    """The scheduled jobs of one engine over a whole generated fleet against those of its partitions, in one process
    each after the other (a fleet generated in bulk as `careloop bench engine` does: 3 days of 3-hourly readings)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with temporary_database(server_url) as url, _database(url) as database:
        with database.transaction() as conn:
            load_builtin_catalog(conn)
            readings = generate_fleet(conn, size, days=3, every_s=10800, now=now)
        vacuum(url)
        print(f"\ntimed in one process, best of {repeat}: {size:,} generated devices, {readings:,} readings")
        print(f"{'engine':<14} {'devices':>8} {'sweep ms':>9} {'window ms':>10} {'trends ms':>10}")
        for partition in [None, *(Partition(index, count) for index in range(count))]:
            engine = Engine(database, clock=lambda: now, partition=partition)
            started = time.perf_counter()
            engine.learn_trends()
            trends_ms = (time.perf_counter() - started) * 1000
            best: dict[str, float] = {}
            devices = 0
            for job in ("sweep", "window"):
                for _ in range(repeat):
                    started = time.perf_counter()
                    devices = getattr(engine, job)().devices
                    best[job] = min(best.get(job, float("inf")), (time.perf_counter() - started) * 1000)
            label = "whole fleet" if partition is None else f"partition {partition}"
            print(f"{label:<14} {devices:>8,} {best['sweep']:>9.0f} {best['window']:>10.0f} {trends_ms:>10.0f}")


def bench_partitions(args: argparse.Namespace) -> int:
    count = args.partitions
    if count < 2:
        raise SystemExit("careloop bench partitions: --partitions must be at least 2")
    urls = resolve_services(get_settings(), need_broker=True)
    if args.timing_devices:
        time_partition_jobs(urls.database_url, args.timing_devices, count)
    run = uuid.uuid4().hex[:6].upper()
    # Ids of this run's own: the broker is shared, and another fleet's messages must not reach these ingesters.
    fleet = [dataclasses.replace(device, device_id=f"P{run}-{device.device_id}")
             for device in make_fleet(args.devices, args.seed)]
    end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    rounds = max(2, int(args.hours * 3600 // args.step))
    start = end - dt.timedelta(seconds=rounds * args.step)
    simulation = Simulation(fleet, seed=args.seed, start=start, faults=args.faults)
    partitions = [Partition(index, count) for index in range(count)]
    logs = Path(tempfile.mkdtemp(prefix="careloop-bench-partitions-"))
    print(
        f"careloop bench partitions: {len(fleet)} simulated devices, {rounds} rounds of {args.step}s of history "
        f"from {start:%Y-%m-%d %H:%M}Z, faults {args.faults!r}, seed {args.seed}; {count} engine partitions "
        f"against one engine; partition {KILLED}/{count} killed (SIGKILL) in round {rounds} and started again after "
        f"it. Logs: {logs}"
    )
    with ExitStack() as stack:
        partitioned_url = stack.enter_context(temporary_database(urls.database_url))
        single_url = stack.enter_context(temporary_database(urls.database_url))
        for url in (partitioned_url, single_url):
            register_fleet(url, fleet, seed=args.seed)
            database = Database(url, max_connections=1)
            with database.transaction() as conn:
                load_builtin_catalog(conn)
            database.close()
        envs = {url: {**os.environ, "CARELOOP_DATABASE_URL": url, "CARELOOP_MQTT_URL": urls.mqtt_url}
                for url in (partitioned_url, single_url)}
        for env in envs.values():
            env.pop("CARELOOP_ENGINE_PARTITION", None)
        ingesters = [
            Process(f"ingest {side}", ["ingest", "--name", f"bench-partitions-{run}-{side}", "--share-group",
                                        f"bench-partitions-{run}-{side}", "--metrics-port", "0"], envs[url],
                    logs / f"ingest-{side}.log")
            for side, url in (("partitioned", partitioned_url), ("single", single_url))
        ]
        partition_engines = {
            str(partition): Process(f"engine --partition {partition}", ["engine", "--partition", str(partition),
                                                                         *SERVING], envs[partitioned_url],
                                    logs / f"engine-{partition.index}of{count}.log")
            for partition in partitions
        }
        single_engine = Process("engine", ["engine", *SERVING], envs[single_url], logs / "engine-single.log")
        sides = [
            Side("partitioned", stack.enter_context(_database(partitioned_url)), partition_engines),
            Side("single", stack.enter_context(_database(single_url)), {"": single_engine}),
        ]
        # Callbacks run last first: the ingesters' sessions are forgotten once the ingesters have stopped.
        stack.callback(lambda: [forget_session(urls.mqtt_url, f"bench-partitions-{run}-{side}")
                                for side in ("partitioned", "single")])
        stack.enter_context(running([*ingesters, *partition_engines.values(), single_engine]))
        wait_swept(sides)
        time.sleep(1.0)  # the ingesters' subscriptions are in place (they connect while the engines start)

        connection = make_connection(urls.mqtt_url, f"bench-partitions-{run}-publisher")
        connection.connect()
        connection.client.loop_start()
        stack.callback(connection.client.loop_stop)
        stack.callback(connection.client.disconnect)
        injected = 0
        published = 0
        started = time.perf_counter()
        killed = partition_engines[str(partitions[KILLED])]
        for round_number in range(1, rounds + 1):
            moment = start + dt.timedelta(seconds=round_number * args.step)
            messages = simulation.step(moment, args.step)
            injected += sum(1 for record in simulation.take_fault_transitions() if record.cleared_at is None)
            kill_now = round_number == rounds
            publish(connection, messages)
            published += sum(seqs_in(message) for message in messages)
            if kill_now:
                time.sleep(0.2)  # while the round's batches commit and are being evaluated
                killed.kill()
                killed_at = database_now(sides[0].database)
                # Faults of its own devices while it is down: no other partition may take them; it must, on return.
                with sides[0].database.connection() as conn:
                    its_devices = devices_in_partition(conn, partition=partitions[KILLED])
                faults = inject_faults(simulation, its_devices[:: max(1, len(its_devices) // args.faults_while_down)],
                                       moment)
                publish(connection, faults)
                published += sum(seqs_in(message) for message in faults)
            wait_stored(sides, published)
            if kill_now:
                # Its devices' batches went unevaluated while it was down; the sweep it runs at start catches up.
                wait_swept(sides, skip=str(partitions[KILLED]))
                killed.start()
            wait_swept(sides)
            print(f"\rround {round_number}/{rounds}: {published} messages stored in each database", end="",
                  flush=True)
        live_seconds = time.perf_counter() - started
        print()
        for engine in [*partition_engines.values(), single_engine]:
            engine.check_alive()
        time.sleep(HEARTBEAT_INTERVAL_S + 1)  # each engine's heartbeat written since the last round
        heartbeats = engine_heartbeats(sides[0].database)
        with sides[0].database.connection() as conn:
            after_kill = fetch_all(conn, "SELECT device_id FROM detections WHERE created_at > %s", (killed_at,))
            of_killed = set(devices_in_partition(conn, partition=partitions[KILLED]))
        caught_up = [row for row in after_kill if row["device_id"] in of_killed]
        faulted = {message.topic.split("/")[3] for message in faults}
        faults_found = faulted & {row["device_id"] for row in caught_up}
        for engine in [*partition_engines.values(), single_engine]:
            engine.stop()

        # The scheduled rules over the final history: partition 0 first (it learns the baselines), then the rest.
        once_log = logs / "engine-once.log"
        summaries = {str(partitions[0]): run_once(["--partition", str(partitions[0])], envs[partitioned_url], once_log)}
        for partition in partitions[1:]:
            summaries[str(partition)] = run_once(["--partition", str(partition)], envs[partitioned_url], once_log)
        summaries["single"] = run_once([], envs[single_url], once_log)

        opened_p, open_p, rows_p = opened_by_pair(sides[0].database)
        opened_s, open_s, rows_s = opened_by_pair(sides[1].database)
        with sides[0].database.connection() as conn:
            owner = {device: partition for partition in partitions
                     for device in devices_in_partition(conn, partition=partition)}
        milliseconds_p, milliseconds_s = job_milliseconds(sides[0].database), job_milliseconds(sides[1].database)

    pairs = opened_p.keys() | opened_s.keys()
    twice = sum(max(0, opened_p[pair] - max(opened_s[pair], 1)) for pair in pairs)
    missed = sum(max(0, opened_s[pair] - opened_p[pair]) for pair in pairs)
    extra = sum(max(0, opened_p[pair] - opened_s[pair]) for pair in pairs)
    reopened_single = sum(1 for pair in pairs if opened_s[pair] > 1)
    print(f"history published over MQTT and evaluated live in {live_seconds:.0f} s; {injected} faults injected\n")
    print(f"{'partition':<10} {'devices':>8} {'opened':>7} {'open at end':>12} {'sweep ms':>9} {'window ms':>10}")
    for partition in partitions:
        mine = [row for row in rows_p if owner[row["device_id"]] == partition]
        print(f"{str(partition):<10} {sum(1 for p in owner.values() if p == partition):>8} {len(mine):>7} "
              f"{sum(1 for row in mine if row['status'] != 'cleared'):>12} "
              f"{milliseconds_p.get(f'sweep {partition}', float('nan')):>9.0f} "
              f"{milliseconds_p.get(f'window {partition}', float('nan')):>10.0f}")
    print(f"{'all ' + str(count):<10} {len(owner):>8} {len(rows_p):>7} {len(open_p):>12}")
    print(f"{'one engine':<10} {len(owner):>8} {len(rows_s):>7} {len(open_s):>12} "
          f"{milliseconds_s.get('sweep', float('nan')):>9.0f} {milliseconds_s.get('window', float('nan')):>10.0f}")
    print(
        f"\ndetections opened: {len(rows_p)} by {count} partitions, {len(rows_s)} by one engine, over "
        f"{len(pairs)} (rule, device) pairs"
    )
    print(f"opened twice by the partitions (beyond what one engine opened): {twice}")
    print(f"missed by the partitions (opened by one engine only): {missed}; opened by the partitions only: "
          f"{extra - twice}")
    print(f"open at the end: the same {len(open_p & open_s)} in both"
          if open_p == open_s else f"open at the end differs: {len(open_p - open_s)} partitions only, "
                                   f"{len(open_s - open_p)} one engine only")
    print(f"(rule, device) pairs one engine itself opened more than once (reopened after a clear): {reopened_single}")
    for pair in sorted(pair for pair in pairs if opened_p[pair] != opened_s[pair])[:20]:
        print(f"  differs: rule {pair[0]} on {pair[1]}: {opened_p[pair]} by the partitions, {opened_s[pair]} by one")
    print(f"partition {partitions[KILLED]} killed in round {rounds}; {len(faulted)} faults of its devices published "
          f"while it was down, {len(faults_found)} of them detected by the process started again ("
          f"{len(caught_up)} detections of its devices opened after the kill in all, its start-up window included)")
    print("engine heartbeats at the end of the live phase (process, detections opened and cleared since its start):")
    for beat in heartbeats:
        details = beat["details"]
        print(f"  {beat['process']:<40} partition {details.get('partition', '-'):<5} "
              f"opened {details.get('detections_opened', 0):>4}, cleared {details.get('detections_cleared', 0):>4}")
    return 0 if twice == 0 and missed == 0 and extra == 0 else 1


@contextmanager
def _database(url: str) -> Iterator[Database]:
    database = Database(url, max_connections=2)
    try:
        yield database
    finally:
        database.close()
