"""What rule evaluation reads: requirement types, and `FleetFacts`, numpy arrays aligned by device index.

A fact loader (SQL in the engine, `rules.reference` in tests and backtests) fills the device columns,
then, for each requirement of the enabled rules, `facts.add(requirement, value)`. The docstring of
each requirement type is its exact meaning, so every loader computes the same thing.
All times are UTC, at one-second resolution; "at `now`" means "using data with ts <= now".
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devices.catalog import load_catalog

SECONDS = "datetime64[s]"
DAYS = "datetime64[D]"


# ---------------------------------------------------------------- requirements (hashable)


@dataclass(frozen=True)
class Latest:
    """The device's last reading of `metric` with ts <= now -> float64 array, NaN when none."""

    metric: str


@dataclass(frozen=True)
class MetricWindow:
    """`metric` over the trailing window (now - seconds, now] -> `WindowAggregate`.

    min/max also include the last reading at or before the window start (the value in force when
    the window opened), so "above 3 for 10m" holds even when the device reports every 15 minutes.
    count is the number of readings inside the window; covered says a reading at or before the
    window start exists (the data covers the whole window).
    """

    metric: str
    seconds: int


@dataclass(frozen=True)
class LastEvent:
    """Time of the device's last `event_type` event with ts <= now -> datetime64[s] array, NaT when none."""

    event_type: str


@dataclass(frozen=True)
class CounterAtEvent:
    """Value of counter `metric` at the last `event_type` event -> float64 array.

    The value is the last reading at or before that event, else the first reading after it; NaN
    when there is no such event or no reading of the metric at all.
    """

    metric: str
    event_type: str


@dataclass(frozen=True)
class EventCount:
    """Number of `event_type` events with ts in (now - seconds, now] -> int64 array.

    With `codes` (a sorted tuple), only events whose code is one of them count.
    """

    event_type: str
    codes: tuple[str, ...] | None
    seconds: int


@dataclass(frozen=True)
class OpenFault:
    """Fault `code` is open -> bool array.

    Open: the device's last `fault` event with this code (ts <= now) is later than its last
    `fault_cleared` event with this code or without a code (which clears every fault).
    """

    code: str


@dataclass(frozen=True)
class Trend:
    """Least-squares line of `metric` over time, readings with ts in (now - seconds, now] -> `TrendFit`.

    In SQL: regr_slope(value, epoch), regr_intercept(...) evaluated at epoch(now), regr_count(...).
    """

    metric: str
    seconds: int


@dataclass(frozen=True)
class Baseline:
    """The learned baseline of `metric` for the device's model, broadcast to each device -> `BaselineStats`.

    Over the devices of one model: centre = median of each device's latest value (ts <= now),
    spread = 1.4826 * median absolute deviation from that centre (comparable to a standard
    deviation), samples = how many devices contributed.
    """

    metric: str


Requirement = Latest | MetricWindow | LastEvent | CounterAtEvent | EventCount | OpenFault | Trend | Baseline


# ---------------------------------------------------------------- composite values


@dataclass
class WindowAggregate:
    min: np.ndarray  # float64, NaN when no reading
    max: np.ndarray  # float64
    count: np.ndarray  # int64, readings inside the window
    covered: np.ndarray  # bool


@dataclass
class TrendFit:
    slope_per_s: np.ndarray  # float64, units of the metric per second; NaN with fewer than 2 points
    fitted_now: np.ndarray  # float64, the line's value at `now`
    points: np.ndarray  # int64, readings in the fit window


MAD_TO_SIGMA = 1.4826  # scales a median absolute deviation to a normal distribution's standard deviation


@dataclass
class BaselineStats:
    centre: np.ndarray  # float64
    spread: np.ndarray  # float64, robust (MAD-scaled); 0 or NaN means no usable baseline
    samples: np.ndarray  # int64, devices behind the baseline


# ---------------------------------------------------------------- coercion: bad data becomes NaN/NaT


def as_float(values: Any) -> np.ndarray:
    """float64 array; non-numeric, missing and non-finite entries become NaN."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        result = array.astype(np.float64)
    else:
        result = np.array([_to_float(value) for value in array.ravel()], dtype=np.float64).reshape(
            array.shape
        )
    result[~np.isfinite(result)] = np.nan
    return result


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


def to_datetime64(value: Any, unit: str = SECONDS) -> np.datetime64:
    """One instant (datetime, date, ISO text, datetime64 or None) as UTC datetime64, NaT when missing."""
    if value is None:
        return np.datetime64("NaT").astype(unit)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, str):
        if not value.strip():
            return np.datetime64("NaT").astype(unit)
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return np.datetime64("NaT").astype(unit)
        return to_datetime64(parsed, unit)
    try:
        return np.datetime64(value).astype(unit)
    except (TypeError, ValueError):
        return np.datetime64("NaT").astype(unit)


def as_datetime(values: Any, unit: str = SECONDS) -> np.ndarray:
    """datetime64 array at `unit`; unreadable entries become NaT."""
    array = np.asarray(values)
    if array.dtype.kind == "M":
        return array.astype(unit)
    return np.array([to_datetime64(value, unit) for value in array.ravel()], dtype=unit).reshape(array.shape)


def epoch_seconds(values: np.ndarray) -> np.ndarray:
    """Seconds since 1970 as float64, NaN for NaT: arithmetic on it never raises."""
    seconds = values.astype(SECONDS)
    result = seconds.view(np.int64).astype(np.float64)
    result[np.isnat(seconds)] = np.nan
    return result


def _coerce(requirement: Requirement, value: Any, size: int) -> Any:
    if isinstance(requirement, Latest | CounterAtEvent):
        return _sized(as_float(value), size, requirement)
    if isinstance(requirement, LastEvent):
        return _sized(as_datetime(value), size, requirement)
    if isinstance(requirement, EventCount):
        return _sized(np.nan_to_num(as_float(value)).astype(np.int64), size, requirement)
    if isinstance(requirement, OpenFault):
        return _sized(np.asarray(value, dtype=bool), size, requirement)
    if isinstance(requirement, MetricWindow):
        return WindowAggregate(
            min=_sized(as_float(value.min), size, requirement),
            max=_sized(as_float(value.max), size, requirement),
            count=_sized(np.nan_to_num(as_float(value.count)).astype(np.int64), size, requirement),
            covered=_sized(np.asarray(value.covered, dtype=bool), size, requirement),
        )
    if isinstance(requirement, Trend):
        return TrendFit(
            slope_per_s=_sized(as_float(value.slope_per_s), size, requirement),
            fitted_now=_sized(as_float(value.fitted_now), size, requirement),
            points=_sized(np.nan_to_num(as_float(value.points)).astype(np.int64), size, requirement),
        )
    if isinstance(requirement, Baseline):
        return BaselineStats(
            centre=_sized(as_float(value.centre), size, requirement),
            spread=_sized(as_float(value.spread), size, requirement),
            samples=_sized(np.nan_to_num(as_float(value.samples)).astype(np.int64), size, requirement),
        )
    raise TypeError(f"not a rule requirement: {requirement!r}")


def _sized(array: np.ndarray, size: int, requirement: Requirement) -> np.ndarray:
    # A misaligned array is a loader bug, not bad data: fail loudly rather than explain wrongly.
    if array.shape != (size,):
        raise ValueError(
            f"{requirement!r}: expected {size} values aligned with the devices, got shape {array.shape}"
        )
    return array


# ---------------------------------------------------------------- the fleet


class DeviceIndex:
    """Where each device id sits in an array of ids, looked up for rows keyed by device id: ids as text, or
    as an array of ASCII bytes (the loader's bulk reads). A dict lookup each, cheaper than comparing strings
    in numpy."""

    def __init__(self, device_id: np.ndarray) -> None:
        self._text = {device: position for position, device in enumerate(np.asarray(device_id).tolist())}

    @functools.cached_property
    def _bytes(self) -> dict[bytes, int]:
        return {device.encode(): position for device, position in self._text.items()}

    def positions(self, ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each id's position (0 where absent), and whether it is there at all."""
        raw = isinstance(ids, np.ndarray) and ids.dtype.kind == "S"
        index = self._bytes if raw else self._text
        keys = ids.tolist() if isinstance(ids, np.ndarray) else ids
        try:
            found = np.fromiter(map(index.__getitem__, keys), dtype=np.intp, count=len(keys))
        except KeyError:  # some rows are of devices not here
            found = np.fromiter((index.get(device, -1) for device in keys), dtype=np.intp, count=len(keys))
        known = found >= 0
        return np.where(known, found, 0), known


@dataclass
class FleetFacts:
    """Everything rules read about a set of devices at one instant, aligned by device index."""

    now: np.datetime64
    device_id: np.ndarray  # str
    model: np.ndarray  # str, model code
    kind: np.ndarray | None = None  # str; derived from the models catalog when omitted
    purchased_on: np.ndarray | None = None  # datetime64[s], NaT unknown
    owner_birthday: np.ndarray | None = None  # datetime64[D], NaT unknown or no owner
    online: np.ndarray | None = None  # bool, the retained status (False when offline or unknown)
    offline_since: np.ndarray | None = None  # datetime64[s], when the status turned offline; NaT while online
    last_seen: np.ndarray | None = None  # datetime64[s], last telemetry or event ts; NaT never seen
    loaded: dict[Requirement, Any] = field(default_factory=dict)
    index: DeviceIndex | None = field(default=None, repr=False, compare=False)  # built on first use if None

    def __post_init__(self) -> None:
        self.now = to_datetime64(self.now)
        self.device_id = np.asarray(self.device_id, dtype=str)
        size = self.device_id.shape[0]
        self.model = np.asarray(self.model, dtype=str)
        if self.kind is None:
            kind_of_model = {code: model.kind for code, model in load_catalog().items()}
            self.kind = np.array([kind_of_model.get(code, "") for code in self.model], dtype=str)
        self.kind = np.asarray(self.kind, dtype=str)
        nat_seconds = np.full(size, np.datetime64("NaT"), dtype=SECONDS)
        self.purchased_on = nat_seconds if self.purchased_on is None else as_datetime(self.purchased_on)
        self.owner_birthday = (
            np.full(size, np.datetime64("NaT"), dtype=DAYS)
            if self.owner_birthday is None
            else as_datetime(self.owner_birthday, DAYS)
        )
        self.online = (
            np.zeros(size, dtype=bool) if self.online is None else np.asarray(self.online, dtype=bool)
        )
        self.offline_since = nat_seconds if self.offline_since is None else as_datetime(self.offline_since)
        self.last_seen = nat_seconds if self.last_seen is None else as_datetime(self.last_seen)
        for name in (
            "model",
            "kind",
            "purchased_on",
            "owner_birthday",
            "online",
            "offline_since",
            "last_seen",
        ):
            if getattr(self, name).shape != (size,):
                raise ValueError(
                    f"FleetFacts.{name}: expected {size} values, got shape {getattr(self, name).shape}"
                )
        self._scope_masks: dict[tuple[str, str], np.ndarray] = {}
        loaded, self.loaded = self.loaded, {}
        for requirement, value in loaded.items():
            self.add(requirement, value)

    @property
    def size(self) -> int:
        return int(self.device_id.shape[0])

    def positions(self, ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each id's index among the devices (0 where absent), and whether it is among them."""
        if self.index is None:
            self.index = DeviceIndex(self.device_id)
        return self.index.positions(ids)

    @property
    def now_seconds(self) -> float:
        return float(self.now.astype(SECONDS).astype(np.int64))

    def add(self, requirement: Requirement, value: Any) -> None:
        """Store the loaded value of one requirement (coerced to the documented dtypes)."""
        self.loaded[requirement] = _coerce(requirement, value, self.size)

    def get(self, requirement: Requirement) -> Any:
        """The loaded value, or None when the loader did not fetch it."""
        return self.loaded.get(requirement)

    def missing(self, requirements: Iterable[Requirement]) -> list[Requirement]:
        return [requirement for requirement in requirements if requirement not in self.loaded]

    def scope_mask(self, *, kind: str | None = None, model: str | None = None) -> np.ndarray:
        """Devices of a kind or a model (every device when neither is given), cached per facts."""
        key = ("kind", kind) if kind is not None else ("model", model or "")
        if key not in self._scope_masks:
            if kind is None and model is None:
                self._scope_masks[key] = np.ones(self.size, dtype=bool)
            else:
                self._scope_masks[key] = self.kind == kind if kind is not None else self.model == model
        return self._scope_masks[key]

    @functools.cached_property
    def _model_codes(self) -> tuple[np.ndarray, np.ndarray]:
        codes, inverse = np.unique(self.model, return_inverse=True)
        return codes, inverse

    def per_model(self, value_by_model: Mapping[str, float]) -> np.ndarray:
        """A per-model number (e.g. expected life) broadcast to every device; NaN for unknown models."""
        codes, inverse = self._model_codes
        values = np.array([value_by_model.get(code, np.nan) for code in codes], dtype=np.float64)
        return values[inverse]
