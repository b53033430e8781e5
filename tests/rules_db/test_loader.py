"""The SQL fact loader against the real PostgreSQL: the same facts as the reference loader, fleet-wide."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from psycopg2.extras import execute_values

from careloop.db import Connection, execute, fetch_all
from careloop.mqtt import events_topic, status_topic, telemetry_topic
from devices.catalog import load_catalog
from ingest.service import InboundMessage, ingest_batch
from rules.facts import (
    Baseline,
    CounterAtEvent,
    EventCount,
    FleetFacts,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Requirement,
    Trend,
    TrendFit,
)
from rules.loader import HISTORY, LoadOptions, learn_baselines, load_facts
from rules.reference import DeviceHistory, Event, Reading, build_facts
from tests.factories import make_customer, make_device

UTC = dt.UTC
START = dt.datetime(2026, 5, 1, tzinfo=UTC)
HISTORY_DAYS = 10
MODELS = ("RH-900", "RH-600", "OV-700")
OTHER_EVENTS = ("maintenance_done", "door_opened", "filter_changed")
HOUR, DAY = 3600, 86400


# ---------------------------------------------------------------- building and storing histories


def _moment(rng: np.random.Generator) -> dt.datetime:
    """A random instant of the history; a third of them off the whole second."""
    micros = int(rng.integers(1, 1_000_000)) if rng.random() < 0.3 else 0
    return START + dt.timedelta(seconds=int(rng.integers(0, HISTORY_DAYS * DAY)), microseconds=micros)


def _readings(rng: np.random.Generator, model: str) -> list[Reading]:
    specs = load_catalog()[model].metrics
    metrics = ["run_hours", *rng.choice([m for m in specs if m != "run_hours"], size=2, replace=False)]
    readings: list[Reading] = []
    for metric in metrics:
        times = sorted(_moment(rng) for _ in range(int(rng.integers(0, 30))))
        if times and rng.random() < 0.5:
            # Two readings in one second, and two at the very same instant: order by ts, then by seq.
            times += [times[-1].replace(microsecond=999_999), times[0]]
        if metric == "run_hours":
            values = np.cumsum(rng.uniform(0, 5, len(times))) + 100
        else:
            values = rng.uniform(specs[metric].min, specs[metric].max, len(times)).round(3)
        readings += [Reading(ts, metric, float(value)) for ts, value in zip(sorted(times), values, strict=True)]
    return sorted(readings, key=lambda reading: reading.ts)  # stable: the later seq stays the later reading


def _events(rng: np.random.Generator, model: str) -> list[Event]:
    codes = list(load_catalog()[model].fault_codes)
    events: list[Event] = []
    for _ in range(int(rng.integers(0, 14))):
        kind = rng.choice(["fault", "fault", "fault_cleared", "fault_cleared", *OTHER_EVENTS])
        # Every fault has a code; a clear without one clears every fault.
        has_code = kind == "fault" or (kind == "fault_cleared" and rng.random() < 0.6)
        events.append(Event(_moment(rng), str(kind), str(rng.choice(codes)) if has_code else None))
    if rng.random() < 0.5:
        # Raised within the second it was cleared: at one-second resolution, not open.
        second, code = _moment(rng).replace(microsecond=0), str(rng.choice(codes))
        events.append(Event(second + dt.timedelta(microseconds=100_000), "fault_cleared", code))
        events.append(Event(second + dt.timedelta(microseconds=600_000), "fault", code))
    return sorted(events, key=lambda event: event.ts)


def random_fleet(conn: Connection, seed: int) -> list[DeviceHistory]:
    """Devices of three models with random readings and events, stored; the last device has no data."""
    histories = random_histories(conn, seed)
    store_history(conn, histories)
    return histories


def random_histories(conn: Connection, seed: int) -> list[DeviceHistory]:
    """Devices of three models, registered, with random readings and events (not stored)."""
    rng = np.random.default_rng(seed)
    with_birthday = make_customer(conn, birthday="1975-02-28")
    without_birthday = make_customer(conn, birthday=None)
    histories = []
    for index in range(9):
        model = MODELS[index % len(MODELS)]
        owner = [with_birthday, without_birthday, None][index % 3]
        purchased_on = None if index == 4 else dt.date(2020, 1 + index, 15)
        history = DeviceHistory(
            device_id=f"LD-{seed}-{index:02d}",
            model=model,
            purchased_on=purchased_on,
            owner_birthday=owner.birthday if owner else None,
        )
        if index < 8:
            history.readings = _readings(rng, model)
            history.events = _events(rng, model)
        owner_id = owner.id if owner else None
        make_device(conn, id=history.device_id, model=model, owner=owner_id, purchased_on=purchased_on)
        histories.append(history)
    return histories


def store_history(conn: Connection, histories: list[DeviceHistory]) -> None:
    """Readings and events as stored rows, seq in list order (the ingester would reject old ts: no ingest here)."""
    telemetry, events = [], []
    for history in histories:
        telemetry += [
            (reading.ts, history.device_id, reading.metric, reading.value, seq)
            for seq, reading in enumerate(history.readings, start=1)
        ]
        events += [
            (event.ts, history.device_id, 100_000 + seq, event.type, event.code)
            for seq, event in enumerate(history.events)
        ]
    with conn.cursor() as cursor:
        if telemetry:
            execute_values(cursor, "INSERT INTO telemetry (ts, device_id, metric, value, seq) VALUES %s", telemetry)
        if events:
            execute_values(cursor, "INSERT INTO events (ts, device_id, seq, type, code) VALUES %s", events)


def requirements_for(histories: list[DeviceHistory]) -> list[Requirement]:
    """Every requirement type, over every metric and event type in the histories, with short and long windows."""
    metrics = sorted({reading.metric for history in histories for reading in history.readings})
    codes = sorted({code for model in MODELS for code in load_catalog()[model].fault_codes})
    requirements: list[Requirement] = [LastEvent(kind) for kind in ("fault", "fault_cleared", *OTHER_EVENTS)]
    requirements += [LastEvent("never_sent"), OpenFault("E99")]
    requirements += [OpenFault(code) for code in codes]
    requirements += [CounterAtEvent("run_hours", kind) for kind in ("maintenance_done", "door_opened", "fault")]
    requirements += [
        EventCount("fault", None, 3 * DAY),
        EventCount("fault", ("E21", "E31", "F12"), 30 * DAY),
        EventCount("fault_cleared", None, 2 * HOUR),
        EventCount("maintenance_done", None, 400 * DAY),
    ]
    for metric in metrics:
        requirements += [Latest(metric), Baseline(metric)]
        # 30 days opens before the first reading: not covered, min/max from the readings inside only.
        requirements += [MetricWindow(metric, seconds) for seconds in (600, HOUR, DAY, 3 * DAY, 30 * DAY)]
        requirements += [Trend(metric, seconds) for seconds in (HOUR, DAY, 5 * DAY, 30 * DAY)]
    return requirements


# ---------------------------------------------------------------- comparing facts


def assert_same_facts(actual: FleetFacts, expected: FleetFacts) -> None:
    assert actual.device_id.tolist() == expected.device_id.tolist()
    assert actual.now == expected.now
    for column in ("model", "kind", "purchased_on", "owner_birthday", "online", "offline_since", "last_seen"):
        assert_array_equal(getattr(actual, column), getattr(expected, column), err_msg=column)
    assert set(actual.loaded) == set(expected.loaded)
    for requirement, wanted in expected.loaded.items():
        got = actual.get(requirement)
        if isinstance(wanted, TrendFit):
            # Both are least squares, computed differently (numpy's lstsq, PostgreSQL's regr_*): equal to rounding.
            assert_allclose(got.slope_per_s, wanted.slope_per_s, rtol=1e-7, atol=1e-12, err_msg=repr(requirement))
            assert_allclose(got.fitted_now, wanted.fitted_now, rtol=1e-7, atol=1e-9, err_msg=repr(requirement))
            assert_array_equal(got.points, wanted.points, err_msg=repr(requirement))
        elif dataclasses.is_dataclass(wanted):
            for part in dataclasses.fields(wanted):
                assert_array_equal(
                    getattr(got, part.name), getattr(wanted, part.name), err_msg=f"{requirement!r}.{part.name}"
                )
        else:
            assert_array_equal(got, wanted, err_msg=repr(requirement))


def _boundary_instants(histories: list[DeviceHistory]) -> list[dt.datetime]:
    """Instants that put a reading exactly at `now` and exactly at the start of the one-hour window."""
    reading = next(reading for history in histories for reading in history.readings[3:])
    second = reading.ts.replace(microsecond=0)
    return [second, second + dt.timedelta(seconds=HOUR)]


# ---------------------------------------------------------------- history (backtest) mode


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_history_facts_equal_the_reference_at_every_instant(conn, seed: int) -> None:
    histories = random_fleet(conn, seed)
    requirements = requirements_for(histories)
    instants = [
        START - dt.timedelta(days=1),  # before any data
        START + dt.timedelta(days=4, seconds=12_345, microseconds=700_000),  # the middle: later data is cut off
        START + dt.timedelta(days=HISTORY_DAYS),  # the end of the history
        START + dt.timedelta(days=45),  # long after: short windows are empty but covered
        *_boundary_instants(histories),
    ]
    for now in instants:
        actual = load_facts(conn, now=now, requirements=requirements, options=HISTORY)
        expected = build_facts(histories, now=now, requirements=requirements)
        assert_same_facts(actual, expected)


def test_history_facts_have_one_second_resolution(conn) -> None:
    make_device(conn, id="SEC-1", model="RH-900", purchased_on=None)
    at = START + dt.timedelta(hours=1)

    def later(seconds: float) -> dt.datetime:
        return at + dt.timedelta(seconds=seconds)

    history = DeviceHistory(
        "SEC-1",
        "RH-900",
        readings=[
            Reading(later(-10), "run_hours", 100.0),
            Reading(later(-1), "fan_current_a", 1.0),
            Reading(later(0.4), "fan_current_a", 2.0),  # known at `at`: the same second
            Reading(later(1), "fan_current_a", 3.0),  # not yet
            Reading(later(1.5), "run_hours", 101.0),  # a second after the maintenance
        ],
        events=[
            Event(later(0.1), "fault_cleared", "E21"),
            Event(later(0.6), "fault", "E21"),  # raised in the second it was cleared: not open
            Event(later(0.9), "maintenance_done"),
        ],
    )
    store_history(conn, [history])
    counter = CounterAtEvent("run_hours", "maintenance_done")
    requirements = [Latest("fan_current_a"), MetricWindow("fan_current_a", 1), LastEvent("maintenance_done"),
                    OpenFault("E21"), counter]
    facts = load_facts(conn, now=np.datetime64("2026-05-01T01:00:00"), requirements=requirements, options=HISTORY)
    assert_same_facts(facts, build_facts([history], now=at, requirements=requirements))
    assert facts.get(Latest("fan_current_a")).tolist() == [2.0]
    window = facts.get(MetricWindow("fan_current_a", 1))
    assert (window.min[0], window.max[0], window.count[0], window.covered[0]) == (1.0, 2.0, 1, True)
    assert facts.last_seen.tolist() == facts.get(LastEvent("maintenance_done")).tolist() == [at.replace(tzinfo=None)]
    assert facts.get(OpenFault("E21")).tolist() == [False]
    assert facts.get(counter).tolist() == [100.0]
    facts = load_facts(conn, now=later(10), requirements=requirements, options=HISTORY)
    assert_same_facts(facts, build_facts([history], now=later(10), requirements=requirements))
    assert facts.get(counter).tolist() == [100.0]


# ---------------------------------------------------------------- live (engine) mode

LIVE_NOW = dt.datetime(2026, 6, 1, 12, tzinfo=UTC)


def _message(topic: str, payload: dict | str, received_at: dt.datetime = LIVE_NOW) -> InboundMessage:
    body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    return InboundMessage(topic=topic, payload=body, received_at=received_at)


def live_fleet(conn: Connection) -> list[DeviceHistory]:
    """Four devices: three sent their recent history through the ingester (device_state is filled), one nothing."""
    rng = np.random.default_rng(7)
    histories = [DeviceHistory(device_id, model) for device_id, model in
                 (("LV-1", "RH-900"), ("LV-2", "RH-900"), ("LV-3", "OV-700"), ("LV-4", "OV-700"))]
    messages = []
    for history in histories:
        make_device(conn, id=history.device_id, model=history.model, purchased_on=None)
        if history.device_id == "LV-4":
            continue  # registered, never heard from
        metrics = ["run_hours", "fan_current_a"] if history.model == "RH-900" else ["run_hours", "cavity_temp_c"]
        # Distinct instants: of readings at equal ts, device_state keeps any one.
        seconds_ago = sorted(rng.choice(np.arange(60, 20 * DAY), size=25, replace=False).tolist(), reverse=True)
        for seq, ago in enumerate(seconds_ago, start=1):
            ts = LIVE_NOW - dt.timedelta(seconds=ago)
            values = {"run_hours": 500.0 + seq, metrics[1]: round(float(rng.uniform(0.5, 3.5)), 2)}
            history.readings += [Reading(ts, metric, value) for metric, value in values.items()]
            messages.append(_message(telemetry_topic(history.device_id),
                                     {"seq": seq, "ts": ts.isoformat(), "metrics": values}))
        for seq, (ago, kind, code) in enumerate(
            [(15 * DAY, "fault", "E21"), (9 * DAY, "maintenance_done", None), (2 * HOUR, "fault", "E31")], start=100
        ):
            ts = LIVE_NOW - dt.timedelta(seconds=ago)
            history.events.append(Event(ts, kind, code))
            messages.append(_message(events_topic(history.device_id),
                                     {"seq": seq, "ts": ts.isoformat(), "type": kind, "code": code}))
    messages.append(_message(status_topic("LV-1"), "online", LIVE_NOW - dt.timedelta(hours=5)))
    messages.append(_message(status_topic("LV-2"), "online", LIVE_NOW - dt.timedelta(hours=5)))
    messages.append(_message(status_topic("LV-2"), "offline", LIVE_NOW - dt.timedelta(hours=2)))
    outcome = ingest_batch(conn, messages, now=LIVE_NOW)
    assert not outcome.quarantined
    return histories


def test_live_facts_read_device_state_and_equal_the_reference_elsewhere(conn) -> None:
    histories = live_fleet(conn)
    requirements = [
        requirement
        for requirement in requirements_for(histories)
        if not isinstance(requirement, Baseline)  # nothing learned yet: below
    ]
    facts = load_facts(conn, now=LIVE_NOW, requirements=requirements)
    expected = build_facts(histories, now=LIVE_NOW, requirements=requirements)
    # Status comes from the status topic: LV-1 online, LV-2 offline since the message, the others unknown.
    expected.online = np.array([True, False, False, False])
    expected.offline_since = np.array(["NaT", "2026-06-01T10:00:00", "NaT", "NaT"], dtype="datetime64[s]")
    assert_same_facts(facts, expected)


def test_live_latest_is_what_the_ingester_keeps_in_device_latest(conn) -> None:
    live_fleet(conn)
    # Only the ingester's kept values could say this: 9e3 run hours, and no fan current at all.
    execute(
        conn,
        "UPDATE latest_readings SET readings[array_position(metrics, 'run_hours')] = 9e3 WHERE device_id = 'LV-1'",
    )
    execute(
        conn,
        """UPDATE latest_readings SET (metrics, readings, ts, seqs) = (
               SELECT array_agg(r.metric), array_agg(r.value), array_agg(r.ts), array_agg(r.seq)
               FROM unnest(metrics, readings, ts, seqs) AS r (metric, value, ts, seq)
               WHERE r.metric <> 'fan_current_a')
           WHERE device_id = 'LV-1'""",
    )
    facts = load_facts(conn, now=LIVE_NOW, requirements=[Latest("fan_current_a"), Latest("run_hours")])
    assert np.isnan(facts.get(Latest("fan_current_a"))[0])
    assert facts.get(Latest("run_hours"))[0] == 9e3
    history = load_facts(conn, now=LIVE_NOW, requirements=[Latest("run_hours")], options=HISTORY)
    assert history.get(Latest("run_hours"))[0] == 525.0  # the stored readings are untouched


def _arrivals(rng: np.random.Generator, histories: list[DeviceHistory]) -> list[list[InboundMessage]]:
    """Every reading and event as its own message (seq in history order), shuffled, in batches of 1 to 8."""
    messages = []
    for history in histories:
        for seq, reading in enumerate(history.readings, start=1):
            payload = {"seq": seq, "ts": reading.ts.isoformat(), "metrics": {reading.metric: reading.value}}
            messages.append(_message(telemetry_topic(history.device_id), payload))
        for seq, event in enumerate(history.events, start=100_000):
            payload = {"seq": seq, "ts": event.ts.isoformat(), "type": event.type, "code": event.code}
            messages.append(_message(events_topic(history.device_id), payload))
    order = rng.permutation(len(messages))
    batches, start = [], 0
    while start < len(order):
        size = int(rng.integers(1, 9))
        batches.append([messages[index] for index in order[start : start + size]])
        start += size
    return batches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counters_the_ingester_records_at_events_equal_the_reference_in_any_arrival_order(conn, seed: int) -> None:
    histories = random_histories(conn, seed)
    end = START + dt.timedelta(days=HISTORY_DAYS + 1)
    for batch in _arrivals(np.random.default_rng(seed), histories):
        outcome = ingest_batch(conn, batch, now=end)
        assert not outcome.quarantined
    requirements = [CounterAtEvent("run_hours", kind) for kind in ("maintenance_done", "door_opened", "fault")]

    # Every device's last event of each type has its row: the engine probes no telemetry for these.
    rows = fetch_all(conn, "SELECT device_id, event_type, event_ts FROM event_counters WHERE metric = 'run_hours'")
    recorded = {(row["device_id"], row["event_type"]): row["event_ts"] for row in rows}
    last = {}
    for history in histories:
        for event in history.events:
            last[(history.device_id, event.type)] = max(event.ts, last.get((history.device_id, event.type), event.ts))
    assert recorded == last

    expected = build_facts(histories, now=end, requirements=requirements)
    live = load_facts(conn, now=end, requirements=requirements)
    for requirement in requirements:
        assert_array_equal(live.get(requirement), expected.get(requirement), err_msg=repr(requirement))
    # The probes, on stored history, agree.
    assert_same_facts(load_facts(conn, now=end, requirements=requirements, options=HISTORY), expected)


def test_a_late_reading_before_the_first_one_after_the_event_moves_the_counter(conn) -> None:
    """With no reading at or before the event, the counter is the first reading after it: until an earlier one
    arrives late."""
    make_device(conn, id="LC-1", model="RH-900")
    cleaned = LIVE_NOW - dt.timedelta(hours=5)
    arrivals = [
        (events_topic("LC-1"), {"seq": 1, "ts": cleaned.isoformat(), "type": "maintenance_done"}),
        (telemetry_topic("LC-1"), {"seq": 3, "ts": (cleaned + dt.timedelta(hours=2)).isoformat(),
                                   "metrics": {"run_hours": 30.0}}),
        (telemetry_topic("LC-1"), {"seq": 2, "ts": (cleaned + dt.timedelta(hours=1)).isoformat(),
                                   "metrics": {"run_hours": 20.0}}),
    ]
    requirement = CounterAtEvent("run_hours", "maintenance_done")
    seen = []
    for topic, payload in arrivals:
        ingest_batch(conn, [_message(topic, payload)], now=LIVE_NOW)
        seen.append(load_facts(conn, now=LIVE_NOW, requirements=[requirement]).get(requirement)[0])
    assert_array_equal(seen, [np.nan, 30.0, 20.0])


def test_live_counters_at_events_read_the_recorded_row_of_that_event_else_probe_telemetry(conn) -> None:
    histories = live_fleet(conn)
    requirement = CounterAtEvent("run_hours", "maintenance_done")
    expected = build_facts(histories, now=LIVE_NOW, requirements=[requirement]).get(requirement)
    execute(conn, "UPDATE event_counters SET value = -1 WHERE device_id = 'LV-1' AND event_type = 'maintenance_done'")
    # A row naming another event (stored before the ingester recorded counters) is not the answer for this one.
    execute(
        conn,
        "UPDATE event_counters SET value = -2, event_ts = event_ts - interval '1 day' "
        "WHERE device_id = 'LV-2' AND event_type = 'maintenance_done'",
    )
    execute(conn, "DELETE FROM event_counters WHERE device_id = 'LV-3'")
    got = load_facts(conn, now=LIVE_NOW, requirements=[requirement]).get(requirement)
    assert got[0] == -1
    assert_array_equal(got[1:], expected[1:])
    assert not np.isnan(expected[1:3]).any()


def test_live_baseline_is_what_learn_baselines_stored(conn) -> None:
    histories = live_fleet(conn)
    metrics = ["fan_current_a", "cavity_temp_c", "run_hours", "grease_load_pct"]
    requirements = [Baseline(metric) for metric in metrics]

    before = load_facts(conn, now=LIVE_NOW, requirements=requirements)
    for requirement in requirements:
        assert before.get(requirement).samples.tolist() == [0, 0, 0, 0]
        assert np.isnan(before.get(requirement).centre).all()

    # Every metric of the two models that have devices: 5 + 5 rows.
    assert learn_baselines(conn, now=LIVE_NOW) == 10
    stored = fetch_all(conn, "SELECT model, metric, samples, learned_at FROM model_baselines ORDER BY 1, 2")
    assert {row["learned_at"] for row in stored} == {LIVE_NOW}
    assert {(row["model"], row["metric"]): row["samples"] for row in stored}[("RH-900", "fan_current_a")] == 2

    learned = load_facts(conn, now=LIVE_NOW, requirements=requirements)
    expected = build_facts(histories, now=LIVE_NOW, requirements=requirements)
    from_history = load_facts(conn, now=LIVE_NOW, requirements=requirements, options=HISTORY)
    for requirement in requirements:
        for source in (learned, from_history):
            for part in ("centre", "spread", "samples"):
                assert_array_equal(
                    getattr(source.get(requirement), part), getattr(expected.get(requirement), part), err_msg=part
                )


def test_learn_baselines_for_chosen_metrics_replaces_what_was_learned(conn) -> None:
    live_fleet(conn)
    earlier = LIVE_NOW - dt.timedelta(days=10)
    assert learn_baselines(conn, now=earlier, metrics_by_model={"RH-900": ["fan_current_a"]}) == 1
    assert learn_baselines(conn, now=LIVE_NOW, metrics_by_model={"RH-900": ["fan_current_a"], "AC-350": []}) == 1
    rows = fetch_all(conn, "SELECT model, metric, samples, learned_at FROM model_baselines")
    assert rows == [{"model": "RH-900", "metric": "fan_current_a", "samples": 2, "learned_at": LIVE_NOW}]
    assert learn_baselines(conn, now=LIVE_NOW, metrics_by_model={}) == 0


# ---------------------------------------------------------------- scope


def test_device_ids_give_only_those_devices_in_id_order(conn) -> None:
    histories = random_fleet(conn, 4)
    requirements = requirements_for(histories)
    now = START + dt.timedelta(days=6)
    fleet = load_facts(conn, now=now, requirements=requirements, options=HISTORY)
    chosen = ["LD-4-07", "LD-4-02", "not-registered", "LD-4-05", "LD-4-02", "LD-4-08"]
    subset = load_facts(conn, now=now, requirements=requirements, device_ids=chosen, options=HISTORY)
    assert subset.device_id.tolist() == ["LD-4-02", "LD-4-05", "LD-4-07", "LD-4-08"]
    rows = np.searchsorted(fleet.device_id, subset.device_id)
    # A baseline describes the whole model, so it is the same whichever devices are evaluated.
    assert_same_facts(subset, _rows_of(fleet, rows))
    live_subset = load_facts(conn, now=now, requirements=requirements, device_ids=chosen)
    assert live_subset.device_id.tolist() == subset.device_id.tolist()


def _rows_of(facts: FleetFacts, rows: np.ndarray) -> FleetFacts:
    def pick(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return type(value)(**{part.name: getattr(value, part.name)[rows] for part in dataclasses.fields(value)})
        return value[rows]

    columns = ("device_id", "model", "kind", "purchased_on", "owner_birthday", "online", "offline_since", "last_seen")
    return FleetFacts(
        now=facts.now,
        **{column: getattr(facts, column)[rows] for column in columns},
        loaded={requirement: pick(value) for requirement, value in facts.loaded.items()},
    )


@pytest.mark.parametrize("live", [True, False])
def test_an_empty_fleet_gives_empty_facts_with_every_requirement(conn, live: bool) -> None:
    requirements = requirements_for([DeviceHistory("X", "RH-900", readings=[Reading(START, "fan_current_a", 1.0)])])
    facts = load_facts(conn, now=START, requirements=requirements, options=LoadOptions(live=live))
    assert facts.size == 0 and facts.missing(requirements) == []
    assert learn_baselines(conn, now=START) == 0
    make_device(conn, id="ALONE", model="RH-900")
    none_chosen = load_facts(conn, now=START, requirements=requirements, device_ids=[], options=LoadOptions(live=live))
    assert none_chosen.size == 0 and none_chosen.missing(requirements) == []


def test_the_loader_leaves_the_session_settings_as_they_were(conn) -> None:
    live_fleet(conn)
    execute(conn, "SET jit = on")
    load_facts(conn, now=LIVE_NOW, requirements=[Latest("run_hours"), Trend("run_hours", DAY)], options=HISTORY)
    learn_baselines(conn, now=LIVE_NOW)
    assert fetch_all(conn, "SELECT current_setting('jit') AS jit") == [{"jit": "on"}]
