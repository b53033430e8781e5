"""Bearer tokens with roles: admin, dispatcher, marketer, technician."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from careloop.db import Connection, execute, fetch_one

# The roles a token may grant, here alone: the CLI offers these and the API checks against them.
ROLES = ("admin", "dispatcher", "marketer", "technician")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: the role their token grants, their name (kept in histories) and, for a technician, which
    technician they are (their token sees only that technician's orders)."""

    role: str
    name: str
    technician_id: int | None = None


def create_token(conn: Connection, *, role: str, name: str, technician_id: int | None = None) -> str:
    """A new random token with `role`; only its hash is stored, so show it to the user once. A technician's token
    names the technician it belongs to (one that names none sees no orders)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if technician_id is not None and role != "technician":
        raise ValueError("only a technician's token names a technician")
    token = f"cl_{role[:4]}_{secrets.token_urlsafe(24)}"
    execute(
        conn,
        "INSERT INTO api_tokens (token_sha256, role, name, technician_id) VALUES (%s, %s, %s, %s)",
        (hash_token(token), role, name, technician_id),
    )
    return token


def caller_of_token(conn: Connection, token: str, *, admin_token: str | None) -> Caller | None:
    """Who a bearer token speaks for, or None when it is unknown."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(role="admin", name="admin")
    row = fetch_one(conn, "SELECT role, name, technician_id FROM api_tokens WHERE token_sha256 = %s",
                    (hash_token(token),))
    return Caller(**row) if row is not None else None


def role_of_token(conn: Connection, token: str, *, admin_token: str | None) -> str | None:
    """The role a bearer token grants, or None when it is unknown."""
    caller = caller_of_token(conn, token, admin_token=admin_token)
    return caller.role if caller is not None else None
