"""Offline spells: a device drops off the network now and then, keeps what it measures meanwhile,
and sends it all when it is back.

- A device's first step ever publishes retained `online` on its status topic.
- It may go offline (a seeded chance per day, `per_day`, or by hand): retained `offline`. A real
  device leaves that as its MQTT last will; the simulator shares one client for the whole fleet, so
  the broker cannot do it per device and the simulator publishes it explicitly.
- While offline its readings go to a buffer of at most `buffer_limit` readings (the oldest are
  dropped, which leaves a gap in `seq`) and its events are held back.
- When its spell is over: `online`, then one `{"readings": [...]}` telemetry message with the
  readings it buffered, then the events it held back.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np

from simulators.clock import DAY_S, HOUR_S, chance_within
from simulators.wire import OFFLINE, ONLINE, Message, Topics

DEFAULT_BUFFER_LIMIT = 500
DEFAULT_OFFLINE_PER_DAY = 0.02
MEDIAN_OFFLINE_S = 2 * HOUR_S


class OfflineSpells:
    """Each device's connection status, and what it keeps while offline (positions index the fleet)."""

    def __init__(self, topics: Topics, *, per_day: float, buffer_limit: int, rng: np.random.Generator) -> None:
        if buffer_limit < 1:
            raise ValueError(f"buffer_limit must be at least 1, not {buffer_limit}")
        if per_day < 0:
            raise ValueError(f"offline_per_day must not be negative, not {per_day}")
        size = len(topics.status)
        self.per_day = per_day
        self.buffer_limit = buffer_limit
        self.offline = np.zeros(size, dtype=bool)
        self._topics = topics
        self._rng = rng
        self._announced = np.zeros(size, dtype=bool)
        self._until = np.zeros(size)
        self._buffers: dict[int, deque[dict[str, Any]]] = {}
        self._held_events: dict[int, list[Message]] = {}

    @property
    def count(self) -> int:
        """How many devices are offline now."""
        return int(self.offline.sum())

    def announce_first_steps(self, idx: np.ndarray, out: list[Message]) -> None:
        new = idx[~self._announced[idx]]
        self._announced[new] = True
        out.extend(self._topics.status_message(position, ONLINE) for position in new.tolist())

    def end_due_spells(self, idx: np.ndarray, t: float, out: list[Message]) -> None:
        """Bring back the devices whose spell is over at t, each with what it kept."""
        back = idx[self.offline[idx] & (self._until[idx] <= t)]
        for position in back.tolist():
            self.offline[position] = False
            out.append(self._topics.status_message(position, ONLINE))
            buffered = self._buffers.pop(position)
            if buffered:
                out.append(self._topics.readings_message(position, buffered))
            out.extend(self._held_events.pop(position))

    def start_random_spells(self, idx: np.ndarray, t: float, elapsed: np.ndarray, out: list[Message]) -> None:
        chance = chance_within(self.per_day, elapsed)
        going = idx[(self._rng.random(idx.size) < chance) & ~self.offline[idx]]
        for position in going.tolist():
            duration = float(np.clip(self._rng.lognormal(math.log(MEDIAN_OFFLINE_S), 1.0), 300, 3 * DAY_S))
            self.take_offline(position, t + duration, out)

    def take_offline(self, position: int, until: float, out: list[Message]) -> None:
        """Offline until `until` (epoch seconds); a device already offline only has its spell moved."""
        self._until[position] = until
        if self.offline[position]:
            return
        self.offline[position] = True
        self._buffers[position] = deque(maxlen=self.buffer_limit)
        self._held_events[position] = []
        out.append(self._topics.status_message(position, OFFLINE))

    def send_event(self, position: int, message: Message, out: list[Message]) -> None:
        """The event goes out now, or waits in order while its device is offline."""
        if self.offline[position]:
            self._held_events[position].append(message)
        else:
            out.append(message)

    def buffer(self, positions: Iterable[int], readings: Iterable[dict[str, Any]]) -> None:
        """Keep the readings of offline devices, one per position, until they are back."""
        for position, reading in zip(positions, readings, strict=True):
            self._buffers[position].append(reading)
