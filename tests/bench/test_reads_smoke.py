"""`careloop bench reads` at a tiny size, against the real database and a real `careloop api` process: the fleet is
loaded, the faults have open orders on the board, and every request of the load was answered 200 with data."""

from __future__ import annotations

import pytest

from bench.reads import ENDPOINTS, measure_reads

pytestmark = pytest.mark.integration


def test_every_read_under_the_fixed_rate_is_answered_with_data(database_url, monkeypatch):
    monkeypatch.setenv("CARELOOP_DATABASE_URL", database_url)
    figures = measure_reads(customers=100, devices=300, readings=30_000, rates=[30], seconds=2, workers=[1, 2])

    assert figures.customers == 100 and figures.devices == 300
    assert 20_000 <= figures.readings <= 45_000, "about the readings asked for"
    assert figures.open_orders >= 300 // 50, "one device in fifty has a fault, and its order is open"
    assert [(run.workers, run.rate) for run in figures.runs] == [(1, 30), (2, 30)]
    for run in figures.runs:
        assert list(run.endpoints) == list(ENDPOINTS)
        for endpoint in run.endpoints.values():
            assert len(endpoint.seconds) == 20, f"{endpoint.name}: a third of 30 requests/s for 2 s"
            assert endpoint.statuses == {200: 20}, f"{endpoint.name}: {endpoint.statuses}"
            assert endpoint.items > 0, f"{endpoint.name}: the answers carry data"
            assert all(0 < seconds < 30 for seconds in endpoint.seconds)
    text = "\n".join(figures.lines())
    for name in ENDPOINTS:
        assert name in text
