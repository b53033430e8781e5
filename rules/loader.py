"""The SQL fact loader: `FleetFacts` for a set of requirements, straight from the database, fleet-wide.

Each requirement type (or a group of them sharing a scan) is one statement of `loader.sql` over every
device in scope at once; rows come back keyed by device id and are aligned to the facts' device order
with numpy. The numbers are those of `rules.reference.build_facts` (see the docstrings in `rules.facts`).

`LoadOptions(live=True)` (the default) is the engine at the present: online/offline and last seen come from
`device_state`, `Latest` from `latest_readings`, `CounterAtEvent` from `event_counters` where recorded (all kept by
the ingester), `Baseline` from `model_baselines` (kept by `learn_baselines`).
`HISTORY` (`live=False`) replays stored history at a past `now`: everything comes from telemetry and events.

The loader only reads; what `learn_trends` and `learn_baselines` learn is stored through `rules.repo`.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2.extensions

from careloop.db import Connection, copied_floats, copied_integers, copy_columns, load_queries
from devices.catalog import load_catalog
from rules import repo
from rules.facts import (
    DAYS,
    MAD_TO_SIGMA,
    SECONDS,
    Baseline,
    BaselineStats,
    CounterAtEvent,
    DeviceIndex,
    EventCount,
    FleetFacts,
    LastEvent,
    Latest,
    MetricWindow,
    OpenFault,
    Requirement,
    Trend,
    TrendFit,
    WindowAggregate,
    to_datetime64,
)
from rules.models import ModelBaseline, TrendFitRow

QUERIES = load_queries(Path(__file__).with_name("loader.sql"))
ONE_SECOND = dt.timedelta(seconds=1)


@dataclass(frozen=True)
class LoadOptions:
    """How facts are loaded; the defaults are the engine at the present, on one connection, read afresh."""

    # True: the present, from what the ingester keeps (device_state, latest_readings, event_counters) and the
    # learned baselines. False: stored history replayed at a past `now`, from telemetry and events alone.
    live: bool = True
    # `Trend` from the fits `learn_trends` stored (the line evaluated at now) instead of fitting raw readings.
    learned_trends: bool = False
    # Online, offline_since and last_seen read; without, they stay unknown (no rule has an `offline` condition).
    status: bool = True
    # The requirement types load side by side on short-lived connections of their own to this database.
    parallel_dsn: str | None = None
    # The whole fleet's device columns and learned trend fits read again only when they changed since.
    cache: FactCache | None = None


HISTORY = LoadOptions(live=False)


def load_facts(
    conn: Connection,
    *,
    now: dt.datetime | np.datetime64,
    requirements: Iterable[Requirement],
    device_ids: Sequence[str] | None = None,
    options: LoadOptions = LoadOptions(),
) -> FleetFacts:
    """Facts at `now` for the given devices (every registered device when None), ordered by device id."""
    instant = _Instant.of(now)
    scope = None if device_ids is None else sorted({str(device) for device in device_ids})
    requirements = set(requirements)
    if options.parallel_dsn is None:
        with _without_jit(conn):
            facts = _device_facts(conn, instant, scope, options)
            _Loader(conn, instant, facts, scope, options).load(requirements)
        return facts
    parallel_dsn = options.parallel_dsn

    def device_columns() -> FleetFacts:
        with _without_jit(conn):
            return _device_facts(conn, instant, scope, options)

    def load_group(group: list[Requirement], facts: Future[FleetFacts]) -> None:
        # Connections of their own, not the caller's pool: a job waiting on its pool for more
        # connections while holding one could wait forever on another job doing the same.
        own = psycopg2.connect(parallel_dsn)
        try:
            with own, _without_jit(own):
                _Loader(own, instant, facts, scope, options).load(set(group))
        finally:
            own.close()

    # The device columns load on the caller's connection while the requirements' first statements run on
    # their own; each group waits for the devices only to align its rows with them.
    with ThreadPoolExecutor(max_workers=PARALLEL_LOADS + 1, thread_name_prefix="facts") as workers:
        devices = workers.submit(device_columns)
        groups = [workers.submit(load_group, group, devices) for group in _by_type(requirements).values()]
        for future in [devices, *groups]:
            future.result()
    return devices.result()


PARALLEL_LOADS = 2  # statements the server runs at once for one evaluation: one per core of a small server


class FactCache:
    """Whole-fleet facts that rarely change, kept between one engine's evaluations: the device columns and the
    learned trend fits. Each is kept with the revision (table fact_revisions) it was read at and read again
    once the revision has moved; the revision moves in the transaction that changes the rows. Revisions are
    numbered per database: one cache serves one database (an engine has its own)."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.reads = 0  # how many times an entry was read from the database

    def get(self, conn: Connection, part: str, key: Hashable, read: Callable[[], Any]) -> Any:
        """The cached value of `key`, a read of `part` of the facts; `read()` it again when `part` moved."""
        # The revision first: a change committed between the two reads makes the entry look older, not newer.
        revisions = {name: revision for name, revision in _fetch(conn, "fact_revisions", {})}
        revision = revisions[part]
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0] == revision:
            return entry[1]
        value = read()
        with self._lock:
            self._entries[key] = (revision, value)
            self.reads += 1
        return value


def _by_type(requirements: Iterable[Requirement]) -> dict[type, list[Requirement]]:
    by_type: dict[type, list] = defaultdict(list)
    for requirement in sorted(requirements, key=repr):  # a stable order: stable query plans and logs
        by_type[type(requirement)].append(requirement)
    return by_type


def add_facts(
    conn: Connection,
    facts: FleetFacts,
    requirements: Iterable[Requirement],
    *,
    device_ids: Sequence[str],
    options: LoadOptions = LoadOptions(),
) -> None:
    """Load more requirements into `facts`, for only these of its devices; the others get the empty value
    (NaN, NaT, 0, False). For a costly requirement that matters to a few devices only. On `conn` alone: the
    options' parallel_dsn and cache are not used."""
    instant = _Instant.of(facts.now)
    scope = sorted({str(device) for device in device_ids})
    with _without_jit(conn):
        _Loader(conn, instant, facts, scope, options).load(set(requirements))


def learn_trends(
    conn: Connection,
    *,
    now: dt.datetime | np.datetime64,
    requirements: Iterable[Trend],
    device_ids: Sequence[str] | None = None,
) -> int:
    """Fit each trend over every device (or these) at `now` and store the fits, replacing earlier ones of the same
    devices; answers rows stored."""
    trends = sorted(set(requirements), key=repr)
    if not trends:
        return 0
    facts = load_facts(conn, now=now, requirements=trends, device_ids=device_ids)
    fitted_at = _Instant.of(now).as_datetime
    fits = []
    for trend in trends:
        fit = facts.get(trend)
        for index in np.flatnonzero(fit.points > 0):
            slope, fitted = fit.slope_per_s[index], fit.fitted_now[index]
            fits.append(
                TrendFitRow(
                    device_id=str(facts.device_id[index]),
                    metric=trend.metric,
                    seconds=trend.seconds,
                    slope=None if np.isnan(slope) else float(slope),
                    fitted=None if np.isnan(fitted) else float(fitted),
                    points=int(fit.points[index]),
                    fitted_at=fitted_at,
                )
            )
    repo.store_trend_fits(conn, windows=[(trend.metric, trend.seconds) for trend in trends], fits=fits,
                          device_ids=device_ids)
    return len(fits)


@dataclass(frozen=True)
class _DeviceColumns:
    """The devices' own columns, in facts order."""

    device_id: np.ndarray
    model: np.ndarray
    kind: np.ndarray
    purchased_on: np.ndarray
    owner_birthday: np.ndarray

    @functools.cached_property
    def index(self) -> DeviceIndex:
        """Built once per read of the columns (a cached read serves many runs), not once per run."""
        return DeviceIndex(self.device_id)

    @classmethod
    def read(cls, conn: Connection, scope: list[str] | None) -> _DeviceColumns:
        ids, models, kinds, purchased_on, birthday_day = _columns(conn, "devices", {"device_ids": scope}, 5)
        return cls(
            device_id=ids.astype(str),
            model=models.astype(str),
            kind=kinds.astype(str),
            purchased_on=_instants(purchased_on),
            owner_birthday=_instants(birthday_day, DAYS),
        )


def _device_facts(conn: Connection, instant: _Instant, scope: list[str] | None, options: LoadOptions) -> FleetFacts:
    """The device columns (with `status`, also online, offline_since and last_seen); no requirement yet."""
    if options.cache is not None and scope is None:
        columns = options.cache.get(conn, "devices", "devices", lambda: _DeviceColumns.read(conn, None))
    else:
        columns = _DeviceColumns.read(conn, scope)
    facts = FleetFacts(
        now=instant.now,
        device_id=columns.device_id,
        model=columns.model,
        kind=columns.kind,
        purchased_on=columns.purchased_on,
        owner_birthday=columns.owner_birthday,
        index=columns.index,
    )
    if not facts.size or not options.status:
        return facts
    if options.live:
        ids, online, changed_at, last_seen = _columns(conn, "device_status", {"device_ids": scope}, 4)
        positions, known = facts.positions(ids)
        is_online = np.zeros(facts.size, dtype=bool)
        is_online[positions[known]] = (online == b"t")[known]
        changed, seen = (np.full(facts.size, np.datetime64("NaT"), dtype=SECONDS) for _ in range(2))
        changed[positions[known]] = _instants(changed_at)[known]
        seen[positions[known]] = _instants(last_seen)[known]
        facts.online = is_online
        facts.offline_since = np.where(is_online, np.datetime64("NaT", "s"), changed)
        facts.last_seen = seen
    else:
        # No status history is stored: online/offline in the past is unknown, so offline_since stays NaT.
        ids, last = _columns(conn, "last_seen_history", {"device_ids": scope, "until": instant.until}, 2)
        positions, known = facts.positions(ids)
        seen = np.full(facts.size, np.datetime64("NaT"), dtype=SECONDS)
        seen[positions[known]] = _instants(last)[known]
        facts.last_seen = seen
    return facts


def learn_baselines(
    conn: Connection,
    *,
    now: dt.datetime | np.datetime64,
    metrics_by_model: Mapping[str, Iterable[str]] | None = None,
) -> int:
    """Compute each (model, metric) baseline at `now` and upsert it into model_baselines; answers rows written.

    Over the devices of the model: centre = median of each device's latest value with ts <= now, spread =
    1.4826 * MAD, samples = devices with a value (0, and no centre, when none has one); learned_at = now.
    None = every metric of every model that has devices (the models catalog says which metrics).
    """
    instant = _Instant.of(now)
    if metrics_by_model is None:
        catalog = load_catalog()
        models = [model for (model,) in _fetch(conn, "device_models", {})]
        metrics_by_model = {model: catalog[model].metrics for model in models if model in catalog}
    pairs = sorted({(model, metric) for model, metrics in metrics_by_model.items() for metric in metrics})
    if not pairs:
        return 0
    with _without_jit(conn):
        baselines = _baseline_stats(conn, instant, pairs)
    repo.upsert_baselines(conn, baselines=baselines, learned_at=instant.as_datetime)
    return len(baselines)


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Instant:
    """`now` at one-second resolution, and the bounds the queries compare with."""

    now: np.datetime64  # datetime64[s]

    @classmethod
    def of(cls, value: Any) -> _Instant:
        now = to_datetime64(value)
        if np.isnat(now):
            raise ValueError(f"not an instant: {value!r}")
        return cls(now)

    @property
    def epoch(self) -> int:
        return int(self.now.astype(np.int64))

    @property
    def as_datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.epoch, dt.UTC)

    @property
    def until(self) -> dt.datetime:
        """The exclusive upper bound: a reading at 12:00:00.4 is known at now = 12:00:00."""
        return self.as_datetime + ONE_SECOND


@contextmanager
def _without_jit(conn: Connection) -> Iterator[None]:
    """JIT off for the loader's statements, then as it was: it costs more than these index-probe loops take."""
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["jit_setting"])
        previous = cursor.fetchone()[0]
        cursor.execute(QUERIES["set_jit_locally"], {"value": "off"})
    try:
        yield
    finally:
        # After an error the transaction is aborted, and its rollback restores the setting anyway.
        if conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS:
            with conn.cursor() as cursor:
                cursor.execute(QUERIES["set_jit_locally"], {"value": previous})


def _fetch(conn: Connection, name: str, params: Mapping[str, Any]) -> list[tuple]:
    """Run a small query of loader.sql; answers its rows as tuples, for the caller to name at once."""
    with conn.cursor() as cursor:
        cursor.execute(QUERIES[name], params)
        return cursor.fetchall()


def _columns(conn: Connection, name: str, params: Mapping[str, Any], width: int) -> list[np.ndarray]:
    """A fleet-sized query of loader.sql as `width` columns of raw text values (see `copy_columns`)."""
    return copy_columns(conn, QUERIES[name], params, width)


def _instants(values: np.ndarray, unit: str = SECONDS) -> np.ndarray:
    """Epoch numbers (seconds, or days with unit DAYS) as datetime64, NaT for NULL."""
    numbers = copied_floats(values)
    result = np.full(numbers.shape, np.datetime64("NaT"), dtype=unit)
    known = ~np.isnan(numbers)
    result[known] = numbers[known].astype(np.int64).astype(unit)
    return result


def _baseline_stats(conn: Connection, instant: _Instant, pairs: Sequence[tuple[str, str]]) -> list[ModelBaseline]:
    """The baseline at `instant` of each (model, metric) pair, computed from telemetry."""
    params = {
        "models": [model for model, _ in pairs],
        "metrics": [metric for _, metric in pairs],
        "until": instant.until,
        "mad_to_sigma": MAD_TO_SIGMA,
    }
    return [ModelBaseline(*row) for row in _fetch(conn, "baseline_stats", params)]


class _Loader:
    """Fills `facts` with requirements, one statement per requirement type (or per requirement)."""

    def __init__(
        self,
        conn: Connection,
        instant: _Instant,
        facts: FleetFacts | Future[FleetFacts],
        scope: list[str] | None,
        options: LoadOptions,
    ):
        self.conn = conn
        self.instant = instant
        self._facts = facts
        self.scope = scope
        self.live = options.live
        self.learned_trends = options.learned_trends
        self.cache = options.cache

    @property
    def facts(self) -> FleetFacts:
        """The facts to fill; given as a future, the first use waits for the device columns."""
        return self._facts.result() if isinstance(self._facts, Future) else self._facts

    def load(self, requirements: set[Requirement]) -> None:
        by_type = _by_type(requirements)
        if not by_type:
            return
        if isinstance(self._facts, FleetFacts) and self._facts.size == 0:
            for requirement in requirements:
                self.facts.add(requirement, self._empty(requirement))
            return
        loaders = {
            Latest: self.latest,
            MetricWindow: self.metric_windows,
            Trend: self.trends,
            LastEvent: self.last_events,
            CounterAtEvent: self.counters_at_events,
            EventCount: self.event_counts,
            OpenFault: self.open_faults,
            Baseline: self.baselines,
        }
        for kind, group in by_type.items():
            loaders[kind](group)

    # ------------------------------------------------------------ plumbing

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {
            "device_ids": self.scope,
            "until": self.instant.until,
            "now_epoch": self.instant.epoch,
            "live": self.live,
            **extra,
        }

    def _query(self, name: str, width: int, **params: Any) -> list[tuple]:
        """The columns of a loader.sql query run with the common parameters and these."""
        return _columns(self.conn, name, self._params(**params), width)

    def _grid(self, ids: Sequence[str], slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows keyed by (device id, 1-based slot): indices into (slots, devices) arrays, and which rows count."""
        positions, known = self.facts.positions(ids)
        slot = copied_integers(slots) - 1
        return slot[known], positions[known], known

    def _filled(self, count: int, fill: Any, dtype: Any) -> np.ndarray:
        return np.full((count, self.facts.size), fill, dtype=dtype)

    @staticmethod
    def _empty(requirement: Requirement) -> Any:
        none = np.zeros(0)
        if isinstance(requirement, MetricWindow):
            return WindowAggregate(none, none, none, none.astype(bool))
        if isinstance(requirement, Trend):
            return TrendFit(none, none, none)
        if isinstance(requirement, Baseline):
            return BaselineStats(none, none, none)
        if isinstance(requirement, LastEvent):
            return np.zeros(0, dtype=SECONDS)
        return none

    # ------------------------------------------------------------ requirements

    def latest(self, requirements: list[Latest]) -> None:
        metrics = [requirement.metric for requirement in requirements]
        name = "latest_live" if self.live else "latest_history"
        ids, slots, values = self._query(name, 3, metrics=metrics)
        slot, position, known = self._grid(ids, slots)
        latest = self._filled(len(metrics), np.nan, np.float64)
        latest[slot, position] = copied_floats(values)[known]
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, latest[i])

    def metric_windows(self, requirements: list[MetricWindow]) -> None:
        ids, slots, low, high, readings, carried = self._query(
            "metric_windows",
            6,
            metrics=[requirement.metric for requirement in requirements],
            seconds=[requirement.seconds for requirement in requirements],
        )
        slot, position, known = self._grid(ids, slots)
        carried_value = copied_floats(carried)[known]
        # The value in force when the window opened counts for min and max, as the readings inside do.
        lowest = np.fmin(copied_floats(low)[known], carried_value)
        highest = np.fmax(copied_floats(high)[known], carried_value)
        minimum, maximum = (self._filled(len(requirements), np.nan, np.float64) for _ in range(2))
        count = self._filled(len(requirements), 0, np.int64)
        covered = self._filled(len(requirements), False, bool)
        minimum[slot, position] = lowest
        maximum[slot, position] = highest
        count[slot, position] = copied_integers(readings)[known]
        covered[slot, position] = ~np.isnan(carried_value)
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, WindowAggregate(minimum[i], maximum[i], count[i], covered[i]))

    def trends(self, requirements: list[Trend]) -> None:
        windows = {
            "metrics": [requirement.metric for requirement in requirements],
            "seconds": [requirement.seconds for requirement in requirements],
        }
        if not self.learned_trends:
            ids, slots, slope, intercept, points = self._query("trends", 5, **windows)
        else:
            # The stored lines, evaluated at now: fitted + slope * the seconds since the fit.
            def read() -> list:
                ids, slots, slope, fitted, points, fitted_at = self._query("trend_fits_learned", 6, **windows)
                return [ids, slots, copied_floats(slope), copied_floats(fitted), points, copied_floats(fitted_at)]

            if self.cache is not None and self.scope is None:
                key = ("trend_fits", tuple(zip(windows["metrics"], windows["seconds"], strict=True)))
                ids, slots, slope, fitted_then, points, fitted_at = self.cache.get(self.conn, "trend_fits", key, read)
            else:
                ids, slots, slope, fitted_then, points, fitted_at = read()
            elapsed = self.instant.epoch - copied_floats(fitted_at)
            intercept = copied_floats(fitted_then) + np.nan_to_num(copied_floats(slope)) * elapsed
        slot, position, known = self._grid(ids, slots)
        slopes, fitted = (self._filled(len(requirements), np.nan, np.float64) for _ in range(2))
        count = self._filled(len(requirements), 0, np.int64)
        slopes[slot, position] = copied_floats(slope)[known]
        fitted[slot, position] = copied_floats(intercept)[known]
        count[slot, position] = copied_integers(points)[known]
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, TrendFit(slopes[i], fitted[i], count[i]))

    def last_events(self, requirements: list[LastEvent]) -> None:
        types = [requirement.event_type for requirement in requirements]
        ids, slots, at = self._query("last_events", 3, types=types)
        slot, position, known = self._grid(ids, slots)
        last = self._filled(len(types), np.datetime64("NaT"), SECONDS)
        last[slot, position] = _instants(at)[known]
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, last[i])

    def counters_at_events(self, requirements: list[CounterAtEvent]) -> None:
        ids, slots, values = self._query(
            "counters_at_events",
            3,
            metrics=[requirement.metric for requirement in requirements],
            types=[requirement.event_type for requirement in requirements],
        )
        slot, position, known = self._grid(ids, slots)
        counter = self._filled(len(requirements), np.nan, np.float64)
        counter[slot, position] = copied_floats(values)[known]
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, counter[i])

    def event_counts(self, requirements: list[EventCount]) -> None:
        # One statement each: their code lists differ, and few rules count events.
        for requirement in requirements:
            opens = self.instant.until - dt.timedelta(seconds=requirement.seconds)
            codes = None if requirement.codes is None else list(requirement.codes)
            ids, events = self._query("event_count", 2, type=requirement.event_type, codes=codes, opens=opens)
            count = np.zeros(self.facts.size, dtype=np.int64)
            positions, known = self.facts.positions(ids)
            count[positions[known]] = copied_integers(events)[known]
            self.facts.add(requirement, count)

    def open_faults(self, requirements: list[OpenFault]) -> None:
        codes = [requirement.code for requirement in requirements]
        ids, slots = self._query("open_faults", 2, codes=codes)
        slot, position, _known = self._grid(ids, slots)
        is_open = self._filled(len(codes), False, bool)
        is_open[slot, position] = True
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, is_open[i])

    def baselines(self, requirements: list[Baseline]) -> None:
        metrics = [requirement.metric for requirement in requirements]
        codes, inverse = np.unique(self.facts.model, return_inverse=True)
        if not codes.size:
            for requirement in requirements:
                self.facts.add(requirement, self._empty(requirement))
            return
        if self.live:
            baselines = [ModelBaseline(*row) for row in _fetch(self.conn, "baselines_learned", {"metrics": metrics})]
        else:
            # Over every device of each model, not only those in scope: a baseline describes the model.
            pairs = [(str(model), metric) for model in codes for metric in metrics]
            baselines = _baseline_stats(self.conn, self.instant, pairs)
        learned = {(baseline.model, baseline.metric): baseline for baseline in baselines}
        for requirement in requirements:
            unknown = ModelBaseline("", requirement.metric, centre=None, spread=None, samples=0)
            per_model = [learned.get((str(model), requirement.metric), unknown) for model in codes]
            # None becomes NaN in a float array: no centre or spread where no device of the model has a value.
            centre = np.array([baseline.centre for baseline in per_model], dtype=np.float64)
            spread = np.array([baseline.spread for baseline in per_model], dtype=np.float64)
            samples = np.array([baseline.samples for baseline in per_model], dtype=np.float64)
            self.facts.add(
                requirement,
                BaselineStats(centre=centre[inverse], spread=spread[inverse], samples=samples[inverse]),
            )
