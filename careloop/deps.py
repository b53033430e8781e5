"""FastAPI dependencies as Annotated aliases: a database connection and the caller's role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from careloop.auth import role_of_token

bearer = HTTPBearer(auto_error=False)


def get_conn(request: Request) -> Iterator[Any]:
    """One connection per request inside one transaction: committed when the handler returns."""
    with request.app.state.database.transaction() as conn:
        yield conn


Conn = Annotated[Any, Depends(get_conn)]


def get_role(
    request: Request, conn: Conn, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    if credentials is None:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = role_of_token(conn, credentials.credentials, admin_token=request.app.state.admin_token)
    if role is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return role


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
