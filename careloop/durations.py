"""Durations written as `90s`, `30m`, `24h`, `7d`, `2w`, `5y`, held as whole seconds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# A year is 365 days: rules speak of appliance ages and service intervals, where a leap day is noise.
UNIT_SECONDS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
DURATION_PATTERN = re.compile(r"^\s*(\d{1,12})\s*([smhdwy])\s*$")
# Far beyond any appliance, and small enough that numpy time arithmetic cannot overflow.
MAX_SECONDS = 1000 * UNIT_SECONDS["y"]
# Largest unit first, so a duration prints in its shortest exact form; weeks are read but printed as days.
_UNITS_LARGEST_FIRST = [(unit, UNIT_SECONDS[unit]) for unit in ("y", "d", "h", "m", "s")]


@dataclass(frozen=True, order=True)
class Duration:
    """A non-negative span of time in whole seconds."""

    seconds: int

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {self.seconds}s")
        if self.seconds > MAX_SECONDS:
            raise ValueError(f"a duration cannot be longer than 1000y, got {self.seconds}s")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse `<whole number><unit>` with unit one of s, m, h, d, w, y."""
        match = DURATION_PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"invalid duration {text!r}: write a whole number and a unit, "
                "one of s, m, h, d, w, y (e.g. 90s, 30m, 24h, 7d, 5y)"
            )
        count, unit = match.groups()
        return cls(int(count) * UNIT_SECONDS[unit])

    @property
    def days(self) -> float:
        return self.seconds / 86400

    def __str__(self) -> str:
        for unit, size in _UNITS_LARGEST_FIRST:
            if self.seconds and self.seconds % size == 0:
                return f"{self.seconds // size}{unit}"
        return "0s"


def _coerce_duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        # Bare numbers are refused: `cooldown: 30` could mean seconds, minutes or days.
        raise ValueError(f"invalid duration {value!r}: write it as text with a unit, e.g. 30m, 24h or 7d")
    return Duration.parse(value)


DurationField = Annotated[
    Duration,
    BeforeValidator(_coerce_duration),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+[smhdwy]$", "examples": ["90s", "30m", "24h", "7d"]}),
]
"""A pydantic field type: accepts `24h`, dumps back to `1d`-style text."""
