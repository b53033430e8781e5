"""Rules: create, edit (keeping every version), list, and load the built-in catalog. Takes a connection."""

from __future__ import annotations

from typing import Any

from careloop.errors import Conflict, InvalidInput, NotFound
from rules import repo
from rules.builtin import load_builtin_rules
from rules.models import Rule, RuleError, parse_rule


def validate(source: str | bytes | dict) -> Rule:
    """The rule document parsed and checked against the models catalog; RuleError lists every mistake."""
    return parse_rule(source)


def create_rule(conn: Any, source: str | bytes | dict, *, builtin: bool = False) -> dict:
    rule = validate(source)
    if not repo.insert_rule(conn, rule_id=rule.id, document=rule.to_document(), enabled=rule.enabled, builtin=builtin):
        raise Conflict(f"rule {rule.id} already exists; PUT /rules/{rule.id} changes it")
    return get_rule(conn, rule.id)


def update_rule(conn: Any, rule_id: str, source: str | bytes | dict) -> dict:
    rule = validate(source)
    if rule.id != rule_id:
        raise InvalidInput("id", f"the document's id {rule.id!r} is not the rule's id {rule_id!r}")
    if repo.update_rule(conn, rule_id=rule_id, document=rule.to_document(), enabled=rule.enabled) is None:
        raise NotFound(f"no rule {rule_id}")
    return get_rule(conn, rule_id)


def get_rule(conn: Any, rule_id: str) -> dict:
    row = repo.get_rule(conn, rule_id=rule_id)
    if row is None:
        raise NotFound(f"no rule {rule_id}")
    return {**row, "versions": repo.rule_versions(conn, rule_id=rule_id)}


def list_rules(conn: Any, *, enabled: bool | None, limit: int, offset: int) -> tuple[list[dict], int]:
    rows = repo.list_rules(conn, enabled=enabled, limit=limit, offset=offset)
    return [{k: v for k, v in row.items() if k != "total"} for row in rows], (rows[0]["total"] if rows else 0)


def load_builtin_catalog(conn: Any) -> int:
    """Create the built-in rules, or update those whose document changed; answers how many were written."""
    written = 0
    for rule in load_builtin_rules():
        document = rule.to_document()
        stored = repo.get_rule(conn, rule_id=rule.id)
        if stored is None:
            repo.insert_rule(conn, rule_id=rule.id, document=document, enabled=rule.enabled, builtin=True)
            written += 1
        elif stored["builtin"] and stored["document"] != document:
            repo.update_rule(conn, rule_id=rule.id, document=document, enabled=stored["enabled"])
            written += 1
    return written


__all__ = ["RuleError", "create_rule", "get_rule", "list_rules", "load_builtin_catalog", "update_rule", "validate"]
