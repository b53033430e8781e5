"""Domain errors the services raise (the API turns them into 404, 409 and 422 answers), and the shapes of every
error answer, declared on each route so /docs shows what a caller really gets back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class DomainError(Exception):
    status_code = 400


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class InvalidInput(DomainError):
    """Input that is well-formed but wrong; names the field."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ErrorMessage(BaseModel):
    """Every refusal but a validation error: what went wrong, in words."""

    detail: str


class Mistake(BaseModel):
    """One mistake in a request and where it is: `["query", "limit"]`, `["body", "owner"]`, a rule's field."""

    model_config = ConfigDict(extra="allow")  # FastAPI adds `input` and `ctx`

    loc: list[str | int]
    msg: str
    type: str | None = None


class InvalidRequest(BaseModel):
    """A 422: each mistake with its place, or, for a value well-formed but wrong, one sentence naming the field."""

    detail: list[Mistake] | str


ERROR_ANSWERS: dict[int, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "No bearer token, or one that is unknown or revoked"},
    403: {"model": ErrorMessage, "description": "The token's role may not do this; the answer names those that may"},
    404: {"model": ErrorMessage, "description": "Nothing with that id"},
    409: {"model": ErrorMessage, "description": "At odds with what is stored: it exists already, or its state forbids"},
    422: {"model": InvalidRequest, "description": "Invalid input, each mistake named with its place"},
    429: {"model": ErrorMessage, "description": "Too many at once from this client: a limit of its own (refused "
          "tokens, redemptions, backtests, or its share of the requests in progress); try again after Retry-After"},
    503: {"model": ErrorMessage, "description": "The database is down or did not answer in time, or the API is busy "
          "(more requests in progress than CARELOOP_API_REQUESTS_IN_PROGRESS); try again after Retry-After"},
}


def answers(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route (or a router) can give, for its `responses=`."""
    return {code: ERROR_ANSWERS[code] for code in status_codes}


# What any route can answer: every route but /health needs a token, the input guard refuses input no handler
# could use wherever it appears, one client may hold only its share of the requests in progress, and any may find
# the database down.
EVERY_ROUTE = answers(401, 422, 429, 503)
