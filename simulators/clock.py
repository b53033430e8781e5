"""Simulated time: its units, moments in UTC, and the chance that a daily-rate event falls in a step."""

from __future__ import annotations

import datetime as dt

import numpy as np

HOUR_S = 3_600.0
DAY_S = 86_400.0


def as_utc(moment: dt.datetime) -> dt.datetime:
    """The moment in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def chance_within(per_day: float | np.ndarray, elapsed_s: np.ndarray) -> np.ndarray:
    """The chance that an event with hazard `per_day` (events per day) happens within elapsed_s seconds."""
    return -np.expm1(-per_day * elapsed_s / DAY_S)
