"""The SQL fact loader: `FleetFacts` for a set of requirements, straight from the database, fleet-wide.

Each requirement type (or a group of them sharing a scan) is one statement of `loader.sql` over every
device in scope at once; rows come back keyed by device id and are aligned to the facts' device order
with numpy. The numbers are those of `rules.reference.build_facts` (see the docstrings in `rules.facts`).

`live=True` is the engine at the present: online/offline and last seen come from `device_state`, `Latest`
from `device_latest`, `CounterAtEvent` from `event_counters` where recorded (all kept by the ingester),
`Baseline` from `model_baselines` (kept by `learn_baselines`).
`live=False` replays stored history at a past `now`: everything comes from telemetry and events.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2.extensions
from psycopg2.extras import execute_values

from careloop.db import load_queries
from devices.catalog import load_catalog
from rules.facts import (
    DAYS,
    SECONDS,
    Baseline,
    BaselineStats,
    CounterAtEvent,
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
from rules.reference import MAD_TO_SIGMA

QUERIES = load_queries(Path(__file__).with_name("loader.sql"))
ONE_SECOND = dt.timedelta(seconds=1)


def load_facts(
    conn: Any,
    *,
    now: dt.datetime | np.datetime64,
    requirements: Iterable[Requirement],
    device_ids: Sequence[str] | None = None,
    live: bool = True,
    learned_trends: bool = False,
    parallel_dsn: str | None = None,
) -> FleetFacts:
    """Facts at `now` for the given devices (every registered device when None), ordered by device id.

    With `learned_trends`, `Trend` comes from the fits `learn_trends` stored (the line evaluated at now)
    instead of fitting the raw readings again. With `parallel_dsn`, the requirement types load side by
    side on short-lived connections of their own to that database, so the server works on several at once.
    """
    instant = _Instant.of(now)
    scope = None if device_ids is None else sorted({str(device) for device in device_ids})
    requirements = set(requirements)
    with _without_jit(conn):
        facts = _device_facts(conn, instant, scope, live)
        if parallel_dsn is None or facts.size == 0:
            _Loader(conn, instant, facts, scope, live, learned_trends=learned_trends).load(requirements)
            return facts

    def load_group(group: list[Requirement]) -> None:
        # Connections of their own, not the caller's pool: a job waiting on its pool for more
        # connections while holding one could wait forever on another job doing the same.
        own = psycopg2.connect(parallel_dsn)
        try:
            with own, _without_jit(own):
                _Loader(own, instant, facts, scope, live, learned_trends=learned_trends).load(set(group))
        finally:
            own.close()

    with ThreadPoolExecutor(max_workers=PARALLEL_LOADS, thread_name_prefix="facts") as workers:
        for future in [workers.submit(load_group, group) for group in _by_type(requirements).values()]:
            future.result()
    return facts


PARALLEL_LOADS = 2  # statements the server runs at once for one evaluation: one per core of a small server


def _by_type(requirements: Iterable[Requirement]) -> dict[type, list[Requirement]]:
    by_type: dict[type, list] = defaultdict(list)
    for requirement in sorted(requirements, key=repr):  # a stable order: stable query plans and logs
        by_type[type(requirement)].append(requirement)
    return by_type


def add_facts(
    conn: Any,
    facts: FleetFacts,
    requirements: Iterable[Requirement],
    *,
    device_ids: Sequence[str],
    live: bool = True,
    learned_trends: bool = False,
) -> None:
    """Load more requirements into `facts`, for only these of its devices; the others get the empty value
    (NaN, NaT, 0, False). For a costly requirement that matters to a few devices only."""
    instant = _Instant.of(facts.now)
    scope = sorted({str(device) for device in device_ids})
    with _without_jit(conn):
        _Loader(conn, instant, facts, scope, live, learned_trends=learned_trends).load(set(requirements))


def learn_trends(conn: Any, *, now: dt.datetime | np.datetime64, requirements: Iterable[Trend]) -> int:
    """Fit each trend over every device at `now` and store the fits (replacing earlier ones); answers rows stored."""
    trends = sorted(set(requirements), key=repr)
    if not trends:
        return 0
    facts = load_facts(conn, now=now, requirements=trends)
    fitted_at = _Instant.of(now).as_datetime
    rows = []
    for trend in trends:
        fit = facts.get(trend)
        for index in np.flatnonzero(fit.points > 0):
            slope, fitted = fit.slope_per_s[index], fit.fitted_now[index]
            rows.append(
                (
                    str(facts.device_id[index]),
                    trend.metric,
                    trend.seconds,
                    None if np.isnan(slope) else float(slope),
                    None if np.isnan(fitted) else float(fitted),
                    int(fit.points[index]),
                    fitted_at,
                )
            )
    windows = {"metrics": [trend.metric for trend in trends], "seconds": [trend.seconds for trend in trends]}
    with conn.cursor() as cursor:
        cursor.execute(QUERIES["forget_trend_fits"], windows)
        execute_values(cursor, QUERIES["store_trend_fits"], rows, page_size=5000)
    return len(rows)


def _device_facts(conn: Any, instant: _Instant, scope: list[str] | None, live: bool) -> FleetFacts:
    """The device columns; no requirement loaded yet."""
    columns = _columns(_fetch(conn, "devices", {"device_ids": scope}), width=8)
    ids, models, kinds, purchased_on, birthday_day, online, changed_at, last_seen = columns
    device_id = np.array(ids, dtype=str)
    if live:
        online_now = np.array([value is True for value in online], dtype=bool)
        offline_since = np.where(online_now, np.datetime64("NaT", "s"), _instants(changed_at))
        seen = _instants(last_seen)
    else:
        # No status history is stored: online/offline in the past is unknown, so offline_since stays NaT.
        online_now = offline_since = None
        seen = _last_seen_history(conn, instant, scope, device_id)
    return FleetFacts(
        now=instant.now,
        device_id=device_id,
        model=np.array(models, dtype=str),
        kind=np.array(kinds, dtype=str),
        purchased_on=_instants(purchased_on),
        owner_birthday=_instants(birthday_day, DAYS),
        online=online_now,
        offline_since=offline_since,
        last_seen=seen,
    )


def _last_seen_history(conn: Any, instant: _Instant, scope: list[str] | None, device_id: np.ndarray) -> np.ndarray:
    """Each device's last telemetry or event ts at `instant`, from stored history."""
    seen = np.full(device_id.shape[0], np.datetime64("NaT"), dtype=SECONDS)
    if device_id.shape[0]:
        ids, last = _columns(_fetch(conn, "last_seen_history", {"device_ids": scope, "until": instant.until}), 2)
        positions, known = _positions(device_id, ids)
        seen[positions[known]] = _instants(last)[known]
    return seen


def learn_baselines(
    conn: Any, *, now: dt.datetime | np.datetime64, metrics_by_model: Mapping[str, Iterable[str]] | None = None
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
        stats = _baseline_stats(conn, instant, pairs)
    rows = [
        (model, metric, centre, spread, samples, instant.as_datetime)
        for model, metric, centre, spread, samples in stats
    ]
    with conn.cursor() as cursor:
        execute_values(cursor, QUERIES["upsert_baselines"], rows, page_size=max(len(rows), 1))
    return len(rows)


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
def _without_jit(conn: Any) -> Iterator[None]:
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


def _fetch(conn: Any, name: str, params: Mapping[str, Any]) -> list[tuple]:
    """Run a query of loader.sql; answers its rows as tuples (cheaper than dicts for a fleet)."""
    with conn.cursor() as cursor:
        cursor.execute(QUERIES[name], params)
        return cursor.fetchall()


def _columns(rows: list[tuple], width: int) -> list[tuple]:
    """Rows as columns; `width` empty ones when there is no row."""
    return list(zip(*rows, strict=True)) if rows else [()] * width


def _positions(device_id: np.ndarray, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's index in the sorted `device_id`, and which rows are of those devices at all."""
    if not len(ids) or not device_id.shape[0]:
        return np.zeros(len(ids), dtype=np.intp), np.zeros(len(ids), dtype=bool)
    wanted = np.array(ids, dtype=str)
    positions = np.minimum(np.searchsorted(device_id, wanted), device_id.shape[0] - 1)
    return positions, device_id[positions] == wanted


def _instants(values: Sequence[int | None], unit: str = SECONDS) -> np.ndarray:
    """Epoch numbers (seconds, or days with unit DAYS) as datetime64, NaT for None."""
    numbers = np.array(values, dtype=np.float64) if len(values) else np.zeros(0)
    result = np.full(numbers.shape, np.datetime64("NaT"), dtype=unit)
    known = ~np.isnan(numbers)
    result[known] = numbers[known].astype(np.int64).astype(unit)
    return result


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array(values, dtype=np.float64) if len(values) else np.zeros(0)


def _baseline_stats(conn: Any, instant: _Instant, pairs: Sequence[tuple[str, str]]) -> list[tuple]:
    """(model, metric, centre, spread, samples) at `instant` for each pair, computed from telemetry."""
    params = {
        "models": [model for model, _ in pairs],
        "metrics": [metric for _, metric in pairs],
        "until": instant.until,
        "mad_to_sigma": MAD_TO_SIGMA,
    }
    return _fetch(conn, "baseline_stats", params)


class _Loader:
    """Fills `facts` with requirements, one statement per requirement type (or per requirement)."""

    def __init__(
        self,
        conn: Any,
        instant: _Instant,
        facts: FleetFacts,
        scope: list[str] | None,
        live: bool,
        *,
        learned_trends: bool = False,
    ):
        self.conn = conn
        self.instant = instant
        self.facts = facts
        self.scope = scope
        self.live = live
        self.learned_trends = learned_trends

    def load(self, requirements: set[Requirement]) -> None:
        by_type = _by_type(requirements)
        if not by_type:
            return
        if self.facts.size == 0:
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
        return _columns(_fetch(self.conn, name, self._params(**params)), width)

    def _grid(self, ids: Sequence[str], slots: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows keyed by (device id, 1-based slot): indices into (slots, devices) arrays, and which rows count."""
        positions, known = _positions(self.facts.device_id, ids)
        slot = np.array(slots, dtype=np.intp) - 1 if len(slots) else np.zeros(0, dtype=np.intp)
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
        latest[slot, position] = _floats(values)[known]
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
        carried_value = _floats(carried)[known]
        # The value in force when the window opened counts for min and max, as the readings inside do.
        lowest = np.fmin(_floats(low)[known], carried_value)
        highest = np.fmax(_floats(high)[known], carried_value)
        minimum, maximum = (self._filled(len(requirements), np.nan, np.float64) for _ in range(2))
        count = self._filled(len(requirements), 0, np.int64)
        covered = self._filled(len(requirements), False, bool)
        minimum[slot, position] = lowest
        maximum[slot, position] = highest
        count[slot, position] = np.array(readings, dtype=np.int64)[known]
        covered[slot, position] = ~np.isnan(carried_value)
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, WindowAggregate(minimum[i], maximum[i], count[i], covered[i]))

    def trends(self, requirements: list[Trend]) -> None:
        ids, slots, slope, intercept, points = self._query(
            "trend_fits_learned" if self.learned_trends else "trends",
            5,
            metrics=[requirement.metric for requirement in requirements],
            seconds=[requirement.seconds for requirement in requirements],
        )
        slot, position, known = self._grid(ids, slots)
        slopes, fitted = (self._filled(len(requirements), np.nan, np.float64) for _ in range(2))
        count = self._filled(len(requirements), 0, np.int64)
        slopes[slot, position] = _floats(slope)[known]
        fitted[slot, position] = _floats(intercept)[known]
        count[slot, position] = np.array(points, dtype=np.int64)[known]
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
        counter[slot, position] = _floats(values)[known]
        for i, requirement in enumerate(requirements):
            self.facts.add(requirement, counter[i])

    def event_counts(self, requirements: list[EventCount]) -> None:
        # One statement each: their code lists differ, and few rules count events.
        for requirement in requirements:
            opens = self.instant.until - dt.timedelta(seconds=requirement.seconds)
            codes = None if requirement.codes is None else list(requirement.codes)
            ids, events = self._query("event_count", 2, type=requirement.event_type, codes=codes, opens=opens)
            count = np.zeros(self.facts.size, dtype=np.int64)
            positions, known = _positions(self.facts.device_id, ids)
            count[positions[known]] = np.array(events, dtype=np.int64)[known]
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
        if self.live:
            rows = _fetch(self.conn, "baselines_learned", {"metrics": metrics})
        else:
            # Over every device of each model, not only those in scope: a baseline describes the model.
            pairs = [(str(model), metric) for model in codes for metric in metrics]
            rows = _baseline_stats(self.conn, self.instant, pairs)
        learned = {(model, metric): (centre, spread, samples) for model, metric, centre, spread, samples in rows}
        for requirement in requirements:
            per_model = [learned.get((str(model), requirement.metric), (None, None, 0)) for model in codes]
            centre, spread, samples = (np.array(column, dtype=np.float64) for column in zip(*per_model, strict=True))
            self.facts.add(
                requirement,
                BaselineStats(centre=centre[inverse], spread=spread[inverse], samples=samples[inverse]),
            )
