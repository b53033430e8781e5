"""`careloop bench ingest` at a small size, both ways, against the real broker and database: every message it
publishes is stored once, and it prints its table."""

from __future__ import annotations

import pytest

from careloop.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("mode", "processes"), [("drain", []), ("live", []), ("drain", ["--processes"]),
                                                ("live", ["--processes"])])
def test_bench_ingest_stores_every_reading_once_and_prints_the_ratios(mode, processes, database_url, mqtt_url,
                                                                       monkeypatch, capsys) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", database_url)
    monkeypatch.setenv("CARELOOP_MQTT_URL", mqtt_url)
    # Under 1000 messages: a broker's default max_queued_messages keeps them all for the drained sessions.
    # With --processes, two `careloop ingest` processes share the subscription.
    ingesters = ["--ingesters", "2"] if processes else []
    code = main(["bench", "ingest", "--messages", "600", "--publishers", "2", "--devices", "20", "--mode", mode,
                 *ingesters, *processes])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"careloop bench ingest ({mode})" in printed
    assert "rows in telemetry: 3,000 of 3,000 expected (every reading stored once)" in printed
    assert "ingest / broker drain:" in printed and "ingest / COPY:" in printed
    if processes:
        assert "2 ingester(s) as processes of their own" in printed and "2 ingest process(es)" in printed
