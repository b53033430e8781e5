"""The appliance models catalog, loaded once from catalog.yaml."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from devices.models import ApplianceModel

CATALOG_FILE = Path(__file__).with_name("catalog.yaml")


@functools.cache
def load_catalog() -> dict[str, ApplianceModel]:
    """Every known appliance model by its code."""
    document = yaml.safe_load(CATALOG_FILE.read_text())
    return {entry["code"]: ApplianceModel.model_validate(entry) for entry in document["models"]}


def get_model(code: str) -> ApplianceModel | None:
    return load_catalog().get(code)


@functools.cache
def skills() -> frozenset[str]:
    """The technician skills the catalog's maintenance and fault codes call for."""
    catalog = load_catalog().values()
    return frozenset({model.maintenance.skill for model in catalog if model.maintenance} |
                     {fault.skill for model in catalog for fault in model.fault_codes.values()})


@functools.cache
def counter_metrics() -> tuple[str, ...]:
    """The metrics that are counters (run hours, cycles) in any model of the catalog, sorted."""
    return tuple(sorted({name for model in load_catalog().values() for name, spec in model.metrics.items()
                         if spec.counter}))


def known_skill(skill: str) -> str:
    """A pydantic validator: a skill the catalog knows (a typo would give an order no technician can take)."""
    if skill not in skills():
        raise ValueError(f"unknown skill {skill!r}; the catalog's skills: {', '.join(sorted(skills()))}")
    return skill


def kinds() -> list[str]:
    return sorted({model.kind for model in load_catalog().values()})


def models_of_kind(kind: str) -> list[ApplianceModel]:
    return [model for model in load_catalog().values() if model.kind == kind]
