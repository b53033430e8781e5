"""Believable physics: fouling and wear trends, usage at the right hours, cleaning, fault signatures."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from devices.catalog import get_model
from simulators.simulation import Simulation
from tests.simulators.simhelpers import START, channel_of, make_device, run_steps, telemetry_of


def _series(readings: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(days since the first reading, value) of the readings that carry the metric."""
    first = dt.datetime.fromisoformat(readings[0]["ts"])
    points = [
        ((dt.datetime.fromisoformat(r["ts"]) - first).total_seconds() / 86_400, r["metrics"][metric])
        for r in readings
        if metric in r["metrics"]
    ]
    days, values = zip(*points, strict=True)
    return np.array(days), np.array(values)


def _neglected(model: str, *, days: float, step_s: float, seed: int = 1) -> list[dict]:
    """Readings of one new device whose owner never cleans, faults and offline spells off."""
    device = make_device(model)
    simulation = Simulation([device], seed=seed, start=START, offline_per_day=0)
    simulation.diligence[:] = 0.0
    return telemetry_of(run_steps(simulation, START, days=days, step_s=step_s), device.device_id)


@pytest.mark.parametrize(
    ("model", "metric", "direction"),
    [
        ("RH-900", "grease_load_pct", +1),
        ("RH-900", "airflow_m3h", -1),
        ("RH-600", "airflow_m3h", -1),
        ("WH-80", "scale_index", +1),
        ("WH-80", "heating_time_min", +1),
        ("DW-450", "drain_time_s", +1),
        ("AC-350", "filter_dp_pa", +1),
    ],
)
def test_fouling_shows_as_a_trend_over_simulated_weeks(model: str, metric: str, direction: int) -> None:
    readings = _neglected(model, days=120, step_s=3 * 3600)
    days, values = _series(readings, metric)
    slope = np.polyfit(days, values, 1)[0]
    assert direction * slope > 0
    assert np.corrcoef(days, values)[0, 1] * direction > 0.8
    early, late = values[days < 14].mean(), values[days > 106].mean()
    assert direction * (late - early) > 0.1 * abs(early)


def test_hood_airflow_falls_as_grease_rises() -> None:
    readings = [r for r in _neglected("RH-900", days=90, step_s=3600) if "airflow_m3h" in r["metrics"]]
    grease = np.array([r["metrics"]["grease_load_pct"] for r in readings])
    airflow = np.array([r["metrics"]["airflow_m3h"] for r in readings])
    assert np.corrcoef(grease, airflow)[0, 1] < -0.9
    assert 0.5 < np.median([r["metrics"]["fan_current_a"] for r in readings[:50]]) < 0.7  # ~0.6 A


def test_water_heater_heating_time_rises_with_scale() -> None:
    readings = _neglected("WH-80", days=365, step_s=6 * 3600)
    scale = np.array([r["metrics"]["scale_index"] for r in readings])
    heating = np.array([r["metrics"]["heating_time_min"] for r in readings])
    assert scale[-30:].mean() > scale[:30].mean() + 10
    assert np.corrcoef(scale, heating)[0, 1] > 0.9


def test_oven_preheats_slower_as_its_element_wears() -> None:
    readings = _neglected("OV-700", days=3 * 365, step_s=86_400)
    hours = np.array([r["metrics"]["run_hours"] for r in readings])
    heat_rate = np.array([r["metrics"]["heat_rate_c_per_min"] for r in readings])
    assert np.polyfit(hours, heat_rate, 1)[0] < 0
    assert heat_rate[-60:].mean() < heat_rate[:60].mean()


def test_run_hours_never_fall_and_hoods_rest_at_night() -> None:
    # A home at UTC-5: local 01:00-05:00 is 06:00-10:00 UTC, when nobody cooks.
    device = make_device("RH-900", offset=-5.0)
    simulation = Simulation([device], seed=4, start=START, offline_per_day=0)
    readings = telemetry_of(run_steps(simulation, START, days=14), device.device_id)
    hours = np.array([r["metrics"]["run_hours"] for r in readings])
    grown = np.diff(hours)
    assert np.all(grown >= 0)
    local_hour = np.array([(dt.datetime.fromisoformat(r["ts"]).hour - 5) % 24 for r in readings[1:]])
    assert grown[(local_hour >= 1) & (local_hour <= 5)].sum() == 0
    assert grown[(local_hour >= 18) & (local_hour <= 20)].sum() > 1  # dinner
    assert hours[-1] - hours[0] > 5  # about an hour and a half of cooking a day


def test_idle_appliances_leave_out_what_only_running_ones_measure() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=4, start=START, offline_per_day=0)
    readings = telemetry_of(run_steps(simulation, START, days=3), device.device_id)
    idle = [r for r in readings if "fan_current_a" not in r["metrics"]]
    running = [r for r in readings if "fan_current_a" in r["metrics"]]
    assert idle and running
    assert all(set(r["metrics"]) == {"run_hours", "grease_load_pct"} for r in idle)
    assert all(set(r["metrics"]) == set(get_model("RH-900").metrics) for r in running)


def test_the_owner_cleans_a_fouled_filter_and_says_so() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=8, start=START, offline_per_day=0)
    simulation.fouling[:] = 0.9
    simulation.diligence[:] = 50.0  # an owner who cleans as soon as it is dirty
    messages = run_steps(simulation, START, days=2)
    cleaned = [m for m in messages if channel_of(m) == "events" and m.payload["type"] == "maintenance_done"]
    assert cleaned and cleaned[0].payload["detail"] == "owner cleaned the grease filter"
    after = [r for r in telemetry_of(messages, device.device_id) if r["seq"] > cleaned[0].payload["seq"]]
    assert after[0]["metrics"]["grease_load_pct"] < 5


FAULT_SIGNATURES = {
    ("RH-900", "E21"): lambda m: (
        m["fan_current_a"] > 3.0 and m["fan_speed_rpm"] < 30 and m["airflow_m3h"] < 20
    ),
    ("RH-600", "E21"): lambda m: (
        m["fan_current_a"] > 2.5 and m["fan_speed_rpm"] < 30 and m["airflow_m3h"] < 20
    ),
    ("OV-700", "F12"): lambda m: m["heat_rate_c_per_min"] < 1 and m["element_current_a"] == 0,
    ("WH-80", "E03"): lambda m: m["water_temp_c"] > 90,
    ("DW-450", "E15"): lambda m: m["drain_time_s"] > 700,
    ("DW-450", "E24"): lambda m: m["drain_time_s"] > 700,
    ("AC-350", "P4"): lambda m: m["compressor_current_a"] > 25,
    ("AC-350", "F1"): lambda m: m["refrigerant_pressure_kpa"] < 450,
}


@pytest.mark.parametrize(("model", "code"), list(FAULT_SIGNATURES))
def test_an_injected_fault_sends_its_event_and_shows_in_telemetry(model: str, code: str) -> None:
    device = make_device(model)
    simulation = Simulation([device], seed=2, start=START, offline_per_day=0)
    simulation.step(START, 900)
    event = simulation.inject_fault(device.device_id, code, START)
    assert [m.payload["type"] for m in event] == ["fault"] and event[0].payload["code"] == code
    assert event[0].payload["detail"] == get_model(model).fault_codes[code].meaning
    readings = telemetry_of(run_steps(simulation, START, days=0.25), device.device_id)
    catalog_metrics = get_model(model).metrics
    for reading in readings:  # every reading while the fault is open, idle hours included
        assert FAULT_SIGNATURES[(model, code)](reading["metrics"]), reading
        assert all(catalog_metrics[name].accepts(value) for name, value in reading["metrics"].items())


def test_a_fault_clears_after_its_repair_time_and_the_device_recovers() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=2, start=START, offline_per_day=0)
    simulation.inject_fault(device.device_id, "E21", START, repair_s=3 * 3600)
    messages = run_steps(simulation, START, days=1)
    cleared = [
        m.payload for m in messages if channel_of(m) == "events" and m.payload["type"] == "fault_cleared"
    ]
    assert len(cleared) == 1 and cleared[0]["code"] == "E21"
    assert cleared[0]["ts"] == "2026-03-02T03:00:00.000Z"
    after = [r["metrics"] for r in telemetry_of(messages, device.device_id) if r["seq"] > cleared[0]["seq"]]
    assert all(m["fan_current_a"] < 1.0 for m in after if "fan_current_a" in m)
    assert simulation.open_fault_code(device.device_id) is None


def test_a_critical_fault_stops_the_run_hours() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=2, start=START, offline_per_day=0)
    simulation.inject_fault(device.device_id, "E21", START, repair_s=10 * 86_400)
    readings = telemetry_of(run_steps(simulation, START, days=3), device.device_id)
    assert readings[0]["metrics"]["run_hours"] == readings[-1]["metrics"]["run_hours"]


def test_injecting_an_unknown_code_or_a_second_fault_is_refused() -> None:
    device = make_device("RH-900")
    simulation = Simulation([device], seed=2, start=START)
    with pytest.raises(ValueError, match="no fault code 'F12'"):
        simulation.inject_fault(device.device_id, "F12", START)
    simulation.inject_fault(device.device_id, "E41", START)
    with pytest.raises(ValueError, match="already has fault E41"):
        simulation.inject_fault(device.device_id, "E21", START)
