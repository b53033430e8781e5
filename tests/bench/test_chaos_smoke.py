"""`careloop bench chaos` at a small size: every code path of the benchmark against a real Mosquitto and PostgreSQL
of its own, with one fault of each kind."""

from __future__ import annotations

import argparse
import socket
import time

import pytest

from bench.chaos import ChaosRun
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
    # Mosquitto 2.0 restores no shared subscription after a restart and acks what arrives before the ingester has
    # subscribed again with "no matching subscribers" (0x10); the publishers, as devices must, send that again
    # until it is acked with success. So every reading is stored, once, whatever the race gave.
    assert report.resent == report.acked_no_subscribers and report.given_up == 0
    assert report.stored == report.published == 2_000
    assert not report.gaps.ranges and report.gaps.missing_by_device_state == 0
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
