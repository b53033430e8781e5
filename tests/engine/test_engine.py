"""The rule engine against the real database and broker: readings in over MQTT, detections out."""

from __future__ import annotations

import datetime as dt
import itertools
import threading

import numpy as np
import pytest

from careloop.db import Database, fetch_all
from careloop.mqtt import events_topic, telemetry_topic
from rules.engine import Engine, EssentialThreadDied, Schedule
from rules.service import create_rule
from tests.factories import make_device
from tests.helpers import event, inbound, publish_all, reading, store, wait_until

pytestmark = pytest.mark.integration

# The scheduled jobs run once at start; the tests call them when they need them.
RARELY = Schedule(sweep_s=3600, window_s=3600, baselines_s=3600)

CURRENT_HIGH = {
    "id": "hood-current-high",
    "description": "Fan current high",
    "applies_to": {"model": "RH-900"},
    "when": {"threshold": {"metric": "fan_current_a", "above": 3, "clear_below": 2}},
    "then": [{"open_service_order": {"type": "inspection", "skill": "motor"}}],
    "severity": "warning",
    "cooldown": "1h",
}
GREASE_DUE = {
    "id": "hood-grease-due",
    "applies_to": {"kind": "range_hood"},
    "when": {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 100}},
    "then": [{"call_customer": {"reason": "grease filter due"}}, {"offer": {"template": "member-cleaning"}}],
    "cooldown": "0s",
}
FAN_STALL = {
    "id": "hood-stall",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [
        {"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}},
        {"call_customer": {"reason": "stalled fan"}},
    ],
    "severity": "critical",
    "cooldown": "1d",
}


def detections(database: Database, rule_id: str) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(
            conn,
            "SELECT id, device_id, status, opened_at, cleared_at, dedup_key, explanation, clear_explanation, actions "
            "FROM detections WHERE rule_id = %s ORDER BY id",
            (rule_id,),
        )


def publish_and_wait(engine: Engine, mqtt_url: str, topic: str, payload: dict) -> None:
    """Publish one message and wait until the engine has evaluated the batch that stored it."""
    before = engine.batches_evaluated
    publish_all(mqtt_url, [(topic, payload)])
    wait_until(lambda: engine.batches_evaluated > before, what="the engine to evaluate the batch")


def test_one_detection_while_a_threshold_holds_cleared_with_hysteresis_then_cooldown(
    conn, database, mqtt_url, run_ingester, run_engine
) -> None:
    create_rule(conn, CURRENT_HIGH)
    device = make_device(conn)
    conn.commit()
    run_ingester()
    engine = run_engine()
    seq = itertools.count(1)
    topic = telemetry_topic(device.id)

    publish_and_wait(engine, mqtt_url, topic, reading(next(seq), fan_current_a=3.4))
    publish_and_wait(engine, mqtt_url, topic, reading(next(seq), fan_current_a=3.8))
    [opened] = detections(database, "hood-current-high")
    assert opened["status"] == "open" and opened["device_id"] == device.id
    assert opened["explanation"]["reason"] == "fan_current_a is 3.4, above 3"
    assert opened["dedup_key"].startswith(f"hood-current-high:{device.id}:")
    assert [action["action"] for action in opened["actions"]] == ["open_service_order"]
    assert opened["actions"][0]["key"] == f"{opened['dedup_key']}:0:open_service_order"

    # Below the level but above the clear level: the detection stays open (hysteresis).
    publish_and_wait(engine, mqtt_url, topic, reading(next(seq), fan_current_a=2.5))
    [still] = detections(database, "hood-current-high")
    assert still["status"] == "open"

    publish_and_wait(engine, mqtt_url, topic, reading(next(seq), fan_current_a=1.5))
    [cleared] = detections(database, "hood-current-high")
    assert cleared["status"] == "cleared" and cleared["cleared_at"] is not None
    assert "not above 3" in cleared["clear_explanation"]["reason"]

    # High again within the hour of cooldown: nothing reopens.
    publish_and_wait(engine, mqtt_url, topic, reading(next(seq), fan_current_a=3.9))
    assert len(detections(database, "hood-current-high")) == 1


def test_maintenance_done_resets_usage(conn, database, mqtt_url, run_ingester) -> None:
    create_rule(conn, GREASE_DUE)
    device = make_device(conn)
    conn.commit()
    ingester = run_ingester()
    engine = Engine(database, schedule=RARELY)
    now = dt.datetime.now(dt.UTC)
    publish_all(
        mqtt_url,
        [
            (telemetry_topic(device.id), reading(1, at=now - dt.timedelta(hours=3), run_hours=50)),
            (telemetry_topic(device.id), reading(2, at=now - dt.timedelta(hours=2), run_hours=160)),
        ],
    )
    wait_until(lambda: ingester.totals.readings_stored == 2, what="two readings stored")
    engine.window()
    [due] = detections(database, "hood-grease-due")
    assert due["status"] == "open"
    assert due["explanation"]["condition"]["values"]["growth"] == 160
    assert [action["action"] for action in due["actions"]] == ["call_customer", "offer"]

    event = {"seq": 3, "ts": (now - dt.timedelta(hours=1)).isoformat(), "type": "maintenance_done"}
    publish_all(
        mqtt_url,
        [
            (events_topic(device.id), event),
            (telemetry_topic(device.id), reading(4, at=now - dt.timedelta(minutes=30), run_hours=161)),
        ],
    )
    wait_until(
        lambda: ingester.totals.readings_stored == 3 and ingester.totals.events_stored == 1,
        what="the cleaning and the next reading stored",
    )
    engine.window()
    [cleaned] = detections(database, "hood-grease-due")
    assert cleaned["status"] == "cleared"
    values = cleaned["clear_explanation"]["condition"]["values"]
    assert (values["at_since"], values["current"], values["growth"]) == (160, 161, 1)


def test_duplicate_delivery_restarts_and_two_engines_open_nothing_twice(
    conn, database, mqtt_url, run_ingester, run_engine
) -> None:
    create_rule(conn, FAN_STALL)
    device = make_device(conn)
    conn.commit()
    ingester = run_ingester()
    first, second = run_engine(), run_engine()
    fault = {"seq": 1, "ts": dt.datetime.now(dt.UTC).isoformat(), "type": "fault", "code": "E21"}
    publish_all(mqtt_url, [(events_topic(device.id), fault)] * 3)
    wait_until(lambda: len(detections(database, "hood-stall")) == 1, what="the fault's detection")
    wait_until(lambda: ingester.totals.events_duplicate == 2, what="the redelivered copies")

    # Both engines sweep at once, then a freshly started one ("a restart") runs every job.
    sweeps = [threading.Thread(target=engine.sweep) for engine in (first, second) for _ in range(3)]
    for sweep in sweeps:
        sweep.start()
    for sweep in sweeps:
        sweep.join()
    Engine(database, schedule=RARELY).run_once()
    publish_all(mqtt_url, [(events_topic(device.id), fault)])  # replayed once more, later
    wait_until(lambda: ingester.totals.events_duplicate == 3, what="the replayed copy")

    [detection] = detections(database, "hood-stall")
    assert detection["status"] == "open"
    assert detection["explanation"]["reason"] == "open fault E21 (fan motor stall)"
    assert [action["key"] for action in detection["actions"]] == [
        f"{detection['dedup_key']}:0:open_service_order",
        f"{detection['dedup_key']}:1:call_customer",
    ]


def test_a_detection_reopens_only_after_its_cooldown(conn, database) -> None:
    """With the engine's clock set by the test: clear, stay quiet through the cooldown, then reopen."""
    create_rule(conn, FAN_STALL)  # cooldown 1d
    device = make_device(conn)
    conn.commit()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=5)
    clock = {"now": start}
    engine = Engine(database, schedule=RARELY, clock=lambda: clock["now"])

    def event_at(seq: int, at: dt.datetime, kind: str) -> None:
        store(database, [inbound(events_topic(device.id), event(seq, at=at, kind=kind, code="E21"), at)], now=at)

    def at(hours: float) -> dt.datetime:
        clock["now"] = start + dt.timedelta(hours=hours)
        return clock["now"]

    event_at(1, at(0), "fault")
    engine.sweep()
    event_at(2, at(2), "fault_cleared")
    engine.sweep()
    event_at(3, at(3), "fault")
    engine.sweep()  # one hour after the clear: within the cooldown
    assert [d["status"] for d in detections(database, "hood-stall")] == ["cleared"]
    at(27)  # a day after the clear, the fault still open
    engine.sweep()
    first, second = detections(database, "hood-stall")
    assert (first["status"], second["status"]) == ("cleared", "open")
    assert second["opened_at"] == start + dt.timedelta(hours=27)
    assert first["dedup_key"] != second["dedup_key"]


GREASE_FILLING = {
    "id": "hood-grease-filling",
    "applies_to": {"kind": "range_hood"},
    "when": {"trend": {"metric": "grease_load_pct", "reaches": 90, "within": "7d", "over": "7d"}},
    "then": [{"call_customer": {"reason": "the grease filter will be full within a week"}}],
    "cooldown": "1d",
}


def test_a_trend_rule_projects_the_learned_fit_days_ahead(conn, database) -> None:
    create_rule(conn, GREASE_FILLING)
    filling, steady = make_device(conn), make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    messages = []
    for hours_ago in range(72, -1, -6):
        at = now - dt.timedelta(hours=hours_ago)
        seq = 100 - hours_ago
        # The filling hood gains 2 points a day: at 70 now, it reaches 90 in 10 days; then 4 a day: in 5 days.
        for device, value in ((filling.id, 70 - 2 * hours_ago / 24), (steady.id, 40.0)):
            messages.append(inbound(telemetry_topic(device), reading(seq, at=at, grease_load_pct=value), now))
    store(database, messages, now=now)
    engine = Engine(database, schedule=RARELY, clock=lambda: now)

    assert engine.learn_trends() == 2
    engine.window()
    assert detections(database, "hood-grease-filling") == []  # 10 days away: not within 7

    later = now + dt.timedelta(hours=1)
    faster = reading(200, at=later, grease_load_pct=80)
    store(database, [inbound(telemetry_topic(filling.id), faster, later)], now=later)
    engine.clock = lambda: later
    engine.window()  # the stored fit has not seen the jump yet
    assert detections(database, "hood-grease-filling") == []
    engine.learn_trends()
    engine.window()
    [detection] = detections(database, "hood-grease-filling")
    assert detection["device_id"] == filling.id
    values = detection["explanation"]["condition"]["values"]
    assert values["slope_per_day"] > 2 and 0 < values["eta_s"] < 7 * 86400


def test_a_threshold_held_for_a_window_opens_and_clears_with_the_window_explained(conn, database) -> None:
    rule = {
        **CURRENT_HIGH,
        "id": "hood-current-held",
        "when": {"threshold": {"metric": "fan_current_a", "above": 3, "for": "10m", "clear_below": 2}},
    }
    create_rule(conn, rule)
    high, calm = make_device(conn), make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clock = {"now": now}
    engine = Engine(database, schedule=RARELY, clock=lambda: clock["now"])
    seqs = itertools.count(1)

    def readings_at(*values: tuple[str, float, dt.datetime]) -> None:
        messages = [
            inbound(telemetry_topic(device), reading(next(seqs), at=at, fan_current_a=value), at)
            for device, value, at in values
        ]
        store(database, messages, now=max(at for _, _, at in values))

    minutes = lambda n: now + dt.timedelta(minutes=n)  # noqa: E731
    readings_at((high.id, 3.5, minutes(0)), (calm.id, 3.5, minutes(0)))
    readings_at((high.id, 3.6, minutes(6)), (calm.id, 1.2, minutes(6)))
    clock["now"] = minutes(11)
    engine.sweep()
    [opened] = detections(database, "hood-current-held")
    assert opened["device_id"] == high.id
    values = opened["explanation"]["condition"]["values"]
    assert (values["lowest"], values["highest"], values["covers_window"]) == (3.5, 3.6, True)

    readings_at((high.id, 2.5, minutes(12)))
    clock["now"] = minutes(13)
    engine.sweep()  # below the level, above the clear level: still open
    assert [d["status"] for d in detections(database, "hood-current-held")] == ["open"]
    readings_at((high.id, 1.5, minutes(14)))
    clock["now"] = minutes(15)
    engine.sweep()
    [cleared] = detections(database, "hood-current-held")
    assert cleared["status"] == "cleared"
    assert cleared["clear_explanation"]["condition"]["values"]["lowest"] == 1.5


def test_facts_loaded_side_by_side_equal_those_loaded_one_after_another(conn, database, database_url) -> None:
    from rules.builtin import load_builtin_rules
    from rules.conditions import compile_rule, requirements_of
    from rules.loader import LoadOptions, load_facts

    devices = [make_device(conn), make_device(conn, model="RH-600")]
    conn.commit()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    messages = [
        inbound(
            telemetry_topic(device.id),
            reading(seq, at=now - dt.timedelta(hours=seq), fan_current_a=0.5 + seq / 10, run_hours=100 - seq),
            now,
        )
        for device in devices
        for seq in range(1, 6)
    ] + [inbound(events_topic(devices[0].id), event(9, at=now, kind="fault", code="E21"), now)]
    store(database, messages, now=now)
    requirements = requirements_of(compile_rule(rule) for rule in load_builtin_rules())
    with database.transaction() as reader:
        one_by_one = load_facts(reader, now=now, requirements=requirements)
        side_by_side = load_facts(
            reader, now=now, requirements=requirements, options=LoadOptions(parallel_dsn=database_url)
        )
    assert one_by_one.loaded.keys() == side_by_side.loaded.keys()
    for requirement, value in one_by_one.loaded.items():
        other = side_by_side.loaded[requirement]
        parts = (
            [(value, other)]
            if isinstance(value, np.ndarray)
            else [(getattr(value, name), getattr(other, name)) for name in value.__dataclass_fields__]
        )
        for mine, theirs in parts:
            np.testing.assert_array_equal(mine, theirs, err_msg=repr(requirement))


def test_a_whole_fleet_run_reads_detection_state_again_when_another_run_changed_it_meanwhile(
    conn, database, monkeypatch
) -> None:
    """The state read beside the facts is kept only if no evaluation changed detections before the lock."""
    from rules import evaluation

    create_rule(conn, FAN_STALL)  # cooldown 1d
    device = make_device(conn)
    conn.commit()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=5)

    def event_at(seq: int, hours: float, kind: str) -> None:
        at = start + dt.timedelta(hours=hours)
        store(database, [inbound(events_topic(device.id), event(seq, at=at, kind=kind, code="E21"), at)], now=at)

    event_at(1, 0, "fault")
    assert Engine(database, clock=lambda: start).sweep().opened == 1
    event_at(2, 2, "fault_cleared")

    reads: list[str] = []
    early_done = threading.Event()
    real_read, real_apart, real_load = evaluation.DetectionState.read, evaluation._read_apart, evaluation.load_facts

    def counted_read(*args, **kwargs):
        reads.append("read")
        return real_read(*args, **kwargs)

    def apart_then_signal(*args, **kwargs):
        try:
            return real_apart(*args, **kwargs)
        finally:
            early_done.set()

    def load_while_another_engine_clears(*args, **kwargs):
        # After this run read the state (the detection open), another engine clears the detection,
        # and the fault comes back: this run must see the clear, and its cooldown.
        assert early_done.wait(timeout=10)
        if len(reads) == 1:
            monkeypatch.setattr(evaluation, "load_facts", real_load)
            assert Engine(database, clock=lambda: start + dt.timedelta(hours=2)).sweep().cleared == 1
            event_at(3, 3, "fault")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(evaluation.DetectionState, "read", counted_read)
    monkeypatch.setattr(evaluation, "_read_apart", apart_then_signal)
    monkeypatch.setattr(evaluation, "load_facts", load_while_another_engine_clears)
    summary = Engine(database, clock=lambda: start + dt.timedelta(hours=3)).sweep()
    assert reads == ["read", "read", "read"]  # this run's early read, the other engine's, this run's again
    assert (summary.still_open, summary.suppressed, summary.opened) == (0, 1, 0)
    assert [d["status"] for d in detections(database, "hood-stall")] == ["cleared"]

    # With nothing changed in between, the early read is the one used.
    reads.clear()
    monkeypatch.setattr(evaluation, "load_facts", real_load)
    early_done.clear()
    Engine(database, clock=lambda: start + dt.timedelta(hours=4)).sweep()
    assert reads == ["read"]


def test_an_engine_whose_scheduler_thread_ends_stops_serving_with_an_error(database, database_url) -> None:
    """Up but running no scheduled rule is the worst state: serve raises, and `careloop engine` exits 1 on it."""
    engine = Engine(database, schedule=Schedule(sweep_s=3600, window_s=3600, baselines_s=3600, trends_s=3600))
    stop, failures = threading.Event(), []

    def serve() -> None:
        try:
            engine.serve(stop, database_url=database_url, poll_s=0.05)
        except EssentialThreadDied as error:
            failures.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert engine.listening.wait(timeout=10)
    engine._scheduler.shutdown(wait=False)  # the scheduler's thread ends without anyone stopping the engine
    thread.join(timeout=10)
    stop.set()
    assert not thread.is_alive() and len(failures) == 1
    assert "scheduler thread has ended" in str(failures[0])
