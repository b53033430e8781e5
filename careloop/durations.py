"""Durations as people write them in rules and queries: `90s`, `30m`, `24h`, `7d`, `5y`."""

from __future__ import annotations

import datetime as dt
import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy])\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `30m`, `24h`, `7d`, `2w`, `5y` (a year is 365 days); ValueError naming the text otherwise."""
    match = DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number and one of s, m, h, d, w, y (e.g. 30m, 7d)"
        )
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    """The shortest exact form: 86400 s is `1d`."""
    seconds = delta.total_seconds()
    for unit in ("y", "w", "d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
