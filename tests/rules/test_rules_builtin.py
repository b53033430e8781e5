"""The built-in rule catalog: valid, consistent with the models catalog, and fast over a large fleet."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from devices.catalog import load_catalog, models_of_kind
from rules.builtin import builtin_rule_files, load_builtin_rules
from rules.conditions import compile_rule, requirements_of, walk_conditions
from rules.reference import DeviceHistory, Event, Reading, Status, build_facts
from rules.specs import (
    AgeSpec,
    CountSpec,
    ElapsedSpec,
    FaultSpec,
    UsageSpec,
)

RULES = load_builtin_rules()
KINDS = sorted({model.kind for model in load_catalog().values()})


def leaves(rule):
    return [leaf.spec for leaf in walk_conditions(rule.when)]


def rules_of_kind(kind: str):
    models = {model.code for model in models_of_kind(kind)}
    return [r for r in RULES if r.applies_to and (r.applies_to.kind == kind or r.applies_to.model in models)]


def test_every_file_loads_and_ids_are_unique() -> None:
    assert {path.stem for path in builtin_rule_files()} == {*KINDS, "care"}
    assert len({rule.id for rule in RULES}) == len(RULES) > 40


@pytest.mark.parametrize("kind", KINDS)
def test_every_fault_code_has_a_rule_with_the_catalogs_severity_and_skill(kind: str) -> None:
    for model in models_of_kind(kind):
        for code, fault in model.fault_codes.items():
            matching = [
                r
                for r in rules_of_kind(kind)
                if any(isinstance(spec, FaultSpec) and code in (spec.codes or []) for spec in leaves(r))
            ]
            assert len(matching) == 1, f"{model.code} {code}"
            (rule,) = matching
            assert rule.severity == fault.severity
            assert rule.then[0].open_service_order.skill == fault.skill


@pytest.mark.parametrize("kind", KINDS)
def test_maintenance_rules_follow_each_models_intervals(kind: str) -> None:
    for model in models_of_kind(kind):
        applicable = [r for r in rules_of_kind(kind) if r.applies_to.kind or r.applies_to.model == model.code]
        usage = [spec for r in applicable for spec in leaves(r) if isinstance(spec, UsageSpec)]
        elapsed = [
            spec
            for r in applicable
            for spec in leaves(r)
            if isinstance(spec, ElapsedSpec) and spec.since == "maintenance_done"
        ]
        assert [spec.at_least for spec in usage] == [model.maintenance.interval_run_hours], model.code
        assert [spec.at_least.days for spec in elapsed] == [model.maintenance.interval_days], model.code


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_offline_trade_in_and_a_sensor_rule(kind: str) -> None:
    kinds_of_leaves = Counter(type(spec).__name__ for r in rules_of_kind(kind) for spec in leaves(r))
    assert kinds_of_leaves["OfflineSpec"] == 1
    assert kinds_of_leaves["AnomalySpec"] + kinds_of_leaves["TrendSpec"] >= 1
    trade_in = [r for r in rules_of_kind(kind) if r.id.endswith("trade-in")]
    assert len(trade_in) == 1
    specs = leaves(trade_in[0])
    assert any(isinstance(s, AgeSpec) for s in specs) and any(isinstance(s, CountSpec) for s in specs)


def test_catalog_has_anomaly_trend_threshold_with_hysteresis_and_birthday() -> None:
    names = Counter(type(spec).__name__ for rule in RULES for spec in leaves(rule))
    assert names["AnomalySpec"] >= 3 and names["TrendSpec"] >= 3 and names["BirthdaySpec"] == 1
    assert any(getattr(spec, "clear_below", None) is not None for rule in RULES for spec in leaves(rule))


def test_the_whole_catalog_evaluates_and_explains_on_a_mixed_fleet() -> None:
    compiled = [compile_rule(rule) for rule in RULES]
    now = "2026-06-01T12:00:00Z"
    histories = [
        DeviceHistory(
            f"{model.code}-1",
            model.code,
            purchased_on="2017-01-01",
            owner_birthday="1980-06-03",
            readings=[
                Reading(now, metric, (spec.min + spec.max) / 2) for metric, spec in model.metrics.items()
            ],
            events=[Event(now, "fault", next(iter(model.fault_codes)))],
            statuses=[Status("2026-05-01T00:00:00Z", False)],
        )
        for model in load_catalog().values()
    ] + [DeviceHistory("EMPTY-1", "RH-600")]
    facts = build_facts(histories, now=now, requirements=requirements_of(compiled))
    met_rules = set()
    for rule in compiled:
        evaluation = rule.evaluate(facts)
        for index in range(facts.size):
            json.dumps(evaluation.explain(index))
        met_rules |= {rule.rule.id for _ in evaluation.met.nonzero()[0]}
    assert {"hood-fan-stall", "oven-element-failure", "owner-birthday", "ac-offline"} <= met_rules


def test_builtin_rules_are_loaded_once_and_shared_safely() -> None:
    first, second = load_builtin_rules(), load_builtin_rules()
    assert first == second and first is not second
