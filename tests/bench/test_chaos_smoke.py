"""`careloop bench chaos` at a small size: every code path of the benchmark against a real Mosquitto and PostgreSQL
of its own, with one fault of each kind."""

from __future__ import annotations

import argparse
import socket
import time

import pytest

from bench.chaos import RESTART_MOSQUITTO, ChaosRun, fault_near
from bench.services import ServiceUnavailable, mosquitto_binary, postgres_binaries

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def servers_available() -> None:
    try:
        postgres_binaries()
        mosquitto_binary()
    except ServiceUnavailable as missing:
        pytest.skip(f"bench chaos needs servers it may restart: {missing}")


def test_chaos_smoke_stores_every_delivered_reading_once_and_cleans_up(servers_available) -> None:
    started = time.monotonic()
    run = ChaosRun(argparse.Namespace(readings=2_000, devices=20, kills=2, seed=3))
    try:
        report = run.execute()
    finally:
        run.close()

    kinds = sorted(fault.kind for fault in report.faults)
    assert kinds == ["kill", "kill_before_ack", "mosquitto", "postgres"]
    assert report.acked == report.published == 2_000
    assert report.duplicates == 0
    assert report.journal.killed_batches, "the kill between commit and ack happened at a committed batch"
    assert report.journal.duplicates > 0, "what was committed but not acked came again and was skipped"
    # Stored, or dropped by the broker itself: Mosquitto 2.0 restores no shared subscription after a restart, and
    # says so to the publisher (PUBACK "no matching subscribers") for what arrives before the ingester resubscribes.
    assert report.stored + report.acked_no_subscribers == 2_000
    for gap in report.gaps.ranges:
        low = gap.after_ts if gap.after_ts is not None else report.started
        high = gap.before_ts if gap.before_ts is not None else float("inf")
        cause = fault_near(report.faults, low, high, slack_s=1.0)
        assert cause is not None and cause.kind == RESTART_MOSQUITTO, f"{gap} is not the broker restart's"
    assert not report.gaps.bookkeeping_mismatches
    assert not report.unexpected_exits
    assert "guarantees:" in report.lines()
    # Nothing of the run is left: folder, ingester, publishers, servers.
    assert not run.folder.exists()
    assert run.ingester.poll() is not None
    assert not any(publisher.is_alive() for publisher in run.publishers)
    assert not listening(run.mosquitto.port)
    assert not listening(run.postgres.port)
    assert time.monotonic() - started < 60
