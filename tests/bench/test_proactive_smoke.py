"""`careloop bench proactive` at a tiny size, against the real PostgreSQL and broker: every phase runs, the report
has a row per fault code and per kind's gradual failure, and every detection's order and call were made once."""

from __future__ import annotations

import argparse
import time

import pytest

from bench.proactive import ProactiveRun
from devices.catalog import load_catalog
from simulators.appliances import PHYSICS_BY_KIND

pytestmark = pytest.mark.integration

TINY = argparse.Namespace(
    devices=40, days=2, step=900, history_days=1, warmup_days=0.5, faults="all:0.1", seed=5, ahead_days=2,
    owner_median_h=6.0, dispatcher_median_min=30.0, live_faults=4, live_rate=20.0,
)  # fmt: skip


def test_a_tiny_run_scores_every_fault_kind_and_acts_once_per_detection() -> None:
    started = time.monotonic()
    run = ProactiveRun(TINY)
    report = run.execute()

    catalog = load_catalog()
    codes = {code for device in run.fleet for code in catalog[device.model].fault_codes}
    sudden = [row for row in report.scores.rows if row.sort == "sudden"]
    gradual = [row for row in report.scores.rows if row.sort == "gradual"]
    assert sorted(row.label.split()[0] for row in sudden) == sorted(codes)
    assert sorted(row.label for row in gradual) == sorted(
        f"{kind} {physics.gradual_failure.part}" for kind, physics in PHYSICS_BY_KIND.items() if physics.gradual_failure
    )
    scored_faults = [f for f in run.faults.values() if run.scored_from <= f.started_at < run.end]
    assert report.total("sudden").faults == len(scored_faults) > 0
    for row in report.scores.rows:
        assert 0 <= row.first <= row.faults and row.false_calls <= row.calls
        assert len(row.leads_days) <= row.faults
    assert report.scores.calls > 0 and report.scores.false_calls <= report.scores.calls

    once = report.exactly_once
    assert once.order_actions > 0 and once.call_actions > 0
    assert once.holds and once.pending_actions == 0

    assert report.live is not None and report.live.published == TINY.live_faults
    assert len(report.live.seconds) == TINY.live_faults, "every live fault's order and call task became visible"
    assert report.live.background_messages > 0
    text = report.lines()
    for part in ("all sudden", "all gradual", "false", "live, fault published over MQTT", "exactly once"):
        assert part in text
    assert time.monotonic() - started < 60
