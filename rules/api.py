"""HTTP endpoints for rules; thin handlers over rules.service. Bodies are JSON or YAML."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, model_validator
from starlette.concurrency import run_in_threadpool

from careloop.auth import technician_device_ids
from careloop.deps import Backtests, Caller, Conn, Limit, Offset, RowId, moment_in_range
from careloop.errors import EVERY_ROUTE, ErrorMessage, answers
from careloop.inputs import body_problem
from careloop.pages import Page
from devices.models import Severity
from rules import service
from rules.lifecycle import MAX_BACKTEST_WINDOW
from rules.models import (
    BacktestRequest,
    BacktestResult,
    DetectionRead,
    EngineJobRead,
    FleetForecast,
    Rule,
    RuleError,
    RuleRead,
    StoredRule,
)
from rules.specs import document_size_errors, rule_error, rule_size_errors

router = APIRouter(tags=["rules"], responses=EVERY_ROUTE)
# The body is read by hand (JSON or YAML); this tells OpenAPI what it may be.
RULE_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "a rule document (CONTRACT.md) as JSON, or as YAML with Content-Type application/yaml",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def rule_document(request: Request) -> str | bytes:
    """The body as the rules service reads it: text when declared YAML, else bytes (JSON first, then YAML).

    Read in a dependency so the handlers stay plain functions: FastAPI runs those in its thread pool, and their
    database calls never block the event loop (a slow or silent database would stall every request). Checked here,
    after authentication, for what the YAML reader cannot survive (careloop.inputs.body_problem): first its size,
    which is what the check costs, then the check, off the event loop."""
    body = await request.body()
    content_type = request.headers.get("content-type", "").lower()
    errors = document_size_errors(len(body))
    if errors:
        raise RuleError(errors)
    problem = await run_in_threadpool(body_problem, body, content_type)
    if problem is not None:
        raise RequestValidationError([problem.error()])
    if "yaml" in content_type:
        return body.decode("utf-8", errors="replace")
    return body


RuleDocument = Annotated[str | bytes, Depends(rule_document)]


class BacktestWindow(BacktestRequest):
    """BacktestRequest with `start` and `end` in the range every API moment keeps to (careloop.deps), at most
    MAX_BACKTEST_WINDOW apart."""

    start: Annotated[AwareDatetime, AfterValidator(moment_in_range)]
    end: Annotated[AwareDatetime, AfterValidator(moment_in_range)]

    @model_validator(mode="after")
    def _window_bounded(self) -> BacktestWindow:
        if self.end - self.start > MAX_BACKTEST_WINDOW:
            raise ValueError(
                f"from start to end is {(self.end - self.start).days} days; a backtest covers at most "
                f"{MAX_BACKTEST_WINDOW.days} days (MAX_BACKTEST_WINDOW)"
            )
        return self


# --- who may write which rule ------------------------------------------------------------------------------------
# The permission table admits dispatchers and marketers to POST and PUT /rules; what a rule does decides which of
# them may write it. A marketing rule's actions are all offers: the marketers'. Every other rule (one that opens
# service orders, calls customers, or only records detections) is a fault or maintenance rule: the dispatchers'.

SERVICE_ACTIONS = ("open_service_order", "call_customer")


def action_kinds(then: Iterable[Any]) -> list[str]:
    """The kinds of a rule's actions, from the parsed rule's actions or a stored document's `then`."""
    return [next(iter(action)) if isinstance(action, dict) else next(iter(type(action).model_fields))
            for action in then]


def is_marketing_rule(kinds: list[str]) -> bool:
    return bool(kinds) and all(kind == "offer" for kind in kinds)


def may_write_rule(role: str, rule_id: str, kinds: list[str], *, stored: bool = False) -> None:
    """403, saying why, when the role may not write a rule with these actions (`stored`: as it is now)."""
    which = f"rule {rule_id} as stored" if stored else f"rule {rule_id}"
    if role == "marketer" and not is_marketing_rule(kinds):
        does = ", ".join(sorted({kind for kind in kinds if kind != "offer"})) or "no action but a detection"
        raise HTTPException(
            403,
            f"{which} is a fault or maintenance rule ({does}): a marketer may write only rules whose actions "
            "are all offers; a dispatcher or an admin may change this one",
        )
    if role == "dispatcher" and is_marketing_rule(kinds):
        raise HTTPException(
            403, f"{which} is a marketing rule (all its actions are offers): a marketer or an admin may change it"
        )


def valid_rule(document: str | bytes) -> Rule:
    """The document validated, within the size limits (422 naming the limit)."""
    size = len(document.encode() if isinstance(document, str) else document)
    errors = document_size_errors(size)
    if errors:
        raise RuleError(errors)
    rule = service.validate(document)
    errors = rule_size_errors(rule.when, rule.then)
    if errors:
        raise RuleError(errors)
    return rule


def checked_rule(document: str | bytes, caller: Caller) -> Rule:
    """The document validated, within the size limits (422 naming the limit), and one the caller may write."""
    rule = valid_rule(document)
    may_write_rule(caller.role, rule.id, action_kinds(rule.then))
    return rule


def rule_error_response(_request: Request, error: RuleError) -> JSONResponse:
    return JSONResponse({"detail": error.errors}, status_code=422)


@router.post("/rules", status_code=201, openapi_extra=RULE_BODY_DOC, responses=answers(403, 409))
def create_rule(document: RuleDocument, conn: Conn, caller: Caller) -> RuleRead:
    """Validate and store a new rule; every mistake is listed with the field it is in. A marketer writes rules
    whose actions are all offers; a dispatcher every other rule (403 saying why)."""
    checked_rule(document, caller)
    return service.create_rule(conn, document)


@router.get("/rules")
def list_rules(
    conn: Conn,
    enabled: bool | None = None,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> Page[StoredRule]:
    return service.list_rules(conn, enabled=enabled, limit=limit, offset=offset)


@router.get("/rules/{rule_id}", responses=answers(404))
def get_rule(rule_id: str, conn: Conn) -> RuleRead:
    """A rule with every earlier version of it."""
    return service.get_rule(conn, rule_id)


@router.put("/rules/{rule_id}", openapi_extra=RULE_BODY_DOC, responses=answers(403, 404))
def update_rule(rule_id: str, document: RuleDocument, conn: Conn, caller: Caller) -> RuleRead:
    """Replace a rule's document (set `enabled: false` to disable it); the previous version is kept. Who may
    change a rule depends on what it does, as stored and as sent (see POST /rules)."""
    checked_rule(document, caller)
    may_write_rule(caller.role, rule_id, action_kinds(service.get_rule(conn, rule_id).document.get("then", [])),
                   stored=True)
    return service.update_rule(conn, rule_id, document)


TOO_MANY = {429: {"model": ErrorMessage, "description": "Too many running at once for the role; see Retry-After"}}


@router.post("/rules/{rule_id}/backtest", responses={**answers(404), **TOO_MANY})
async def backtest_rule(rule_id: str, request: BacktestWindow, caller: Caller, backtests: Backtests) -> BacktestResult:
    """Replay the rule over stored history from `start` to `end` (at most a year apart), every `step` (default
    1h): what it would have opened and cleared, and when. Nothing is opened. A few run at once per role (429
    beyond), each under a time limit (422 past it), on connections of their own."""
    result = await backtests.run(caller.role, lambda conn: service.backtest_rule(conn, rule_id, request))
    return without_device_ids(result) if caller.role == "marketer" else result


class DraftBacktest(BacktestWindow):
    """A rule not yet saved (`document`: what POST /rules takes, as an object or as YAML text) and the window to
    replay it over."""

    document: dict[str, Any] | str


def draft_rule(document: dict[str, Any] | str) -> Rule:
    """The draft validated as POST /rules validates a rule; its mistakes are located under `document`. Text is
    first put through the checks every request body gets (careloop.inputs): the input guard saw it only as one
    JSON string, not the YAML or JSON document inside it, which can nest past what the parsers survive."""
    text = document if isinstance(document, str) else json.dumps(document)
    try:
        if isinstance(document, str):
            body = document.encode("utf-8", "surrogatepass")
            errors = document_size_errors(len(body))  # before reading it: size is what the checks cost
            problem = None if errors else body_problem(body, "application/yaml")
            if problem is not None:
                errors = [rule_error(list(problem.loc[1:]), problem.msg)]
            if errors:
                raise RuleError(errors)
        return valid_rule(text)
    except RuleError as error:
        raise RuleError([{**problem, "loc": ["body", "document", *problem.get("loc", [])]}
                         for problem in error.errors]) from None


def without_device_ids(result: BacktestResult) -> BacktestResult:
    """A backtest as a marketer sees it: each device a number within this answer, not its id. A marketer sees no
    device's readings, faults or owner (the permission table); a backtest naming devices would show them all
    the same, to one threshold or one birthday at a time."""
    numbers: dict[str, str] = {}
    transitions = []
    for transition in result.transitions:
        device = numbers.setdefault(transition.device_id, f"device {len(numbers) + 1}")
        transitions.append(dataclasses.replace(
            transition, device_id=device, dedup_key=f"{transition.rule_id}:{device}:{transition.opened_at}"))
    return result.model_copy(update={"transitions": transitions})


@router.post("/rules/backtest", responses=TOO_MANY)
async def backtest_draft(request: DraftBacktest, caller: Caller, backtests: Backtests) -> BacktestResult:
    """Replay a rule before it is saved, as POST /rules/{id}/backtest replays a stored one (same bounds, same
    share per role, same time limit): what it would have opened and cleared, and when (`version` 0). Who may
    write the rule does not matter: nothing is stored or opened. The draft is read within the role's share, off
    the event loop: reading a large document takes time."""
    result = await backtests.run(
        caller.role, lambda conn: service.backtest_draft(conn, draft_rule(request.document), request))
    return without_device_ids(result) if caller.role == "marketer" else result


DetectionStatus = Literal["open", "acknowledged", "cleared"]
DetectionOrder = Literal["newest", "urgent"]
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@router.get("/detections", tags=["detections"])
def list_detections(
    conn: Conn,
    caller: Caller,
    device_id: str | None = None,
    status: DetectionStatus | None = None,
    rule_id: str | None = None,
    severity: Severity | None = None,
    order: Annotated[DetectionOrder, Query(description="`newest` first (the default), or `urgent`: critical, "
                                                       "then warning, then info, newest first within each")] = "newest",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DetectionRead]:
    """What rules found, each with its explanation and the actions waiting on it. A technician's token sees only
    the detections of devices on orders assigned to them."""
    urgent_first = order == "urgent"
    filters = {"status": status, "rule_id": rule_id, "severity": severity, "urgent_first": urgent_first}
    if caller.role != "technician":
        return service.list_detections(conn, device_id=device_id, limit=limit, offset=offset, **filters)
    devices = technician_device_ids(conn, caller.technician_id)
    if device_id is not None:
        devices = [device for device in devices if device == device_id]
    # A technician has the devices of a handful of orders: each one's first detections, merged, are enough to
    # answer any page of theirs.
    found: list[DetectionRead] = []
    total = 0
    for device in devices:
        page = service.list_detections(conn, device_id=device, limit=offset + limit, offset=0, **filters)
        found += page.items
        total += page.total
    found.sort(key=lambda detection: (detection.opened_at, detection.id), reverse=True)
    if urgent_first:
        found.sort(key=lambda detection: SEVERITY_RANK.get(detection.severity, len(SEVERITY_RANK)))  # stable
    return Page[DetectionRead](items=found[offset : offset + limit], total=total)


@router.get("/detections/{detection_id}", tags=["detections"], responses=answers(404))
def get_detection(detection_id: RowId, conn: Conn) -> DetectionRead:
    return service.get_detection(conn, detection_id)


@router.post("/detections/{detection_id}/acknowledge", tags=["detections"], responses=answers(403, 404, 409))
def acknowledge_detection(detection_id: RowId, conn: Conn, caller: Caller) -> DetectionRead:
    """Say a person has seen it (their name is kept); it stays until the rule stops holding, then clears."""
    return service.acknowledge_detection(conn, detection_id, by=caller.name)


@router.get("/engine/jobs", tags=["detections"])
def engine_jobs(conn: Conn) -> Page[EngineJobRead]:
    """When each engine job last ran over the fleet, how long it took, and what it opened and cleared."""
    return service.engine_jobs(conn)


MAX_FORECAST_DAYS = 365


@router.get("/fleet/forecast", tags=["fleet"])
def fleet_forecast(
    conn: Conn,
    days: Annotated[int, Query(ge=1, le=MAX_FORECAST_DAYS, description="how far ahead, in days")] = 30,
) -> FleetForecast:
    """The maintenance and trade-in windows the enabled rules are projected to open in the next `days`, per
    region and kind with the count per week: trend fits' crossings, usage at each device's recent rate, time
    since the last service, age from the purchase date. Devices whose window is open already are not counted."""
    return service.fleet_forecast(conn, days=days)
