"""Rule documents (CONTRACT.md "Rules"): pydantic models, parsing, and checks against the models catalog.

A rule is data: `parse_rule` turns YAML/JSON text or a dict into a `Rule`, or raises `RuleError`
whose `errors` (a list of `{loc, msg}`) the API returns with a 422.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    model_validator,
)

from careloop.durations import Duration, DurationField
from devices.catalog import load_catalog
from devices.models import ApplianceModel, Severity

RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # metrics and event types
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # skills, order types, offer templates
PURCHASE = "purchase"  # `since: purchase` counts from the day the device was bought

RuleId = Annotated[str, Field(pattern=RULE_ID_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
# Strict: `above: true` or `above: "high"` is a mistake in the document, not a number to coerce.
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
ZERO = Duration(0)


class Document(BaseModel):
    """A part of a rule document: unknown keys are typos, so they are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


def _require_positive(value: Duration, field: str) -> None:
    if value.seconds <= 0:
        raise ValueError(f"`{field}` must be longer than 0s")


# ---------------------------------------------------------------- conditions


class ThresholdSpec(Document):
    """A metric above (or below) a level, held for a while, with optional hysteresis."""

    metric: Name
    above: Number | None = None
    below: Number | None = None
    for_: DurationField = Field(default=ZERO, alias="for")
    clear_below: Number | None = None
    clear_above: Number | None = None

    @model_validator(mode="after")
    def _one_side_with_hysteresis_on_that_side(self) -> ThresholdSpec:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of `above` or `below` (for a band, combine two under `any`)")
        if self.above is not None:
            if self.clear_above is not None:
                raise ValueError("`clear_above` goes with `below`; with `above`, use `clear_below`")
            if self.clear_below is not None and self.clear_below > self.above:
                raise ValueError(
                    f"`clear_below` ({self.clear_below:g}) must not exceed `above` ({self.above:g})"
                )
        if self.below is not None:
            if self.clear_below is not None:
                raise ValueError("`clear_below` goes with `above`; with `below`, use `clear_above`")
            if self.clear_above is not None and self.clear_above < self.below:
                raise ValueError(
                    f"`clear_above` ({self.clear_above:g}) must not be under `below` ({self.below:g})"
                )
        return self


class FaultSpec(Document):
    """One of these fault codes is open; no codes means any fault code of the models in scope."""

    codes: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(default=None, min_length=1)


class UsageSpec(Document):
    """A counter metric has grown by at least `at_least` since the last `since` event."""

    metric: Name
    since: Name
    at_least: Annotated[Number, Field(gt=0)]


class ElapsedSpec(Document):
    """At least `at_least` has passed since the last `since` event (or since purchase)."""

    since: Name
    at_least: DurationField

    @model_validator(mode="after")
    def _positive(self) -> ElapsedSpec:
        _require_positive(self.at_least, "at_least")
        return self


class AgeSpec(Document):
    """The device is at least `at_least` old, or at least this fraction of its model's expected life."""

    at_least: DurationField | None = None
    of_expected_life: Annotated[Number, Field(gt=0, le=5)] | None = None

    @model_validator(mode="after")
    def _exactly_one_bound(self) -> AgeSpec:
        if (self.at_least is None) == (self.of_expected_life is None):
            raise ValueError("give exactly one of `at_least` (e.g. 5y) or `of_expected_life` (e.g. 0.8)")
        return self


class CountSpec(Document):
    """At least `at_least` events of a type (optionally with these codes) within a trailing window."""

    event: Name
    codes: list[Annotated[str, Field(min_length=1, max_length=16)]] | None = Field(default=None, min_length=1)
    at_least: Annotated[int, Strict(), Field(ge=1)]
    within: DurationField

    @model_validator(mode="after")
    def _positive(self) -> CountSpec:
        _require_positive(self.within, "within")
        return self


class OfflineSpec(Document):
    """The device has been offline (or silent) for at least `for`."""

    for_: DurationField = Field(alias="for")

    @model_validator(mode="after")
    def _positive(self) -> OfflineSpec:
        _require_positive(self.for_, "for")
        return self


class AnomalySpec(Document):
    """The device's metric is at least `at_least` robust deviations from its model's baseline."""

    metric: Name
    at_least: Annotated[Number, Field(gt=0)]
    direction: Literal["above", "below", "either"] = "either"
    for_: DurationField = Field(default=ZERO, alias="for")
    min_samples: Annotated[int, Strict(), Field(ge=2)] = 5  # devices behind the baseline


class TrendSpec(Document):
    """A straight-line fit of the metric over `over` projects it to reach `reaches` within `within`."""

    metric: Name
    reaches: Number
    within: DurationField
    over: DurationField = Duration(7 * 86400)
    direction: Literal["rising", "falling"] = "rising"
    min_points: Annotated[int, Strict(), Field(ge=2)] = 3

    @model_validator(mode="after")
    def _positive(self) -> TrendSpec:
        _require_positive(self.over, "over")
        return self


class BirthdaySpec(Document):
    """The owner's birthday is today or within the next `within` (whole days)."""

    within: DurationField = ZERO

    @model_validator(mode="after")
    def _whole_days(self) -> BirthdaySpec:
        if self.within.seconds % 86400:
            raise ValueError(f"`within` must be whole days, got {self.within}")
        return self


class ThresholdCondition(Document):
    threshold: ThresholdSpec


class FaultCondition(Document):
    fault: FaultSpec


class UsageCondition(Document):
    usage: UsageSpec


class ElapsedCondition(Document):
    elapsed: ElapsedSpec


class AgeCondition(Document):
    age: AgeSpec


class CountCondition(Document):
    count: CountSpec


class OfflineCondition(Document):
    offline: OfflineSpec


class AnomalyCondition(Document):
    anomaly: AnomalySpec


class TrendCondition(Document):
    trend: TrendSpec


class BirthdayCondition(Document):
    birthday: BirthdaySpec


class AllCondition(Document):
    all: list[Condition] = Field(min_length=1)


class AnyCondition(Document):
    any: list[Condition] = Field(min_length=1)


LEAF_CONDITIONS: dict[str, type[Document]] = {
    "threshold": ThresholdCondition,
    "fault": FaultCondition,
    "usage": UsageCondition,
    "elapsed": ElapsedCondition,
    "age": AgeCondition,
    "count": CountCondition,
    "offline": OfflineCondition,
    "anomaly": AnomalyCondition,
    "trend": TrendCondition,
    "birthday": BirthdayCondition,
}
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


def condition_kind(condition: BaseModel) -> str:
    """The key a condition was written with: `threshold`, `all`, ..."""
    return next(iter(type(condition).model_fields))


def condition_spec(condition: BaseModel) -> Any:
    """The body of a condition: a `ThresholdSpec`, ..., or the list under `all`/`any`."""
    return getattr(condition, condition_kind(condition))


# ---------------------------------------------------------------- actions


class OpenServiceOrderSpec(Document):
    type: Slug = "repair"
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    sla: DurationField = Duration(72 * 3600)
    skill: Slug


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


class AppliesTo(Document):
    kind: Name | None = None
    model: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _kind_or_model(self) -> AppliesTo:
        if (self.kind is None) == (self.model is None):
            raise ValueError("give exactly one of `kind` or `model` (or omit `applies_to` for every device)")
        return self


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


class RuleError(ValueError):
    """An invalid rule document; `errors` is a list of `{"loc": [...], "msg": ...}` for a 422."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in errors)
        )


def _error(loc: list[str | int], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


def _clean_loc(loc: tuple[str | int, ...]) -> list[str | int]:
    # A tagged union repeats its tag before the field it tags (`when.threshold.threshold.for`).
    cleaned: list[str | int] = []
    for part in loc:
        if not (cleaned and cleaned[-1] == part and isinstance(part, str)):
            cleaned.append(part)
    return ["for" if part == "for_" else part for part in cleaned]


def _convert_validation_error(error: ValidationError) -> RuleError:
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
        converted.append(_error(loc, msg))
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
        raise RuleError([_error([], f"the document is neither YAML nor JSON: {exc}")]) from None


def parse_rule(
    source: str | bytes | Mapping[str, Any], *, catalog: Mapping[str, ApplianceModel] | None = None
) -> Rule:
    """Validate a rule given as YAML or JSON text or as a dict, structurally and against the catalog."""
    document: Any = source
    if isinstance(source, str | bytes):
        document = _load_text(source)
    if not isinstance(document, Mapping):
        raise RuleError(
            [_error([], f"a rule is a mapping with `id` and `when`, got {type(document).__name__}")]
        )
    try:
        rule = Rule.model_validate(dict(document))
    except ValidationError as exc:
        raise _convert_validation_error(exc) from None
    problems = catalog_errors(rule, load_catalog() if catalog is None else catalog)
    if problems:
        raise RuleError(problems)
    return rule


# ---------------------------------------------------------------- checks against the models catalog


def models_in_scope(rule: Rule, catalog: Mapping[str, ApplianceModel]) -> list[ApplianceModel]:
    """The catalog models a rule applies to (unknown kind or model: none)."""
    if rule.applies_to is None:
        return list(catalog.values())
    if rule.applies_to.model is not None:
        return [catalog[rule.applies_to.model]] if rule.applies_to.model in catalog else []
    return [model for model in catalog.values() if model.kind == rule.applies_to.kind]


def walk_conditions(
    condition: BaseModel, loc: list[str | int]
) -> Iterator[tuple[BaseModel, list[str | int]]]:
    """Every leaf condition with its location in the document, depth first."""
    kind = condition_kind(condition)
    if kind in ("all", "any"):
        for index, child in enumerate(condition_spec(condition)):
            yield from walk_conditions(child, [*loc, kind, index])
    else:
        yield condition, [*loc, kind]


def _scope_label(rule: Rule) -> str:
    if rule.applies_to is None:
        return "the rule applies to every device"
    target = f"model {rule.applies_to.model}" if rule.applies_to.model else f"kind {rule.applies_to.kind}"
    return f"the rule applies to {target}"


def catalog_errors(rule: Rule, catalog: Mapping[str, ApplianceModel]) -> list[dict[str, Any]]:
    """What in a structurally valid rule does not fit the appliance models it applies to."""
    if rule.applies_to is not None:
        if rule.applies_to.model is not None and rule.applies_to.model not in catalog:
            known = ", ".join(sorted(catalog))
            return [
                _error(["applies_to", "model"], f"unknown model {rule.applies_to.model!r}; known: {known}")
            ]
        if rule.applies_to.kind is not None and not models_in_scope(rule, catalog):
            known = ", ".join(sorted({model.kind for model in catalog.values()}))
            return [_error(["applies_to", "kind"], f"unknown kind {rule.applies_to.kind!r}; known: {known}")]
    scope = models_in_scope(rule, catalog)
    problems: list[dict[str, Any]] = []
    for condition, loc in walk_conditions(rule.when, ["when"]):
        problems += _leaf_errors(condition_spec(condition), loc, scope, _scope_label(rule))
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
                _error([*loc, "metric"], f"metric {metric!r} is not reported by {names} ({scope_label})")
            )
            return problems
    if isinstance(spec, UsageSpec):
        not_counters = [model.code for model in scope if not model.metrics[spec.metric].counter]
        if not_counters:
            problems.append(
                _error(
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
                    _error(
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
                _error(
                    [*loc, field or side],
                    f"`{field or side}` {level:g} can never be crossed: {metric} on {model.code} "
                    f"ranges {spec.min:g}..{spec.max:g} {spec.unit}",
                )
            )
    return problems


def parse_rules_file(text: str, *, catalog: Mapping[str, ApplianceModel] | None = None) -> list[Rule]:
    """Parse a YAML file holding `rules: [...]`; errors are located as `rules.<index>...`."""
    document = yaml.safe_load(text)
    if not isinstance(document, Mapping) or not isinstance(document.get("rules"), list):
        raise RuleError([_error([], "a rules file is a mapping with a `rules` list")])
    rules, problems = [], []
    for index, entry in enumerate(document["rules"]):
        try:
            rules.append(parse_rule(entry, catalog=catalog))
        except RuleError as exc:
            problems += [_error(["rules", index, *e["loc"]], e["msg"]) for e in exc.errors]
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
