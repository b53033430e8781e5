"""The fleet simulation: one step of many simulated devices, and the MQTT messages it produces.

`Simulation` advances any subset of a fleet with `step(now, dt_seconds, indices)` and returns the
messages those devices would send. It is pure and deterministic for a given seed, device list and
sequence of calls: no I/O, no clock (run.py publishes). It composes the parts, each in its module:
the appliances' physical state (device.py), offline spells (offline.py), injected faults
(faults.py) and the payloads (wire.py); state.py saves it between runs.

In one step, for each device stepped, in this order:

1. its first step ever publishes retained `online` on its status topic;
2. if its offline spell is over: `online`, its buffered readings, its held-back events;
3. it may go offline: retained `offline`;
4. physics: run hours, fouling and wear grow (a gradual failure is recorded where one crosses the
   level its owner notices, failures.py); the owner may clean (`maintenance_done`); an injected
   fault past its repair time clears (`fault_cleared`); a new fault may start (`fault`);
5. one telemetry reading, or into the buffer while offline.

`past_cleanings()`, called before the first step, gives the messages of each owner's last cleaning
before the start, so that a history ingested from them counts usage from where the state says.

Every telemetry reading and event takes its device's next `seq`; status messages carry none.
`now` drives the physics; `stamp` (default `now`) is what goes into `ts`, so a run faster than real
time can age devices quickly while stamping wall-clock times the ingester accepts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from simulators.clock import as_utc
from simulators.device import ApplianceStates, Measurement, MetricSet, SimDevice
from simulators.failures import FailureRecord, GradualFailures
from simulators.faults import MEDIAN_REPAIR_S, FaultRecord, FaultSpec, InjectedFaults, parse_fault_spec
from simulators.offline import DEFAULT_BUFFER_LIMIT, DEFAULT_OFFLINE_PER_DAY, OfflineSpells
from simulators.state import SavedDevice
from simulators.wire import DeviceEvent, Message, Topics, format_ts


class Simulation:
    """A simulated fleet, advanced step by step (see the module docstring); positions index `devices`."""

    def __init__(
        self,
        devices: Sequence[SimDevice],
        *,
        seed: int,
        start: dt.datetime,
        faults: FaultSpec | str | None = None,
        offline_per_day: float = DEFAULT_OFFLINE_PER_DAY,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
    ) -> None:
        if not devices:
            raise ValueError("a simulation needs at least one device")
        self.devices = list(devices)
        self.topics = Topics.of([device.device_id for device in self.devices])
        rng = np.random.default_rng(seed)
        self.offline_spells = OfflineSpells(
            self.topics, per_day=offline_per_day, buffer_limit=buffer_limit, rng=rng
        )
        self._index = {device.device_id: position for position, device in enumerate(self.devices)}
        if len(self._index) != len(self.devices):
            raise ValueError("device ids must be unique")
        self.fault_spec = faults if isinstance(faults, FaultSpec) else parse_fault_spec(faults)
        self.appliances = ApplianceStates(self.devices, today=as_utc(start).date(), rng=rng)
        self.faults = InjectedFaults(
            [device.device_id for device in self.devices],
            self.appliances.models,
            self.appliances.group_of,
            self.fault_spec,
            rng,
        )
        self.seq = np.zeros(len(self.devices), dtype=np.int64)  # the last seq each device used
        self.start = as_utc(start)
        since: list[str | None] = [None] * len(self.devices)
        for position, moment, _run_hours in self.appliances.last_cleanings(self.start):
            since[position] = format_ts(moment)
        everyone = np.arange(len(self.devices))
        self.failures = GradualFailures(
            [device.device_id for device in self.devices],
            self.appliances.models,
            self.appliances.group_of,
            self.appliances.worsening(everyone),
            since,
        )

    # --- public ---------------------------------------------------------------------------------

    def index_of(self, device_id: str) -> int:
        return self._index[device_id]

    def step(
        self,
        now: dt.datetime,
        dt_seconds: float | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        stamp: dt.datetime | None = None,
    ) -> list[Message]:
        """Advance the devices at `indices` (all by default) by dt_seconds up to `now`; their messages."""
        return list(self.iter_step(now, dt_seconds, indices, stamp=stamp))

    def iter_step(
        self,
        now: dt.datetime,
        dt_seconds: float | np.ndarray,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        stamp: dt.datetime | None = None,
    ) -> Iterator[Message]:
        """Like step, but yields the readings as they are built; consume it fully before the next step.

        Messages that die young cost the garbage collector far less than a list of 10,000 of them.
        """
        idx = np.arange(len(self.devices)) if indices is None else np.asarray(indices, dtype=np.intp)
        if idx.size == 0:
            return
        elapsed = np.broadcast_to(np.asarray(dt_seconds, dtype=float), idx.shape)
        if not np.all(np.isfinite(elapsed)) or np.any(elapsed < 0):
            raise ValueError("dt_seconds must be finite and not negative")
        now = as_utc(now)
        t = now.timestamp()
        ts = format_ts(stamp if stamp is not None else now)
        out: list[Message] = []
        self.offline_spells.announce_first_steps(idx, out)
        self.offline_spells.end_due_spells(idx, t, out)
        self.offline_spells.start_random_spells(idx, t, elapsed, out)
        before = self.appliances.worsening(idx)
        running = self.appliances.advance(idx, now, elapsed, usable=~self.faults.blocks_use[idx])
        self.failures.observe(idx, before, self.appliances.worsening(idx), ts)
        cleanings = self.appliances.clean(idx, elapsed)
        self.failures.cleaned([event.position for event in cleanings], ts)
        self._send_events(cleanings, ts, out)
        self._send_events(self.faults.clear_due(idx, t, ts), ts, out)
        self._send_events(self.faults.start_random(idx, t, elapsed, ts), ts, out)
        yield from out
        yield from itertools.chain.from_iterable(self._report_telemetry(idx, running, now, ts))

    def go_offline(self, device_id: str, now: dt.datetime, duration_s: float) -> list[Message]:
        """Take a device offline for duration_s from `now`; its retained `offline` status."""
        out: list[Message] = []
        self.offline_spells.take_offline(self._index[device_id], as_utc(now).timestamp() + duration_s, out)
        return out

    def inject_fault(
        self,
        device_id: str,
        code: str,
        now: dt.datetime,
        repair_s: float = MEDIAN_REPAIR_S,
        *,
        stamp: dt.datetime | None = None,
    ) -> list[Message]:
        """Start fault `code` on a device now (ground truth recorded); its `fault` event."""
        ts = format_ts(stamp or now)
        event = self.faults.inject(self._index[device_id], code, as_utc(now).timestamp() + repair_s, ts)
        out: list[Message] = []
        self._send_events([event], ts, out)
        return out

    def take_fault_transitions(self) -> list[FaultRecord]:
        """Ground-truth records of faults started or cleared since the last call."""
        return self.faults.take_transitions()

    def open_faults(self) -> list[FaultRecord]:
        """Ground-truth records of the faults open now."""
        return self.faults.open_records()

    def take_failure_transitions(self) -> list[FailureRecord]:
        """Ground-truth records of gradual failures that happened or were cleaned since the last call."""
        return self.failures.take_transitions()

    def open_failures(self) -> list[FailureRecord]:
        """Ground-truth records of the devices past their gradual failure's level now."""
        return self.failures.open_records()

    def past_cleanings(self) -> list[Message]:
        """Each owner's last cleaning before the start, as the device reported it then: a `run_hours` reading
        and a `maintenance_done` event stamped at that moment (weeks or months ago), oldest first.

        Call it before the first step: the messages take each device's first seqs."""
        if self.seq.any():
            raise RuntimeError("past cleanings come before the first step: their seqs are the devices' first")
        cleanings = sorted(self.appliances.last_cleanings(self.start), key=lambda cleaning: cleaning[1])
        out: list[Message] = []
        for position, moment, run_hours in cleanings:
            ts = format_ts(moment)
            detail = self.appliances.groups[self.appliances.group_of[position]].physics.maintenance_detail
            out.extend(
                self.topics.telemetry_messages([position], [int(self.seq[position]) + 1], [[round(run_hours, 2)]],
                                               ("run_hours",), ts)
            )
            event = DeviceEvent(position, "maintenance_done", None, detail)
            out.append(self.topics.event_message(event, int(self.seq[position]) + 2, ts))
            self.seq[position] += 2
        return out

    def open_fault_code(self, device_id: str) -> str | None:
        return self.faults.open_code(self._index[device_id])

    @property
    def status_topics(self) -> list[str]:
        return list(self.topics.status)

    @property
    def offline_count(self) -> int:
        return self.offline_spells.count

    # The appliances' state that tests read or steer directly.
    @property
    def run_hours(self) -> np.ndarray:
        return self.appliances.run_hours

    @property
    def fouling(self) -> np.ndarray:
        return self.appliances.fouling

    @property
    def diligence(self) -> np.ndarray:
        return self.appliances.diligence

    def export_state(self) -> dict[str, dict[str, Any]]:
        """Per device what a restart needs to continue (state.py); JSON-able."""
        seqs = self.seq.tolist()
        return {
            device.device_id: SavedDevice(
                hidden=hidden, seq=seqs[position], fault=self.faults.open_fault(position)
            ).to_json()
            for position, (device, hidden) in enumerate(
                zip(self.devices, self.appliances.hidden_states(), strict=True)
            )
        }

    def restore_state(self, state: dict[str, dict[str, Any]]) -> int:
        """Take back what export_state saved, for the devices known here; how many were restored."""
        restored = 0
        for device_id, entry in state.items():
            position = self._index.get(device_id)
            if position is None:
                continue
            saved = SavedDevice.from_json(entry)
            self.appliances.restore(position, saved.hidden)
            self.seq[position] = saved.seq
            if saved.fault is not None:
                self.faults.reopen(position, saved.fault)
            self.failures.restart(position, float(self.appliances.worsening(np.array([position]))[0]))
            restored += 1
        return restored

    # --- the parts of a step that produce messages --------------------------------------------

    def _send_events(self, events: Iterable[DeviceEvent], ts: str, out: list[Message]) -> None:
        """Give each event its device's next seq; it goes out now or waits while the device is offline."""
        for event in events:
            self.seq[event.position] += 1
            message = self.topics.event_message(event, int(self.seq[event.position]), ts)
            self.offline_spells.send_event(event.position, message, out)

    def _report_telemetry(
        self, idx: np.ndarray, running: np.ndarray, now: dt.datetime, ts: str
    ) -> Iterator[Iterator[Message]]:
        """Per model, iterators of its devices' readings (to be chained: one generator level less).

        Readings of offline devices go to their buffers instead.
        """
        day_of_year = now.timetuple().tm_yday
        groups = self.appliances.group_of[idx]
        for group_id in np.unique(groups).tolist():
            rows = np.nonzero(groups == group_id)[0]
            positions = idx[rows]
            shown = self.faults.shown_in_telemetry(group_id, positions)
            measurement = self.appliances.measure(group_id, positions, running[rows], day_of_year, shown)
            seqs = self.seq[positions] + 1
            self.seq[positions] = seqs
            offline = self.offline_spells.offline[positions]
            for metrics in measurement.metric_sets():
                held = np.nonzero(metrics.reporting & offline)[0]
                if held.size:
                    readings = self._telemetry(measurement, metrics, held, seqs, ts)
                    self.offline_spells.buffer(positions[held].tolist(), (message.payload for message in readings))
                yield self._telemetry(measurement, metrics, np.nonzero(metrics.reporting & ~offline)[0], seqs, ts)

    def _telemetry(
        self, measurement: Measurement, metrics: MetricSet, rows: np.ndarray, seqs: np.ndarray, ts: str
    ) -> Iterator[Message]:
        """The telemetry messages of these rows of the measurement, one reading each (seqs by row)."""
        return self.topics.telemetry_messages(
            measurement.positions[rows].tolist(),
            seqs[rows].tolist(),
            measurement.values[np.ix_(rows, metrics.columns)].tolist(),
            metrics.names,
            ts,
        )
