"""Running the simulation: live over MQTT (`run_simulation`) or as fast history (`generate_history`).

Live: one paho-mqtt 2.x client (MQTT 5, QoS 1, `loop_start()`) publishes for the whole fleet.
Each device steps `rate` times per wall second, the devices' steps spread evenly over the period
so the broker sees a steady stream rather than bursts. With one client the broker cannot hold a
last will per device, so the simulator publishes each device's retained `online` / `offline`
status itself: when the device starts, drops offline and comes back, and `offline` for every
device when the simulation stops. A will names one topic, so a simulator that is killed leaves
its devices' last status as it was; offline rules still notice the silence. Given each device's
password (`device_passwords`), each device connects on its own instead, signed in as itself, as on
the shipped broker, where a device may publish only on its own topics; then each holds its last will.

Each message is kept until the broker acknowledges it with success, as a device must: a PUBACK
"No matching subscribers" (0x10: an MQTT 5 broker had no subscriber for it, e.g. a restarted
Mosquitto before the ingesters have subscribed again) means not delivered, and the message is sent
again, unchanged, after a back-off of 0.5 s doubling to 5 s (delivery.py). Re-sends are logged in a
summary line every few seconds, with the devices involved.

`time_scale` > 1 runs the physics faster than the clock (wear, fouling, usage, fault and offline
chances), while messages keep the wall-clock `ts` so the ingester accepts them.

`state_path` keeps each device's seq, counters, fouling and open fault across restarts (state.py):
without it a restarted simulator starts every seq at 1 again and the ingester drops those messages
as duplicates of the earlier run.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from careloop.mqtt import device_named_in, make_connection, status_topic, url_with_credentials
from devices.catalog import load_catalog
from simulators.clock import as_utc
from simulators.delivery import ConfirmedPublisher
from simulators.device import SimDevice
from simulators.faults import FaultRecord, GroundTruthWriter, parse_fault_spec
from simulators.offline import DEFAULT_OFFLINE_PER_DAY
from simulators.simulation import Simulation
from simulators.state import load_state, save_state
from simulators.wire import OFFLINE, Message

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 10.0
SAVE_STATE_EVERY_S = 60.0
MAX_INFLIGHT = 200
# Longest wait between looking for due devices: short enough to notice `stop` promptly.
MAX_IDLE_S = 0.2


@dataclass
class RunSummary:
    """What a live run did."""

    devices: int
    messages: int
    faults_started: int
    faults_cleared: int
    wall_seconds: float
    resent: int = 0  # messages sent again after a PUBACK "no matching subscribers" (0x10)
    undelivered: int = 0  # not acknowledged with success when the simulator stopped


class _Publisher:
    """A connected paho client that publishes simulator messages with QoS 1, each until delivered."""

    def __init__(self, mqtt_url: str, client_id: str, *, last_will: str | None = None) -> None:
        self._connection = make_connection(mqtt_url, client_id)
        self.client = self._connection.client
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client_id = client_id
        if last_will:
            # A device's own connection can hold its last will: the broker says `offline` for it if it vanishes.
            self.client.will_set(last_will, Message(last_will, OFFLINE).encode(), qos=1, retain=True)
        self._connected = threading.Event()
        self._refused: str | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.delivery = ConfirmedPublisher(self.client, name="simulator")

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            logger.error("simulator connection refused reason=%s", reason_code)
        else:
            logger.info(
                "simulator connected broker=%s:%s",
                self._connection.address.host,
                self._connection.address.port,
            )
        self._connected.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        # paho reconnects by itself; QoS 1 messages published meanwhile wait in its queue.
        logger.warning("simulator disconnected reason=%s", reason_code)

    def connect(self) -> None:
        address = self._connection.address
        try:
            self._connection.connect()
        except OSError as error:
            self.delivery.close(0)
            raise ConnectionError(
                f"cannot reach the MQTT broker at {address.host}:{address.port}: {error}"
            ) from None
        self.client.loop_start()
        if not self._connected.wait(CONNECT_TIMEOUT_S) or self._refused:
            self.client.loop_stop()
            self.delivery.close(0)
            why = self._refused or f"no answer within {CONNECT_TIMEOUT_S:.0f}s"
            raise ConnectionError(
                f"the MQTT broker at {address.host}:{address.port} refused the simulator ({self._client_id}): {why}"
            )

    def publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.delivery.publish(message.topic, message.encode(), retain=message.retained)

    def close(self) -> tuple[int, int]:
        """Wait (bounded) until the broker acknowledged what was published with success, then disconnect.

        Returns (messages re-sent after 'no matching subscribers', messages not delivered).
        """
        stats = self.delivery.close(DRAIN_TIMEOUT_S)
        undelivered = stats.outstanding + stats.given_up
        if stats.outstanding:
            logger.warning(
                "simulator stopped with %d messages the broker had not acknowledged within %.0fs",
                stats.outstanding, DRAIN_TIMEOUT_S,
            )  # fmt: skip
        self.client.disconnect()
        self.client.loop_stop()
        return stats.resent, undelivered


class _DevicePublishers:
    """One connection per device, signed in as the device (user name and client id: its id; its own password), as
    an appliance does on a broker that checks identity: each may publish only on its own topics, and holds its last
    will. Two threads per device (paho's and the re-sender's): meant for fleets of hundreds."""

    def __init__(self, mqtt_url: str, passwords: Mapping[str, str]) -> None:
        self._publishers = {
            device_id: _Publisher(url_with_credentials(mqtt_url, device_id, password), device_id,
                                  last_will=status_topic(device_id))
            for device_id, password in passwords.items()
        }

    def connect(self) -> None:
        connected: list[_Publisher] = []
        try:
            for publisher in self._publishers.values():
                publisher.connect()
                connected.append(publisher)
        except ConnectionError:
            for publisher in connected:
                publisher.close()
            raise
        logger.info("simulator connected devices=%d each with its own credentials", len(connected))

    def publish(self, messages: Sequence[Message]) -> None:
        by_device: dict[str, list[Message]] = {}
        for message in messages:
            by_device.setdefault(device_named_in(message.topic) or "", []).append(message)
        for device_id, own in by_device.items():
            self._publishers[device_id].publish(own)

    def close(self) -> tuple[int, int]:
        resent = undelivered = 0
        for publisher in self._publishers.values():
            more_resent, more_undelivered = publisher.close()
            resent, undelivered = resent + more_resent, undelivered + more_undelivered
        return resent, undelivered


def _log_fault_records(records: Sequence[FaultRecord]) -> None:
    for record in records:
        if record.cleared_at is None:
            logger.info(
                "fault injected device=%s model=%s code=%s at=%s",
                record.device_id, record.model, record.fault_code, record.started_at,
            )  # fmt: skip
        else:
            logger.info(
                "fault cleared device=%s code=%s at=%s",
                record.device_id,
                record.fault_code,
                record.cleared_at,
            )


def _log_status_changes(messages: Sequence[Message]) -> None:
    for message in messages:
        if message.retained and message.payload == OFFLINE:
            logger.info("device offline device=%s", message.topic.split("/")[3])
        elif isinstance(message.payload, dict) and "readings" in message.payload:
            logger.info(
                "device back online device=%s buffered_readings=%d",
                message.topic.split("/")[3], len(message.payload["readings"]),
            )  # fmt: skip


def _log_progress(simulation: Simulation, summary: RunSummary) -> None:
    logger.info(
        "simulation progress devices=%d messages=%d open_faults=%d offline=%d",
        summary.devices, summary.messages, len(simulation.open_faults()), simulation.offline_count,
    )  # fmt: skip


def _start_faults(
    simulation: Simulation, devices: Sequence[SimDevice], count: int, seed: int, now: dt.datetime
) -> list[Message]:
    """Faults started at once on `count` devices without one; their `fault` events."""
    catalog = load_catalog()
    rng = np.random.default_rng(seed + int(now.timestamp()))
    candidates = [
        device for device in devices
        if catalog[device.model].fault_codes and simulation.open_fault_code(device.device_id) is None
    ]
    messages: list[Message] = []
    for index in rng.permutation(len(candidates))[:count]:
        device = candidates[int(index)]
        code = str(rng.choice(sorted(catalog[device.model].fault_codes)))
        messages += simulation.inject_fault(device.device_id, code, now)
        logger.info("fault %s started on %s at once", code, device.device_id)
    return messages


def run_simulation(
    mqtt_url: str,
    devices: Sequence[SimDevice],
    *,
    rate: float = 0.2,
    time_scale: float = 1.0,
    faults: str | None = None,
    seed: int = 0,
    ground_truth_path: Path | None = None,
    stop: threading.Event | None = None,
    duration: float | None = None,
    progress: bool = False,
    state_path: Path | None = None,
    offline_per_day: float = DEFAULT_OFFLINE_PER_DAY,
    client_id: str | None = None,
    initial_faults: int = 0,
    device_passwords: Mapping[str, str] | None = None,
) -> RunSummary:
    """Publish the fleet's messages over MQTT until `stop` is set or `duration` wall seconds pass.

    `initial_faults` devices (chosen by the seed, among those without one) get a fault of their model at once,
    so a demo shows the whole path from fault to service order within a minute.

    `device_passwords` (device id -> the password issued for it): each device connects on its own with its own
    credentials, as on a broker that checks identity; without, one client publishes for the whole fleet with
    the account of `mqtt_url` (a service account, or an anonymous test broker)."""
    if rate <= 0 or time_scale <= 0:
        raise ValueError(f"rate and time_scale must be positive (rate={rate}, time_scale={time_scale})")
    if not devices:
        raise ValueError("the simulation needs at least one device")
    if device_passwords is not None:
        missing = sorted({device.device_id for device in devices} - device_passwords.keys())
        if missing:
            raise ValueError(f"no credentials for {len(missing)} devices: {', '.join(missing[:5])}")
    fault_spec = parse_fault_spec(faults)  # a bad spec fails here, before connecting
    stop = stop or threading.Event()
    wall_start = time.monotonic()
    clock_start = dt.datetime.now(dt.UTC)
    simulation = Simulation(
        devices, seed=seed, start=clock_start, faults=fault_spec, offline_per_day=offline_per_day
    )
    load_state(simulation, state_path)
    publisher: _Publisher | _DevicePublishers
    if device_passwords is not None:
        publisher = _DevicePublishers(
            mqtt_url, {device.device_id: device_passwords[device.device_id] for device in devices}
        )
    else:
        publisher = _Publisher(mqtt_url, client_id or f"careloop-simulator-{os.getpid()}")
    publisher.connect()
    logger.info(
        "simulation started devices=%d rate=%s time_scale=%s faults=%r",
        len(devices), rate, time_scale, faults or "",
    )  # fmt: skip

    period = 1.0 / rate
    # Stagger the devices over one period so the broker gets a steady stream, not bursts.
    next_due = wall_start + np.random.default_rng(seed).uniform(0, period, len(devices))
    last_step = np.full(len(devices), wall_start)
    summary = RunSummary(
        devices=len(devices), messages=0, faults_started=0, faults_cleared=0, wall_seconds=0.0
    )
    publisher.publish(_start_faults(simulation, devices, initial_faults, seed, clock_start))
    next_progress = wall_start + PROGRESS_EVERY_S
    next_save = wall_start + SAVE_STATE_EVERY_S
    truth = GroundTruthWriter(ground_truth_path) if ground_truth_path else nullcontext()
    try:
        with truth as writer:
            while not stop.is_set():
                now = time.monotonic()
                if duration is not None and now - wall_start >= duration:
                    break
                due = np.nonzero(next_due <= now)[0]
                if due.size:
                    stamp = dt.datetime.now(dt.UTC)
                    simulated_now = clock_start + dt.timedelta(seconds=(now - wall_start) * time_scale)
                    messages = simulation.step(
                        simulated_now, (now - last_step[due]) * time_scale, due, stamp=stamp
                    )
                    last_step[due] = now
                    # Catch up by whole periods but never schedule into the past: a slow publisher
                    # then steps less often instead of spinning.
                    next_due[due] = np.maximum(next_due[due] + period, now)
                    publisher.publish(messages)
                    summary.messages += len(messages)
                    _log_status_changes(messages)
                    records = simulation.take_fault_transitions()
                    summary.faults_started += sum(record.cleared_at is None for record in records)
                    summary.faults_cleared += sum(record.cleared_at is not None for record in records)
                    _log_fault_records(records)
                    if writer is not None:
                        writer.write([*records, *simulation.take_failure_transitions()])
                if progress and now >= next_progress:
                    next_progress = now + PROGRESS_EVERY_S
                    _log_progress(simulation, summary)
                if now >= next_save:
                    next_save = now + SAVE_STATE_EVERY_S
                    save_state(simulation, state_path)
                stop.wait(min(MAX_IDLE_S, max(0.0, float(next_due.min()) - time.monotonic())))
    finally:
        # Every device goes quiet with the simulator: say so, as each device's last will would.
        publisher.publish([Message(topic, OFFLINE) for topic in simulation.status_topics])
        summary.resent, summary.undelivered = publisher.close()
        save_state(simulation, state_path)
        summary.wall_seconds = time.monotonic() - wall_start
        logger.info(
            "simulation stopped messages=%d faults_started=%d faults_cleared=%d resent=%d undelivered=%d",
            summary.messages, summary.faults_started, summary.faults_cleared, summary.resent, summary.undelivered,
        )  # fmt: skip
    return summary


def generate_history(
    devices: Sequence[SimDevice],
    start: dt.datetime,
    end: dt.datetime,
    step_seconds: float,
    faults: str | None = None,
    seed: int = 0,
    *,
    ground_truth_path: Path | None = None,
    offline_per_day: float = DEFAULT_OFFLINE_PER_DAY,
) -> Iterator[Message]:
    """Messages of the whole fleet stepped every step_seconds from start until before end, no MQTT.

    Each `Message` unpacks as `(topic, payload)`. Ground truth (faults, gradual failures) goes to ground_truth_path.
    """
    if step_seconds <= 0:
        raise ValueError(f"step_seconds must be positive, not {step_seconds}")
    start, end = as_utc(start), as_utc(end)
    simulation = Simulation(devices, seed=seed, start=start, faults=faults, offline_per_day=offline_per_day)
    step = dt.timedelta(seconds=step_seconds)
    truth = GroundTruthWriter(ground_truth_path) if ground_truth_path else nullcontext()
    with truth as writer:
        moment = start
        while moment < end:
            yield from simulation.iter_step(moment, step_seconds)
            records = [*simulation.take_fault_transitions(), *simulation.take_failure_transitions()]
            if writer is not None:
                writer.write(records)
            moment += step
