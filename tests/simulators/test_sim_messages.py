"""The simulator's messages follow CONTRACT.md: topics, payload shapes, seq, ts, metric ranges."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from devices.catalog import load_catalog
from simulators.fleet import make_fleet
from simulators.run import generate_history
from simulators.simulation import Simulation
from simulators.wire import Message, format_ts
from tests.simulators.simhelpers import START, TODAY, channel_of, device_of, seqs_by_device

TOPIC = re.compile(r"^careloop/v1/devices/([A-Za-z0-9_-]{1,64})/(telemetry|events|status)$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT_TYPES = {"fault", "fault_cleared", "maintenance_done", "power_on", "power_off"}


FLEET = make_fleet(80, seed=7, today=TODAY)
MODEL_OF = {device.device_id: load_catalog()[device.model] for device in FLEET}
HISTORY_END = START + dt.timedelta(days=5)


@pytest.fixture(scope="module")
def history() -> list[Message]:
    """Five days of a fleet of every model, with plenty of faults, cleaning and offline spells."""
    return list(
        generate_history(FLEET, START, HISTORY_END, 900, faults="all:0.3", seed=7, offline_per_day=1.0)
    )


def test_every_topic_names_a_valid_device_and_channel(history: list[Message]) -> None:
    assert all(TOPIC.match(message.topic) for message in history)


def test_telemetry_has_seq_ts_and_known_in_range_metrics(history: list[Message]) -> None:
    readings = 0
    for message in history:
        if channel_of(message) != "telemetry":
            continue
        for reading in message.payload.get("readings", [message.payload]):
            assert set(reading) == {"seq", "ts", "metrics"}
            assert isinstance(reading["seq"], int) and TS.match(reading["ts"])
            model = MODEL_OF[device_of(message)]
            assert reading["metrics"], "a reading carries at least one metric"
            for name, value in reading["metrics"].items():
                assert name in model.metrics, f"{model.code} has no metric {name}"
                assert model.metrics[name].accepts(value), f"{name}={value} outside {model.code}'s range"
            readings += 1
    assert readings > 10_000


def test_events_have_the_contract_shape_and_catalog_codes(history: list[Message]) -> None:
    events = [message for message in history if channel_of(message) == "events"]
    assert {event.payload["type"] for event in events} >= {"fault", "fault_cleared", "maintenance_done"}
    for event in events:
        payload = event.payload
        assert set(payload) == {"seq", "ts", "type", "code", "detail"}
        assert payload["type"] in EVENT_TYPES and TS.match(payload["ts"]) and payload["detail"]
        if payload["type"].startswith("fault"):
            assert payload["code"] in MODEL_OF[device_of(event)].fault_codes


def test_status_is_a_retained_online_or_offline_word(history: list[Message]) -> None:
    statuses = [message for message in history if channel_of(message) == "status"]
    assert {status.payload for status in statuses} == {"online", "offline"}
    assert all(status.retained for status in statuses)
    assert not any(message.retained for message in history if channel_of(message) != "status")


def test_seq_rises_by_one_per_device_across_telemetry_and_events() -> None:
    fleet = make_fleet(12, seed=2, today=TODAY)
    end = START + dt.timedelta(days=3)
    history = generate_history(fleet, START, end, 900, faults="all:0.5", seed=2, offline_per_day=0)
    for device_id, seqs in seqs_by_device(history).items():
        assert seqs == list(range(1, len(seqs) + 1)), device_id


def test_seq_has_no_gaps_when_offline_spells_fit_in_the_buffer(history: list[Message]) -> None:
    for device_id, seqs in seqs_by_device(history).items():
        # Held-back events follow the buffered readings, so only the set of numbers is in order.
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), device_id


def test_messages_are_accepted_by_the_ingesters_parser(history: list[Message]) -> None:
    ingest_models = pytest.importorskip("ingest.models")
    for message in history[::7]:
        parsed = ingest_models.parse_message(message.topic, message.encode(), HISTORY_END)
        assert not parsed.rejected
        for reading in parsed.readings:
            ingest_models.check_against_model(reading, MODEL_OF[reading.device_id])


def test_format_ts_is_utc_with_milliseconds() -> None:
    moment = dt.datetime(2026, 11, 22, 16, 15, 30, 250_999, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert format_ts(moment) == "2026-11-22T08:15:30.250Z"
    assert format_ts(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"  # naive is UTC


def test_encode_gives_json_objects_and_plain_status_words() -> None:
    reading = Message("careloop/v1/devices/RH-000001/telemetry", {"seq": 1, "ts": "x", "metrics": {"a": 1.5}})
    assert json.loads(reading.encode()) == reading.payload
    topic, payload = reading  # unpacks as (topic, payload), as generate_history promises
    assert topic.endswith("/telemetry") and payload["seq"] == 1
    assert Message("careloop/v1/devices/RH-000001/status", "offline").encode() == b"offline"


def test_the_same_seed_gives_the_same_messages_and_another_seed_others() -> None:
    fleet = make_fleet(12, seed=3, today=TODAY)
    end = START + dt.timedelta(days=2)

    def run(seed: int) -> list[Message]:
        return list(generate_history(fleet, START, end, 900, faults="all:0.3", seed=seed))

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_stepping_a_subset_advances_only_those_devices() -> None:
    fleet = make_fleet(6, seed=1, today=TODAY)
    simulation = Simulation(fleet, seed=1, start=START)
    messages = simulation.step(START + dt.timedelta(minutes=15), [900.0, 300.0], [1, 4])
    assert {device_of(message) for message in messages} == {fleet[1].device_id, fleet[4].device_id}
    assert simulation.seq.tolist() == [0, 1, 0, 0, 1, 0]
