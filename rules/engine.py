"""`careloop engine`: rules evaluated per ingest batch and on a schedule, baselines learned on a schedule.

- Per batch: the ingester names the devices each committed batch changed (`pg_notify`, delivered
  only on commit). The engine listens and evaluates the event-driven rules (threshold, fault,
  offline, and combinations holding one) for just those devices.
- On the schedule (APScheduler, one instance of each job at a time, missed runs coalesced):
  `sweep` evaluates the event-driven rules over the whole fleet (silence has no batch; it also
  catches up on batches committed while the engine was down); `window` evaluates the other rules
  over the whole fleet (usage, elapsed, age, count, trend, anomaly, birthday); `baselines` relearns
  the per-model baselines the anomaly rules compare with; `trends` refits, per device, the lines the
  trend rules project (the window job evaluates each stored line at its own now).

Every job is one transaction through `rules.evaluation.evaluate_rules`, which is idempotent: a
restart, a second engine or a replayed batch opens nothing twice.

Partitioned (`careloop engine --partition I/N`), an engine does all of the above for the devices of its
partition only (`rules.partition`): each batch's devices of its own, its share of the sweep and the window, the
trend fits of its devices. What is not about one device runs in partition 0 alone: the baselines (a median over
all the devices of a model, which no partition sees whole) and the domains' scheduled jobs (they work through
orders, offers and the outbox, not devices, and lock what they take, so more copies would only poll more). The
jobs that follow an evaluation at once (a detection's order and call) run in every partition, after its own.
"""

from __future__ import annotations

import datetime as dt
import logging
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
from apscheduler.schedulers.background import BackgroundScheduler

from careloop import metrics, notify
from careloop.db import Database, connect
from careloop.heartbeat import Heartbeat, process_health
from careloop.jobs import ScheduledJob
from careloop.partitions import Partition
from rules import repo
from rules.evaluation import ActiveRule, EvaluationSummary, active_rules, evaluate_rules, partition_devices
from rules.facts import Trend
from rules.loader import FactCache, learn_baselines, learn_trends

log = logging.getLogger("careloop.engine")


@dataclass(frozen=True)
class Schedule:
    sweep_s: int = 60
    window_s: int = 300
    baselines_s: int = 3600
    trends_s: int = 3600


class EssentialThreadDied(RuntimeError):
    """A thread the engine cannot work without has ended: the process must exit and be restarted."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class Engine:
    def __init__(
        self,
        database: Database,
        *,
        schedule: Schedule = Schedule(),
        clock: Callable[[], dt.datetime] = utc_now,
        heartbeat: Heartbeat | None = None,
        jobs: Sequence[ScheduledJob] = (),
        partition: Partition | None = None,
    ):
        self.database = database
        self.partition = partition  # the share of the fleet this engine evaluates; None: all of it
        self.schedule = schedule
        self.clock = clock
        self.listening = threading.Event()  # set while LISTEN is in place: batches committed from now on are heard
        self.batches_evaluated = 0
        self.fact_cache = FactCache()  # the fleet's device columns and trend fits, between whole-fleet jobs
        self._scheduler: BackgroundScheduler | None = None  # while serving
        # Updated after each job; its owner starts and stops it, and the listening loop watches its thread.
        self.heartbeat = heartbeat
        # The domains' own jobs (service orders' action relay and SLA clock, ...), composed by the process.
        self.jobs = list(jobs)

    # --- jobs: each one transaction, recorded in engine_jobs ---------------------------------

    @property
    def runs_fleet_wide_jobs(self) -> bool:
        """Whether this engine runs the jobs that are not about one device (baselines, the domains' schedule)."""
        return self.partition is None or self.partition.is_first

    def job_name(self, job: str) -> str:
        """A per-device job's name in engine_jobs and the logs: `sweep 1/3` for partition 1 of 3."""
        return job if self.partition is None else f"{job} {self.partition}"

    def _evaluate(
        self,
        job: str,
        select_rules: Callable[[ActiveRule], bool],
        device_ids: Sequence[str] | None = None,
        *,
        learned_trends: bool = False,
    ) -> EvaluationSummary:
        started = time.perf_counter()
        now = self.clock()
        with self.database.transaction() as conn:
            rules = [rule for rule in active_rules(conn) if select_rules(rule)]
            # A whole-fleet job loads its facts on several connections at once; a batch is small.
            parallel_dsn = self.database.dsn if device_ids is None else None
            summary = evaluate_rules(
                conn,
                rules,
                now=now,
                device_ids=device_ids,
                learned_trends=learned_trends,
                parallel_dsn=parallel_dsn,
                cache=self.fact_cache,
                partition=self.partition,
            )
            if device_ids is None:
                # Per-batch runs are too many to record; the scheduled ones say when the fleet was last checked.
                elapsed_ms = (time.perf_counter() - started) * 1000
                repo.record_job(conn, job=self.job_name(job), at=now, duration_ms=elapsed_ms,
                                summary=summary.as_dict())
        self._observe(job, time.perf_counter() - started, summary)
        if summary.opened:
            self.run_after_evaluation()
        if summary.opened or summary.cleared or device_ids is None:
            log.info(
                "%s: %d rules over %d devices: %d opened, %d cleared, %d still open (%.0f ms)",
                self.job_name(job),
                summary.rules,
                summary.devices,
                summary.opened,
                summary.cleared,
                summary.still_open,
                (time.perf_counter() - started) * 1000,
            )
        return summary

    def evaluate_batch(self, device_ids: Sequence[str]) -> EvaluationSummary:
        """The event-driven rules for the devices one ingest batch changed."""
        summary = self._evaluate("batch", lambda rule: rule.event_driven, device_ids)
        self.batches_evaluated += 1
        return summary

    def run_job(self, job: ScheduledJob) -> Any:
        """One run of a domain's job in its own transaction, recorded like the engine's own."""
        started = time.perf_counter()
        now = self.clock()
        with self.database.transaction() as conn:
            result = job.run(conn, now)
            elapsed_ms = (time.perf_counter() - started) * 1000
            repo.record_job(conn, job=job.id, at=now, duration_ms=elapsed_ms,
                            summary=result if isinstance(result, dict) else {"result": result})
        self._observe(job.id, time.perf_counter() - started)
        return result

    def run_after_evaluation(self) -> None:
        """The jobs that follow each evaluation at once (a detection's order and call)."""
        for job in self.jobs:
            if job.after_evaluation:
                try:
                    self.run_job(job)
                except Exception:  # its scheduled run tries again; the evaluation itself is committed
                    log.exception("%s after an evaluation failed", job.id)

    def sweep(self) -> EvaluationSummary:
        """The event-driven rules over the whole fleet."""
        return self._evaluate("sweep", lambda rule: rule.event_driven)

    def window(self) -> EvaluationSummary:
        """The time-window rules (usage, elapsed, age, count, trend, anomaly, birthday) over the whole fleet."""
        return self._evaluate("window", lambda rule: not rule.event_driven, learned_trends=True)

    def learn_baselines(self) -> int:
        started = time.perf_counter()
        now = self.clock()
        with self.database.transaction() as conn:
            written = learn_baselines(conn, now=now)
            elapsed_ms = (time.perf_counter() - started) * 1000
            repo.record_job(conn, job="baselines", at=now, duration_ms=elapsed_ms, summary={"baselines": written})
        self._observe("baselines", time.perf_counter() - started)
        log.info("baselines: %d model metrics learned (%.0f ms)", written, elapsed_ms)
        return written

    def learn_trends(self) -> int:
        """Fit, for every device (of the partition), the trends the enabled rules project; the window job reads
        the fits."""
        started = time.perf_counter()
        now = self.clock()
        with self.database.transaction() as conn:
            trends = [
                req for rule in active_rules(conn) for req in rule.compiled.requirements if isinstance(req, Trend)
            ]
            devices = (
                None if self.partition is None
                else partition_devices(conn, self.partition, cache=self.fact_cache)
            )
            written = learn_trends(conn, now=now, requirements=trends, device_ids=devices)
            elapsed_ms = (time.perf_counter() - started) * 1000
            repo.record_job(conn, job=self.job_name("trends"), at=now, duration_ms=elapsed_ms,
                            summary={"fits": written})
        self._observe("trends", time.perf_counter() - started)
        log.info("%s: %d device fits learned (%.0f ms)", self.job_name("trends"), written, elapsed_ms)
        return written

    def _observe(self, job: str, seconds: float, summary: EvaluationSummary | None = None) -> None:
        """Metrics and heartbeat of a committed job."""
        opened, cleared = (summary.opened, summary.cleared) if summary is not None else (0, 0)
        metrics.record_engine_job(job, seconds=seconds, opened=opened, cleared=cleared)
        if self.heartbeat is not None:
            at = dt.datetime.now(dt.UTC)
            self.heartbeat.count(detections_opened=opened, detections_cleared=cleared)
            self.heartbeat.note_run(job, at=at.isoformat(), seconds=round(seconds, 3), opened=opened, cleared=cleared)
            self.heartbeat.record(last_commit_at=at)

    def run_once(self) -> dict[str, Any]:
        """Every scheduled job one time: baselines and trend fits first, so the rules read fresh ones. A partition
        other than the first runs its own share only (see the module docstring)."""
        done: dict[str, Any] = {"partition": str(self.partition)} if self.partition is not None else {}
        if self.runs_fleet_wide_jobs:
            done["baselines"] = self.learn_baselines()
        done |= {
            "trends": self.learn_trends(),
            "sweep": self.sweep().as_dict(),
            "window": self.window().as_dict(),
        }
        if not self.runs_fleet_wide_jobs:
            return done
        return done | {job.id: self.run_job(job) for job in self.jobs}

    # --- the long-running process ------------------------------------------------------------

    def partitions_disagreeing(self) -> list[str]:
        """The live engines (by their heartbeats) whose partition count differs from this engine's, each as
        `process (partition)`. Partitions of different counts overlap without a lock in common."""
        if self.partition is None:
            return []  # a whole-fleet engine excludes every partition through the lock they share
        with self.database.connection() as conn:
            processes = process_health(conn, dt.datetime.now(dt.UTC))
        disagreeing = []
        for process in processes:
            partition = process.details.get("partition")
            if process.kind != "engine" or process.stale or not isinstance(partition, str) or "/" not in partition:
                continue
            if partition.split("/")[1].strip() != str(self.partition.count):
                disagreeing.append(f"{process.process} ({partition})")
        return disagreeing

    def serve(self, stop: threading.Event, *, database_url: str, poll_s: float = 1.0) -> None:
        """Listen for ingest batches and run the schedule until `stop` is set."""
        scheduler = BackgroundScheduler(
            timezone=dt.UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        )
        first = dt.datetime.now(dt.UTC)
        if self.runs_fleet_wide_jobs:
            scheduler.add_job(
                self.learn_baselines, "interval", seconds=self.schedule.baselines_s, id="baselines",
                next_run_time=first,
            )
        scheduler.add_job(
            self.learn_trends, "interval", seconds=self.schedule.trends_s, id="trends", next_run_time=first
        )
        scheduler.add_job(self.window, "interval", seconds=self.schedule.window_s, id="window", next_run_time=first)
        scheduler.add_job(self.sweep, "interval", seconds=self.schedule.sweep_s, id="sweep", next_run_time=first)
        for job in self.jobs if self.runs_fleet_wide_jobs else ():
            scheduler.add_job(self.run_job, "interval", args=[job], seconds=job.every_s, id=job.id,
                              next_run_time=first)
        scheduler.start()
        log.info(
            "engine running%s: sweep every %ds, window every %ds, %strends every %ds; listening on %s",
            f" as partition {self.partition}" if self.partition is not None else "",
            self.schedule.sweep_s,
            self.schedule.window_s,
            f"baselines every {self.schedule.baselines_s}s, " if self.runs_fleet_wide_jobs
            else "baselines and the domains' jobs left to partition 0, ",
            self.schedule.trends_s,
            notify.CHANGED_DEVICES_CHANNEL,
        )
        self._scheduler = scheduler
        try:
            disagreeing = self.partitions_disagreeing()
        except psycopg2.Error as error:  # a check, not a need: the listening loop below waits for the database
            log.warning("could not compare partition counts with the other engines: %s", error)
            disagreeing = []
        if disagreeing:
            log.warning(
                "partition %s: engines with another number of partitions are running: %s. Their devices overlap "
                "with this engine's; run every partition of a fleet with the same N",
                self.partition, ", ".join(disagreeing),
            )
        try:
            while not stop.is_set():
                try:
                    self._listen(stop, database_url, poll_s)
                except EssentialThreadDied:
                    raise
                except Exception:  # a lost database connection: back off, then listen again
                    log.exception("listening for ingest batches failed; retrying in 5 s")
                    stop.wait(5)
        finally:
            if scheduler.running:  # a scheduler that ended by itself is already down; its error is the one to see
                scheduler.shutdown(wait=True)
            log.info("engine stopped")

    def _check_scheduler(self) -> None:
        # APScheduler catches what a job raises, so its thread only ends on a defect of its own; without it no
        # scheduled rule would run again while the process looked alive.
        thread = getattr(self._scheduler, "_thread", None)
        if thread is None or not thread.is_alive():
            raise EssentialThreadDied("the scheduler thread has ended: no scheduled job would run again")
        if self.heartbeat is not None and self.heartbeat.dead_thread() is not None:
            raise EssentialThreadDied("the heartbeat thread has ended: the engine would look dead while it runs")

    def _listen(self, stop: threading.Event, database_url: str, poll_s: float) -> None:
        listener = connect(database_url)
        listener.autocommit = True
        try:
            notify.listen_for_changed_devices(listener)
            self.listening.set()
            while not stop.is_set():
                self._check_scheduler()
                if select.select([listener], [], [], poll_s) == ([], [], []):
                    continue
                listener.poll()
                devices: set[str] = set()
                while listener.notifies:
                    devices.update(notify.devices_in(listener.notifies.pop(0).payload))
                if devices:
                    self.evaluate_batch(sorted(devices))
        finally:
            self.listening.clear()
            listener.close()
