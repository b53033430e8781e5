"""Running the simulation: fast history, restart state, and the live MQTT publisher."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from careloop.mqtt import make_connection
from devices.catalog import get_model
from simulators.faults import load_ground_truth
from simulators.fleet import make_fleet
from simulators.run import generate_history, run_simulation
from simulators.simulation import Simulation
from tests.simulators.simhelpers import START, TODAY, channel_of, run_steps, seqs_by_device


def test_history_steps_from_start_until_before_end() -> None:
    fleet = make_fleet(3, seed=1, today=TODAY)
    messages = list(generate_history(fleet, START, START + dt.timedelta(hours=2), 900, offline_per_day=0))
    stamps = sorted({m.payload["ts"] for m in messages if channel_of(m) == "telemetry"})
    assert len(stamps) == 8
    assert stamps[0] == "2026-03-02T00:00:00.000Z" and stamps[-1] == "2026-03-02T01:45:00.000Z"


def test_history_refuses_a_step_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="step_seconds must be positive"):
        next(generate_history(make_fleet(1, seed=1), START, START + dt.timedelta(hours=1), 0))


def test_a_restored_simulation_continues_seq_counters_and_open_faults() -> None:
    fleet = make_fleet(5, seed=2, today=TODAY)
    first = Simulation(fleet, seed=2, start=START, offline_per_day=0)
    run_steps(first, START, days=1)
    first.inject_fault(
        fleet[0].device_id, next(iter(get_model(fleet[0].model).fault_codes)), START + dt.timedelta(days=1)
    )
    saved = json.loads(json.dumps(first.export_state()))

    later = START + dt.timedelta(days=1, minutes=15)
    second = Simulation(fleet, seed=99, start=later, offline_per_day=0)
    assert second.restore_state(saved) == len(fleet)
    messages = second.step(later, 900)
    for device in fleet:
        seqs = seqs_by_device(messages)[device.device_id]
        assert seqs[0] == saved[device.device_id]["seq"] + 1
    assert second.run_hours.tolist() >= [entry["run_hours"] for entry in saved.values()]
    assert second.open_fault_code(fleet[0].device_id) == first.open_fault_code(fleet[0].device_id)


def test_run_simulation_refuses_a_bad_fault_spec_before_connecting() -> None:
    with pytest.raises(ValueError, match="unknown fault code"):
        run_simulation("mqtt://127.0.0.1:1", make_fleet(2, seed=1), faults="ZZ9:0.1", duration=1)


def test_run_simulation_says_which_broker_it_cannot_reach() -> None:
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        run_simulation("mqtt://127.0.0.1:1", make_fleet(2, seed=1), duration=1)


@pytest.mark.integration
def test_run_simulation_publishes_the_fleet_over_mqtt(mqtt_url: str, tmp_path: Path) -> None:
    fleet = make_fleet(8, seed=3)
    prefix = f"SIM{uuid.uuid4().hex[:6]}"  # a fresh namespace, so retained status of other runs is not ours
    fleet = [dataclasses.replace(device, device_id=f"{prefix}-{n}") for n, device in enumerate(fleet)]
    received: list[tuple[str, bytes, bool]] = []
    subscriber = make_connection(mqtt_url, f"test-sim-sub-{prefix}")
    subscribed = threading.Event()
    subscriber.client.on_connect = lambda client, *_: client.subscribe("careloop/v1/devices/#", qos=1)
    subscriber.client.on_subscribe = lambda *_: subscribed.set()
    subscriber.client.on_message = lambda _c, _u, msg: received.append((msg.topic, msg.payload, msg.retain))
    subscriber.connect()
    subscriber.client.loop_start()
    try:
        assert subscribed.wait(10)
        stop = threading.Event()
        truth = tmp_path / "truth.jsonl"
        state = tmp_path / "state.json"
        timer = threading.Timer(4.0, stop.set)
        timer.start()
        started = time.monotonic()
        summary = run_simulation(
            mqtt_url, fleet, rate=2.0, time_scale=600.0, faults="all:1", seed=3,
            ground_truth_path=truth, stop=stop, state_path=state,
        )  # fmt: skip
        assert time.monotonic() - started < 10
        time.sleep(0.5)
    finally:
        subscriber.client.disconnect()
        subscriber.client.loop_stop()
    ours = [(topic, payload) for topic, payload, _ in received if f"/{prefix}-" in topic]
    telemetry = [json.loads(payload) for topic, payload in ours if topic.endswith("/telemetry")]
    assert summary.messages >= len(telemetry) > len(fleet) * 4
    assert all({"seq", "ts", "metrics"} <= set(reading) or "readings" in reading for reading in telemetry)
    statuses = [payload for topic, payload in ours if topic.endswith("/status")]
    assert statuses.count(b"online") >= len(fleet) and statuses[-len(fleet) :] == [b"offline"] * len(fleet)
    assert summary.faults_started > 0 and load_ground_truth(truth)
    # A subscriber got everything: each message acknowledged with success at once, none sent again.
    assert (summary.resent, summary.undelivered) == (0, 0)
    assert set(json.loads(state.read_text())) == {device.device_id for device in fleet}
