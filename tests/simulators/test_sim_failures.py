"""Gradual failures as ground truth: the level each kind fails at, the moment it is crossed, the owner's cleaning,
and the last cleanings before a simulation starts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from devices.catalog import get_model
from simulators.appliances import PHYSICS_BY_KIND, Inputs
from simulators.failures import load_gradual_failures
from simulators.faults import load_ground_truth
from simulators.fleet import make_fleet
from simulators.run import generate_history
from simulators.simulation import Simulation
from tests.simulators.simhelpers import START, TODAY, channel_of, device_of, make_device


def _mean_reading(model_code: str, metric: str, *, fouling: float = 0.0, wear: float = 0.0) -> float:
    """The metric's mean over many devices of a model with this fouling and wear, running."""
    model = get_model(model_code)
    assert model is not None
    n = 4000
    inputs = Inputs(
        run_hours=np.full(n, 100.0),
        fouling=np.full(n, fouling),
        wear=np.full(n, wear),
        trait=np.random.default_rng(1).random(n),
        running=np.ones(n, dtype=bool),
        day_of_year=200,
    )
    return float(np.mean(PHYSICS_BY_KIND[model.kind].measure(model, inputs, np.random.default_rng(2))[metric]))


@pytest.mark.parametrize(
    ("model", "metric", "ratio"),
    [
        ("RH-900", "airflow_m3h", 0.5),  # half the air extracted
        ("WH-80", "heating_time_min", 2.0),  # half the heating rate
        ("DW-450", "drain_time_s", 2.0),  # half the draining rate
        ("AC-350", "filter_dp_pa", 4.0),  # 4x the resistance: half the airflow at the fan's pressure
        ("OV-700", "heat_rate_c_per_min", 0.5),  # half the heating rate
    ],
)
def test_each_kind_fails_where_it_does_its_job_at_half_its_clean_rate(model: str, metric: str, ratio: float) -> None:
    failure = PHYSICS_BY_KIND[get_model(model).kind].gradual_failure
    assert failure is not None and metric in failure.metrics
    worn = {failure.quantity: failure.level}
    assert _mean_reading(model, metric, **worn) / _mean_reading(model, metric) == pytest.approx(ratio, rel=0.02)


def test_a_neglected_hood_fails_once_in_the_step_its_grease_crosses_the_level() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=3, start=START, offline_per_day=0)
    simulation.diligence[:] = 0.0  # never cleaned
    level = PHYSICS_BY_KIND["range_hood"].gradual_failure.level
    crossing: list[tuple[dt.datetime, float, float]] = []
    records = []
    step = dt.timedelta(hours=1)
    for hour in range(1, 24 * 200):
        before = float(simulation.fouling[0])
        moment = START + hour * step
        simulation.step(moment, step.total_seconds())
        if before < level <= simulation.fouling[0]:
            crossing.append((moment, before, float(simulation.fouling[0])))
        records += simulation.take_failure_transitions()
    assert len(crossing) == 1
    [record] = records
    assert (record.device_id, record.kind, record.part, record.quantity) == (
        device.device_id, "range_hood", "grease_filter", "fouling")  # fmt: skip
    assert record.failed_at == f"{crossing[0][0]:%Y-%m-%dT%H:%M:%S}.000Z"
    assert record.since is None and record.cleaned_at is None  # new, never cleaned
    assert [r.failed_at for r in simulation.open_failures()] == [record.failed_at]


def test_the_owners_cleaning_ends_the_failure_and_starts_the_next_worsening() -> None:
    device = make_device("DW-450")
    simulation = Simulation([device], seed=4, start=START, offline_per_day=0)
    simulation.diligence[:] = 0.0
    level = PHYSICS_BY_KIND["dishwasher"].gradual_failure.level
    simulation.fouling[:] = level - 0.01
    moment, records, messages = START, [], []
    while not records:
        moment += dt.timedelta(hours=1)
        messages += simulation.step(moment, 3600)
        records += simulation.take_failure_transitions()
    [failed] = records
    simulation.diligence[:] = 1e6  # cleans at the next step
    moment += dt.timedelta(hours=1)
    messages += simulation.step(moment, 3600)
    [cleaned] = simulation.take_failure_transitions()
    [event] = [m.payload for m in messages if channel_of(m) == "events" and m.payload["type"] == "maintenance_done"]
    assert (cleaned.failed_at, cleaned.cleaned_at) == (failed.failed_at, event["ts"])
    assert simulation.open_failures() == []
    # The next failure of this device counts its worsening from that cleaning.
    simulation.diligence[:] = 0.0
    simulation.fouling[:] = level - 0.001
    while True:
        moment += dt.timedelta(hours=1)
        simulation.step(moment, 3600)
        if again := simulation.take_failure_transitions():
            break
    assert again[0].since == event["ts"] and again[0].failed_at > event["ts"]


def test_a_device_past_its_level_at_the_start_failed_before_it_and_writes_no_line() -> None:
    device = make_device("AC-350")
    simulation = Simulation([device], seed=5, start=START, offline_per_day=0)
    simulation.fouling[:] = 0.9
    simulation.failures.restart(0, 0.9)
    [record] = simulation.open_failures()
    assert record.failed_at is None
    simulation.diligence[:] = 0.0
    simulation.step(START + dt.timedelta(hours=1), 3600)
    assert simulation.take_failure_transitions() == []


def test_past_cleanings_report_each_owners_last_cleaning_with_the_run_hours_then() -> None:
    fleet = make_fleet(60, seed=8, today=TODAY)
    simulation = Simulation(fleet, seed=8, start=START, offline_per_day=0)
    messages = simulation.past_cleanings()
    assert messages, "an old fleet has owners who cleaned"
    by_device: dict[str, list] = {}
    for message in messages:
        by_device.setdefault(device_of(message), []).append(message.payload)
    for device_id, (reading, event) in by_device.items():
        position = simulation.index_of(device_id)
        assert (reading["seq"], event["seq"]) == (1, 2) and reading["ts"] == event["ts"]
        assert event["type"] == "maintenance_done"
        assert reading["ts"] < f"{START:%Y-%m-%dT%H:%M:%S}"
        assert 0 <= reading["metrics"]["run_hours"] < simulation.run_hours[position]
    timestamps = [message.payload["ts"] for message in messages]
    assert timestamps == sorted(timestamps)
    # The gradual failures count their worsening from the same cleanings.
    since = {record.device_id: record.since for record in simulation.open_failures()}
    assert all(since[d] == by_device[d][0]["ts"] for d in since if d in by_device)
    simulation.step(START + dt.timedelta(minutes=15), 900)
    with pytest.raises(RuntimeError, match="before the first step"):
        simulation.past_cleanings()


def test_the_ground_truth_file_keeps_gradual_failures_apart_from_faults(tmp_path: Path) -> None:
    fleet = [device for device in make_fleet(300, seed=6, today=TODAY) if device.kind == "range_hood"]
    truth = tmp_path / "truth.jsonl"
    end = START + dt.timedelta(days=30)
    for _ in generate_history(fleet, START, end, 3600, faults="E21:0.05", seed=6, ground_truth_path=truth):
        pass
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    failures = load_gradual_failures(truth)
    faults = load_ground_truth(truth)
    assert failures and faults
    assert len(failures) == len({(line["device_id"], line["failed_at"]) for line in lines if "part" in line})
    assert {fault["fault_code"] for fault in faults} == {"E21"}
    for failure in failures:
        assert set(failure) == {"device_id", "model", "kind", "part", "quantity", "level", "since", "failed_at",
                                "cleaned_at"}  # fmt: skip
        assert (failure["kind"], failure["part"]) == ("range_hood", "grease_filter")
        assert failure["failed_at"] >= f"{START:%Y-%m-%d}" and (
            failure["cleaned_at"] is None or failure["cleaned_at"] >= failure["failed_at"]
        )
    cleaned = [line for line in lines if line.get("part") and line["cleaned_at"]]
    assert all(any(f["failed_at"] == c["failed_at"] and f["cleaned_at"] for f in failures) for c in cleaned)
