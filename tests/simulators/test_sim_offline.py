"""Offline spells: retained status, buffered readings sent back as one `readings` message."""

from __future__ import annotations

import datetime as dt

from simulators.simulation import Simulation
from simulators.wire import Message
from tests.simulators.simhelpers import START, channel_of, make_device, run_steps, seqs_by_device

STEP = dt.timedelta(minutes=15)


def _steps(simulation: Simulation, first: int, last: int) -> list[Message]:
    """Messages of steps first..last (step k ends at START + k * 15 min)."""
    messages: list[Message] = []
    for k in range(first, last + 1):
        messages.extend(simulation.step(START + k * STEP, STEP.total_seconds()))
    return messages


def _offline_device(buffer_limit: int = 500) -> tuple[Simulation, str, list[Message]]:
    """A hood online for 4 steps, then offline for 10 steps (2.5 hours)."""
    device = make_device("RH-900")
    simulation = Simulation([device], seed=3, start=START, offline_per_day=0, buffer_limit=buffer_limit)
    before = _steps(simulation, 1, 4)
    went = simulation.go_offline(device.device_id, START + 4 * STEP, 10 * STEP.total_seconds())
    return simulation, device.device_id, before + went


def test_a_device_going_offline_publishes_retained_offline_and_falls_silent() -> None:
    simulation, device_id, messages = _offline_device()
    assert messages[-1] == Message(f"careloop/v1/devices/{device_id}/status", "offline")
    assert messages[-1].retained
    assert _steps(simulation, 5, 13) == []
    assert simulation.offline_count == 1


def test_back_online_it_sends_online_then_its_buffered_readings_in_one_message() -> None:
    simulation, device_id, before = _offline_device()
    _steps(simulation, 5, 13)
    back = _steps(simulation, 14, 14)
    assert back[0] == Message(f"careloop/v1/devices/{device_id}/status", "online")
    batch = back[1].payload
    assert channel_of(back[1]) == "telemetry" and set(batch) == {"readings"}
    assert [reading["seq"] for reading in batch["readings"]] == list(range(5, 14))
    assert [reading["ts"] for reading in batch["readings"]][0] == "2026-03-02T01:15:00.000Z"
    assert back[-1].payload["seq"] == 14  # the live reading of this step follows
    assert seqs_by_device(before + back)[device_id] == list(range(1, 15))


def test_a_full_buffer_drops_the_oldest_readings_leaving_a_seq_gap() -> None:
    simulation, _, _ = _offline_device(buffer_limit=3)
    _steps(simulation, 5, 13)
    batch = _steps(simulation, 14, 14)[1].payload
    assert [reading["seq"] for reading in batch["readings"]] == [11, 12, 13]


def test_events_while_offline_are_held_and_sent_after_the_readings() -> None:
    simulation, device_id, _ = _offline_device()
    _steps(simulation, 5, 6)
    assert simulation.inject_fault(device_id, "E21", START + 6 * STEP) == []
    _steps(simulation, 7, 13)
    back = _steps(simulation, 14, 14)
    kinds = [(channel_of(m), m.payload if isinstance(m.payload, str) else sorted(m.payload)) for m in back]
    assert kinds[:3] == [
        ("status", "online"),
        ("telemetry", ["readings"]),
        ("events", sorted(back[2].payload)),
    ]
    assert back[2].payload["type"] == "fault" and back[2].payload["seq"] == 7
    assert back[2].payload["ts"] == "2026-03-02T01:30:00.000Z"


def test_random_offline_spells_come_and_go() -> None:
    devices = [make_device("WH-80", device_id=f"WH-{n:06d}") for n in range(20)]
    simulation = Simulation(devices, seed=6, start=START, offline_per_day=2.0)
    messages = run_steps(simulation, START, days=3)
    statuses = [m.payload for m in messages if channel_of(m) == "status"]
    assert statuses.count("offline") > 20 and statuses.count("online") > 20
    assert any(isinstance(m.payload, dict) and "readings" in m.payload for m in messages)
