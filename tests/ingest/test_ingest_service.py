"""The ingest service's own counts and device state, through ingest_batch on the real database, no broker."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from careloop.db import fetch_all, fetch_value
from careloop.mqtt import events_topic, telemetry_topic
from devices.service import DeviceModelCache
from ingest.service import BatchOutcome, InboundMessage, ingest_batch
from tests.factories import make_device
from tests.helpers import store

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
METRICS = {"run_hours": 10.0, "fan_current_a": 0.6, "fan_speed_rpm": 1200.0, "airflow_m3h": 600.0,
           "grease_load_pct": 20.0}


def reading(device_id: str, seq: int, *, seconds: int, **metrics: float) -> InboundMessage:
    ts = (NOW - dt.timedelta(minutes=10) + dt.timedelta(seconds=seconds)).isoformat()
    body = {"seq": seq, "ts": ts, "metrics": {**METRICS, **metrics}}
    return InboundMessage(telemetry_topic(device_id), json.dumps(body).encode(), NOW)


# A message: (seq, seconds after the first, the metrics it carries: none for an event instead).
messages_of_one_device = st.lists(
    st.tuples(st.integers(1, 6), st.integers(0, 3), st.sets(st.sampled_from(sorted(METRICS)))),
    min_size=1, max_size=10,
)


def _message_of(device: str, seq: int, second: int, metrics: set[str]) -> InboundMessage:
    ts = (NOW - dt.timedelta(minutes=10, seconds=-second)).isoformat()
    if not metrics:
        return InboundMessage(events_topic(device), json.dumps({"seq": seq, "ts": ts, "type": "door_opened"}).encode(),
                              NOW)
    # a value of the reading's own, so that two copies of it never disagree
    values = {metric: seq * 10 + second + sorted(METRICS).index(metric) / 10 for metric in metrics}
    return InboundMessage(telemetry_topic(device), json.dumps({"seq": seq, "ts": ts, "metrics": values}).encode(), NOW)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=messages_of_one_device, cuts=st.sets(st.integers(1, 9)))
@example(messages=[(1, 0, {"run_hours", "airflow_m3h"}), (2, 1, set())], cuts={1})  # a batch of an event alone
@example(messages=[(2, 1, {"run_hours", "airflow_m3h"}), (1, 0, {"run_hours"})], cuts={1})  # a late reading
def test_device_latest_is_the_newest_stored_reading_of_each_metric_however_messages_arrive(
    database, conn, messages, cuts
) -> None:
    """Late, partial, redelivered, same ts with another seq, between events, in any batches: device_latest holds,
    per metric, the stored reading that is newest by (ts, seq), as telemetry itself says."""
    device = make_device(conn).id
    conn.commit()
    inbound = [_message_of(device, seq, second, metrics) for seq, second, metrics in messages]
    bounds = [0, *sorted(cut for cut in cuts if cut < len(inbound)), len(inbound)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        store(database, inbound[start:end], now=NOW)
    with database.connection() as reader:
        newest = fetch_all(reader, "SELECT DISTINCT ON (metric) metric, value, ts, seq FROM telemetry "
                                   "WHERE device_id = %s ORDER BY metric, ts DESC, seq DESC", (device,))
        kept = fetch_all(reader, "SELECT metric, value, ts, seq FROM device_latest WHERE device_id = %s "
                                 "ORDER BY metric", (device,))
    assert kept == newest


def test_a_message_twice_in_one_batch_is_stored_once_and_counted_once_as_duplicate(database, conn) -> None:
    device = make_device(conn).id
    conn.commit()
    first = reading(device, 1, seconds=0)
    outcome = store(database, [first, reading(device, 2, seconds=30), first], now=NOW)
    assert (outcome.readings_stored, outcome.readings_duplicate) == (10, 5)
    with database.connection() as reader:
        assert fetch_value(reader, "SELECT count(*) FROM telemetry WHERE device_id = %s", (device,)) == 10
        state = fetch_all(reader, "SELECT first_seq, last_seq, seq_count FROM device_state WHERE device_id = %s",
                          (device,))
    assert [tuple(row.values()) for row in state] == [(1, 2, 2)]


def test_a_batch_part_stored_before_counts_only_the_new_values_and_advances_state_by_them(database, conn) -> None:
    device = make_device(conn).id
    conn.commit()
    store(database, [reading(device, 1, seconds=0)], now=NOW)
    # seq 1 again with one metric more (a firmware that now reports it), and seq 2
    again = reading(device, 1, seconds=0)
    outcome = store(database, [again, reading(device, 2, seconds=30)], now=NOW)
    assert (outcome.readings_stored, outcome.readings_duplicate, outcome.devices) == (5, 5, {device})
    outcome = store(database, [again], now=NOW)
    assert (outcome.readings_stored, outcome.readings_duplicate, outcome.devices) == (0, 5, set())
    with database.connection() as reader:
        state = fetch_all(reader, "SELECT last_seq, seq_count, missing_seq FROM device_state WHERE device_id = %s",
                          (device,))
        latest = fetch_value(reader, "SELECT value FROM device_latest WHERE device_id = %s AND metric = 'run_hours'",
                             (device,))
    assert [tuple(row.values()) for row in state] == [(2, 2, 0)]
    assert latest == 10.0


def test_a_resent_reading_with_another_value_keeps_the_stored_one_in_telemetry_and_latest(database, conn) -> None:
    """Same device, seq, ts and metric: the value stored first stands, in telemetry and in device_latest alike,
    whether the second comes alone or among new readings."""
    device = make_device(conn).id
    conn.commit()
    store(database, [reading(device, 1, seconds=0, run_hours=10.0)], now=NOW)
    for batch in ([reading(device, 1, seconds=0, run_hours=99.0)],
                  [reading(device, 1, seconds=0, run_hours=99.0), reading(device, 0, seconds=-30, run_hours=9.0)]):
        outcome = store(database, batch, now=NOW)
        assert outcome.readings_duplicate == 5
    with database.connection() as reader:
        stored = fetch_all(reader, "SELECT seq, value FROM telemetry WHERE device_id = %s AND metric = 'run_hours' "
                                   "ORDER BY seq", (device,))
        latest = fetch_value(reader, "SELECT value FROM device_latest WHERE device_id = %s AND metric = 'run_hours'",
                             (device,))
    assert [(row["seq"], row["value"]) for row in stored] == [(0, 9.0), (1, 10.0)]
    assert latest == 10.0


def test_a_late_counter_reading_refreshes_the_counter_taken_at_an_event(database, conn) -> None:
    """The counter at a cleaning is the run_hours reading at or before it; a late reading that lands closer to
    the event replaces it. Only counter metrics are sent for this check, and this one is a counter."""
    device = make_device(conn).id
    conn.commit()
    store(database, [reading(device, 1, seconds=0, run_hours=10.0)], now=NOW)
    cleaning = {"seq": 3, "ts": (NOW - dt.timedelta(minutes=10) + dt.timedelta(seconds=60)).isoformat(),
                "type": "maintenance_done"}
    store(database, [InboundMessage(events_topic(device), json.dumps(cleaning).encode(), NOW)], now=NOW)
    counter = "SELECT value FROM event_counters WHERE device_id = %s AND metric = 'run_hours'"
    with database.connection() as reader:
        assert fetch_value(reader, counter, (device,)) == 10.0
    store(database, [reading(device, 2, seconds=50, run_hours=10.5)], now=NOW)
    with database.connection() as reader:
        assert fetch_value(reader, counter, (device,)) == 10.5


def test_a_message_from_the_future_redelivered_later_is_quarantined_once(database, conn) -> None:
    """Its verdict names no moment: checked again a minute later, after a crash between commit and ack, it is the
    same quarantined message, not a second one."""
    device = make_device(conn).id
    conn.commit()
    body = {"seq": 1, "ts": (NOW + dt.timedelta(hours=1)).isoformat(), "metrics": METRICS}
    for later in (dt.timedelta(0), dt.timedelta(minutes=1)):
        message = InboundMessage(telemetry_topic(device), json.dumps(body).encode(), NOW + later)
        assert store(database, [message], now=NOW + later).quarantined == {"ts_in_future": 1}
    with database.connection() as reader:
        kept = fetch_all(reader, "SELECT reason, detail FROM quarantine WHERE device_id = %s", (device,))
    assert [row["reason"] for row in kept] == ["ts_in_future"]
    assert "ahead of the ingester's clock" in kept[0]["detail"]


def test_running_out_of_memory_is_the_process_s_trouble_and_quarantines_no_message(database, conn, monkeypatch):
    """MemoryError goes to the writer (which ends, and the process with it, to be restarted and sent the batch
    again), where any other failure is narrowed down to the message at fault: no good message is put away for it."""
    import ingest.service

    device = make_device(conn).id
    conn.commit()

    def out_of_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(ingest.service, "_store_batch", out_of_memory)
    with pytest.raises(MemoryError):
        store(database, [reading(device, 1, seconds=0), reading(device, 2, seconds=30)], now=NOW)
    with database.connection() as reader:
        assert fetch_value(reader, "SELECT count(*) FROM quarantine WHERE device_id = %s", (device,)) == 0


def test_models_remembered_between_batches_follow_registration_deletion_and_a_changed_model(database, conn):
    """The ingester remembers each device's model between batches (DeviceModelCache), and every batch answers as a
    fresh lookup would: a device registered after its first message is found at its next one, a deleted one is
    unknown from its deletion on, a changed model is the one readings are checked against; with nothing changed,
    no device is looked up again."""
    remembered, changed, deleted = (make_device(conn).id for _ in range(3))
    late = f"{remembered}-late"
    conn.commit()
    models = DeviceModelCache()

    def store_remembering(*messages: InboundMessage) -> BatchOutcome:
        with database.transaction() as writer:
            return ingest_batch(writer, list(messages), now=NOW, device_models=models)

    first = store_remembering(reading(remembered, 1, seconds=0), reading(deleted, 1, seconds=0),
                              reading(changed, 1, seconds=0), reading(late, 1, seconds=0))
    assert first.quarantined == {"unknown_device": 1} and first.readings_stored == 15
    looked_up = models.lookups
    assert store_remembering(reading(remembered, 2, seconds=10), reading(deleted, 2, seconds=10)).readings_stored == 10
    assert models.lookups == looked_up  # both remembered

    make_device(conn, id=late)
    with conn.cursor() as cursor:
        cursor.execute("DELETE FROM devices WHERE id = %s", (deleted,))
        # RH-600's fan current ends at 4 A, RH-900's at 5
        cursor.execute("UPDATE devices SET model = 'RH-600' WHERE id = %s", (changed,))
    conn.commit()
    later = store_remembering(reading(late, 2, seconds=20), reading(deleted, 3, seconds=20),
                              reading(changed, 2, seconds=20, fan_current_a=4.5))
    assert later.quarantined == {"unknown_device": 1, "out_of_range": 1}
    with database.connection() as reader:
        stored = fetch_all(reader, "SELECT device_id, seq, count(*) FROM telemetry GROUP BY device_id, seq")
    assert {(row["device_id"], row["seq"]): row["count"] for row in stored} == {
        (remembered, 1): 5, (remembered, 2): 5, (deleted, 1): 5, (deleted, 2): 5, (late, 2): 5, (changed, 1): 5,
    }
