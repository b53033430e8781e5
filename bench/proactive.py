"""`careloop bench proactive`: does our call reach the owner before the owner calls the hotline?

A simulated fleet lives through weeks on a simulated clock, through the real ingest and the engine with the
service-order jobs (a detection's order and call task are made right after the evaluation that opened it), with
faults of two sorts, each with the simulator's ground truth:

- sudden: an injected fault code (`--faults`), which the owner notices when it happens;
- gradual: grease in a hood's filter, scale in a water heater, debris in a dishwasher's drain filter, dust in an
  air conditioner's filter, an oven element's wear, which the owner notices when the quantity crosses the level
  where the appliance does its job at half its clean rate (simulators/appliances.py, failures.py).

The owner calls the hotline a while after noticing: a lognormal number of hours (median `--owner-median-h`, sigma
OWNER_SIGMA) counted in their waking hours (07:00-22:00 in their time zone: nobody rings a hotline about a range
hood at 3 am). Our call reaches them at max(the call task's creation, its due time, which the contact policy puts
in their daytime) plus a dispatcher's handling delay (lognormal, median `--dispatcher-median-min`, sigma
DISPATCHER_SIGMA), if the task is open: a task blocked for want of consent never reaches them. Our call came
first when it reached them before they called. What counts for a sudden fault is a call by a rule watching its
code; for a gradual failure, a call or an order by a rule about it (a rule of the kind watching a metric the
worsening moves, or counting usage or time since the last maintenance) made since the last cleaning.

Per fault kind: faults, the share where our call came first, for gradual ones how many days before the failure
the order opened (or was joined by a detection about it), and false calls per 1,000 device-days: calls in the
scored days with no ground-truth fault or failure of their device within a window (from an hour before a fault
until a day after it cleared; from `--ahead-days` before a failure until a day after its cleaning). Then live,
with the real broker, an `Ingester`, an engine serving with the service-order jobs and the API app: the time from
a fault event's publish over MQTT until its order and call task are visible through
`GET /service-orders?device_id=` and `GET /call-tasks?device_id=`, under steady telemetry from the rest of the
fleet. In a database of its own, dropped afterwards.

On the simulated clock: each owner's last cleaning (weeks or months back) and `--history-days` of hourly telemetry
are ingested without the engine (the history that trend and usage rules read); the engine then runs `--warmup-days`
(what a running engine would have opened already) and the `--days` that are scored; after them the simulation
goes on, physics only, `--ahead-days` more, so that a call near the end is judged by what followed it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import secrets
import threading
import time
import uuid
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from fastapi.testclient import TestClient
from tqdm import tqdm

from bench.fixtures import jobs_run_since, temporary_database
from bench.replay import Fault, Replay, ReplaySchedule, collect_faults, fault_codes_of, instant
from careloop.app import create_app
from careloop.db import Database, fetch_all
from careloop.demo import register_fleet
from careloop.mqtt import make_connection
from careloop.runtime import resolve_services
from careloop.settings import get_settings
from devices.catalog import load_catalog
from devices.models import ApplianceModel
from ingest.subscriber import Ingester, forget_session
from rules.conditions import walk_conditions
from rules.engine import Engine
from rules.evaluation import ActiveRule, active_rules
from rules.models import CallCustomerAction, OpenServiceOrderAction
from rules.service import load_builtin_catalog
from service_orders.jobs import JOBS
from simulators.appliances import PHYSICS_BY_KIND, GradualFailure
from simulators.device import SimDevice
from simulators.failures import FailureRecord
from simulators.fleet import make_fleet
from simulators.simulation import Simulation

OWNER_SIGMA = 1.0  # of the log of the owner's delay: p10 0.28x, p90 3.6x the median
DISPATCHER_SIGMA = 0.5  # p10 0.53x, p90 1.9x the median
WAKING_FROM, WAKING_UNTIL = dt.time(7, 0), dt.time(22, 0)
FIRST_TARGET = 0.90  # the share of faults where our call came first
AHEAD_DAYS, AHEAD_TARGET = 3.0, 0.80  # gradual failures: an order at least this many days ahead, for this share
LIVE_P99_TARGET_S = 1.0
HISTORY_STEP_S = 3600
MAINTENANCE = "maintenance_done"
FIRST = "first"
MISSING = "-"


# ---------------------------------------------------------------- the owner and the dispatcher


def after_waking_hours(start: dt.datetime, hours: float, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The moment `hours` of the owner's waking time (07:00-22:00 local) have passed since `start`."""
    remaining = dt.timedelta(hours=hours)
    moment = start
    while True:
        local = moment.astimezone(zone)
        if not WAKING_FROM <= local.time() < WAKING_UNTIL:
            day = local.date() if local.time() < WAKING_FROM else local.date() + dt.timedelta(days=1)
            moment = dt.datetime.combine(day, WAKING_FROM, tzinfo=zone).astimezone(dt.UTC)
            continue
        bedtime = dt.datetime.combine(local.date(), WAKING_UNTIL, tzinfo=zone).astimezone(dt.UTC)
        if moment + remaining <= bedtime:
            return moment + remaining
        remaining -= bedtime - moment
        moment = bedtime


@dataclass(frozen=True)
class Behaviour:
    """The simulated owner's and dispatcher's delays (medians of lognormals) and the seed of their draws."""

    owner_median_h: float = 6.0
    dispatcher_median_min: float = 30.0
    seed: int = 0

    def owner_delays_h(self, count: int) -> list[float]:
        rng = np.random.default_rng([self.seed, 1])
        return rng.lognormal(math.log(self.owner_median_h), OWNER_SIGMA, count).tolist()

    def dispatcher_delays(self, count: int) -> list[dt.timedelta]:
        rng = np.random.default_rng([self.seed, 2])
        minutes = rng.lognormal(math.log(self.dispatcher_median_min), DISPATCHER_SIGMA, count)
        return [dt.timedelta(minutes=value) for value in minutes.tolist()]

    def describe(self) -> str:
        return (
            f"owner: calls the hotline lognormal(median {self.owner_median_h:g} h, sigma {OWNER_SIGMA:g}) waking hours "
            f"({WAKING_FROM:%H:%M}-{WAKING_UNTIL:%H:%M} local) after noticing; our call reaches them at max(created, "
            f"due) + a dispatcher's lognormal(median {self.dispatcher_median_min:g} min, sigma {DISPATCHER_SIGMA:g}), "
            "never when blocked (no consent)"
        )


# ---------------------------------------------------------------- what happened, and what we did about it


@dataclass(frozen=True)
class Failure:
    """A gradual failure of the ground truth; failed_at None: already failed when the simulation began."""

    device_id: str
    kind: str
    part: str
    since: dt.datetime | None
    failed_at: dt.datetime | None
    cleaned_at: dt.datetime | None

    @classmethod
    def of(cls, record: FailureRecord) -> Failure:
        return cls(
            record.device_id,
            record.kind,
            record.part,
            instant(record.since),
            instant(record.failed_at),
            instant(record.cleaned_at),
        )


def collect_failures(records: Iterable[FailureRecord], failures: dict[tuple[str, str, str | None], Failure]) -> None:
    """Merge gradual failure records into `failures`, a cleaned line completing its failure."""
    for record in records:
        key = (record.device_id, record.part, record.failed_at)
        if key not in failures or record.cleaned_at:
            failures[key] = Failure.of(record)


@dataclass(frozen=True)
class Call:
    """A call task: the rule behind it, when it appeared (simulated clock), when it was due, whether open."""

    id: int
    device_id: str
    rule_id: str
    created_at: dt.datetime
    due_at: dt.datetime
    open: bool
    policy: str = ""  # the contact policy's reason for its status and due time

    def reaches(self, dispatcher_delay: dt.timedelta) -> dt.datetime | None:
        """When it reaches the owner; None when it never does (blocked)."""
        return max(self.created_at, self.due_at) + dispatcher_delay if self.open else None


@dataclass(frozen=True)
class OrderEvent:
    """An order opened, or joined, by a rule's detection (simulated clock)."""

    device_id: str
    rule_id: str
    at: dt.datetime


# ---------------------------------------------------------------- which rules are about what


def action_names(rule: ActiveRule) -> set[str]:
    """The order and call actions a rule takes."""
    names = set()
    for action in rule.compiled.rule.then:
        if isinstance(action, OpenServiceOrderAction):
            names.add("open_service_order")
        elif isinstance(action, CallCustomerAction):
            names.add("call_customer")
    return names


def rule_kinds(rule: ActiveRule, catalog: dict[str, ApplianceModel]) -> set[str]:
    """The kinds of appliance a rule applies to."""
    applies_to = rule.compiled.rule.applies_to
    if applies_to is None:
        return {model.kind for model in catalog.values()}
    if applies_to.model is not None:
        return {catalog[applies_to.model].kind} if applies_to.model in catalog else set()
    return {applies_to.kind} if applies_to.kind else set()


def addresses(rule: ActiveRule, kind: str, failure: GradualFailure, catalog: dict[str, ApplianceModel]) -> bool:
    """Whether a rule is about a kind's gradual failure: it watches a metric the worsening moves, or (for fouling,
    which maintenance undoes) it counts usage or time since the last maintenance."""
    if kind not in rule_kinds(rule, catalog):
        return False
    for leaf in walk_conditions(rule.compiled.rule.when):
        if getattr(leaf.spec, "metric", None) in failure.metrics:
            return True
        if failure.quantity == "fouling" and getattr(leaf.spec, "since", None) == MAINTENANCE:
            return True
    return False


@dataclass
class Row:
    """One line of the table: a fault code (sudden) or a kind's gradual failure, and how it went."""

    sort: str  # sudden | gradual
    label: str
    rules: set[str]  # the rules whose calls and orders are about it
    calling: bool  # whether any of them calls
    device_ids: frozenset[str]  # the devices that can have it
    faults: int = 0
    first: int = 0
    leads_days: list[float] = field(default_factory=list)  # gradual: the order ahead of the failure (<0: after it)
    calls: int = 0
    false_calls: int = 0
    missed: Counter = field(default_factory=Counter)  # why our call was not first, and how often

    @property
    def first_share(self) -> float | None:
        return self.first / self.faults if self.faults else None

    @property
    def ahead_share(self) -> float | None:
        """Gradual: the share of failures with an order at least AHEAD_DAYS ahead (no order counts as none)."""
        if self.sort != "gradual" or not self.faults:
            return None
        return sum(lead >= AHEAD_DAYS for lead in self.leads_days) / self.faults

    @property
    def lead_median(self) -> float | None:
        return float(np.median(self.leads_days)) if self.leads_days else None

    def judge(self, verdict: str) -> None:
        """One more fault: our call came FIRST, or the reason it did not."""
        self.faults += 1
        if verdict == FIRST:
            self.first += 1
        else:
            self.missed[verdict] += 1

    def absorb(self, other: Row) -> None:
        self.faults += other.faults
        self.first += other.first
        self.missed += other.missed
        self.leads_days += other.leads_days
        self.calls += other.calls
        self.false_calls += other.false_calls
        self.calling = self.calling or other.calling


@dataclass
class Scores:
    rows: list[Row]
    calls: int  # every call task of the scored days, whatever its rule
    false_calls: int
    false_by_rule: Counter


def score(
    *,
    faults: Sequence[Fault],
    failures: Sequence[Failure],
    calls: Sequence[Call],
    orders: Sequence[OrderEvent],
    rules: Sequence[ActiveRule],
    fleet: Sequence[SimDevice],
    zones: dict[str, zoneinfo.ZoneInfo],
    scored: tuple[dt.datetime, dt.datetime],
    ahead: dt.timedelta,
    behaviour: Behaviour,
) -> Scores:
    """Per fault code and per kind's gradual failure: faults, our call first, orders ahead, false calls."""
    catalog = load_catalog()
    begin, end = scored
    rows: list[Row] = []
    row_of: dict[str, Row] = {}  # by fault code, and by kind for its gradual failure
    cooldown_of: dict[str, dt.timedelta] = {}  # by fault code: the longest of its rules'
    for code in sorted({code for device in fleet for code in catalog[device.model].fault_codes}):
        devices = frozenset(d.device_id for d in fleet if code in catalog[d.model].fault_codes)
        model = next(catalog[d.model] for d in fleet if d.device_id in devices)
        watching = [rule for rule in rules if code in fault_codes_of(rule.compiled.rule.when)]
        cooldown_of[code] = dt.timedelta(
            seconds=max((rule.compiled.rule.cooldown.seconds for rule in watching), default=0)
        )
        row_of[code] = Row(
            "sudden",
            f"{code} {model.kind} {model.fault_codes[code].meaning}",
            {rule.id for rule in watching},
            any("call_customer" in action_names(rule) for rule in watching),
            devices,
        )
        rows.append(row_of[code])
    for kind in sorted({device.kind for device in fleet}):
        failure = PHYSICS_BY_KIND[kind].gradual_failure
        if failure is None:
            continue
        about = [rule for rule in rules if addresses(rule, kind, failure, catalog)]
        row_of[kind] = Row(
            "gradual",
            f"{kind} {failure.part}",
            {rule.id for rule in about},
            any("call_customer" in action_names(rule) for rule in about),
            frozenset(d.device_id for d in fleet if d.kind == kind),
        )
        rows.append(row_of[kind])

    by_id = sorted(calls, key=lambda call: call.id)
    reach = {
        call.id: call.reaches(delay) for call, delay in zip(by_id, behaviour.dispatcher_delays(len(by_id)), strict=True)
    }
    calls_of: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        calls_of[call.device_id].append(call)
    orders_of: dict[str, list[OrderEvent]] = defaultdict(list)
    for order in orders:
        orders_of[order.device_id].append(order)

    def our_call(
        device_id: str,
        row: Row,
        since: dt.datetime,
        noticed: dt.datetime,
        owner_calls: dt.datetime,
        *,
        cooling_down: bool = False,
    ) -> str:
        """FIRST when a call about it reached the owner before they called us; else why not (`cooling_down`: the
        same fault on the device was repaired within its rules' cooldown, which holds a new detection back)."""
        made = sorted(
            (
                call
                for call in calls_of[device_id]
                if call.rule_id in row.rules and since <= call.created_at < owner_calls
            ),
            key=lambda call: reach[call.id] or forever,
        )
        if not made:
            if not row.calling:
                return "its rules make no call"
            return "no call: the rule's cooldown after the last one" if cooling_down else "no call before the owner's"
        best = made[0]
        reached = reach[best.id]
        if reached is None:
            return "blocked: no consent to service calls"
        if reached < owner_calls:
            return FIRST
        if "the most we make" in best.policy:
            return "due later: frequency cap"
        if "quiet hours" in best.policy:
            return "due later: quiet hours"
        return "owner quicker" + (", our call after the failure" if best.created_at > noticed else "")

    never, forever = dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC)
    sudden = sorted((f for f in faults if begin <= f.started_at < end), key=lambda f: (f.started_at, f.device_id))
    gradual = sorted(
        (f for f in failures if f.failed_at is not None and begin <= f.failed_at < end),
        key=lambda f: (f.failed_at, f.device_id),
    )
    owner_delays = iter(behaviour.owner_delays_h(len(sudden) + len(gradual)))
    repaired: dict[tuple[str, str], list[dt.datetime]] = defaultdict(list)
    for fault in faults:
        if fault.cleared_at is not None:
            repaired[(fault.device_id, fault.code)].append(fault.cleared_at)
    for fault in sudden:
        row = row_of[fault.code]
        owner_calls = after_waking_hours(fault.started_at, next(owner_delays), zones[fault.device_id])
        since = fault.started_at - dt.timedelta(seconds=1)
        cooling_down = any(
            fault.started_at - cooldown_of[fault.code] <= cleared <= fault.started_at
            for cleared in repaired[(fault.device_id, fault.code)]
        )
        row.judge(our_call(fault.device_id, row, since, fault.started_at, owner_calls, cooling_down=cooling_down))
    for failure in gradual:
        assert failure.failed_at is not None
        row = row_of[failure.kind]
        owner_calls = after_waking_hours(failure.failed_at, next(owner_delays), zones[failure.device_id])
        since = failure.since or never
        row.judge(our_call(failure.device_id, row, since, failure.failed_at, owner_calls))
        opened = [o.at for o in orders_of[failure.device_id] if o.rule_id in row.rules and since <= o.at < owner_calls]
        if opened:
            row.leads_days.append((failure.failed_at - min(opened)).total_seconds() / 86400)

    faults_of: dict[str, list[Fault]] = defaultdict(list)
    for fault in faults:
        faults_of[fault.device_id].append(fault)
    failures_of: dict[str, list[Failure]] = defaultdict(list)
    for failure in failures:
        failures_of[failure.device_id].append(failure)
    grace, hour = dt.timedelta(days=1), dt.timedelta(hours=1)

    def explained(call: Call) -> bool:
        """Something was wrong with the call's device around it, whatever the rule that called."""
        at = call.created_at
        for fault in faults_of[call.device_id]:
            if fault.started_at - hour <= at and (fault.cleared_at is None or at <= fault.cleared_at + grace):
                return True
        for failure in failures_of[call.device_id]:
            if (failure.failed_at is None or failure.failed_at - ahead <= at) and (
                failure.cleaned_at is None or at <= failure.cleaned_at + grace
            ):
                return True
        return False

    total = false_total = 0
    false_by_rule: Counter = Counter()
    for call in calls:
        if not begin <= call.created_at < end:
            continue
        false = not explained(call)
        total += 1
        false_total += false
        false_by_rule[call.rule_id] += false
        for row in rows:
            if call.rule_id in row.rules and call.device_id in row.device_ids:
                row.calls += 1
                row.false_calls += false
    return Scores(rows, total, false_total, +false_by_rule)


# ---------------------------------------------------------------- exactly once


@dataclass(frozen=True)
class ExactlyOnce:
    """Each detection's order and call actions carried out exactly once."""

    order_actions: int
    order_actions_in_one_order: int
    call_actions: int
    call_actions_with_one_task: int
    tasks_without_action: int
    pending_actions: int

    @property
    def holds(self) -> bool:
        return (
            self.order_actions == self.order_actions_in_one_order
            and self.call_actions == self.call_actions_with_one_task
            and self.tasks_without_action == 0
        )


def check_exactly_once(database: Database) -> ExactlyOnce:
    """Every done `open_service_order` action has its detection in exactly one order, every done `call_customer`
    exactly one call task by its key, and no call task lacks its action."""
    with database.connection() as conn:
        detections = fetch_all(conn, "SELECT id, actions FROM detections")
        orders = fetch_all(conn, "SELECT id, detection_ids FROM service_orders")
        tasks = fetch_all(conn, "SELECT action_key FROM call_tasks")
    orders_holding: Counter = Counter(d for order in orders for d in order["detection_ids"])
    tasks_by_key: Counter = Counter(task["action_key"] for task in tasks)
    order_actions = in_one = call_actions = with_one = pending = 0
    call_keys: set[str] = set()
    for detection in detections:
        for action in detection["actions"]:
            if action["action"] not in ("open_service_order", "call_customer"):
                continue
            if action["status"] != "done":
                pending += 1
            elif action["action"] == "open_service_order":
                order_actions += 1
                in_one += orders_holding[detection["id"]] == 1
            else:
                call_actions += 1
                with_one += tasks_by_key[action["key"]] == 1
                call_keys.add(action["key"])
    orphans = sum(count for key, count in tasks_by_key.items() if key not in call_keys)
    return ExactlyOnce(order_actions, in_one, call_actions, with_one, orphans, pending)


# ---------------------------------------------------------------- the live path


@dataclass
class Latency:
    """Seconds from a fault's publish over MQTT to its order and call task being visible through the API."""

    published: int
    seconds: list[float]  # both visible
    order_seconds: list[float]
    call_seconds: list[float]
    background_messages: int = 0
    background_seconds: float = 0.0

    def quantile(self, q: float, values: Sequence[float] | None = None) -> float | None:
        ordered = sorted(self.seconds if values is None else values)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else None


class Background:
    """Steady telemetry from part of the fleet over MQTT: each device steps and publishes in turn."""

    def __init__(
        self, simulation: Simulation, lock: threading.Lock, positions: list[int], mqtt_url: str, rate: float
    ) -> None:
        self.simulation, self.lock, self.positions, self.rate = simulation, lock, np.array(positions), rate
        self.connection = make_connection(mqtt_url, f"bench-proactive-background-{uuid.uuid4().hex[:8]}")
        self.stop = threading.Event()
        self.published = 0
        self.started = 0.0  # time.monotonic() at start
        self.thread = threading.Thread(target=self._run, name="background-telemetry", daemon=True)

    def start(self) -> None:
        self.connection.connect()
        self.connection.client.loop_start()
        self.started = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        period = len(self.positions) / self.rate  # each device once per period: `rate` messages a second
        last = np.full(len(self.positions), time.monotonic())
        due = last + np.random.default_rng(0).uniform(0, period, len(self.positions))
        while not self.stop.is_set():
            now = time.monotonic()
            ready = np.nonzero(due <= now)[0]
            if ready.size:
                stamp = dt.datetime.now(dt.UTC)
                with self.lock:
                    messages = self.simulation.step(stamp, now - last[ready], self.positions[ready], stamp=stamp)
                for message in messages:
                    self.connection.client.publish(message.topic, message.encode(), qos=1, retain=message.retained)
                self.published += len(messages)
                last[ready] = now
                due[ready] += period
            self.stop.wait(0.02)

    def close(self) -> float:
        """Stop; answers the seconds it ran."""
        self.stop.set()
        self.thread.join(timeout=10)
        self.connection.client.loop_stop()
        self.connection.client.disconnect()
        return time.monotonic() - self.started


def fault_targets(
    simulation: Simulation,
    fleet: Sequence[SimDevice],
    rules: Sequence[ActiveRule],
    busy: set[tuple[str, str]],
    count: int,
    seed: int,
) -> list[tuple[str, str]]:
    """Devices without an open fault, each with a fault code whose rule opens an order and calls and is free to
    fire on it (`busy`: the (device, rule) pairs with a detection open or in its cooldown)."""
    catalog = load_catalog()
    rule_of_code = {
        code: rule.id
        for rule in rules
        if action_names(rule) == {"open_service_order", "call_customer"}
        for code in fault_codes_of(rule.compiled.rule.when)
    }
    rng = np.random.default_rng([seed, 3])
    candidates = []
    for device in fleet:
        if simulation.open_fault_code(device.device_id) is not None:
            continue
        codes = sorted(
            code
            for code in catalog[device.model].fault_codes
            if code in rule_of_code and (device.device_id, rule_of_code[code]) not in busy
        )
        if codes:
            candidates.append((device.device_id, codes))
    chosen = rng.permutation(len(candidates))[:count].tolist()
    return [(candidates[i][0], str(rng.choice(candidates[i][1]))) for i in chosen]


def measure_live(
    database_url: str,
    mqtt_url: str,
    replayed: Simulation,
    fleet: Sequence[SimDevice],
    rules: Sequence[ActiveRule],
    *,
    count: int,
    rate: float,
    seed: int,
) -> Latency:
    """Faults published one at a time over MQTT while the rest of the fleet reports; each timed until the API shows
    its order (one holding a new detection) and a new call task for its device."""
    live = Simulation(fleet, seed=seed + 1, start=dt.datetime.now(dt.UTC))
    live.restore_state(replayed.export_state())  # the same devices, their seqs going on
    lock = threading.Lock()
    ingest_db, engine_db, api_db = (Database(database_url, max_connections=n) for n in (3, 3, 4))
    with api_db.connection() as conn:
        recent = fetch_all(
            conn,
            "SELECT device_id, rule_id FROM detections WHERE cleared_at IS NULL OR cleared_at > now() - interval "
            "'2 days' OR opened_at > now() - interval '2 days'",  # no rule's cooldown is longer for faults (1 d)
        )
    targets = fault_targets(live, fleet, rules, {(row["device_id"], row["rule_id"]) for row in recent}, count, seed)
    targeted = {device_id for device_id, _code in targets}
    background = Background(live, lock, [i for i, d in enumerate(fleet) if d.device_id not in targeted], mqtt_url, rate)
    ingester = Ingester(
        ingest_db,
        mqtt_url,
        name=f"bench-proactive-{uuid.uuid4().hex[:8]}",
        share_group=f"bench-proactive-{uuid.uuid4().hex[:8]}",
    )
    engine = Engine(engine_db, jobs=JOBS)
    stop = threading.Event()
    serving = threading.Thread(target=engine.serve, args=(stop,), kwargs={"database_url": database_url}, daemon=True)
    publisher = make_connection(mqtt_url, f"bench-proactive-faults-{uuid.uuid4().hex[:8]}")
    token = secrets.token_urlsafe(16)
    latency = Latency(published=0, seconds=[], order_seconds=[], call_seconds=[])
    started_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ingester.start()
    serving.start()
    try:
        ingester.connected.wait(timeout=10)
        engine.listening.wait(timeout=10)
        # The engine runs each job once at start (over a fleet weeks of replay left with hundreds of open orders):
        # time the live path after those, not behind them.
        wanted = {"sweep", "window", "baselines", "trends", *(job.id for job in JOBS)}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not wanted <= jobs_run_since(engine_db, started_at):
            time.sleep(0.2)
        background.start()
        publisher.connect()
        publisher.client.loop_start()
        time.sleep(2)  # a steady load before the first fault
        with TestClient(create_app(api_db, admin_token=token, mqtt_url=mqtt_url)) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            for device_id, code in tqdm(targets, desc="publish -> order and call via the API", unit="fault"):
                timed = _time_one_fault(client, publisher, live, lock, device_id, code)
                latency.published += 1
                if timed is not None:
                    order_s, call_s = timed
                    latency.order_seconds.append(order_s)
                    latency.call_seconds.append(call_s)
                    latency.seconds.append(max(order_s, call_s))
                time.sleep(0.2)
    finally:
        latency.background_seconds = background.close() if background.thread.is_alive() else 0.0
        latency.background_messages = background.published
        publisher.client.loop_stop()
        publisher.client.disconnect()
        stop.set()
        serving.join(timeout=60)
        ingester.stop()
        forget_session(mqtt_url, ingester.name)
        for database in (ingest_db, engine_db, api_db):
            database.close()
    return latency


def _time_one_fault(
    client: TestClient,
    publisher,
    live: Simulation,
    lock: threading.Lock,
    device_id: str,
    code: str,
    timeout_s: float = 15.0,
) -> tuple[float, float] | None:
    """Publish a fault of `device_id` and poll the API until it shows the fault's order and call task; answers
    (seconds to the order, seconds to the call task), or None after timeout_s."""

    def orders() -> set[int]:
        answer = client.get("/service-orders", params={"device_id": device_id, "limit": 1000}).json()
        return {detection for order in answer["items"] for detection in order["detection_ids"]}

    def tasks() -> set[int]:
        answer = client.get("/call-tasks", params={"device_id": device_id, "limit": 1000}).json()
        return {task["id"] for task in answer["items"]}

    known_detections, known_tasks = orders(), tasks()
    now = dt.datetime.now(dt.UTC)
    with lock:
        [message] = live.inject_fault(device_id, code, now, repair_s=86400, stamp=now)
    published = time.monotonic()
    publisher.client.publish(message.topic, message.encode(), qos=1)
    order_s = call_s = None
    while time.monotonic() - published < timeout_s:
        if order_s is None and orders() - known_detections:
            order_s = time.monotonic() - published
        if call_s is None and tasks() - known_tasks:
            call_s = time.monotonic() - published
        if order_s is not None and call_s is not None:
            return order_s, call_s
        time.sleep(0.01)
    return None


# ---------------------------------------------------------------- the run


@dataclass
class ProactiveReport:
    header: list[str]
    devices: int
    days: float
    scores: Scores
    live: Latency | None
    exactly_once: ExactlyOnce
    replay_seconds: float
    live_seconds: float

    @property
    def device_days(self) -> float:
        return self.devices * self.days

    def total(self, sort: str, *, calling: bool = False) -> Row:
        """The rows of a sort summed (calling: only those whose rules make a call)."""
        label = f"all {sort}" + (" whose rules call" if calling else "")
        total = Row(sort, label, set(), False, frozenset())
        for row in self.scores.rows:
            if row.sort == sort and (row.calling or not calling):
                total.absorb(row)
        return total

    def lines(self) -> str:
        return "\n".join([*self.header, "", *self.table()])

    def table(self) -> list[str]:
        out = [
            f"{'sort':<8} {'fault':<40} {'faults':>6} {'first':>5} {'share':>5} {'≥90%':>4}  {'orders':>6} "
            f"{'ahead p50':>9} {'≥3 d':>5} {'≥80%':>4}  {'calls':>5} {'false/1000 dd':>13}"
        ]
        totals = [self.total("sudden"), self.total("sudden", calling=True), self.total("gradual")]
        for row in [*self.scores.rows, *totals]:
            devices = len(row.device_ids) if row.device_ids else self.devices
            gradual = row.sort == "gradual"
            out.append(
                f"{row.sort:<8} {row.label[:40]:<40} {row.faults:>6} {row.first:>5} {_share(row.first_share):>5} "
                f"{_mark(row.first_share, FIRST_TARGET) if row.calling else 'none':>4}  "
                f"{len(row.leads_days) if gradual else MISSING:>6} {_days(row.lead_median) if gradual else MISSING:>9} "
                f"{_share(row.ahead_share) if gradual else MISSING:>5} "
                f"{_mark(row.ahead_share, AHEAD_TARGET) if gradual else MISSING:>4}  "
                f"{row.calls:>5} {1000 * row.false_calls / (devices * self.days):>13.2f}"
            )
        out.append(
            "first: our call reached the owner before they called us; orders: gradual failures with an order opened "
            "(or joined) about them before the owner called; ahead: days from that order to the failure"
        )
        out.append("")
        for sort in ("sudden", "gradual"):
            missed = self.total(sort).missed
            if missed:
                out.append(f"not first, {sort}: " + ", ".join(f"{why} {n}" for why, n in missed.most_common()))
        scores = self.scores
        out.append(
            f"every call of the scored days: {scores.calls}, false {scores.false_calls} in {self.device_days:,.0f} "
            f"device-days = {1000 * scores.false_calls / self.device_days:.2f} per 1,000 device-days"
        )
        if scores.false_by_rule:
            out.append("false calls by rule: " + ", ".join(f"{r} {n}" for r, n in scores.false_by_rule.most_common()))
        if self.live is not None:
            live = self.live
            p50, p99 = live.quantile(0.5), live.quantile(0.99)
            rate = live.background_messages / live.background_seconds if live.background_seconds else 0.0
            out.append(
                f"live, fault published over MQTT -> its order and call task visible through the API: "
                f"{len(live.seconds)} of {live.published}; p50 {_ms(p50)}, p99 {_ms(p99)}, target p99 < "
                f"{LIVE_P99_TARGET_S * 1000:.0f} ms {_mark(None if p99 is None else -p99, -LIVE_P99_TARGET_S)} "
                f"(order p99 {_ms(live.quantile(0.99, live.order_seconds))}, call task p99 "
                f"{_ms(live.quantile(0.99, live.call_seconds))}; background {live.background_messages:,} messages, "
                f"{rate:.0f}/s)"
            )
        once = self.exactly_once
        out.append(
            f"exactly once: {once.order_actions_in_one_order} of {once.order_actions} order actions each in exactly "
            f"one order; {once.call_actions_with_one_task} of {once.call_actions} call actions each with exactly one "
            f"call task; {once.tasks_without_action} call tasks without their action; {once.pending_actions} actions "
            f"pending {'✓' if once.holds else '✗'}"
        )
        out.append(f"replayed in {self.replay_seconds:.0f} s, live phase {self.live_seconds:.0f} s")
        return out


def _share(share: float | None) -> str:
    return MISSING if share is None else f"{100 * share:.0f}%"


def _mark(value: float | None, target: float) -> str:
    return MISSING if value is None else ("✓" if value >= target else "✗")


def _days(days: float | None) -> str:
    return MISSING if days is None else f"{days:.1f} d"


def _ms(seconds: float | None) -> str:
    return MISSING if seconds is None else f"{seconds * 1000:.0f} ms"


class ProactiveRun:
    """One run of the benchmark: replay, live phase, scoring (in a database of its own, dropped afterwards)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.behaviour = Behaviour(args.owner_median_h, args.dispatcher_median_min, args.seed)
        self.fleet = make_fleet(args.devices, args.seed)
        self.end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.scored_from = self.end - dt.timedelta(days=args.days)
        self.engine_from = self.scored_from - dt.timedelta(days=args.warmup_days)
        self.history_from = self.engine_from - dt.timedelta(days=args.history_days)
        self.faults: dict[tuple[str, str, str], Fault] = {}
        self.failures: dict[tuple[str, str, str | None], Failure] = {}
        self.created: dict[int, dt.datetime] = {}  # call task id -> the simulated moment it appeared

    def header(self) -> list[str]:
        args, kinds = self.args, Counter(device.kind for device in self.fleet)
        return [
            f"careloop bench proactive: {len(self.fleet)} simulated devices "
            f"({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}), {args.days:g} days scored from "
            f"{self.scored_from:%Y-%m-%d %H:%M}Z after {args.history_days:g} days of history and {args.warmup_days:g} "
            f"of engine warm-up; engine tick {args.step} s; faults {args.faults!r}; seed {args.seed}",
            self.behaviour.describe(),
            "gradual failures: the level where the appliance does its job at half its clean rate; "
            + "; ".join(
                f"{kind} {p.gradual_failure.part} at {p.gradual_failure.quantity} {p.gradual_failure.level:.2f}"
                for kind, p in sorted(PHYSICS_BY_KIND.items())
                if p.gradual_failure
            ),
        ]

    def execute(self) -> ProactiveReport:
        args = self.args
        urls = resolve_services(get_settings(), need_broker=True)
        simulation = Simulation(self.fleet, seed=args.seed, start=self.history_from, faults=args.faults)
        collect_failures(simulation.open_failures(), self.failures)
        with temporary_database(urls.database_url) as database_url:
            register_fleet(database_url, self.fleet, seed=args.seed)
            database = Database(database_url, max_connections=2)
            try:
                with database.transaction() as conn:
                    load_builtin_catalog(conn)
                    rules = active_rules(conn)
                started = time.perf_counter()
                self.replay(database, simulation)
                replay_seconds = time.perf_counter() - started
                calls, orders, zones = self.gather(database)
                started = time.perf_counter()
                live = None
                if args.live_faults:
                    live = measure_live(
                        database_url,
                        urls.mqtt_url,
                        simulation,
                        self.fleet,
                        rules,
                        count=args.live_faults,
                        rate=args.live_rate,
                        seed=args.seed,
                    )
                live_seconds = time.perf_counter() - started
                exactly_once = check_exactly_once(database)
            finally:
                database.close()
        # What followed the scored days, so a call near their end is judged by it: physics only.
        self._collect(simulation)
        moment = self.end
        for _ in tqdm(range(int(args.ahead_days * 24)), desc="what followed (physics only)", unit="step"):
            for _message in simulation.iter_step(moment, HISTORY_STEP_S):
                pass
            self._collect(simulation)
            moment += dt.timedelta(seconds=HISTORY_STEP_S)
        scores = score(
            faults=list(self.faults.values()),
            failures=list(self.failures.values()),
            calls=calls,
            orders=orders,
            rules=rules,
            fleet=self.fleet,
            zones=zones,
            scored=(self.scored_from, self.end),
            ahead=dt.timedelta(days=args.ahead_days),
            behaviour=self.behaviour,
        )
        return ProactiveReport(
            self.header(), len(self.fleet), args.days, scores, live, exactly_once, replay_seconds, live_seconds
        )

    def _collect(self, simulation: Simulation) -> None:
        collect_faults(simulation.take_fault_transitions(), self.faults)
        collect_failures(simulation.take_failure_transitions(), self.failures)

    def replay(self, database: Database, simulation: Simulation) -> None:
        """The owners' last cleanings, the history without the engine, then warm-up and scored days with it."""
        args = self.args
        # sweep on the half hour, window (and trend fits) on the hour: event-driven rules are evaluated per batch
        replay = Replay(
            database,
            simulation,
            start=self.history_from,
            jobs=JOBS,
            schedule=ReplaySchedule(sweep_s=1800, window_s=3600, baselines_s=86400),
        )
        replay.ingest_past(simulation.past_cleanings())
        replay.run(
            self.history_from,
            int(args.history_days * 86400 // HISTORY_STEP_S),
            HISTORY_STEP_S,
            engine=False,
            desc="history (ingest only)",
            after_step=lambda _moment: self._collect(simulation),
        )
        replay.engine.learn_baselines()
        last_task = 0

        def after_step(moment: dt.datetime) -> None:
            nonlocal last_task
            self._collect(simulation)
            with database.connection() as conn:
                new = fetch_all(conn, "SELECT id FROM call_tasks WHERE id > %s ORDER BY id", (last_task,))
            for row in new:
                self.created[row["id"]] = moment
                last_task = row["id"]

        steps = int((args.warmup_days + args.days) * 86400 // args.step)
        replay.run(
            self.engine_from, steps, args.step, desc="weeks through ingest and the engine", after_step=after_step
        )

    def gather(self, database: Database) -> tuple[list[Call], list[OrderEvent], dict[str, zoneinfo.ZoneInfo]]:
        """The replay's call tasks and order openings and joinings, and each device's owner's time zone."""
        with database.connection() as conn:
            tasks = fetch_all(conn, "SELECT id, device_id, status, due_at, action_key, policy_reason FROM call_tasks")
            history = fetch_all(
                conn,
                "SELECT o.device_id, h.at, h.detail->>'rule' AS rule_id FROM service_order_history h "
                "JOIN service_orders o ON o.id = h.order_id WHERE h.change IN ('opened', 'joined')",
            )
            owners = fetch_all(
                conn, "SELECT d.id AS device_id, c.timezone FROM devices d JOIN customers c ON c.id = d.owner_id"
            )
        calls = [
            Call(
                task["id"],
                task["device_id"],
                task["action_key"].split(":", 1)[0],  # the detection's dedup key starts with its rule
                self.created[task["id"]],
                task["due_at"],
                task["status"] == "open",
                task["policy_reason"],
            )
            for task in tasks
            if task["id"] in self.created
        ]
        orders = [OrderEvent(row["device_id"], row["rule_id"], row["at"]) for row in history if row["rule_id"]]
        zones = {row["device_id"]: zoneinfo.ZoneInfo(row["timezone"]) for row in owners}
        return calls, orders, zones


def bench_proactive(args: argparse.Namespace) -> int:
    run = ProactiveRun(args)
    print("\n".join(run.header()), flush=True)
    # Thousands of engine jobs and orders on the simulated clock: their log lines would bury the progress bars.
    loggers = [logging.getLogger(name) for name in ("careloop", "apscheduler")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        # the live engine escalates the orders weeks of replay left overdue: warnings, but not this run's news
        logger.setLevel(logging.ERROR)
    try:
        report = run.execute()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    print()
    print("\n".join(report.table()))
    return 0
