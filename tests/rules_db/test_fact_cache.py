"""The engine's FactCache: whole-fleet facts kept between runs are always those a fresh read gives."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from numpy.testing import assert_allclose

from careloop.db import execute
from rules.facts import Latest, Trend
from rules.loader import FactCache, LoadOptions, learn_trends, load_facts
from tests.factories import make_customer, make_device
from tests.rules_db.test_loader import assert_same_facts

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
TREND = Trend("grease_load_pct", 86400)


def _store_grease(conn, device_id: str, values: list[float]) -> None:
    """Hourly readings up to NOW, and the newest one in device_latest, as the ingester keeps it."""
    for hour, value in enumerate(values):
        execute(
            conn,
            "INSERT INTO telemetry (ts, device_id, metric, value, seq) VALUES (%s, %s, 'grease_load_pct', %s, %s)",
            (NOW - dt.timedelta(hours=len(values) - hour), device_id, value, hour + 1),
        )
    execute(
        conn,
        "INSERT INTO latest_readings (device_id, newest_ts, metrics, readings, ts, seqs)"
        " VALUES (%(device)s, %(ts)s, '{grease_load_pct}', ARRAY[%(value)s], ARRAY[%(ts)s], ARRAY[%(seq)s])",
        {"device": device_id, "value": values[-1], "ts": NOW - dt.timedelta(hours=1), "seq": len(values)},
    )


def _both(conn, cache: FactCache):
    """Facts read through the cache, and read fresh."""
    requirements = [TREND, Latest("grease_load_pct")]
    cached = load_facts(conn, now=NOW, requirements=requirements, options=LoadOptions(learned_trends=True, cache=cache))
    return cached, load_facts(conn, now=NOW, requirements=requirements, options=LoadOptions(learned_trends=True))


def test_cached_device_columns_and_trend_fits_follow_every_change(conn) -> None:
    owner = make_customer(conn, birthday="1970-03-04")
    make_device(conn, id="FC-1", owner=owner.id)
    _store_grease(conn, "FC-1", [10, 12, 14])
    learn_trends(conn, now=NOW, requirements=[TREND])
    cache = FactCache()

    cached, fresh = _both(conn, cache)
    assert_same_facts(cached, fresh)
    assert_allclose(cached.get(TREND).slope_per_s * 3600, [2.0], atol=1e-9)
    assert cache.reads == 2  # the device columns and the fits
    cached, fresh = _both(conn, cache)
    assert_same_facts(cached, fresh)
    assert cache.reads == 2  # nothing changed: nothing read again

    make_device(conn, id="FC-0", model="OV-700", purchased_on="2019-01-01")
    execute(conn, "UPDATE customers SET birthday = '1971-05-06' WHERE id = %s", (owner.id,))
    execute(conn, "UPDATE devices SET purchased_on = '2020-02-02' WHERE id = 'FC-1'")
    cached, fresh = _both(conn, cache)
    assert_same_facts(cached, fresh)
    assert cached.device_id.tolist() == ["FC-0", "FC-1"]
    assert cached.owner_birthday[1] == np.datetime64("1971-05-06")
    assert cache.reads == 3

    # A refit moves the fits' revision: the cached lines are replaced by the new ones.
    _store_grease(conn, "FC-0", [1, 1, 1])
    execute(conn, "UPDATE telemetry SET value = value * 3 WHERE device_id = 'FC-1'")
    execute(conn, "UPDATE latest_readings SET readings[1] = readings[1] * 3 WHERE device_id = 'FC-1'")
    learn_trends(conn, now=NOW, requirements=[TREND])
    cached, fresh = _both(conn, cache)
    assert_same_facts(cached, fresh)
    assert_allclose(cached.get(TREND).slope_per_s * 3600, [0.0, 6.0], atol=1e-9)
    assert cache.reads == 4


def test_a_rolled_back_change_never_leaves_its_rows_in_the_cache(conn) -> None:
    make_device(conn, id="RB-1")
    cache = FactCache()
    cached = LoadOptions(cache=cache)
    conn.commit()
    make_device(conn, id="RB-2")  # seen by a read inside the same transaction ...
    assert load_facts(conn, now=NOW, requirements=[], options=cached).device_id.tolist() == ["RB-1", "RB-2"]
    conn.rollback()  # ... then undone: its revision number is never used again
    make_device(conn, id="RB-3")
    assert load_facts(conn, now=NOW, requirements=[], options=cached).device_id.tolist() == ["RB-1", "RB-3"]


@pytest.mark.parametrize("device_ids", [["RB-1"], []])
def test_a_load_of_some_devices_neither_reads_nor_fills_the_cache(conn, device_ids: list[str]) -> None:
    make_device(conn, id="RB-1")
    cache = FactCache()
    options = LoadOptions(learned_trends=True, cache=cache)
    facts = load_facts(conn, now=NOW, requirements=[TREND], device_ids=device_ids, options=options)
    assert facts.device_id.tolist() == device_ids
    assert cache.reads == 0
