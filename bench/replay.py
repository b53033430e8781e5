"""A simulated fleet replayed through the real ingest and engine code on a simulated clock, and its ground truth.

What `careloop bench detection` and `careloop bench proactive` share: each step the simulation's messages are
ingested as one batch (`ingest.service.ingest_batch`, stamped as received at the step's moment), the engine
evaluates the devices the batch changed, and runs its scheduled jobs on the simulated clock (sweep, then trend
fits and window, then baselines, each at its period of simulated time). An engine given the domains' jobs carries
out a detection's actions right after the evaluation that opened it, as the live engine does.

The next step's batch is ingested on a second connection while the engine evaluates this one, and committed only
after it: the engine (READ COMMITTED) sees exactly what was committed up to its own step, as if one came after
the other, while the two cores share the work.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from careloop.db import Database
from careloop.jobs import ScheduledJob
from ingest.models import MAX_AGE
from ingest.service import BatchOutcome, InboundMessage, ingest_batch
from rules.conditions import walk_conditions
from rules.engine import Engine
from simulators.faults import FaultRecord
from simulators.simulation import Simulation
from simulators.wire import Message


def fault_codes_of(condition) -> set[str]:
    """The fault codes a rule's condition watches (empty for rules without a `fault` condition)."""
    return {code for leaf in walk_conditions(condition) if leaf.kind.name == "fault" for code in leaf.spec.codes or []}


def instant(text: str | None) -> dt.datetime | None:
    """A ground truth `ts` (ISO 8601 with a Z) as a datetime; None stays None."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@dataclass
class Fault:
    """An injected fault of the ground truth, its start and clear lines merged."""

    device_id: str
    kind: str
    code: str
    started_at: dt.datetime
    cleared_at: dt.datetime | None


def collect_faults(records: Iterable[FaultRecord], faults: dict[tuple[str, str, str], Fault]) -> None:
    """Merge ground truth records into `faults` (keyed by device, code and start), a clear line completing a start."""
    for record in records:
        key = (record.device_id, record.fault_code, record.started_at)
        started_at = instant(record.started_at)
        assert started_at is not None
        fault = faults.setdefault(key, Fault(record.device_id, record.kind, record.fault_code, started_at, None))
        fault.cleared_at = instant(record.cleared_at) or fault.cleared_at


class SimulatedClock:
    """The engine's clock during a replay: the moment of the step being replayed."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass(frozen=True)
class ReplaySchedule:
    """Simulated seconds between the engine's scheduled jobs (the trend fits are refitted before each window)."""

    sweep_s: int = 900
    window_s: int = 3600
    baselines_s: int = 86400


def inbound(messages: Iterable[Message], moment: dt.datetime) -> list[InboundMessage]:
    """The simulation's messages as the ingester receives them, at `moment`."""
    return [InboundMessage(message.topic, message.encode(), moment) for message in messages]


class Replay:
    """A simulation stepped through ingest and an engine whose clock is the simulated one."""

    def __init__(
        self,
        database: Database,
        simulation: Simulation,
        *,
        start: dt.datetime,
        jobs: Sequence[ScheduledJob] = (),
        schedule: ReplaySchedule = ReplaySchedule(),
    ) -> None:
        self.database = database
        self.simulation = simulation
        self.clock = SimulatedClock(start)
        self.engine = Engine(database, clock=self.clock, jobs=jobs)
        self.schedule = schedule
        self._ticks = 0  # engine steps so far, over every run(): the schedule goes on across them

    def ingest(self, messages: Iterable[Message], moment: dt.datetime) -> BatchOutcome:
        """One batch, received at `moment`, in one transaction."""
        with self.database.transaction() as conn:
            return ingest_batch(conn, inbound(messages, moment), now=moment)

    def ingest_past(self, messages: Sequence[Message]) -> int:
        """Messages stamped in the past, oldest first, in batches each received within ingest's accepted age of
        its messages' `ts` (at the newest one's); answers how many batches."""
        pending = list(messages)
        limit = MAX_AGE - dt.timedelta(days=1)
        batches = 0
        while pending:
            first = _ts_of(pending[0])
            cut = next((i for i, message in enumerate(pending) if _ts_of(message) - first > limit), len(pending))
            batch, pending = pending[:cut], pending[cut:]
            self.ingest(batch, _ts_of(batch[-1]))
            batches += 1
        return batches

    def run(
        self,
        start: dt.datetime,
        steps: int,
        step_s: int,
        *,
        engine: bool = True,
        desc: str = "replaying history",
        after_step: Callable[[dt.datetime], None] | None = None,
    ) -> dt.datetime:
        """`steps` steps of `step_s` seconds from `start` (without the engine: history only); answers the end."""
        sweep_every = max(1, self.schedule.sweep_s // step_s)
        window_every = max(1, self.schedule.window_s // step_s)
        baselines_every = max(1, self.schedule.baselines_s // step_s)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-ingest") as writer:
            pending = self._ingest_held(writer, start, step_s) if steps else None
            try:
                for step in tqdm(range(steps), desc=desc, unit="step"):
                    moment = start + dt.timedelta(seconds=step * step_s)
                    assert pending is not None
                    outcome = pending.commit()
                    pending = None
                    if step + 1 < steps:
                        pending = self._ingest_held(writer, moment + dt.timedelta(seconds=step_s), step_s)
                    self.clock.now = moment
                    if engine:
                        self.engine.evaluate_batch(sorted(outcome.devices | outcome.status_devices))
                        tick = self._ticks
                        self._ticks += 1
                        if tick % baselines_every == baselines_every - 1:
                            self.engine.learn_baselines()
                        if tick % window_every == window_every - 1:
                            self.engine.learn_trends()
                            self.engine.window()
                        elif tick % sweep_every == sweep_every - 1:
                            self.engine.sweep()
                    if after_step is not None:
                        after_step(moment)
            finally:
                if pending is not None:
                    pending.abandon()
        return start + dt.timedelta(seconds=steps * step_s)

    def _ingest_held(self, writer: ThreadPoolExecutor, moment: dt.datetime, step_s: int) -> _HeldBatch:
        """Step the simulation to `moment` and ingest its messages on the writer, uncommitted until asked."""
        held = _HeldBatch()
        held.future = writer.submit(
            held.write, self.database, inbound(self.simulation.iter_step(moment, step_s), moment), moment
        )
        return held


class _HeldBatch:
    """One batch ingested in a transaction that commits only when told to (or rolls back when abandoned)."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._abandoned = False
        self.future: Future[BatchOutcome] | None = None

    def write(self, database: Database, messages: list[InboundMessage], moment: dt.datetime) -> BatchOutcome:
        with database.transaction() as conn:
            outcome = ingest_batch(conn, messages, now=moment)
            self._go.wait()
            if self._abandoned:
                raise RuntimeError("the replay stopped before this batch was due: rolled back")
        return outcome

    def commit(self) -> BatchOutcome:
        self._go.set()
        assert self.future is not None
        return self.future.result()

    def abandon(self) -> None:
        self._abandoned = True
        self._go.set()


def _ts_of(message: Message) -> dt.datetime:
    payload = message.payload
    assert isinstance(payload, dict), "status messages carry no ts"
    moment = instant(payload["ts"])
    assert moment is not None
    return moment
