"""Which share of the fleet one engine process evaluates: partition `I/N`, the devices whose id hashes to I modulo N.

Several `careloop engine --partition I/N` processes (I = 0 .. N-1, the same N for all) share one fleet, each
evaluating only its own devices. The hash itself is computed by the database, in one place
(`rules/partition.sql`), so every process and every query agrees on it whatever the language that asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARTITION_PATTERN = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
MAX_PARTITIONS = 1024  # far more engines than one database could serve; keeps a typo like 1/30000 out


@dataclass(frozen=True, order=True)
class Partition:
    """Partition `index` of `count` (0-based: `0/3`, `1/3`, `2/3` together cover the fleet)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(f"the number of partitions must be from 1 to {MAX_PARTITIONS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"partition {self}: the index counts from 0, so it must be from 0 to {self.count - 1}"
            )

    @classmethod
    def parse(cls, text: str) -> Partition:
        """`I/N`, e.g. `0/3`."""
        match = PARTITION_PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"invalid partition {text!r}: write I/N, e.g. 0/3 (the first of three partitions)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def is_first(self) -> bool:
        """The partition that also runs the fleet-wide jobs (those not about one device)."""
        return self.index == 0

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
