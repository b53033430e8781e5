"""Engine partitions in the database: which devices a partition holds, and its evaluation lock.

The hash that assigns a device to a partition lives in `partition.sql` alone (PostgreSQL's
`hashtextextended`); the engine asks the database rather than hashing in Python, so nothing can disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from careloop.db import Connection, copy_columns, fetch_all, load_queries
from careloop.partitions import Partition

QUERIES = load_queries(Path(__file__).with_name("partition.sql"))


def devices_in_partition(
    conn: Connection, *, partition: Partition, device_ids: Sequence[str] | None = None
) -> list[str]:
    """The registered devices of `partition` (only those among `device_ids` when given), in byte order of id."""
    params = {
        "index": partition.index,
        "count": partition.count,
        "device_ids": None if device_ids is None else list(device_ids),
    }
    [ids] = copy_columns(conn, QUERIES["devices_in_partition"], params, 1)
    return ids.astype(str).tolist()


def lock_partition_evaluation(conn: Connection, *, partition: Partition) -> None:
    """Hold, until commit, the lock that lets one evaluation of this partition decide and write at a time."""
    fetch_all(conn, QUERIES["lock_partition_evaluation"], {"partition": str(partition)})
