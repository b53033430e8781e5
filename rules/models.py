"""Rule documents (CONTRACT.md "Rules"): the whole rule as pydantic models, and parsing; and what the rules
domain answers: stored rules with their versions, detections, engine jobs, backtests.

A rule is data: `parse_rule` turns YAML/JSON text or a dict into a `Rule`, or raises `RuleError`
whose `errors` (a list of `{loc, msg}`) the API returns with a 422. The condition kinds come from the one
table in `rules.conditions`; the checks against the models catalog live in `rules.catalog_checks`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple, Union

import yaml
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    model_validator,
)

from careloop.durations import Duration, DurationField
from devices.catalog import known_skill, load_catalog
from devices.models import ApplianceModel, Severity
from rules.catalog_checks import catalog_errors
from rules.conditions import COMBINATIONS, CONDITION_KINDS
from rules.lifecycle import Transition
from rules.specs import (
    ZERO,
    AppliesTo,
    Document,
    RuleError,
    RuleId,
    Slug,
    require_positive,
    rule_error,
)

__all__ = [
    "BacktestRequest",
    "BacktestResult",
    "DetectionChange",
    "DetectionRead",
    "DetectionToCarryOut",
    "DetectionToClear",
    "DetectionToOpen",
    "DueRow",
    "FleetForecast",
    "EngineJobRead",
    "ModelBaseline",
    "Rule",
    "RuleError",
    "RuleRead",
    "StoredRule",
    "TrendFitRow",
    "parse_rule",
    "parse_rules_file",
]

# ---------------------------------------------------------------- conditions

# `{threshold: {...}}` and its kin, one per kind of the table; `all` and `any` nest them.
LEAF_CONDITIONS: dict[str, type[Document]] = {
    name: create_model(f"{name.title()}Condition", __base__=Document, **{name: (kind.spec, ...)})
    for name, kind in CONDITION_KINDS.items()
}


class AllCondition(Document):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(Document):
    any: list[Condition] = Field(min_length=1)


assert COMBINATIONS == ("all", "any")
CONDITION_TYPES: dict[str, type[Document]] = {**LEAF_CONDITIONS, "all": AllCondition, "any": AnyCondition}


def _single_key(value: Any) -> str | None:
    """The tag of a condition or action: its one top-level key (or its model's only field)."""
    if isinstance(value, Mapping):
        return next(iter(value)) if len(value) == 1 else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


def _tagged_union(types: Mapping[str, type[BaseModel]], error_type: str) -> Any:
    members = tuple(Annotated[model, Tag(tag)] for tag, model in types.items())
    return Annotated[
        Union[members],  # noqa: UP007 - a runtime-built union needs the subscript form
        Discriminator(
            _single_key,
            custom_error_type=error_type,
            custom_error_message="expected exactly one key, one of: " + ", ".join(types),
        ),
    ]


Condition = _tagged_union(CONDITION_TYPES, "invalid_condition")

AllCondition.model_rebuild()
AnyCondition.model_rebuild()

Condition = _tagged_union(CONDITION_TYPES, "invalid_condition")

AllCondition.model_rebuild()
AnyCondition.model_rebuild()


# ---------------------------------------------------------------- actions


class OpenServiceOrderSpec(Document):
    type: Literal["repair", "maintenance", "inspection", "installation"] = "repair"
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    sla: DurationField = Duration(72 * 3600)
    skill: Annotated[Slug, AfterValidator(known_skill)]

    @model_validator(mode="after")
    def _sla_ahead(self) -> OpenServiceOrderSpec:
        require_positive(self.sla, "sla")
        return self


class CallCustomerSpec(Document):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class OfferSpec(Document):
    template: Slug


class OpenServiceOrderAction(Document):
    open_service_order: OpenServiceOrderSpec


class CallCustomerAction(Document):
    call_customer: CallCustomerSpec


class OfferAction(Document):
    offer: OfferSpec


ACTION_TYPES: dict[str, type[Document]] = {
    "open_service_order": OpenServiceOrderAction,
    "call_customer": CallCustomerAction,
    "offer": OfferAction,
}
Action = _tagged_union(ACTION_TYPES, "invalid_action")


# ---------------------------------------------------------------- the rule


class Rule(Document):
    """A rule document as pinned by CONTRACT.md."""

    id: RuleId
    description: str = ""
    applies_to: AppliesTo | None = None
    when: Condition
    then: list[Action] = []
    severity: Severity = "warning"
    cooldown: DurationField = ZERO
    enabled: bool = True

    def to_document(self) -> dict[str, Any]:
        """The rule as a JSON-ready document that `parse_rule` reads back to an equal rule."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------- errors and parsing


def _clean_loc(loc: tuple[str | int, ...]) -> list[str | int]:
    # A tagged union repeats its tag before the field it tags (`when.threshold.threshold.for`).
    cleaned: list[str | int] = []
    for part in loc:
        if not (cleaned and cleaned[-1] == part and isinstance(part, str)):
            cleaned.append(part)
    return ["for" if part == "for_" else part for part in cleaned]


def _convert_validationrule_error(error: ValidationError) -> RuleError:
    converted = []
    for detail in error.errors():
        loc = _clean_loc(detail["loc"])
        msg = detail["msg"].removeprefix("Value error, ")
        if detail["type"] in ("invalid_condition", "invalid_action"):
            got = detail.get("input")
            keys = ", ".join(map(str, got)) if isinstance(got, Mapping) else type(got).__name__
            what = "a condition" if detail["type"] == "invalid_condition" else "an action"
            msg = f"{what} is written as {msg.removeprefix('expected ')} (got: {keys or 'nothing'})"
        field = next((part for part in reversed(loc) if isinstance(part, str)), None)
        if field is not None and f"`{field}`" not in msg:
            msg = f"`{field}`: {msg[:1].lower()}{msg[1:]}"
        converted.append(rule_error(loc, msg))
    return RuleError(converted)


def _load_text(source: str | bytes) -> Any:
    # JSON first: YAML 1.1 reads JSON's `1e-05` as a string, so it is not quite a superset.
    try:
        return json.loads(source)
    except ValueError:
        pass
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise RuleError([rule_error([], f"the document is neither YAML nor JSON: {exc}")]) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # `2001-13-45`, a 5000-digit number, deep nesting
        raise RuleError([rule_error([], f"the document cannot be read: {type(exc).__name__}: {exc}"[:300])]) from None


def parse_rule(
    source: str | bytes | Mapping[str, Any], *, catalog: Mapping[str, ApplianceModel] | None = None
) -> Rule:
    """Validate a rule given as YAML or JSON text or as a dict, structurally and against the catalog."""
    document: Any = source
    if isinstance(source, str | bytes):
        document = _load_text(source)
    if not isinstance(document, Mapping):
        raise RuleError(
            [rule_error([], f"a rule is a mapping with `id` and `when`, got {type(document).__name__}")]
        )
    try:
        rule = Rule.model_validate(dict(document))
    except ValidationError as exc:
        raise _convert_validationrule_error(exc) from None
    problems = catalog_errors(rule.when, rule.applies_to, load_catalog() if catalog is None else catalog)
    if problems:
        raise RuleError(problems)
    return rule


def parse_rules_file(text: str, *, catalog: Mapping[str, ApplianceModel] | None = None) -> list[Rule]:
    """Parse a YAML file holding `rules: [...]`; errors are located as `rules.<index>...`."""
    document = yaml.safe_load(text)
    if not isinstance(document, Mapping) or not isinstance(document.get("rules"), list):
        raise RuleError([rule_error([], "a rules file is a mapping with a `rules` list")])
    rules, problems = [], []
    for index, entry in enumerate(document["rules"]):
        try:
            rules.append(parse_rule(entry, catalog=catalog))
        except RuleError as exc:
            problems += [rule_error(["rules", index, *e["loc"]], e["msg"]) for e in exc.errors]
    if problems:
        raise RuleError(problems)
    return rules


# ---------------------------------------------------------------- backtests

MAX_BACKTEST_STEPS = 2000


class BacktestRequest(BaseModel):
    """A time range to replay a rule over stored history, evaluated every `step`."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime
    end: AwareDatetime
    step: DurationField = Duration(3600)

    @model_validator(mode="after")
    def _sensible_range(self) -> BacktestRequest:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.step.seconds <= 0:
            raise ValueError("step must be longer than 0s")
        steps = (self.end - self.start).total_seconds() / self.step.seconds
        if steps > MAX_BACKTEST_STEPS:
            raise ValueError(
                f"{steps:.0f} evaluations from start to end every {self.step}; at most {MAX_BACKTEST_STEPS}: "
                "take a longer step or a shorter range"
            )
        return self


class BacktestResult(BaseModel):
    """What a rule would have opened and cleared over stored history, and when."""

    rule_id: str
    version: int
    start: dt.datetime
    end: dt.datetime
    step: str
    opened: int
    cleared: int
    devices: int = Field(description="devices for which the rule would have opened a detection")
    transitions: list[Transition]


# ---------------------------------------------------------------- stored rules, detections, engine jobs


class StoredRule(BaseModel):
    """A rule as stored: its document at its current version."""

    id: str
    version: int
    enabled: bool
    builtin: bool
    document: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    changed_by: str | None = Field(description="who wrote this version: the name of the token whose request did "
                                   "it; null for what no person wrote (the built-in catalog)")


class RuleVersion(BaseModel):
    version: int
    enabled: bool
    document: dict[str, Any]
    created_at: dt.datetime
    changed_by: str | None = Field(description="who wrote this version; null for the built-in catalog")


class RuleRead(StoredRule):
    """A rule with every version of it, newest first."""

    versions: list[RuleVersion]


class DetectionAction(BaseModel):
    """One action of a detection's rule, waiting for the service that carries it out (or done, with what it made)."""

    model_config = ConfigDict(extra="allow")  # as stored: a service may keep more with the action it carried out

    action: str
    params: dict[str, Any]
    key: str = Field(description="idempotency key: a retry finds the order or call task already made")
    status: Literal["pending", "done"]
    # Stored actions gain `result` when carried out; the answer keeps that shape.
    result: dict[str, Any] | None = Field(
        default=None, exclude_if=lambda result: result is None, description="what it made; absent while pending"
    )


class DetectionRead(BaseModel):
    """What a rule found on a device: when, why (the explanation), and the actions waiting on it."""

    id: int
    rule_id: str
    rule_version: int
    device_id: str
    model: str
    owner_id: int | None
    severity: Severity
    status: Literal["open", "acknowledged", "cleared"]
    opened_at: dt.datetime
    cleared_at: dt.datetime | None
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    dedup_key: str
    explanation: dict[str, Any]
    clear_explanation: dict[str, Any] | None
    actions: list[DetectionAction]


class DetectionToCarryOut(DetectionRead):
    """A detection with actions pending, and its rule's description (the reason an order or a call gives)."""

    description: str | None


class EngineJobRead(BaseModel):
    """When an engine job last ran over the fleet, how long it took, and what it did."""

    job: str
    last_run_at: dt.datetime
    duration_ms: float
    summary: dict[str, Any]


# ---------------------------------------------------------------- rows the engine writes many of at once


class DetectionToOpen(NamedTuple):
    """A detection an evaluation opens, in the column order of `open_detection`."""

    rule_id: str
    rule_version: int
    device_id: str
    severity: str
    opened_at: dt.datetime
    dedup_key: str
    explanation: dict[str, Any]
    actions: list[dict[str, Any]]


class DetectionToClear(NamedTuple):
    """The open detection of a rule and device that an evaluation clears, in the column order of `clear_detection`."""

    rule_id: str
    device_id: str
    opened_at: dt.datetime
    cleared_at: dt.datetime
    explanation: dict[str, Any]


class DetectionChange(NamedTuple):
    """A detection opened or cleared, as the database answers it."""

    id: int
    rule_id: str
    device_id: str


class TrendFitRow(NamedTuple):
    """One device's fitted line of a (metric, seconds) trend, in the column order of `store_trend_fits`."""

    device_id: str
    metric: str
    seconds: int
    slope: float | None  # per second
    fitted: float | None  # the line's value at fitted_at
    points: int
    fitted_at: dt.datetime


class ModelBaseline(NamedTuple):
    """A model's baseline of a metric over its devices: what an anomaly is measured from."""

    model: str
    metric: str
    centre: float | None
    spread: float | None
    samples: int


# ---------------------------------------------------------------- the fleet's coming demand


class DueRow(NamedTuple):
    """When a leaf condition starts to hold for a device (epoch seconds), and the device's region."""

    device_id: str
    region: str | None
    due_s: float


class RegionForecast(BaseModel):
    """Devices of a region whose window of a kind opens in the forecast's range, in all and per week."""

    region: str | None = Field(description="the device's region; null for devices registered without one")
    kind: Literal["maintenance", "trade_in"]
    devices: int
    weeks: list[int] = Field(description="devices whose window opens in each week from `start` (the last may be short)")


class RuleForecast(BaseModel):
    """One rule's part of the forecast: how many devices it is projected to open a window for."""

    rule_id: str
    kind: Literal["maintenance", "trade_in"]
    devices: int
    already_open: int = Field(description="devices with this rule's window open already (not counted)")
    unprojected: list[str] = Field(
        description="condition kinds of the rule that time does not drive (fault counts, thresholds, ...), left out"
    )


class FleetForecast(BaseModel):
    """Maintenance and trade-in windows projected to open from `start` to `end`, per region and kind, with the
    count per week; a device counts once per kind (at its earliest window) and not at all when a window of that
    kind is open for it already."""

    start: dt.datetime
    end: dt.datetime
    days: int
    week_starts: list[dt.datetime]
    regions: list[RegionForecast]
    rules: list[RuleForecast]
    not_forecast: list[str] = Field(
        description="enabled maintenance and trade-in rules no part of which can be projected from time"
    )
