"""The simulator's side of the MQTT contract (CONTRACT.md): topics, payloads, `ts` and retained status.

Per device, by its position in the fleet:

- telemetry: one reading `{"seq", "ts", "metrics"}`, or `{"readings": [...]}` from a device that
  buffered while offline (offline.py);
- events: `{"seq", "ts", "type", "code", "detail"}`;
- status: the retained word `online` or `offline`, standing in for the device's last will.

`ts` is ISO 8601 in UTC with milliseconds. Every telemetry reading and event takes its device's next
`seq` (simulation.py counts them); status messages carry none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from careloop.mqtt import events_topic, status_topic, telemetry_topic
from simulators.clock import as_utc

ONLINE = "online"
OFFLINE = "offline"


def format_ts(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, e.g. 2026-11-22T08:15:30.250Z."""
    moment = as_utc(moment)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


class Message(NamedTuple):
    """One MQTT message a device would send: a topic and a JSON object (or a status word)."""

    topic: str
    payload: dict[str, Any] | str

    @property
    def retained(self) -> bool:
        """Only the status is retained: it stands in for the device's last will."""
        return self.topic.endswith("/status")

    def encode(self) -> bytes:
        if isinstance(self.payload, str):
            return self.payload.encode()
        return json.dumps(self.payload, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DeviceEvent:
    """Something a device reports on its events topic, before it is given its seq and ts."""

    position: int  # the device's place in the fleet
    type: str  # fault, fault_cleared, maintenance_done, ...
    code: str | None
    detail: str


@dataclass(frozen=True)
class Topics:
    """The three topics of each device of a fleet, by the device's position in it."""

    telemetry: list[str]
    events: list[str]
    status: list[str]

    @classmethod
    def of(cls, device_ids: Sequence[str]) -> Topics:
        return cls(
            telemetry=[telemetry_topic(device_id) for device_id in device_ids],
            events=[events_topic(device_id) for device_id in device_ids],
            status=[status_topic(device_id) for device_id in device_ids],
        )

    def status_message(self, position: int, word: str) -> Message:
        return Message(self.status[position], word)

    def event_message(self, event: DeviceEvent, seq: int, ts: str) -> Message:
        payload = {"seq": seq, "ts": ts, "type": event.type, "code": event.code, "detail": event.detail}
        return Message(self.events[event.position], payload)

    def readings_message(self, position: int, readings: Iterable[dict[str, Any]]) -> Message:
        """The one telemetry message that carries what a device buffered while offline."""
        return Message(self.telemetry[position], {"readings": list(readings)})

    def telemetry_messages(
        self,
        positions: list[int],
        seqs: list[int],
        rows: list[list[float]],
        names: tuple[str, ...],
        ts: str,
    ) -> Iterator[Message]:
        """One reading per device, its values named by `names`: the hot path of generate_history."""
        topics = self.telemetry
        new_message = tuple.__new__  # NamedTuple's own __new__ is a Python call: too slow for millions
        for position, seq, values in zip(positions, seqs, rows, strict=True):
            # strict=False: each row was cut to the columns of `names` by construction, and the
            # check would cost a tenth of the whole loop.
            reading = {"seq": seq, "ts": ts, "metrics": dict(zip(names, values, strict=False))}
            yield new_message(Message, (topics[position], reading))
