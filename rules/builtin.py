"""The built-in rule catalog: `rules/catalog/*.yaml`, one file per appliance kind plus fleet-wide care."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from devices.models import ApplianceModel
from rules.models import Rule, RuleError, parse_rules_file

CATALOG_DIR = Path(__file__).with_name("catalog")


def builtin_rule_files() -> list[Path]:
    return sorted(CATALOG_DIR.glob("*.yaml"))


def load_builtin_rules(catalog: Mapping[str, ApplianceModel] | None = None) -> list[Rule]:
    """Every built-in rule, validated against the models catalog; ids are unique across files."""
    if catalog is None:
        return list(_load_with_default_catalog())
    return _load(catalog)


@functools.cache
def _load_with_default_catalog() -> tuple[Rule, ...]:
    return tuple(_load(None))


def _load(catalog: Mapping[str, ApplianceModel] | None) -> list[Rule]:
    rules: list[Rule] = []
    for path in builtin_rule_files():
        try:
            rules += parse_rules_file(path.read_text(), catalog=catalog)
        except RuleError as exc:
            raise RuleError([{"loc": [path.name, *e["loc"]], "msg": e["msg"]} for e in exc.errors]) from None
    seen: set[str] = set()
    duplicates = [rule.id for rule in rules if rule.id in seen or seen.add(rule.id)]
    if duplicates:
        raise RuleError([{"loc": ["id"], "msg": f"duplicate rule id {rule_id!r}"} for rule_id in duplicates])
    return rules
