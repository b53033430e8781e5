"""Narrowing: a costly window loaded only where it can matter gives the same outcome as loading it everywhere."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest

from devices.catalog import load_catalog
from rules.builtin import load_builtin_rules
from rules.conditions import compile_rule
from rules.facts import Latest, MetricWindow, WindowAggregate
from rules.reference import DeviceHistory, Event, Reading, build_facts

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


def random_fleet(seed: int, devices: int = 60) -> list[DeviceHistory]:
    """Devices of every model with readings around and beyond their metrics' ranges' middles."""
    rng = np.random.default_rng(seed)
    catalog = load_catalog()
    codes = sorted(catalog)
    fleet = []
    for index in range(devices):
        model = catalog[codes[index % len(codes)]]
        history = DeviceHistory(f"D{index:03d}", model.code, purchased_on="2020-01-01")
        for name, metric in model.metrics.items():
            centre, span = (metric.min + metric.max) / 2, metric.max - metric.min
            # Some devices run high for a while: windows then hold for some and not for others.
            high = rng.random() < 0.3
            for minutes in sorted(rng.uniform(0, 180, 12)):
                value = centre + span * (0.45 if high and minutes > 60 else rng.uniform(-0.2, 0.2))
                history.readings.append(Reading(NOW - dt.timedelta(minutes=float(minutes)), name, float(value)))
        if rng.random() < 0.2:
            code = sorted(model.fault_codes)[0]
            history.events.append(Event(NOW - dt.timedelta(minutes=30), "fault", code))
        fleet.append(history)
    return fleet


def blanked(aggregate: WindowAggregate, keep: np.ndarray) -> WindowAggregate:
    """The window's values only where `keep`; elsewhere what the loader leaves for devices it skipped."""
    return WindowAggregate(
        min=np.where(keep, aggregate.min, np.nan),
        max=np.where(keep, aggregate.max, np.nan),
        count=np.where(keep, aggregate.count, 0),
        covered=aggregate.covered & keep,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_builtin_rule_decides_the_same_with_windows_loaded_only_where_needed(seed: int) -> None:
    fleet = random_fleet(seed)
    rules = [compile_rule(rule) for rule in load_builtin_rules()]
    windowed = [rule for rule in rules if any(isinstance(r, MetricWindow) for r in rule.requirements)]
    assert windowed, "the catalog has rules with windows"
    rng = np.random.default_rng(seed)
    for rule in windowed:
        facts = build_facts(fleet, now=NOW, requirements=rule.requirements)
        is_open = rng.random(facts.size) < 0.2
        full = rule.evaluate(facts, is_open)
        narrow = dataclasses.replace(facts)  # a new FleetFacts with the same columns and loaded values
        for requirement in rule.requirements:
            if isinstance(requirement, MetricWindow):
                needing = rule.devices_needing(requirement, facts, is_open)
                narrow.add(requirement, blanked(facts.get(requirement), needing))
        narrowed = rule.evaluate(narrow, is_open)
        assert np.array_equal(full.met, narrowed.met), rule.rule.id
        for index in np.flatnonzero(full.met != is_open):  # what opens or clears is explained alike
            assert full.explain(int(index)) == narrowed.explain(int(index)), rule.rule.id


def test_a_threshold_window_is_needed_where_the_latest_value_is_beyond_the_level_or_a_detection_is_open(
    make_rule, make_facts
) -> None:
    rule = make_rule(
        {"threshold": {"metric": "fan_current_a", "above": 3, "for": "10m"}}, applies_to={"kind": "range_hood"}
    )
    facts = make_facts(["RH-900"] * 3 + ["OV-700"])
    window = MetricWindow("fan_current_a", 600)
    facts.add(Latest("fan_current_a"), [3.5, 1.0, 1.0, np.nan])
    is_open = np.array([False, False, True, False])
    assert rule.devices_needing(window, facts, is_open).tolist() == [True, False, True, False]


def test_a_detection_kept_open_by_hysteresis_needs_no_window_unless_a_sibling_decides(make_rule, make_facts) -> None:
    threshold = {"threshold": {"metric": "fan_current_a", "above": 3, "for": "10m", "clear_below": 2.5}}
    alone = make_rule(threshold, applies_to={"kind": "range_hood"})
    with_sibling = make_rule({"all": [threshold, {"fault": {"codes": ["E21"]}}]}, applies_to={"kind": "range_hood"})
    facts = make_facts(["RH-900"] * 5)
    window = MetricWindow("fan_current_a", 600)
    # closed and beyond the level; open and kept open (2.8 >= 2.5); open and beyond (kept open too);
    # open and past the clear level; closed and low
    facts.add(Latest("fan_current_a"), [3.5, 2.8, 3.5, 2.0, 1.0])
    is_open = np.array([False, True, True, True, False])
    assert alone.devices_needing(window, facts, is_open).tolist() == [True, False, False, True, False]
    assert with_sibling.devices_needing(window, facts, is_open).tolist() == [True, True, True, True, False]


def test_no_narrowing_under_any(make_rule) -> None:
    rule = make_rule(
        {"any": [{"threshold": {"metric": "fan_current_a", "above": 3, "for": "10m"}}, {"fault": {"codes": ["E21"]}}]},
        applies_to={"kind": "range_hood"},
    )
    assert rule.condition.narrowers == {}
