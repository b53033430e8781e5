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


def kinds() -> list[str]:
    return sorted({model.kind for model in load_catalog().values()})


def models_of_kind(kind: str) -> list[ApplianceModel]:
    return [model for model in load_catalog().values() if model.kind == kind]
