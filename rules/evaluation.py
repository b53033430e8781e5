"""Rules against the database: facts in, detections opened and cleared, their actions recorded.

`evaluate_rules` is the one place detections change. The engine calls it per ingest batch (for the
devices in the batch) and on its schedule (for the whole fleet); the API's backtest replays the same
compiled rules over stored history with `backtest_stored`, writing nothing.

Nothing is opened twice: evaluations hold one advisory lock from reading the detection state to
committing the transitions, and the database keeps at most one uncleared detection per rule and device
(a unique index), so a second engine, a restart or a replay finds the detection already open. An engine
partition (`careloop engine --partition I/N`) evaluates only its own devices and holds a lock of its own
partition, so partitions decide side by side while a whole-fleet evaluation still excludes them all.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg2

from careloop.db import Connection
from careloop.partitions import Partition
from rules import repo
from rules.conditions import CompiledRule, compile_rule, requirements_of, walk_conditions
from rules.facts import SECONDS, FleetFacts, MetricWindow, Requirement, to_datetime64
from rules.lifecycle import Transition, backtest, dedup_key, step_detections
from rules.loader import HISTORY, FactCache, LoadOptions, add_facts, load_facts
from rules.models import DetectionToClear, DetectionToOpen, RuleError, parse_rule
from rules.partition import devices_in_partition, lock_partition_evaluation
from rules.specs import condition_kind

log = logging.getLogger("careloop.engine")

@dataclass(frozen=True)
class ActiveRule:
    """An enabled rule as stored (with its version), compiled."""

    compiled: CompiledRule
    version: int

    @property
    def id(self) -> str:
        return self.compiled.rule.id

    @property
    def event_driven(self) -> bool:
        """Whether a new reading, event or status can change the outcome (evaluate it per batch)."""
        return any(leaf.kind.event_driven for leaf in walk_conditions(self.compiled.rule.when))

    @property
    def reads_status(self) -> bool:
        """Whether an `offline` condition reads the devices' online status and last seen."""
        return any(leaf.kind.reads_status for leaf in walk_conditions(self.compiled.rule.when))


_compiled_cache: dict[tuple[str, int, str], ActiveRule] = {}


def active_rules(conn: Connection) -> list[ActiveRule]:
    """The enabled rules, each document compiled once; a stored rule the catalog no longer accepts is skipped."""
    rules = []
    for stored in repo.enabled_rules(conn):
        # The document is part of the key: one process may serve several databases (tests, benchmarks).
        key = (stored.id, stored.version, json.dumps(stored.document, sort_keys=True))
        if key not in _compiled_cache:
            try:
                _compiled_cache[key] = ActiveRule(compile_rule(parse_rule(stored.document)), stored.version)
            except RuleError as error:
                log.error("rule %s v%s is not valid any more and is skipped: %s", stored.id, stored.version, error)
                continue
        rules.append(_compiled_cache[key])
    return rules


def actions_of(rule: ActiveRule, key: str) -> list[dict]:
    """The rule's `then`, each with its own idempotency key, waiting for the service that carries it out."""
    actions = []
    for position, action in enumerate(rule.compiled.rule.then):
        name = condition_kind(action)
        params = action.model_dump(mode="json", by_alias=True, exclude_none=True)[name]
        actions.append({"action": name, "params": params, "key": f"{key}:{position}:{name}", "status": "pending"})
    return actions


@dataclass
class EvaluationSummary:
    rules: int = 0
    devices: int = 0
    opened: int = 0
    cleared: int = 0
    still_open: int = 0
    suppressed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # facts, evaluate, store

    def as_dict(self) -> dict:
        return {
            "rules": self.rules,
            "devices": self.devices,
            "opened": self.opened,
            "cleared": self.cleared,
            "still_open": self.still_open,
            "suppressed": self.suppressed,
            "seconds": {name: round(value, 4) for name, value in self.seconds.items()},
        }


def _as_datetime(now: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{to_datetime64(now)}+00:00")


@dataclass(frozen=True)
class DetectionState:
    """Which detections are open and which cleared lately (columns rule_id, device_id, epoch seconds), as of
    a revision of the detections."""

    revision: int
    open: list[np.ndarray]
    cleared: list[np.ndarray]

    @classmethod
    def read(
        cls, conn: Connection, *, rule_ids: list[str], device_ids: list[str] | None, clears_since: dt.datetime | None
    ) -> DetectionState:
        # The revision first: a change committed between the reads makes the state look older, not newer.
        revision = repo.detections_revision(conn)
        opened = repo.open_detections(conn, rule_ids=rule_ids, device_ids=device_ids)
        cleared = (
            repo.recent_clears(conn, rule_ids=rule_ids, device_ids=device_ids, since=clears_since)
            if clears_since is not None
            else []
        )
        return cls(revision, opened, cleared)


def _read_apart(dsn: str, read: Callable[[Connection], DetectionState]) -> DetectionState:
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            return read(conn)
    finally:
        conn.close()


def _state(columns: Sequence[np.ndarray], facts: FleetFacts) -> dict[str, np.ndarray]:
    """Per rule, (rule_id, device_id, epoch seconds) columns as instants aligned with the facts' devices."""
    if not columns or not columns[0].shape[0] or not facts.size:
        return {}
    rule_of, device_of, seconds = columns
    positions, known = facts.positions(device_of)
    rule_ids, rule_index = np.unique(rule_of[known], return_inverse=True)
    positions, at = positions[known], seconds[known].astype(SECONDS)
    by_rule = {}
    for index, rule_id in enumerate(rule_ids.tolist()):
        of_rule = rule_index == index
        instants = np.full(facts.size, np.datetime64("NaT"), dtype=SECONDS)
        instants[positions[of_rule]] = at[of_rule]
        by_rule[rule_id.decode()] = instants
    return by_rule


def narrowed(
    requirement: Requirement,
    rules: Sequence[ActiveRule],
    facts: FleetFacts,
    open_since: dict[str, np.ndarray],
    nat: np.ndarray,
) -> np.ndarray:
    """The devices for which some rule needs this requirement's value."""
    needing = np.zeros(facts.size, dtype=bool)
    for rule in rules:
        if requirement in rule.compiled.requirements:
            is_open = ~np.isnat(open_since.get(rule.id, nat))
            needing |= rule.compiled.devices_needing(requirement, facts, is_open)
    return needing


def evaluate_rules(
    conn: Connection,
    rules: Sequence[ActiveRule],
    *,
    now: Any,
    device_ids: Sequence[str] | None = None,
    learned_trends: bool = False,
    parallel_dsn: str | None = None,
    cache: FactCache | None = None,
    partition: Partition | None = None,
) -> EvaluationSummary:
    """Evaluate rules at `now` over these devices (all when None); open and clear detections. Caller commits.

    With `learned_trends`, trend conditions read the fits the engine's `trends` job stored. With
    `parallel_dsn`, facts load on several connections to that database at once (for the whole fleet). A
    `cache` keeps the fleet's rarely changing facts between evaluations (see `rules.loader.FactCache`).
    With `partition`, only the devices of that partition (among `device_ids`, when given) are evaluated.
    """
    summary = EvaluationSummary(rules=len(rules))
    if not rules or (device_ids is not None and not device_ids):
        return summary
    devices = sorted(set(device_ids)) if device_ids is not None else None
    if partition is not None:
        devices = partition_devices(conn, partition, devices, cache=cache)
        if not devices:
            return summary
    now_s = to_datetime64(now)
    now_dt = _as_datetime(now_s)
    started = time.perf_counter()
    requirements = requirements_of(r.compiled for r in rules)
    # Windows over raw readings cost an index scan per device: they are loaded last, for the devices
    # that can need them (see `narrowed`), once the cheaper facts and the open detections are known.
    windows = {requirement for requirement in requirements if isinstance(requirement, MetricWindow)}
    rule_ids = [rule.id for rule in rules]
    longest_cooldown = max(rule.compiled.rule.cooldown.seconds for rule in rules)
    clears_since = now_dt - dt.timedelta(seconds=longest_cooldown) if longest_cooldown else None

    def read_state(reader: Connection) -> DetectionState:
        return DetectionState.read(reader, rule_ids=rule_ids, device_ids=devices, clears_since=clears_since)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="state") as beside:
        # A whole-fleet run reads the detection state while its facts load, on a connection of its own;
        # under the lock it is kept if no evaluation has changed detections since (the revision says).
        early = beside.submit(_read_apart, parallel_dsn, read_state) if parallel_dsn else None
        options = LoadOptions(
            learned_trends=learned_trends,
            status=any(rule.reads_status for rule in rules),
            parallel_dsn=parallel_dsn,
            cache=cache,
        )
        facts = load_facts(conn, now=now_s, requirements=requirements - windows, device_ids=devices, options=options)
        state = early.result() if early else None
    summary.devices = facts.size
    loaded = time.perf_counter()
    summary.seconds["facts"] = loaded - started
    if facts.size == 0:
        return summary

    # Loading facts is the slow part and needs no lock; deciding from the detection state and writing the
    # changes does, or two engines could both decide from the same state. The lock is held until commit.
    if partition is None:
        repo.lock_evaluation(conn)
    else:
        lock_partition_evaluation(conn, partition=partition)
    if state is None or state.revision != repo.detections_revision(conn):
        state = read_state(conn)
    open_since = _state(state.open, facts)
    cleared_at = _state(state.cleared, facts)
    nat = np.full(facts.size, np.datetime64("NaT"), dtype=SECONDS)
    for window in windows:
        needing = narrowed(window, rules, facts, open_since, nat)
        add_facts(conn, facts, [window], device_ids=facts.device_id[needing].tolist(), options=options)
    windows_loaded = time.perf_counter()
    summary.seconds["windows"] = windows_loaded - loaded

    to_open: list[DetectionToOpen] = []
    to_clear: list[DetectionToClear] = []
    for rule in rules:
        was_open_since = open_since.get(rule.id, nat)
        evaluation = rule.compiled.evaluate(facts, is_open=~np.isnat(was_open_since))
        step = step_detections(
            met=evaluation.met,
            open_since=was_open_since,
            cleared_at=cleared_at.get(rule.id, nat),
            now=now_s,
            cooldown=rule.compiled.rule.cooldown,
        )
        summary.still_open += int(step.still_open.sum())
        summary.suppressed += int(step.suppressed.sum())
        for index in np.flatnonzero(step.opened):
            device = str(facts.device_id[index])
            key = dedup_key(rule.id, device, now_s)
            to_open.append(
                DetectionToOpen(
                    rule_id=rule.id,
                    rule_version=rule.version,
                    device_id=device,
                    severity=rule.compiled.rule.severity,
                    opened_at=now_dt,
                    dedup_key=key,
                    explanation=evaluation.explain(int(index)),
                    actions=actions_of(rule, key),
                )
            )
        for index in np.flatnonzero(step.cleared):
            to_clear.append(
                DetectionToClear(
                    rule_id=rule.id,
                    device_id=str(facts.device_id[index]),
                    opened_at=_as_datetime(was_open_since[index]),
                    cleared_at=now_dt,
                    explanation=evaluation.explain(int(index)),
                )
            )
    evaluated = time.perf_counter()
    summary.seconds["evaluate"] = evaluated - windows_loaded

    for change in repo.open_detections_rows(conn, to_open):
        log.info("detection %s opened: rule %s on device %s", change.id, change.rule_id, change.device_id)
        summary.opened += 1
    for change in repo.clear_detections_rows(conn, to_clear):
        log.info("detection %s cleared: rule %s on device %s", change.id, change.rule_id, change.device_id)
        summary.cleared += 1
    summary.seconds["store"] = time.perf_counter() - evaluated
    return summary


def partition_devices(
    conn: Connection, partition: Partition, device_ids: Sequence[str] | None = None, *, cache: FactCache | None = None
) -> list[str]:
    """The devices of `partition` among `device_ids` (every registered one when None). The whole partition's list
    is kept in `cache` until the devices change (their revision moves), as the device columns are."""
    if device_ids is not None or cache is None:
        return devices_in_partition(conn, partition=partition, device_ids=device_ids)
    return cache.get(conn, "devices", ("partition", partition),
                     lambda: devices_in_partition(conn, partition=partition))


def backtest_stored(
    conn: Connection, rule: CompiledRule, *, start: Any, end: Any, step_seconds: int
) -> list[Transition]:
    """What the rule would have opened and cleared over stored history, evaluated every step; writes nothing."""

    def facts_at(now: np.datetime64, requirements: frozenset[Requirement]) -> FleetFacts:
        return load_facts(conn, now=now, requirements=requirements, options=HISTORY)

    first, last = to_datetime64(start), to_datetime64(end)
    times = np.arange(first, last + np.timedelta64(1, "s"), np.timedelta64(step_seconds, "s"))
    return backtest(rule, facts_at, times)
