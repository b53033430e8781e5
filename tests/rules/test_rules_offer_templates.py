"""A rule's `offer` action must name a template that exists: the check, without any server."""

from __future__ import annotations

from rules.catalog_checks import offer_template_errors
from rules.models import parse_rule

RULE = {
    "id": "hood-cleaning",
    "applies_to": {"kind": "range_hood"},
    "when": {"usage": {"metric": "run_hours", "since": "maintenance_done", "at_least": 180}},
    "then": [{"call_customer": {"reason": "grease filter due"}}, {"offer": {"template": "member-cleaning"}},
             {"offer": {"template": "nope"}}],
}


def test_an_offer_naming_an_unknown_template_is_located_at_its_template_field() -> None:
    rule = parse_rule(RULE)
    [problem] = offer_template_errors(rule.then, {"member-cleaning", "trade-in"})
    assert problem["loc"] == ["then", 2, "offer", "template"]
    assert "unknown offer template 'nope'" in problem["msg"] and "member-cleaning, trade-in" in problem["msg"]


def test_offers_naming_known_templates_and_other_actions_pass() -> None:
    rule = parse_rule({**RULE, "then": RULE["then"][:2]})
    assert offer_template_errors(rule.then, {"member-cleaning"}) == []
    assert offer_template_errors([], set()) == []
