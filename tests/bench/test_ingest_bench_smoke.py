"""`careloop bench ingest` at a small size, both ways, against the real broker and database: every message it
publishes is stored once, and it prints its table; live, every message published at each rate is seen committed
and timed."""

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
    # A drain of 600 messages can commit them all in its first, untimed, batch: the live rates get a fixed base.
    live = (["--rates", "10,50", "--drain-rate", "200", "--seconds", "2", "--live-devices", "30"]
            if mode == "live" else [])
    code = main(["bench", "ingest", "--messages", "600", "--publishers", "2", "--devices", "20", "--mode", mode,
                 *ingesters, *processes, *live])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"careloop bench ingest ({mode})" in printed
    assert "rows in telemetry: 3,000 of 3,000 expected (every reading stored once)" in printed
    assert "ingest / broker drain:" in printed and "ingest / COPY:" in printed
    assert "of paho's" in printed and "of the careloop client's" in printed
    for client in ("paho as shipped", "careloop client"):
        [row] = [line for line in printed.splitlines() if line.startswith(f"broker drain ({client}, no database)")]
        assert float(row.split()[-2].replace(",", "")) > 0, f"{client}: every queued message drained"
    assert ("storage after compression: not measured" in printed
            or "storage after TimescaleDB compression:" in printed)
    if processes:
        assert "2 ingester(s) as processes of their own" in printed and "2 ingest process(es)" in printed
    if mode == "live":
        assert "rates as shares of 200 messages/s (--drain-rate)" in printed
        rows = printed.split("live: publish → commit", 1)[1].splitlines()[2:4]
        assert [row.split()[0] for row in rows] == ["10%", "50%"]
        for row in rows:
            _share, _offered, published, committed, p50, p99, most, _late = row.split()
            assert committed == published and int(published.replace(",", "")) > 0
            assert 0 < float(p50) <= float(p99) <= float(most)
