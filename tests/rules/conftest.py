"""Factories for pure rule tests: facts at a fixed instant, and rules compiled from a `when`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from rules.conditions import CompiledRule, compile_rule
from rules.facts import FleetFacts
from rules.models import parse_rule

NOW = np.datetime64("2026-06-01T12:00:00", "s")


@pytest.fixture
def ago() -> Callable[[float], np.datetime64]:
    """The instant so many seconds before NOW."""

    def before_now(seconds: float) -> np.datetime64:
        return NOW - np.timedelta64(int(seconds), "s")

    return before_now


@pytest.fixture
def make_facts() -> Callable[..., FleetFacts]:
    """FleetFacts at NOW for devices of the given models (ids D0, D1, ...), other columns as given."""

    def build(models: list[str], **columns: Any) -> FleetFacts:
        return FleetFacts(now=NOW, device_id=[f"D{i}" for i in range(len(models))], model=models, **columns)

    return build


@pytest.fixture
def make_rule() -> Callable[..., CompiledRule]:
    """A compiled rule with this `when` (and optional other fields), validated against the catalog."""

    def build(when: dict[str, Any], **fields: Any) -> CompiledRule:
        return compile_rule(parse_rule({"id": "test-rule", "when": when, **fields}))

    return build
