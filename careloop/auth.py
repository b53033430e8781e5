"""Bearer tokens with roles, their lifetimes, and the permission table: which role may do what, written once.

The table (PERMISSIONS) maps every API operation, `(method, path template)`, to the roles it admits and, for a
technician or a customer, which of the path's objects must be theirs. careloop.deps enforces it for every route the app
includes; the README's "HTTP API" section is the same table in words."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from careloop.db import BIGINT_MAX, BIGINT_MIN, Connection, execute, fetch_all, fetch_one, fetch_value, load_queries

QUERIES = load_queries(Path(__file__).with_name("auth.sql"))

# The roles a token may grant, here alone: the CLI offers these and the API checks against them.
ROLES = ("admin", "dispatcher", "marketer", "technician", "customer")
DEFAULT_TOKEN_LIFETIME = dt.timedelta(days=90)
MAX_TOKEN_LIFETIME = dt.timedelta(days=3650)
PREFIX_LENGTH = 12  # "cl_disp_" and four random characters: enough to tell tokens apart in a list, never to use one


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: the role their token grants, their name (kept in histories), for a technician which
    technician they are (their token sees only that technician's orders, devices and customers), and for a
    customer which customer (their token sees only their own profile, devices, offers and coupons)."""

    role: str
    name: str
    technician_id: int | None = None
    customer_id: int | None = None
    token_id: int | None = None  # None for the bootstrap admin token (CARELOOP_ADMIN_TOKEN)
    expires_at: dt.datetime | None = None


class TokenRefused(Exception):
    """A token that is known but no longer admitted: expired or revoked (the message says which, and when)."""


class TokenInfo(BaseModel):
    """A token as an admin sees it in a list (and GET /tokens answers it): never the token itself, only its first
    characters (`prefix`)."""

    model_config = ConfigDict(frozen=True)

    id: int
    prefix: str | None
    role: str
    name: str
    technician_id: int | None
    customer_id: int | None
    created_at: dt.datetime
    created_by: str | None
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_by: str | None


def create_token(
    conn: Connection,
    *,
    role: str,
    name: str,
    technician_id: int | None = None,
    customer_id: int | None = None,
    expires_in: dt.timedelta = DEFAULT_TOKEN_LIFETIME,
    created_by: str | None = None,
) -> str:
    """A new random token with `role`, valid for `expires_in`; only its hash is stored, so show it to the user
    once. A technician's token names the technician it belongs to (one that names none sees nothing); a
    customer's token names its customer (always: it is all the token may see)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if technician_id is not None and role != "technician":
        raise ValueError("only a technician's token names a technician")
    if technician_id is not None and fetch_value(conn, QUERIES["technician_exists"], {"id": technician_id}) is None:
        raise ValueError(f"no technician {technician_id} (GET /technicians lists them)")
    if customer_id is not None and role != "customer":
        raise ValueError("only a customer's token names a customer")
    if role == "customer":
        if customer_id is None:
            raise ValueError("a customer's token names its customer: give the customer id")
        found = fetch_one(conn, QUERIES["customer_erased_at"], {"id": customer_id})
        if found is None:
            raise ValueError(f"no customer {customer_id} (GET /customers lists them)")
        if found["erased_at"] is not None:
            raise ValueError(f"customer {customer_id} was erased: there is no one to give a token to")
    if not dt.timedelta(0) < expires_in <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"a token's lifetime must be longer than 0s and at most {MAX_TOKEN_LIFETIME.days}d")
    token = f"cl_{role[:4]}_{secrets.token_urlsafe(24)}"
    execute(conn, QUERIES["insert_token"], {
        "token_sha256": hash_token(token), "prefix": token[:PREFIX_LENGTH], "role": role, "name": name,
        "technician_id": technician_id, "customer_id": customer_id, "expires_in": expires_in, "created_by": created_by,
    })
    return token


def caller_of_token(
    conn: Connection, token: str, *, admin_token: str | None, now: dt.datetime | None = None
) -> Caller | None:
    """Who a bearer token speaks for; None when it is unknown; TokenRefused when it expired or was revoked."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Caller(role="admin", name="admin")
    row = fetch_one(conn, QUERIES["token_by_hash"], {"token_sha256": hash_token(token)})
    if row is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    if row["revoked_at"] is not None:
        raise TokenRefused(f"token revoked at {row['revoked_at']:%Y-%m-%d %H:%M}Z; ask an admin for a new one")
    if row["expires_at"] <= now:
        raise TokenRefused(f"token expired at {row['expires_at']:%Y-%m-%d %H:%M}Z; ask an admin for a new one")
    return Caller(role=row["role"], name=row["name"], technician_id=row["technician_id"],
                  customer_id=row["customer_id"], token_id=row["id"], expires_at=row["expires_at"])


def set_actor(conn: Connection, name: str) -> None:
    """Name the person whose request the transaction carries out; the database records them where it keeps who
    changed what (rules and their versions: `changed_by`)."""
    fetch_value(conn, QUERIES["set_actor"], {"name": name})


def role_of_token(conn: Connection, token: str, *, admin_token: str | None) -> str | None:
    """The role a bearer token grants, or None when it is unknown (or no longer admitted)."""
    try:
        caller = caller_of_token(conn, token, admin_token=admin_token)
    except TokenRefused:
        return None
    return caller.role if caller is not None else None


def list_tokens(conn: Connection, *, include_revoked: bool = True) -> list[TokenInfo]:
    """Every token, newest first, without the token itself."""
    return [TokenInfo(**row) for row in fetch_all(conn, QUERIES["list_tokens"], {"include_revoked": include_revoked})]


def revoke_token(conn: Connection, which: str | int, *, by: str) -> TokenInfo:
    """Revoke a token named by its id or by the start of the token (its prefix, as listed); LookupError when none
    or several match. Revoking twice changes nothing."""
    text = str(which).strip()
    if text.isdigit():
        rows = fetch_all(conn, QUERIES["token_by_id"], {"id": int(text)})
    elif len(text) >= 6:
        rows = fetch_all(conn, QUERIES["tokens_by_prefix"], {"prefix": text[:PREFIX_LENGTH]})
    else:
        raise LookupError(f"{text!r}: give a token id or at least the first 6 characters of the token")
    if not rows:
        raise LookupError(f"no token {text!r} (careloop token --list shows them)")
    if len(rows) > 1:
        raise LookupError(f"{len(rows)} tokens start with {text!r}; give more of it, or the token's id")
    execute(conn, QUERIES["revoke_token"], {"id": rows[0]["id"], "by": by})
    return TokenInfo(**fetch_one(conn, QUERIES["token_by_id"], {"id": rows[0]["id"]}))


# ------------------------------------------------------------------------------------------ the permission table

TechnicianScope = Literal["device", "detection", "customer", "order", "technician", "own"]
CustomerScope = Literal["device", "customer", "own"]


@dataclass(frozen=True)
class Access:
    """Who may call one operation.

    `roles`: the roles admitted besides admin (who may do everything). `technician`: for a technician, which
    object the path names that must be theirs (an order assigned to them, a device, detection or customer of
    one, themselves), or "own" where the handler or service narrows what it answers to their orders; any other id
    is a 404, never someone else's data. `customer`: the same for a customer's token, whose objects are their
    own profile and the devices they own; "own" where the handler or service narrows what it answers to that
    customer's devices, offers and coupons. `public`: no token needed. `rate`: the named rate limit that also
    applies (careloop.deps.RATE_LIMITS)."""

    roles: frozenset[str] = frozenset()
    technician: TechnicianScope | None = None
    customer: CustomerScope | None = None
    public: bool = False
    rate: str | None = None
    note: str = ""

    def admits(self, role: str) -> bool:
        return self.public or role == "admin" or role in self.roles


def _access(
    *roles: str, technician: TechnicianScope | None = None, customer: CustomerScope | None = None,
    rate: str | None = None,
) -> Access:
    if technician is not None:
        roles = (*roles, "technician")
    if customer is not None:
        roles = (*roles, "customer")
    return Access(roles=frozenset(roles), technician=technician, customer=customer, rate=rate)


PUBLIC = Access(public=True)
STAFF = _access("dispatcher", "marketer", "technician")
ADMIN = _access()
D, M = "dispatcher", "marketer"

PERMISSIONS: dict[tuple[str, str], Access] = {
    # the house
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/whoami"): _access("dispatcher", "marketer", "technician", customer="own"),
    ("GET", "/tokens"): ADMIN,
    ("POST", "/tokens"): ADMIN,
    ("DELETE", "/tokens/{token_id}"): ADMIN,
    # devices and the fleet
    ("GET", "/models"): STAFF,
    ("POST", "/devices"): _access(D),
    ("GET", "/devices"): _access(D, technician="own", customer="own"),
    ("GET", "/devices/{device_id}"): _access(D, technician="device", customer="device"),
    ("GET", "/devices/{device_id}/telemetry"): _access(D, technician="device", customer="device"),
    ("GET", "/devices/{device_id}/events"): _access(D, technician="device", customer="device"),
    # a device's broker credentials, issued at registration and rotated (shown once): who registers devices
    ("POST", "/devices/{device_id}/credentials"): _access(D),
    ("GET", "/fleet/summary"): _access(D, M),
    ("GET", "/devices/fleet/summary"): _access(D, M),
    # the maintenance and trade-in windows coming per region: for those who plan visits and offers
    ("GET", "/fleet/forecast"): _access(D, M),
    # ingest
    ("GET", "/ingest/quarantine"): _access(D),
    ("GET", "/ingest/stats"): _access(D),
    # customers (a marketer's answers carry no contact details: customers/ masks them)
    ("POST", "/customers"): _access(D),
    ("GET", "/customers"): _access(D, M),
    ("GET", "/customers/{customer_id}"): _access(D, M, technician="customer", customer="customer"),
    ("PATCH", "/customers/{customer_id}"): _access(D),
    ("DELETE", "/customers/{customer_id}"): ADMIN,
    ("GET", "/customers/{customer_id}/360"): _access(D, M),
    ("POST", "/customers/{customer_id}/consents"): _access(D),
    ("POST", "/customers/{customer_id}/marketing-objection"): _access(D),
    ("GET", "/customers/{customer_id}/consents/history"): _access(D, M),
    ("GET", "/customers/{customer_id}/membership"): _access(D, M, customer="customer"),
    ("POST", "/customers/{customer_id}/points/spend"): _access(D),
    ("POST", "/customers/{customer_id}/purchases"): _access(D),
    # the page an e-mail's unsubscribe link opens: its token is the customer's unsubscribe token, not a bearer
    ("GET", "/unsubscribe/{token}"): PUBLIC,
    ("POST", "/unsubscribe/{token}"): PUBLIC,
    # rules (what a marketer's and a dispatcher's rules may do is checked on the document: rules/api.py)
    ("GET", "/rules"): _access(D, M),
    ("POST", "/rules"): _access(D, M),
    ("GET", "/rules/{rule_id}"): _access(D, M),
    ("PUT", "/rules/{rule_id}"): _access(D, M),
    ("POST", "/rules/{rule_id}/backtest"): _access(D, M),
    ("POST", "/rules/backtest"): _access(D, M),  # a draft, before it is saved
    ("GET", "/detections"): _access(D, technician="own"),
    ("GET", "/detections/{detection_id}"): _access(D, technician="detection"),
    ("POST", "/detections/{detection_id}/acknowledge"): _access(D, technician="detection"),
    ("GET", "/engine/jobs"): _access(D),
    # service orders, technicians, calls (a technician's are narrowed to their orders by service_orders/)
    ("GET", "/service-orders"): _access(D, technician="own"),
    ("POST", "/service-orders"): _access(D),
    ("GET", "/service-orders/{order_id}"): _access(D, technician="order"),
    ("POST", "/service-orders/{order_id}/status"): _access(D, technician="order"),
    ("GET", "/service-orders/{order_id}/proposals"): _access(D),
    ("POST", "/service-orders/{order_id}/assign"): _access(D),
    ("POST", "/service-orders/{order_id}/complete"): _access(D, technician="order"),
    ("GET", "/technicians"): _access(D),
    ("POST", "/technicians"): _access(D),
    ("GET", "/technicians/{technician_id}"): _access(D, technician="technician"),
    ("GET", "/call-tasks"): _access(D, technician="own"),
    ("POST", "/call-tasks/{task_id}/outcome"): _access(D),
    # offers: marketers run them; the hotline (dispatchers) looks up and redeems a customer's code; a customer
    # their own codes (offers/ narrows a customer's list, look-up and redemption to them: another's code is a 404)
    ("GET", "/offer-templates"): _access(D, M),
    ("POST", "/offer-templates"): _access(M),
    ("GET", "/offer-templates/{code}"): _access(D, M),
    ("PUT", "/offer-templates/{code}"): _access(M),
    ("GET", "/offers"): _access(D, M, customer="own"),
    ("GET", "/offers/{code}"): _access(D, M, customer="own"),
    # redeemed at the till or the visit (the hotline), or by the customer; never by a marketer, whose redemption
    # would book spend and points to anyone
    ("POST", "/offers/{code}/redeem"): _access(D, customer="own", rate="redeem"),
    ("GET", "/reports/offers"): _access(M),
    ("GET", "/outbox"): _access(M),
    ("POST", "/webhooks"): ADMIN,
    ("GET", "/webhooks"): ADMIN,
    ("DELETE", "/webhooks/{endpoint_id}"): ADMIN,
}


def access_to(method: str, path: str) -> Access | None:
    """The table's entry for an operation (HEAD is GET); None for one the table does not know (refused)."""
    return PERMISSIONS.get(("GET" if method == "HEAD" else method, path))


def refusal(role: str, access: Access) -> str:
    """Why a role is refused an operation, naming those that may."""
    allowed = ", ".join(["admin", *sorted(access.roles)])
    return f"role {role!r} may not do this; needs one of: {allowed}"


def technician_may_see(conn: Connection, caller: Caller, scope: TechnicianScope, value: str) -> bool:
    """Whether the object a path names (a device, detection, customer, technician) is one of the technician's:
    on an order assigned to them. A token naming no technician sees nothing."""
    if caller.technician_id is None:
        return False
    if scope == "own":
        return True
    if scope == "technician":
        return value == str(caller.technician_id)
    key: str | int = value
    if scope in ("detection", "customer", "order"):
        try:
            key = int(value)
        except ValueError:
            return False
        if not BIGINT_MIN <= key <= BIGINT_MAX:
            return False
    query = {"device": "technician_has_device", "detection": "technician_has_detection",
             "customer": "technician_has_customer", "order": "technician_has_order"}[scope]
    return fetch_value(conn, QUERIES[query], {"technician_id": caller.technician_id, "value": key}) is not None


def customer_may_see(conn: Connection, caller: Caller, scope: CustomerScope, value: str) -> bool:
    """Whether the object a path names is the customer's own: themselves, or a device they own."""
    if caller.customer_id is None:
        return False
    if scope == "own":
        return True
    if scope == "customer":
        return value == str(caller.customer_id)
    return fetch_value(conn, QUERIES["customer_has_device"],
                       {"customer_id": caller.customer_id, "value": value}) is not None


def technician_device_ids(conn: Connection, technician_id: int | None) -> list[str]:
    """The devices of the orders assigned to a technician (what their token may see of the fleet)."""
    if technician_id is None:
        return []
    return [row["device_id"] for row in fetch_all(conn, QUERIES["technician_devices"],
                                                  {"technician_id": technician_id})]
