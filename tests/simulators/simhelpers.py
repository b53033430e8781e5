"""Helpers for the simulator tests: single devices and sorting messages by device and channel."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from devices.catalog import get_model
from simulators.device import SimDevice
from simulators.simulation import Simulation
from simulators.wire import Message

START = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
TODAY = START.date()


def make_device(
    model: str, *, device_id: str | None = None, age_days: int = 0, offset: float = 0.0
) -> SimDevice:
    """One device of `model`, bought age_days before START, in a home at UTC+offset."""
    catalog_model = get_model(model)
    assert catalog_model is not None
    return SimDevice(
        device_id=device_id or f"{model.split('-')[0]}-000001",
        model=model,
        kind=catalog_model.kind,
        purchased_on=TODAY - dt.timedelta(days=age_days),
        region="east",
        owner_index=0,
        utc_offset_hours=offset,
    )


def device_of(message: Message) -> str:
    return message.topic.split("/")[3]


def channel_of(message: Message) -> str:
    return message.topic.split("/")[4]


def seqs_by_device(messages: Iterable[Message]) -> dict[str, list[int]]:
    """Every seq each device sent, in the order sent, readings of a `readings` message included."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        if isinstance(message.payload, str):
            continue
        if "readings" in message.payload:
            seqs[device_of(message)].extend(reading["seq"] for reading in message.payload["readings"])
        else:
            seqs[device_of(message)].append(message.payload["seq"])
    return dict(seqs)


def telemetry_of(messages: Iterable[Message], device_id: str) -> list[dict[str, Any]]:
    """The device's readings in seq order, buffered ones included."""
    readings = []
    for message in messages:
        if device_of(message) != device_id or channel_of(message) != "telemetry":
            continue
        readings.extend(message.payload.get("readings", [message.payload]))
    return sorted(readings, key=lambda reading: reading["seq"])


def run_steps(
    simulation: Simulation, start: dt.datetime, *, days: float, step_s: float = 900.0
) -> list[Message]:
    """Step every device of the simulation every step_s for `days` after start; all messages."""
    messages: list[Message] = []
    for step in range(1, int(days * 86_400 / step_s) + 1):
        messages.extend(simulation.step(start + dt.timedelta(seconds=step * step_s), step_s))
    return messages
