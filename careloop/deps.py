"""FastAPI dependencies as Annotated aliases: a database connection, the caller's role, and the parameter
types every domain's API shares (offsets, row ids, moments) with the bounds the database and date arithmetic
need, so an out-of-range value is a 422 naming the parameter."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import psycopg2
from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from careloop.auth import Caller as CallerIdentity
from careloop.auth import (
    TokenRefused,
    access_to,
    caller_of_token,
    customer_may_see,
    refusal,
    set_actor,
    technician_may_see,
)
from careloop.db import BIGINT_MAX, BIGINT_MIN, Connection, Database, SessionLimits

bearer = HTTPBearer(auto_error=False)
T = TypeVar("T")


def get_conn(request: Request) -> Iterator[Connection]:
    """One connection per request inside one transaction: committed when the handler returns. The transaction
    names the caller (authorize() found them first), so what it changes records the person."""
    caller = getattr(request.state, "caller", None)
    with request.app.state.database.transaction() as conn:
        if caller is not None:
            set_actor(conn, caller.name)
        yield conn


# scope="function": the commit runs before the answer is sent, so a commit that fails (the database went away
# mid-request) is a 503 rather than a 201 for something that was never stored.
Conn = Annotated[Connection, Depends(get_conn, scope="function")]


# --- limits -----------------------------------------------------------------------------------------------------


class RateLimiter:
    """At most `events` per `per_s` seconds for each key (a client address, a token), counted over a sliding
    window; what a key did longer ago is forgotten. Bounded in memory: past `max_keys` the quietest keys go."""

    def __init__(self, events: int, per_s: float, *, max_keys: int = 10_000) -> None:
        self.events = events
        self.per_s = per_s
        self.max_keys = max_keys
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque[float]:
        times = self._seen.setdefault(key, collections.deque())
        while times and times[0] <= now - self.per_s:
            times.popleft()
        return times

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may act again, or None when it may now (nothing is counted)."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) < self.events:
                return None
            return max(1, math.ceil(times[0] + self.per_s - now))

    def hit(self, key: str) -> int | None:
        """Count one event for `key`; answers retry_after when it went over the limit, else None."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) >= self.max_keys and key not in self._seen:
                quietest = min(self._seen, key=lambda other: self._seen[other][-1] if self._seen[other] else 0)
                del self._seen[quietest]
            times = self._recent(key, now)
            if len(times) >= self.events:
                return max(1, math.ceil(times[0] + self.per_s - now))
            times.append(now)
            return None


def too_many(what: str, retry_after: int) -> HTTPException:
    return HTTPException(
        429, f"too many {what}; try again in {retry_after}s", headers={"Retry-After": str(retry_after)}
    )


class ExpensiveWork:
    """Work too heavy for the request path (backtests): at most `per_role` at once for each role, refused with a
    429 beyond that; run on threads and database connections of its own, each transaction under a statement
    timeout, so however many arrive, /health and every other request keep their threads and connections."""

    def __init__(self, dsn: str, *, per_role: int = 2, timeout_s: float = 30, what: str = "backtests") -> None:
        self.per_role = per_role
        self.timeout_s = timeout_s
        self.what = what
        self._running: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()
        self._threads = anyio.CapacityLimiter(per_role * 2)
        self._dsn = dsn
        self._database: Database | None = None

    @property
    def database(self) -> Database:
        with self._lock:
            if self._database is None:
                limits = SessionLimits(statement_timeout_s=self.timeout_s)
                self._database = Database(self._dsn, max_connections=self.per_role * 2, limits=limits)
            return self._database

    @contextlib.contextmanager
    def slot(self, role: str) -> Iterator[None]:
        """A place for one more of the role's runs, or a 429 when it has `per_role` running."""
        with self._lock:
            if self._running[role] >= self.per_role:
                raise HTTPException(
                    429,
                    f"{self.per_role} {self.what} of role {role!r} are running, the most at once; try again when "
                    "one has finished",
                    headers={"Retry-After": "5"},
                )
            self._running[role] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running[role] -= 1

    async def run(self, role: str, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction of its own pool, on a thread of its own, within the role's share."""
        with self.slot(role):
            return await anyio.to_thread.run_sync(self._in_transaction, work, limiter=self._threads)

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.database.transaction() as conn:
                return work(conn)
        except psycopg2.errors.QueryCanceled:
            raise HTTPException(
                422, f"ran past the time limit of {self.timeout_s:g}s for {self.what}; take a shorter range or a "
                "longer step",
            ) from None

    def close(self) -> None:
        if self._database is not None:
            self._database.close()


@dataclass
class ApiLimits:
    """What the API bounds per client: authentication failures per address, coupon redemptions per token and
    address, and expensive work (backtests) per role; and per process, the requests it works on at once, in all
    and from one client (careloop.app.Admission). One per app, in `app.state.limits`."""

    auth_failures_per_minute: int = 20
    redemptions_per_minute: int = 30
    backtests_per_role: int = 2
    backtest_timeout_s: float = 30
    requests_in_progress: int = 32
    requests_in_progress_per_client: int = 8
    auth_failures: RateLimiter = field(init=False)
    rates: dict[str, RateLimiter] = field(init=False)

    def __post_init__(self) -> None:
        self.auth_failures = RateLimiter(self.auth_failures_per_minute, 60)
        # the named limits the permission table puts on operations (careloop.auth.Access.rate)
        self.rates = {"redeem": RateLimiter(self.redemptions_per_minute, 60)}


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class KnownTokens:
    """The bearer tokens this process has seen authenticated lately (digests, the newest `size`), so admission can
    tell a client by its token before authentication has run: a token it does not know yet (an invented one, or a
    real one's first request here) counts against its address instead, and inventing tokens gains no places."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._digests: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()  # added to from the handlers' threads, read on the event loop's

    def add(self, token: str) -> None:
        digest = token_digest(token.encode("latin-1", errors="replace"))  # as HTTP headers arrive: latin-1
        with self._lock:
            self._digests[digest] = None
            self._digests.move_to_end(digest)
            while len(self._digests) > self.size:
                self._digests.popitem(last=False)

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._digests


def token_digest(token: bytes) -> bytes:
    return hashlib.blake2b(token, digest_size=16).digest()


# --- who is calling, and may they -------------------------------------------------------------------------------


def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> CallerIdentity:
    """The caller a bearer token speaks for (once per request: authorize() may have looked it up already).
    Looked up in a short transaction of its own, so a request refused here (or one that then waits on other work)
    holds no connection. An address that sent too many refused tokens has any further refused token answered
    with a 429 for a while; a valid token is still admitted from it, so nobody sharing an address (a proxy, an
    office) is locked out by someone else's guesses (a token of 192 random bits is not found by guessing)."""
    known = getattr(request.state, "caller", None)
    if known is not None:
        return known
    if credentials is None:
        raise HTTPException(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    failures: RateLimiter = request.app.state.limits.auth_failures
    address = client_address(request)

    def refuse(reason: str) -> HTTPException:
        retry_after = failures.retry_after(address)
        if retry_after is not None:
            return too_many("refused tokens from this address", retry_after)
        failures.hit(address)
        return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})

    try:
        with request.app.state.database.transaction() as conn:
            caller = caller_of_token(conn, credentials.credentials, admin_token=request.app.state.admin_token)
    except TokenRefused as refused:
        raise refuse(str(refused)) from None
    if caller is None:
        raise refuse("unknown token")
    request.app.state.known_tokens.add(credentials.credentials)  # admission now tells this client by its token
    request.state.caller = caller
    return caller


Caller = Annotated[CallerIdentity, Depends(get_caller)]

# The path parameter that names the object a technician's or a customer's scope checks.
SCOPE_PARAMETERS = {"device": "device_id", "detection": "detection_id", "customer": "customer_id",
                    "order": "order_id", "technician": "technician_id"}


def authorize(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> CallerIdentity | None:
    """The permission table (careloop.auth.PERMISSIONS), enforced for every route the app includes: a token
    (unless the operation is public), a role that may do this (else 403 naming the roles that may), a path that
    names an object of the technician's for a technician, and of the customer's own for a customer (else 404, as
    for an id that does not exist), and the operation's rate limit (else 429)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    access = access_to(request.method, path)
    if access is None:
        # Fail closed: an operation nobody wrote into the table is nobody's.
        raise HTTPException(403, f"{request.method} {path} is not in the permission table; nobody may call it")
    if access.public:
        return None
    caller = get_caller(request, credentials)
    if not access.admits(caller.role):
        raise HTTPException(403, refusal(caller.role, access))
    scope = {"technician": access.technician, "customer": access.customer}.get(caller.role)
    if scope is not None:
        parameter = SCOPE_PARAMETERS.get(scope)
        value = request.path_params.get(parameter) if parameter else None
        if parameter is None:
            # "own": the handler narrows; a technician token naming no technician may only read (nothing)
            allowed = caller.role == "customer" or caller.technician_id is not None or request.method == "GET"
        else:
            may_see = technician_may_see if caller.role == "technician" else customer_may_see
            with request.app.state.database.transaction() as conn:
                allowed = may_see(conn, caller, scope, str(value))
        if not allowed:
            thing = scope if parameter else "such thing"
            raise HTTPException(404, f"no {thing} {value}" if parameter else f"no {thing} for this token")
    if access.rate is not None:
        count_against(request, caller, access.rate)
    return caller


def count_against(request: Request, caller: CallerIdentity, limit: str) -> None:
    """Count one request against a named limit (ApiLimits.rates) for the caller's token and address; 429 with
    Retry-After when over it."""
    key = f"{caller.token_id or caller.name}@{client_address(request)}"
    retry_after = request.app.state.limits.rates[limit].hit(key)
    if retry_after is not None:
        raise too_many(f"{limit} requests", retry_after)


def rate_limited(limit: str):
    """A dependency that counts the request against a named limit ("redeem": ApiLimits.redemptions_per_minute).
    The permission table's `rate=` does the same for an operation without touching its router; this is for a
    route that wants it said where it is declared."""

    def check(request: Request, caller: Caller) -> None:
        count_against(request, caller, limit)

    return Depends(check)


Authorized = Depends(authorize)


def get_role(caller: Caller) -> str:
    return caller.role


Role = Annotated[str, Depends(get_role)]


def require(*roles: str):
    """A dependency that admits the given roles (admin always). The permission table (careloop.auth) is what
    decides; this only repeats it on routes that say so themselves."""

    def check(role: Role) -> str:
        if role != "admin" and role not in roles:
            raise HTTPException(
                403, f"role {role!r} may not do this; needs one of: admin, {', '.join(roles)}"
            )
        return role

    return Depends(check)


def get_backtests(request: Request) -> ExpensiveWork:
    return request.app.state.backtests


def get_reports(request: Request) -> ExpensiveWork:
    return request.app.state.reports


# Expensive work off the request path, bounded per role: `await backtests.run(caller.role, work)` runs
# `work(conn)` on a connection and thread of its own (429 past the role's share, 422 past the time limit).
Backtests = Annotated[ExpensiveWork, Depends(get_backtests)]
Reports = Annotated[ExpensiveWork, Depends(get_reports)]


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
