"""Rule documents: what validates, what does not and with which message, and lossless round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.catalog import load_catalog
from rules.models import Rule, RuleError, parse_rule

CONTRACT_EXAMPLE = """
id: hood-grease-cleaning            # unique slug
description: Range hood grease filter due for cleaning
applies_to: {kind: range_hood}      # or {model: RH-900}; omitted = every device
when:                               # one condition, or {all: [...]} / {any: [...]}
  usage: {metric: run_hours, since: maintenance_done, at_least: 180}
then:
  - open_service_order: {type: maintenance, priority: normal, sla: 72h, skill: cleaning}
  - call_customer: {reason: "grease filter due for cleaning"}
  - offer: {template: member-cleaning}
severity: warning                   # info | warning | critical
cooldown: 30d                       # after a detection clears, before it may open again
"""


def errors_of(document: Any) -> list[dict[str, Any]]:
    with pytest.raises(RuleError) as caught:
        parse_rule(document)
    return caught.value.errors


def only_error(document: Any) -> dict[str, Any]:
    (error,) = errors_of(document)
    return error


def test_contract_example_parses_with_every_field() -> None:
    rule = parse_rule(CONTRACT_EXAMPLE)
    assert rule.id == "hood-grease-cleaning"
    assert rule.applies_to.kind == "range_hood"
    assert rule.when.usage.at_least == 180
    assert rule.then[0].open_service_order.sla.seconds == 72 * 3600
    assert rule.then[2].offer.template == "member-cleaning"
    assert (rule.severity, rule.cooldown.seconds, rule.enabled) == ("warning", 30 * 86400, True)


def test_json_text_yaml_text_and_dict_give_the_same_rule() -> None:
    rule = parse_rule(CONTRACT_EXAMPLE)
    assert parse_rule(json.dumps(rule.to_document())) == rule
    assert parse_rule(yaml.safe_dump(rule.to_document())) == rule
    assert parse_rule(yaml.safe_load(CONTRACT_EXAMPLE)) == rule


@pytest.mark.parametrize(
    "when",
    [
        {"threshold": {"metric": "fan_current_a", "above": 3.5, "for": "10m", "clear_below": 3.0}},
        {"threshold": {"metric": "airflow_m3h", "below": 100, "clear_above": 150}},
        {"fault": {"codes": ["E21", "E31"]}},
        {"fault": {}},
        {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 180}},
        {"usage": {"metric": "run_hours", "since": "purchase", "at_least": 1000}},
        {"elapsed": {"since": "maintenance_done", "at_least": "180d"}},
        {"elapsed": {"since": "purchase", "at_least": "1y"}},
        {"age": {"at_least": "5y"}},
        {"age": {"of_expected_life": 0.8}},
        {"count": {"event": "fault", "codes": ["E21"], "at_least": 3, "within": "365d"}},
        {"offline": {"for": "24h"}},
        {"anomaly": {"metric": "fan_current_a", "at_least": 4, "direction": "above", "for": "30m"}},
        {"trend": {"metric": "grease_load_pct", "reaches": 90, "within": "7d"}},
        {"birthday": {"within": "7d"}},
        {"birthday": {}},
        {"all": [{"fault": {}}, {"any": [{"age": {"at_least": "5y"}}, {"offline": {"for": "1d"}}]}]},
    ],
)
def test_each_condition_kind_validates(when: dict[str, Any]) -> None:
    rule = parse_rule({"id": "r", "applies_to": {"kind": "range_hood"}, "when": when})
    assert rule.to_document()["when"].keys() == when.keys()


def test_defaults_fill_in() -> None:
    rule = parse_rule(
        {"id": "r", "when": {"trend": {"metric": "run_hours", "reaches": 1000, "within": "7d"}}}
    )
    assert str(rule.when.trend.over) == "7d"
    assert rule.when.trend.direction == "rising"
    assert rule.then == [] and rule.severity == "warning" and rule.cooldown.seconds == 0


def test_metric_unknown_for_the_model_names_metric_and_model() -> None:
    error = only_error(
        {
            "id": "r",
            "applies_to": {"model": "OV-700"},
            "when": {"threshold": {"metric": "grease_load_pct", "above": 50}},
        }
    )
    assert error["loc"] == ["when", "threshold", "metric"]
    assert (
        error["msg"]
        == "metric 'grease_load_pct' is not reported by OV-700 (the rule applies to model OV-700)"
    )


def test_metric_missing_from_some_models_of_the_fleet_names_them_all() -> None:
    error = only_error(
        {
            "id": "r",
            "when": {
                "all": [
                    {"offline": {"for": "1d"}},
                    {"trend": {"metric": "scale_index", "reaches": 80, "within": "30d"}},
                ]
            },
        }
    )
    assert error["loc"] == ["when", "all", 1, "trend", "metric"]
    assert "'scale_index' is not reported by" in error["msg"]
    for code in ("RH-900", "RH-600", "OV-700", "DW-450", "AC-350"):
        assert code in error["msg"]
    assert "WH-80" not in error["msg"] and "every device" in error["msg"]


def test_threshold_needs_above_or_below() -> None:
    error = only_error({"id": "r", "when": {"threshold": {"metric": "run_hours", "for": "1h"}}})
    assert error["loc"] == ["when", "threshold"]
    assert "exactly one of `above` or `below`" in error["msg"]


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ({"above": 3, "clear_above": 4}, "`clear_above` goes with `below`"),
        ({"below": 1, "clear_below": 0.5}, "`clear_below` goes with `above`"),
        ({"above": 3, "clear_below": 3.5}, "`clear_below` (3.5) must not exceed `above` (3)"),
        ({"below": 1, "clear_above": 0.5}, "`clear_above` (0.5) must not be under `below` (1)"),
        ({"above": 3, "below": 1}, "exactly one of `above` or `below`"),
    ],
)
def test_hysteresis_must_sit_on_the_side_of_the_threshold(threshold: dict[str, float], message: str) -> None:
    error = only_error(
        {
            "id": "r",
            "applies_to": {"kind": "range_hood"},
            "when": {"threshold": {"metric": "fan_current_a", **threshold}},
        }
    )
    assert message in error["msg"]


def test_threshold_outside_the_physical_range_can_never_fire() -> None:
    error = only_error(
        {
            "id": "r",
            "applies_to": {"model": "RH-600"},
            "when": {"threshold": {"metric": "fan_current_a", "above": 40}},
        }
    )
    assert error["loc"] == ["when", "threshold", "above"]
    assert error["msg"] == "`above` 40 can never be crossed: fan_current_a on RH-600 ranges 0..4 A"


def test_usage_needs_a_counter() -> None:
    error = only_error(
        {
            "id": "r",
            "applies_to": {"kind": "oven"},
            "when": {"usage": {"metric": "cavity_temp_c", "since": "maintenance_done", "at_least": 5}},
        }
    )
    assert error["loc"] == ["when", "usage", "metric"]
    assert "counter" in error["msg"] and "OV-700" in error["msg"]


def test_fault_code_unknown_in_scope_is_located_by_index() -> None:
    error = only_error(
        {
            "id": "r",
            "applies_to": {"kind": "oven"},
            "when": {
                "any": [
                    {"fault": {"codes": ["F12"]}},
                    {"count": {"event": "fault", "codes": ["F12", "E21"], "at_least": 2, "within": "30d"}},
                ]
            },
        }
    )
    assert error["loc"] == ["when", "any", 1, "count", "codes", 1]
    assert "fault code 'E21'" in error["msg"] and "kind oven" in error["msg"]


@pytest.mark.parametrize(
    ("applies_to", "loc", "message"),
    [
        ({"kind": "toaster"}, ["applies_to", "kind"], "unknown kind 'toaster'"),
        ({"model": "XX-1"}, ["applies_to", "model"], "unknown model 'XX-1'"),
        ({"kind": "oven", "model": "OV-700"}, ["applies_to"], "exactly one of `kind` or `model`"),
    ],
)
def test_applies_to_names_a_known_kind_or_model(applies_to: dict, loc: list, message: str) -> None:
    error = only_error({"id": "r", "applies_to": applies_to, "when": {"offline": {"for": "1d"}}})
    assert error["loc"] == loc and message in error["msg"]


def test_a_condition_is_exactly_one_known_key() -> None:
    errors = errors_of(
        {"id": "r", "when": {"all": [{"treshold": {}}, {"fault": {}, "offline": {"for": "1d"}}]}}
    )
    assert [error["loc"] for error in errors] == [["when", "all", 0], ["when", "all", 1]]
    assert "(got: treshold)" in errors[0]["msg"] and "(got: fault, offline)" in errors[1]["msg"]
    assert "one of: threshold, fault, usage" in errors[0]["msg"]


def test_typos_in_field_names_are_refused_by_name() -> None:
    error = only_error({"id": "r", "when": {"offline": {"for": "1d", "fro": "2d"}}})
    assert error["loc"] == ["when", "offline", "fro"] and error["msg"].startswith("`fro`: ")


def test_every_error_is_reported_at_once_each_naming_its_field() -> None:
    errors = errors_of(
        {
            "id": "Not A Slug",
            "when": {"count": {"event": "fault", "at_least": 0, "within": "1d"}},
            "then": [{"open_service_order": {"priority": "asap"}}, {"telegram": {}}],
            "severity": "fatal",
        }
    )
    locs = [error["loc"] for error in errors]
    assert locs == [
        ["id"],
        ["when", "count", "at_least"],
        ["then", 0, "open_service_order", "priority"],
        ["then", 0, "open_service_order", "skill"],
        ["then", 1],
        ["severity"],
    ]
    for error in errors:
        field = next(part for part in reversed(error["loc"]) if isinstance(part, str))
        assert f"`{field}`" in error["msg"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("id: [unclosed", "neither YAML nor JSON"),
        ("- just\n- a list", "a rule is a mapping"),
        ("", "a rule is a mapping"),
    ],
)
def test_text_that_is_not_a_rule_document(source: str, message: str) -> None:
    assert message in only_error(source)["msg"]


def test_rule_error_is_a_value_error_with_a_readable_summary() -> None:
    with pytest.raises(ValueError, match=r"when\.offline\.for: `for`: invalid duration"):
        parse_rule({"id": "r", "when": {"offline": {"for": "5x"}}})


def test_rules_are_immutable_data() -> None:
    rule = parse_rule(CONTRACT_EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        rule.enabled = False


# ---------------------------------------------------------------- round trips of generated documents

CATALOG = load_catalog()
MODEL_CODES = sorted(CATALOG)
durations = st.builds("{}{}".format, st.integers(1, 400), st.sampled_from("smhdwy"))
positive = st.floats(min_value=0.01, max_value=1e4, allow_nan=False)


@st.composite
def leaf_conditions(draw: st.DrawFn, model_code: str) -> dict[str, Any]:
    model = CATALOG[model_code]
    metric = draw(st.sampled_from(sorted(model.metrics)))
    spec = model.metrics[metric]
    inside = st.floats(min_value=spec.min, max_value=spec.max, exclude_min=True, exclude_max=True)
    counters = sorted(name for name, metric_spec in model.metrics.items() if metric_spec.counter)
    codes = st.lists(st.sampled_from(sorted(model.fault_codes)), min_size=1, max_size=3, unique=True)
    events = st.sampled_from(["maintenance_done", "power_on", "fault", "purchase"])
    kind = draw(
        st.sampled_from(
            [
                "threshold",
                "fault",
                "usage",
                "elapsed",
                "age",
                "count",
                "offline",
                "anomaly",
                "trend",
                "birthday",
            ]
        )
    )
    if kind == "threshold":
        level = draw(inside)
        side = draw(st.sampled_from(["above", "below"]))
        body: dict[str, Any] = {"metric": metric, side: level, "for": draw(durations)}
        if draw(st.booleans()):
            body["clear_below" if side == "above" else "clear_above"] = level
        return {"threshold": body}
    if kind == "fault":
        return {"fault": draw(st.one_of(st.just({}), st.builds(lambda c: {"codes": c}, codes)))}
    if kind == "usage":
        return {
            "usage": {
                "metric": draw(st.sampled_from(counters)),
                "since": draw(events),
                "at_least": draw(positive),
            }
        }
    if kind == "elapsed":
        return {"elapsed": {"since": draw(events), "at_least": draw(durations)}}
    if kind == "age":
        bound = draw(
            st.one_of(
                st.builds(lambda d: {"at_least": d}, durations),
                st.builds(lambda f: {"of_expected_life": f}, st.floats(0.1, 2)),
            )
        )
        return {"age": bound}
    if kind == "count":
        return {
            "count": {
                "event": "fault",
                "codes": draw(codes),
                "at_least": draw(st.integers(1, 9)),
                "within": draw(durations),
            }
        }
    if kind == "offline":
        return {"offline": {"for": draw(durations)}}
    if kind == "anomaly":
        return {
            "anomaly": {
                "metric": metric,
                "at_least": draw(positive),
                "direction": draw(st.sampled_from(["above", "below", "either"])),
            }
        }
    if kind == "trend":
        return {
            "trend": {
                "metric": metric,
                "reaches": draw(inside),
                "within": draw(durations),
                "over": draw(durations),
                "direction": draw(st.sampled_from(["rising", "falling"])),
            }
        }
    return {"birthday": {"within": f"{draw(st.integers(0, 30))}d"}}


@st.composite
def rule_documents(draw: st.DrawFn) -> dict[str, Any]:
    model_code = draw(st.sampled_from(MODEL_CODES))
    when = draw(
        st.recursive(
            leaf_conditions(model_code),
            lambda children: st.one_of(
                st.builds(lambda c: {"all": c}, st.lists(children, min_size=1, max_size=3)),
                st.builds(lambda c: {"any": c}, st.lists(children, min_size=1, max_size=3)),
            ),
            max_leaves=6,
        )
    )
    actions = st.lists(
        st.one_of(
            st.builds(
                lambda sla: {
                    "open_service_order": {"type": "repair", "priority": "high", "sla": sla, "skill": "motor"}
                },
                durations,
            ),
            st.builds(lambda reason: {"call_customer": {"reason": reason}}, st.text(min_size=1, max_size=40)),
            st.just({"offer": {"template": "trade-in"}}),
        ),
        max_size=3,
    )
    return {
        "id": draw(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")),
        "description": draw(st.text(max_size=30)),
        "applies_to": {"model": model_code},
        "when": when,
        "then": draw(actions),
        "severity": draw(st.sampled_from(["info", "warning", "critical"])),
        "cooldown": draw(durations),
        "enabled": draw(st.booleans()),
    }


@settings(max_examples=150, deadline=None)
@given(document=rule_documents())
def test_generated_documents_round_trip_through_dict_json_and_yaml(document: dict[str, Any]) -> None:
    rule = parse_rule(document)
    dumped = rule.to_document()
    assert parse_rule(dumped) == rule
    assert parse_rule(json.dumps(dumped)) == rule
    assert parse_rule(yaml.safe_dump(dumped)) == rule
    assert parse_rule(dumped).to_document() == dumped


def test_rule_json_schema_is_available_for_the_api() -> None:
    schema = Rule.model_json_schema(by_alias=True)
    assert "when" in schema["properties"] and "cooldown" in schema["properties"]


def test_an_order_action_needs_a_skill_the_catalog_knows_and_a_real_sla() -> None:
    document = {"id": "odd", "when": {"fault": {}},
                "then": [{"open_service_order": {"skill": "astrology", "sla": "0s"}}]}
    with pytest.raises(RuleError) as error:
        parse_rule(document)
    messages = " ".join(e["msg"] for e in error.value.errors)
    assert "unknown skill 'astrology'" in messages
