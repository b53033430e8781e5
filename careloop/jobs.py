"""A scheduled job a domain offers the engine process: what it runs, how often, and whether it also runs right
after each evaluation (for effects that should follow a detection within the second)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    every_s: int
    # run(conn, now) in one transaction; answers a JSON-ready summary of what it did
    run: Callable[[Any, dt.datetime], Any]
    after_evaluation: bool = False
