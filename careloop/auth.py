"""Bearer tokens with roles: admin, dispatcher, marketer, technician."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from careloop.db import execute, fetch_value

ROLES = ("admin", "dispatcher", "marketer", "technician")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(conn: Any, *, role: str, name: str) -> str:
    """A new random token with `role`; only its hash is stored, so show it to the user once."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = f"cl_{role[:4]}_{secrets.token_urlsafe(24)}"
    execute(
        conn,
        "INSERT INTO api_tokens (token_sha256, role, name) VALUES (%s, %s, %s)",
        (hash_token(token), role, name),
    )
    return token


def role_of_token(conn: Any, token: str, *, admin_token: str | None) -> str | None:
    """The role a bearer token grants, or None when it is unknown."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return "admin"
    return fetch_value(conn, "SELECT role FROM api_tokens WHERE token_sha256 = %s", (hash_token(token),))
