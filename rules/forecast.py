"""The fleet's coming demand: when each device's maintenance and trade-in windows will open, projected from the
rules' own conditions, so dispatchers plan visits and marketers plan offers per region.

A time-driven leaf condition projects, per device, the instant it starts to hold (epoch seconds), with the
numbers the engine itself counts with (rules.conditions):

- `age`: the purchase date plus the rule's age (or its fraction of the model's expected life);
- `elapsed`: the last `since` event (else the purchase, as the engine counts) plus the rule's span;
- `usage`: the counter's latest reading plus what it still has to grow, at the rate it grew over the last week;
- `trend`: the stored fit's crossing of `reaches`, less `within` (the engine opens that far ahead of it).

`all` holds from the latest of its children, `any` from the earliest. A leaf time does not drive (a threshold,
a fault, a count of events, ...) cannot be projected: it makes its `all` unknown and is left out of its `any`.
This module is pure: the service hands it each leaf's projections read from the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from rules.conditions import COMBINATIONS, walk_conditions
from rules.specs import condition_kind, condition_spec

ForecastKind = Literal["maintenance", "trade_in"]
PROJECTED_KINDS = frozenset({"age", "elapsed", "usage", "trend"})
MAINTENANCE_KINDS = frozenset({"elapsed", "usage", "trend"})

# device id -> the instant (epoch seconds) the condition starts to hold
Projections = dict[str, float]
LeafProjector = Callable[[str, Any], Projections]


def forecast_kind(condition: BaseModel) -> ForecastKind | None:
    """What window a rule's condition opens: an age condition is a trade-in window, a usage, elapsed or trend
    condition a maintenance window; a rule with neither (a fault, a threshold, a birthday) is not forecast."""
    kinds = {leaf.kind.name for leaf in walk_conditions(condition)}
    if "age" in kinds:
        return "trade_in"
    if kinds & MAINTENANCE_KINDS:
        return "maintenance"
    return None


def unprojected_kinds(condition: BaseModel) -> list[str]:
    """The leaf kinds of a condition that time does not drive, which a forecast leaves out."""
    return sorted({leaf.kind.name for leaf in walk_conditions(condition)} - PROJECTED_KINDS)


def project(condition: BaseModel, project_leaf: LeafProjector) -> Projections | None:
    """When the condition starts to hold per device; None when no part of it can be projected."""
    kind, spec = condition_kind(condition), condition_spec(condition)
    if kind not in COMBINATIONS:
        return project_leaf(kind, spec) if kind in PROJECTED_KINDS else None
    children = [project(child, project_leaf) for child in spec]
    if kind == "all":
        if any(child is None for child in children):
            return None
        # Every child must hold: from the latest of them, for the devices every child projects.
        devices = set.intersection(*(set(child) for child in children))  # type: ignore[arg-type]
        return {device: max(child[device] for child in children) for device in devices}  # type: ignore[index]
    known = [child for child in children if child is not None]
    if not known:
        return None
    earliest: Projections = {}
    for child in known:
        for device, at in child.items():
            if device not in earliest or at < earliest[device]:
                earliest[device] = at
    return earliest
