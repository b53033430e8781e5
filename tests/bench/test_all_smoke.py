"""`careloop bench all` at a tiny size, against the real database and broker: every benchmark of the suite runs, the
table names each, latest.json holds figures that add up, and each curve is drawn to a PNG."""

from __future__ import annotations

import json

import pytest

from careloop.cli import main

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_suite_writes_its_figures_and_draws_its_curves(database_url, mqtt_url, monkeypatch, capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="bench all draws with the bench extra: pip install -e '.[bench]'")
    monkeypatch.setenv("CARELOOP_DATABASE_URL", database_url)
    monkeypatch.setenv("CARELOOP_MQTT_URL", mqtt_url)
    code = main([
        "bench", "all", "--out", str(tmp_path),
        # under 1,000 messages queued: Mosquitto's default queue limit keeps them all for the drained session
        "--drain-messages", "600",
        "--fault-rates", "10,50", "--faults", "2", "--fault-seconds", "3", "--fault-devices", "30",
        "--engine-devices", "200,400", "--engine-days", "1", "--engine-every", "3600",
        "--read-customers", "100", "--read-devices", "300", "--read-readings", "30000", "--read-rates", "15,30",
        "--read-seconds", "2", "--read-workers", "1,2",
        "--storage-devices", "10", "--storage-days", "1", "--storage-every", "600",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0

    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["ingest"]["stored_readings"] == 600 * 5 and results["ingest"]["readings_per_s"] > 0
    assert [rate["share"] for rate in results["faults"]["rates"]] == [0.1, 0.5]
    assert all(rate["visible"] == rate["faults"] == 2 for rate in results["faults"]["rates"])
    assert results["faults"]["with_order_and_call"] == results["faults"]["faulted"] == 4
    assert results["faults"]["drain_rate"] == pytest.approx(results["ingest"]["messages_per_s"])
    assert [engine["devices"] for engine in results["engine"]] == [200, 400]
    assert all(engine["best_s"]["window"] > 0 for engine in results["engine"])
    assert [(run["workers"], run["rate"]) for run in results["reads"]["runs"]] == [(1, 15), (1, 30), (2, 15), (2, 30)]
    for run in results["reads"]["runs"]:
        for name, endpoint in run["endpoints"].items():
            assert endpoint["statuses"] == {"200": run["rate"] * 2 // 3}, (run["rate"], name)
    storage = results["storage"]
    assert storage["readings"] > 0 and storage["bytes_per_reading"] > 0 and storage["chart_p99_s"] > 0
    assert (storage["compressed_bytes_per_reading"] is not None) == storage["timescaledb"]
    sizing = results["sizing"]
    assert sizing["devices_per_ingester_core_at_one_message_every_30_s"] == pytest.approx(
        results["ingest"]["messages_per_s"] * 30
    )
    assert sizing["engine_window_s_per_100k_devices"] == pytest.approx(
        results["engine"][-1]["best_s"]["window"] * 100_000 / 400
    )

    for png in ("engine_scaling.png", "faults_latency.png", "reads_p99.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_SIGNATURE, png
    for part in ("ingest", "fault to action", "engine", "reads", "storage", "sizing", "latest.json"):
        assert part in printed
