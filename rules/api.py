"""HTTP endpoints for rules; thin handlers over rules.service. Bodies are JSON or YAML."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime

from careloop.deps import Conn, Limit, Offset, Role, RowId, moment_in_range, require
from careloop.errors import EVERY_ROUTE, answers
from careloop.pages import Page
from rules import service
from rules.models import (
    BacktestRequest,
    BacktestResult,
    DetectionRead,
    EngineJobRead,
    RuleError,
    RuleRead,
    StoredRule,
)

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
    database calls never block the event loop (a slow or silent database would stall every request)."""
    body = await request.body()
    if "yaml" in request.headers.get("content-type", ""):
        return body.decode("utf-8", errors="replace")
    return body


RuleDocument = Annotated[str | bytes, Depends(rule_document)]


class BacktestWindow(BacktestRequest):
    """BacktestRequest with `start` and `end` in the range every API moment keeps to (careloop.deps)."""

    start: Annotated[AwareDatetime, AfterValidator(moment_in_range)]
    end: Annotated[AwareDatetime, AfterValidator(moment_in_range)]


def rule_error_response(_request: Request, error: RuleError) -> JSONResponse:
    return JSONResponse({"detail": error.errors}, status_code=422)


@router.post(
    "/rules",
    status_code=201,
    dependencies=[require("dispatcher", "marketer")],
    openapi_extra=RULE_BODY_DOC,
    responses=answers(403, 409),
)
def create_rule(document: RuleDocument, conn: Conn) -> RuleRead:
    """Validate and store a new rule; every mistake is listed with the field it is in."""
    return service.create_rule(conn, document)


@router.get("/rules")
def list_rules(
    conn: Conn,
    _role: Role,
    enabled: bool | None = None,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> Page[StoredRule]:
    return service.list_rules(conn, enabled=enabled, limit=limit, offset=offset)


@router.get("/rules/{rule_id}", responses=answers(404))
def get_rule(rule_id: str, conn: Conn, _role: Role) -> RuleRead:
    """A rule with every earlier version of it."""
    return service.get_rule(conn, rule_id)


@router.put(
    "/rules/{rule_id}",
    dependencies=[require("dispatcher", "marketer")],
    openapi_extra=RULE_BODY_DOC,
    responses=answers(403, 404),
)
def update_rule(rule_id: str, document: RuleDocument, conn: Conn) -> RuleRead:
    """Replace a rule's document (set `enabled: false` to disable it); the previous version is kept."""
    return service.update_rule(conn, rule_id, document)


@router.post("/rules/{rule_id}/backtest", responses=answers(404))
def backtest_rule(rule_id: str, request: BacktestWindow, conn: Conn, _role: Role) -> BacktestResult:
    """Replay the rule over stored history from `start` to `end`, every `step` (default 1h): what it would
    have opened and cleared, and when. Nothing is opened."""
    return service.backtest_rule(conn, rule_id, request)


DetectionStatus = Literal["open", "acknowledged", "cleared"]


@router.get("/detections", tags=["detections"])
def list_detections(
    conn: Conn,
    _role: Role,
    device_id: str | None = None,
    status: DetectionStatus | None = None,
    rule_id: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DetectionRead]:
    """What rules found, newest first, each with its explanation and the actions waiting on it."""
    return service.list_detections(
        conn, device_id=device_id, status=status, rule_id=rule_id, limit=limit, offset=offset
    )


@router.get("/detections/{detection_id}", tags=["detections"], responses=answers(404))
def get_detection(detection_id: RowId, conn: Conn, _role: Role) -> DetectionRead:
    return service.get_detection(conn, detection_id)


@router.post(
    "/detections/{detection_id}/acknowledge",
    tags=["detections"],
    dependencies=[require("dispatcher", "technician")],
    responses=answers(403, 404, 409),
)
def acknowledge_detection(detection_id: RowId, conn: Conn, role: Role) -> DetectionRead:
    """Say a person has seen it; it stays until the rule stops holding, then clears."""
    return service.acknowledge_detection(conn, detection_id, by=role)


@router.get("/engine/jobs", tags=["detections"])
def engine_jobs(conn: Conn, _role: Role) -> Page[EngineJobRead]:
    """When each engine job last ran over the fleet, how long it took, and what it opened and cleared."""
    return service.engine_jobs(conn)
