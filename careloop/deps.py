"""FastAPI dependencies as Annotated aliases: a database connection, the caller's role, and the parameter
types every domain's API shares (offsets, row ids, moments) with the bounds the database and date arithmetic
need, so an out-of-range value is a 422 naming the parameter."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from careloop.auth import Caller as CallerIdentity
from careloop.auth import caller_of_token
from careloop.db import BIGINT_MAX, BIGINT_MIN, Connection

bearer = HTTPBearer(auto_error=False)


def get_conn(request: Request) -> Iterator[Connection]:
    """One connection per request inside one transaction: committed when the handler returns."""
    with request.app.state.database.transaction() as conn:
        yield conn


# scope="function": the commit runs before the answer is sent, so a commit that fails (the database went away
# mid-request) is a 503 rather than a 201 for something that was never stored.
Conn = Annotated[Connection, Depends(get_conn, scope="function")]


def get_caller(
    request: Request, conn: Conn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> CallerIdentity:
    if credentials is None:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = caller_of_token(conn, credentials.credentials, admin_token=request.app.state.admin_token)
    if caller is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return caller


Caller = Annotated[CallerIdentity, Depends(get_caller)]


def get_role(caller: Caller) -> str:
    return caller.role


Role = Annotated[str, Depends(get_role)]


def require(*roles: str):
    """A dependency that admits the given roles (admin always)."""

    def check(role: Role) -> str:
        if role != "admin" and role not in roles:
            raise HTTPException(
                403, f"role {role!r} may not do this; needs one of: admin, {', '.join(roles)}"
            )
        return role

    return Depends(check)


# Wide enough for any appliance's history and any plan, and far enough from Python's years 1 and 9999 that the
# arithmetic the services do on a moment (`until - 1 day`, bucket edges) cannot overflow.
EARLIEST_MOMENT = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
LATEST_MOMENT = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def moment_in_range(moment: dt.datetime) -> dt.datetime:
    """A pydantic validator: the moment, between EARLIEST_MOMENT and LATEST_MOMENT; one without a zone is taken
    as UTC, the zone of storage."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if not EARLIEST_MOMENT <= moment <= LATEST_MOMENT:
        raise ValueError(f"must be between {EARLIEST_MOMENT:%Y-%m-%d} and {LATEST_MOMENT:%Y-%m-%d}")
    return moment


Moment = Annotated[dt.datetime, AfterValidator(moment_in_range)]
Offset = Annotated[int, Query(ge=0, le=BIGINT_MAX, description="how many items to skip")]
Limit = Annotated[int, Query(ge=1, le=1000, description="how many items at most")]
RowId = Annotated[int, Path(ge=BIGINT_MIN, le=BIGINT_MAX)]
