"""`careloop bench faults` at a tiny size, with the real broker, database and `careloop ingest`, `engine` and `api`
processes: the drain rate is measured, every fault published shows its order and call task through the API, and
the tables agree."""

from __future__ import annotations

import pytest

from bench.faults import PHASES, measure_faults

pytestmark = pytest.mark.integration


def test_every_fault_published_at_each_rate_shows_its_order_and_call_task(database_url, mqtt_url, monkeypatch):
    monkeypatch.setenv("CARELOOP_DATABASE_URL", database_url)
    monkeypatch.setenv("CARELOOP_MQTT_URL", mqtt_url)
    # Under 1,000 messages queued: Mosquitto's default queue limit keeps them all for the drained session.
    figures = measure_faults(
        shares=[0.1, 0.3], faults=3, seconds=3, devices=30, drain_rate=None, drain_messages=600, seed=4
    )

    assert figures.drain_measured and figures.drain_rate > 0
    assert [rate.share for rate in figures.rates] == [0.1, 0.3]
    for rate in figures.rates:
        assert rate.published == 3, "each rate publishes its faults"
        assert len(rate.seconds) == 3, f"every fault's order and call task became visible at {rate.share:.0%}"
        assert all(0 < seconds < 30 for seconds in rate.seconds)
        assert all(
            max(order, call) == pytest.approx(both)
            for order, call, both in zip(rate.order_seconds, rate.call_seconds, rate.seconds, strict=True)
        )
        assert rate.messages == int(rate.rate * 3), "the publisher sent what its rate and seconds ask"
        assert rate.missing_readings == 0, "the telemetry beside the faults was stored"
        # each fault's time split by the tables' moments: every phase measured, and they add up to the whole
        assert all(len(rate.phases[phase]) == 3 for phase in PHASES)
        assert sorted(sum(split) for split in zip(*rate.phases.values(), strict=True)) == pytest.approx(
            sorted(rate.seconds), abs=0.01)
    assert len(figures.faulted) == 6 and len({device for device, _ in figures.faulted}) == 6
    assert figures.with_order_and_call == 6
    text = "\n".join(figures.lines())
    assert "in the tables: 6 of 6 faulted devices" in text and "30%" in text
    assert "where the time went, p50/p99 ms: received" in text
