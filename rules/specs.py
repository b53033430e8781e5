"""The parts of a rule document that conditions compile from: each condition kind's spec, the scope, errors.

Kept apart from `rules.models` (the whole rule document) so that `rules.conditions` can hold each kind's spec
beside its compiler, and the rule document can be built from that one table of kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from careloop.durations import Duration, DurationField
from devices.models import ApplianceModel

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


def require_positive(value: Duration, field: str) -> None:
    """Refuse a zero duration where one would mean `never` or `at once`."""
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
        require_positive(self.at_least, "at_least")
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
        require_positive(self.within, "within")
        return self


class OfflineSpec(Document):
    """The device has been offline (or silent) for at least `for`."""

    for_: DurationField = Field(alias="for")

    @model_validator(mode="after")
    def _positive(self) -> OfflineSpec:
        require_positive(self.for_, "for")
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
        require_positive(self.over, "over")
        return self


class BirthdaySpec(Document):
    """The owner's birthday is today or within the next `within` (whole days)."""

    within: DurationField = ZERO

    @model_validator(mode="after")
    def _whole_days(self) -> BirthdaySpec:
        if self.within.seconds % 86400:
            raise ValueError(f"`within` must be whole days, got {self.within}")
        return self


# ---------------------------------------------------------------- scope


class AppliesTo(Document):
    kind: Name | None = None
    model: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _kind_or_model(self) -> AppliesTo:
        if (self.kind is None) == (self.model is None):
            raise ValueError("give exactly one of `kind` or `model` (or omit `applies_to` for every device)")
        return self


def scope_target(applies_to: AppliesTo | None) -> str:
    """What a rule applies to, in words: `model RH-900`, `kind oven` or `every device`."""
    if applies_to is None:
        return "every device"
    return f"model {applies_to.model}" if applies_to.model else f"kind {applies_to.kind}"


def models_in_scope(applies_to: AppliesTo | None, catalog: Mapping[str, ApplianceModel]) -> list[ApplianceModel]:
    """The catalog models a rule applies to (unknown kind or model: none)."""
    if applies_to is None:
        return list(catalog.values())
    if applies_to.model is not None:
        return [catalog[applies_to.model]] if applies_to.model in catalog else []
    return [model for model in catalog.values() if model.kind == applies_to.kind]


# ---------------------------------------------------------------- conditions and actions as written


def condition_kind(condition: BaseModel) -> str:
    """The key a condition was written with: `threshold`, `all`, ..."""
    return next(iter(type(condition).model_fields))


def condition_spec(condition: BaseModel) -> Any:
    """The body of a condition: a `ThresholdSpec`, ..., or the list under `all`/`any`."""
    return getattr(condition, condition_kind(condition))


# ---------------------------------------------------------------- errors


class RuleError(ValueError):
    """An invalid rule document; `errors` is a list of `{"loc": [...], "msg": ...}` for a 422."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        super().__init__(
            "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in errors)
        )


def rule_error(loc: list[str | int], msg: str) -> dict[str, Any]:
    """One located mistake in a rule document."""
    return {"loc": loc, "msg": msg}


# ---------------------------------------------------------------- size limits

# How large a rule document may be. The catalog's largest rule has 4 conditions nested 2 deep and 3 actions;
# these leave room for anything a person writes while keeping compilation and every evaluation cheap.
MAX_RULE_BYTES = 16_384  # the document as sent, JSON or YAML
MAX_RULE_CONDITIONS = 32  # conditions in `when`, `all` and `any` included
MAX_RULE_DEPTH = 6  # `all`/`any` nested in one another
MAX_RULE_ACTIONS = 10  # entries in `then`


def document_size_errors(size_bytes: int) -> list[dict[str, Any]]:
    """A document larger than MAX_RULE_BYTES, named as the limit it passes."""
    if size_bytes <= MAX_RULE_BYTES:
        return []
    return [rule_error([], f"the document is {size_bytes} bytes; at most {MAX_RULE_BYTES} (MAX_RULE_BYTES)")]


def rule_size_errors(when: BaseModel, then: list[Any]) -> list[dict[str, Any]]:
    """Conditions, nesting and actions beyond the limits above, each named with the limit and where it is."""
    errors: list[dict[str, Any]] = []
    conditions = 0
    deepest: tuple[int, list[str | int]] = (0, ["when"])
    pending: list[tuple[BaseModel, int, list[str | int]]] = [(when, 1, ["when"])]
    while pending:
        condition, depth, loc = pending.pop()
        conditions += 1
        kind = condition_kind(condition)
        if kind in ("all", "any"):
            if depth > deepest[0]:
                deepest = (depth, loc)
            pending.extend((child, depth + 1, [*loc, kind, index])
                           for index, child in enumerate(condition_spec(condition)))
    if conditions > MAX_RULE_CONDITIONS:
        errors.append(rule_error(["when"], f"{conditions} conditions; at most {MAX_RULE_CONDITIONS} "
                                           "(MAX_RULE_CONDITIONS)"))
    if deepest[0] > MAX_RULE_DEPTH:
        errors.append(rule_error(deepest[1], f"`all`/`any` nested {deepest[0]} deep; at most {MAX_RULE_DEPTH} "
                                             "(MAX_RULE_DEPTH)"))
    if len(then) > MAX_RULE_ACTIONS:
        errors.append(rule_error(["then"], f"{len(then)} actions; at most {MAX_RULE_ACTIONS} (MAX_RULE_ACTIONS)"))
    return errors
