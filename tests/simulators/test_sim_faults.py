"""The `--faults` spec grammar, the injected fault rates, and the ground truth file."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.catalog import get_model, load_catalog
from simulators.faults import FaultSpec, load_ground_truth, parse_fault_spec
from simulators.fleet import make_fleet
from simulators.run import generate_history
from tests.simulators.simhelpers import START, TODAY, channel_of, device_of

CODES = sorted({code for model in load_catalog().values() for code in model.fault_codes})


def test_per_code_and_all_entries_parse() -> None:
    assert parse_fault_spec("E21:0.01,F12:0.02") == FaultSpec(code_rates={"E21": 0.01, "F12": 0.02})
    assert parse_fault_spec("all:0.01") == FaultSpec(all_rate=0.01)
    assert parse_fault_spec(" all : 0.002 , e21 : 0.05 ") == FaultSpec(
        all_rate=0.002, code_rates={"E21": 0.05}
    )


@pytest.mark.parametrize("spec", [None, "", "   "])
def test_an_empty_spec_injects_nothing(spec: str | None) -> None:
    assert parse_fault_spec(spec).is_empty


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("E21", "must look like CODE:RATE"),
        (":0.1", "must look like CODE:RATE"),
        ("E21:0.1,", "entry 2 is empty"),
        ("X99:0.1", "unknown fault code 'X99'; known codes: "),
        ("E21:abc", "rate 'abc' is not a number"),
        ("E21:1.5", "must be between 0 and 1"),
        ("E21:-0.1", "must be between 0 and 1"),
        ("E21:nan", "must be between 0 and 1"),
        ("E21:0.1,e21:0.2", "appears more than once"),
        ("all:0.1,ALL:0.2", "appears more than once"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_fault_spec(spec)


entries = st.dictionaries(
    st.sampled_from([*CODES, "all"]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    min_size=1,
)


@given(entries, st.sampled_from(["", " ", "  "]))
def test_any_well_formed_spec_parses_to_its_rates(rates: dict[str, float], space: str) -> None:
    spec = ",".join(f"{space}{target}{space}:{space}{rate!r}{space}" for target, rate in rates.items())
    parsed = parse_fault_spec(spec)
    assert parsed.all_rate == rates.get("all", 0.0)
    assert parsed.code_rates == {code: rate for code, rate in rates.items() if code != "all"}


@given(st.text(max_size=40))
def test_any_text_either_parses_or_raises_value_error(spec: str) -> None:
    try:
        parse_fault_spec(spec)
    except ValueError as error:
        assert str(error)


def test_all_shares_one_daily_chance_among_a_models_codes_and_codes_replace_their_share() -> None:
    model = get_model("RH-900")
    hazards = parse_fault_spec("all:0.1").daily_hazards(model)
    assert set(hazards) == set(model.fault_codes)
    assert math.isclose(1 - math.exp(-sum(hazards.values())), 0.1)
    mixed = parse_fault_spec("E21:0.5,all:0.1").daily_hazards(model)
    assert math.isclose(1 - math.exp(-mixed["E21"]), 0.5)
    assert mixed["E31"] == hazards["E31"]
    assert parse_fault_spec("F12:0.5").daily_hazards(model) == {}


def test_injected_faults_follow_the_spec_rate_and_codes(tmp_path: Path) -> None:
    fleet = [device for device in make_fleet(400, seed=5, today=TODAY) if device.kind == "range_hood"]
    truth = tmp_path / "truth.jsonl"
    end = START + dt.timedelta(days=10)
    for _ in generate_history(fleet, START, end, 3600, faults="E21:0.02", seed=5, ground_truth_path=truth):
        pass
    faults = load_ground_truth(truth)
    assert {fault["fault_code"] for fault in faults} == {"E21"}
    expected = len(fleet) * 10 * 0.02
    assert 0.5 * expected < len(faults) < 1.5 * expected


def test_ground_truth_records_each_fault_with_its_event_times(tmp_path: Path) -> None:
    fleet = make_fleet(40, seed=9, today=TODAY)
    truth = tmp_path / "truth.jsonl"
    end = START + dt.timedelta(days=6)
    messages = list(
        generate_history(
            fleet, START, end, 900, faults="all:0.3", seed=9, ground_truth_path=truth, offline_per_day=0
        )
    )
    events = {
        (device_of(m), m.payload["type"], m.payload["code"], m.payload["ts"])
        for m in messages
        if channel_of(m) == "events"
    }
    kinds = {device.device_id: (device.model, device.kind) for device in fleet}
    # the file's fault lines (gradual failures, failures.py, have lines of their own)
    lines = [line for line in map(json.loads, truth.read_text().splitlines()) if "fault_code" in line]
    faults = load_ground_truth(truth)
    assert len(faults) == sum(1 for line in lines if line["cleared_at"] is None) > 5
    assert any(fault["cleared_at"] for fault in faults) and any(not fault["cleared_at"] for fault in faults)
    for fault in faults:
        assert set(fault) == {"device_id", "model", "kind", "fault_code", "started_at", "cleared_at"}
        assert (fault["model"], fault["kind"]) == kinds[fault["device_id"]]
        assert (fault["device_id"], "fault", fault["fault_code"], fault["started_at"]) in events
        if fault["cleared_at"]:
            assert fault["cleared_at"] > fault["started_at"]
            assert (fault["device_id"], "fault_cleared", fault["fault_code"], fault["cleared_at"]) in events
    fault_events = [event for event in events if event[1] == "fault"]
    assert len(fault_events) == len(faults)
