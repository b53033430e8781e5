"""Checks of a structurally valid rule against the appliance models it applies to: metrics they report,
counters, levels they can reach, fault codes they know; and against the offer templates its `offer` actions
name. Each mistake is located in the document."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from devices.models import ApplianceModel
from rules.conditions import walk_conditions
from rules.specs import (
    AppliesTo,
    FaultSpec,
    ThresholdSpec,
    TrendSpec,
    UsageSpec,
    models_in_scope,
    rule_error,
    scope_target,
)


def catalog_errors(
    when: Any, applies_to: AppliesTo | None, catalog: Mapping[str, ApplianceModel]
) -> list[dict[str, Any]]:
    """What in a structurally valid rule (its `when` and `applies_to`) does not fit the models it applies to."""
    if applies_to is not None:
        if applies_to.model is not None and applies_to.model not in catalog:
            known = ", ".join(sorted(catalog))
            return [rule_error(["applies_to", "model"], f"unknown model {applies_to.model!r}; known: {known}")]
        if applies_to.kind is not None and not models_in_scope(applies_to, catalog):
            known = ", ".join(sorted({model.kind for model in catalog.values()}))
            return [rule_error(["applies_to", "kind"], f"unknown kind {applies_to.kind!r}; known: {known}")]
    scope = models_in_scope(applies_to, catalog)
    scope_label = f"the rule applies to {scope_target(applies_to)}"
    problems: list[dict[str, Any]] = []
    for leaf in walk_conditions(when, ["when"]):
        problems += _leaf_errors(leaf.spec, leaf.loc, scope, scope_label)
    return problems


def _leaf_errors(
    spec: Any, loc: list[str | int], scope: list[ApplianceModel], scope_label: str
) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    metric = getattr(spec, "metric", None)
    if metric is not None:
        # Every model must report the metric: otherwise the rule is silently blind for part of the fleet.
        lacking = [model for model in scope if metric not in model.metrics]
        if lacking:
            names = ", ".join(model.code for model in lacking)
            problems.append(
                rule_error([*loc, "metric"], f"metric {metric!r} is not reported by {names} ({scope_label})")
            )
            return problems
    if isinstance(spec, UsageSpec):
        not_counters = [model.code for model in scope if not model.metrics[spec.metric].counter]
        if not_counters:
            problems.append(
                rule_error(
                    [*loc, "metric"],
                    f"usage needs a counter metric; {spec.metric!r} is not one on {', '.join(not_counters)}",
                )
            )
    if isinstance(spec, ThresholdSpec):
        problems += _unreachable_level(spec.metric, "above", spec.above, loc, scope)
        problems += _unreachable_level(spec.metric, "below", spec.below, loc, scope)
    if isinstance(spec, TrendSpec):
        side = "above" if spec.direction == "rising" else "below"
        problems += _unreachable_level(spec.metric, side, spec.reaches, loc, scope, field="reaches")
    codes = getattr(spec, "codes", None)
    if codes and (isinstance(spec, FaultSpec) or getattr(spec, "event", None) == "fault"):
        # Codes may come from different models of the scope, so each must be known to at least one.
        known = {code for model in scope for code in model.fault_codes}
        for index, code in enumerate(codes):
            if code not in known:
                problems.append(
                    rule_error(
                        [*loc, "codes", index],
                        f"fault code {code!r} is not known to any model in scope ({scope_label}); "
                        f"known: {', '.join(sorted(known))}",
                    )
                )
    return problems


def _unreachable_level(
    metric: str,
    side: Literal["above", "below"],
    level: float | None,
    loc: list[str | int],
    scope: list[ApplianceModel],
    *,
    field: str | None = None,
) -> list[dict[str, Any]]:
    """A level outside a metric's physical range can never be crossed: a typo or a wrong unit."""
    if level is None:
        return []
    problems = []
    for model in scope:
        spec = model.metrics[metric]
        if (side == "above" and level >= spec.max) or (side == "below" and level <= spec.min):
            problems.append(
                rule_error(
                    [*loc, field or side],
                    f"`{field or side}` {level:g} can never be crossed: {metric} on {model.code} "
                    f"ranges {spec.min:g}..{spec.max:g} {spec.unit}",
                )
            )
    return problems


def offer_template_errors(then: Sequence[Any], known_templates: Collection[str]) -> list[dict[str, Any]]:
    """`offer` actions naming a template that does not exist: the rule would fire and offer nothing, silently.
    Templates are data (marketers add them), so the caller reads the codes known now from the database."""
    problems = []
    for index, action in enumerate(then):
        offer = getattr(action, "offer", None)
        if offer is not None and offer.template not in known_templates:
            known = ", ".join(sorted(known_templates)) or "none"
            problems.append(
                rule_error(
                    ["then", index, "offer", "template"],
                    f"unknown offer template {offer.template!r}; known: {known} (GET /offer-templates)",
                )
            )
    return problems
