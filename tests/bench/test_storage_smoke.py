"""`careloop bench storage` at a tiny size against the real database: the readings it generated are the ones it
measures, each figure is a real one, and compression is measured exactly where telemetry is a hypertable."""

from __future__ import annotations

import pytest

from bench.storage import measure_storage
from careloop.cli import main
from devices.catalog import load_catalog

pytestmark = pytest.mark.integration


def test_bytes_and_charts_are_measured_for_the_readings_generated(database_url) -> None:
    devices, days, every_s = 12, 1, 900
    figures = measure_storage(database_url, devices=devices, days=days, every_s=every_s, charts=10)
    catalog = load_catalog()
    models = sorted(catalog)
    metrics = sum(len(catalog[models[n % len(models)]].metrics) for n in range(devices))
    assert figures.readings == metrics * (days * 86400 // every_s)
    # a reading is a row of five columns with its key's index entry: tens of bytes, never a few or many kilobytes
    assert 30 < figures.bytes_before / figures.readings < 4000
    assert len(figures.chart_before.seconds) == 10 and figures.chart_before.points > 0
    if figures.hypertable:
        assert figures.bytes_after is not None and 0 < figures.bytes_after < figures.bytes_before
        assert figures.chart_after is not None and figures.chart_after.points == figures.chart_before.points
        assert "smaller" in figures.lines()[-1]
    else:
        assert figures.compress_s is None and figures.bytes_after is None and figures.chart_after is None
        assert "not measured" in figures.lines()[-1]


def test_the_command_prints_its_table(database_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CARELOOP_DATABASE_URL", database_url)
    assert main(["bench", "storage", "--devices", "5", "--days", "1", "--every", "3600", "--charts", "3"]) == 0
    printed = capsys.readouterr().out
    assert "bytes/reading" in printed and "as written" in printed and "compression:" in printed
