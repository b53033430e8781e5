"""The HTTP API: every domain's router, the input guard, error handling and the health check."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from typing import Any, Literal

import paho.mqtt.client as mqtt
import psycopg2
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from careloop import __version__, auth
from careloop.db import Database
from careloop.deps import ApiLimits, Authorized, Caller, Conn, ExpensiveWork, KnownTokens, RowId, token_digest
from careloop.durations import Duration, DurationField
from careloop.errors import EVERY_ROUTE, DomainError, answers
from careloop.fleet import router as fleet_router
from careloop.heartbeat import process_health, utc_now
from careloop.inputs import MAX_BODY_BYTES, InputProblem, body_problem, query_problem, text_at, text_problem
from careloop.mqtt import make_connection
from careloop.pages import Page, whole
from customers.api import router as customers_router
from devices.api import router as devices_router
from devices.credentials import DeviceAccounts
from ingest.api import router as ingest_router
from offers.api import router as offers_router
from rules.api import router as rules_router
from rules.api import rule_error_response
from rules.models import RuleError
from service_orders.api import router as service_orders_router

log = logging.getLogger("careloop.api")
BROKER_CHECK_TTL_S = 5.0


class BrokerProbe:
    """Connects to the broker to tell whether it answers; remembers the answer for a few seconds."""

    def __init__(self, mqtt_url: str | None) -> None:
        self.mqtt_url = mqtt_url
        self._checked_at = 0.0
        self._answer: dict[str, Any] = {"ok": False, "detail": "not checked"}
        self._lock = threading.Lock()

    def check(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._checked_at > BROKER_CHECK_TTL_S:
                self._answer = self._probe()
                self._checked_at = time.monotonic()
            return self._answer

    def _probe(self) -> dict[str, Any]:
        if not self.mqtt_url:
            return {"ok": False, "detail": "no broker configured"}
        connection = make_connection(self.mqtt_url, f"careloop-health-{id(self)}")
        connected = threading.Event()
        refusal: list[str] = []

        def on_connect(_client, _userdata, _flags, reason_code, _properties=None) -> None:
            if reason_code.is_failure:  # a CONNACK that refuses (bad credentials, not authorized) is no connection
                refusal.append(str(reason_code))
            connected.set()

        connection.client.on_connect = on_connect
        try:
            connection.connect(keepalive=5)
            connection.client.loop_start()
            answered = connected.wait(timeout=2)
        except (OSError, mqtt.WebsocketConnectionError) as error:
            return {"ok": False, "detail": str(error)}
        finally:
            connection.client.disconnect()
            connection.client.loop_stop()
        if refusal:
            return {"ok": False, "detail": f"the broker refused the connection: {refusal[0]}"}
        return {"ok": answered, "detail": "connected" if answered else "no CONNACK within 2s"}


# --- admission ---------------------------------------------------------------------------------------------------
# An API asked for more than it can answer would otherwise queue every request (for a thread, then for one of its
# database connections) and answer all of them late: minutes late, measured at twice its capacity. Past a number
# of requests in progress it answers at once that it is busy, and those it took stay quick. One client may hold
# only a share of those places, so a client that floods the API (a script in a loop) is told to slow down while
# the dashboard and everyone else are still admitted.

ALWAYS_ADMITTED = frozenset({"/health"})  # monitoring learns the state of a busy API too


def client_of(scope: Scope, known: KnownTokens) -> bytes:
    """Who a request is from, before authentication: its bearer token when this process has seen that token
    authenticated, else its connection's address. The token is read as authentication reads it ("Bearer" in any
    case, spaces around the token dropped), so one token written several ways is one client."""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                digest = token_digest(token.strip())
                if digest in known:
                    return b"token " + digest
            break
    client = scope.get("client")
    return b"address " + (client[0] if client else "unknown").encode()


class Admission:
    """ASGI middleware: at most `limit` requests in progress in this process, and at most `per_client` of them from
    one client (careloop.app.client_of: a token seen authenticated, else an address), from when the whole body has
    arrived (careloop.app.InputGuard reads it first) until the answer starts. One more is answered at once, before
    routing, authentication or the database: a 503 with Retry-After when the process is full, a 429 when the client
    holds its share."""

    def __init__(self, app: ASGIApp, limit: int, per_client: int | None = None,
                 known: KnownTokens | None = None) -> None:
        self.app = app
        self.limit = limit
        self.per_client = min(per_client or limit, limit)
        self.known = known if known is not None else KnownTokens()
        self.in_progress = 0  # the event loop's thread alone changes these
        self.by_client: dict[bytes, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in ALWAYS_ADMITTED:
            await self.app(scope, receive, send)
            return
        client = client_of(scope, self.known)
        refusal = self._refusal(client)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        self.in_progress += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_progress -= 1
                held = self.by_client.pop(client) - 1
                if held:
                    self.by_client[client] = held

        async def send_and_release(message: Message) -> None:
            # The answer is computed once it starts: a client slow to read it holds no place.
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            release()

    def _refusal(self, client: bytes) -> JSONResponse | None:
        if self.in_progress >= self.limit:
            return JSONResponse(
                {"detail": f"the API is busy: {self.in_progress} requests in progress, its limit "
                           "(CARELOOP_API_REQUESTS_IN_PROGRESS); try again in a second"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        if self.by_client.get(client, 0) >= self.per_client:
            return JSONResponse(
                {"detail": f"too many requests at once: this client (its token, or its address for a token not "
                           f"yet seen valid here) has "
                           f"{self.per_client} in progress, its share (CARELOOP_API_REQUESTS_IN_PROGRESS_PER_CLIENT); "
                           "wait for an answer before sending more"},
                status_code=429,
                headers={"Retry-After": "1"},
            )
        return None


# --- the input guard --------------------------------------------------------------------------------------------
# Some input no handler can do anything with: PostgreSQL text cannot hold NUL, UTF-8 cannot encode a lone UTF-16
# surrogate (psycopg2 raises ValueError or UnicodeEncodeError for them, client side), and a document nested a
# thousand levels deep overflows Python's recursion in the JSON and YAML parsers. One middleware refuses all of it
# before routing, wherever it appears (path, query, JSON or YAML body), with a 422 naming the place, so no
# endpoint needs a patch of its own and a ValueError from deeper down still means a bug.

_SECRET_IN_PATH = re.compile(r"(/unsubscribe/)[^/?#\s]+")
_QUERY_VALUE = re.compile(r"([?&][^=&#\s]+=)[^&#\s]*")


def redact_path(path: str) -> str:
    """A request path as the access log keeps it: an unsubscribe link's token and every query value hidden (a
    token pasted into a query string, an e-mail searched for), the shape of the request kept."""
    return _QUERY_VALUE.sub(r"\1***", _SECRET_IN_PATH.sub(r"\1***", path))


class RedactedAccessLog(logging.Filter):
    """uvicorn's access log with redact_path applied to each line's path (its third argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = (*record.args[:2], redact_path(record.args[2]), *record.args[3:])
        return True


ON_THE_LOOP_BODY_BYTES = 256


class InputGuard:
    """ASGI middleware: refuses with a 422 the strings, documents and bodies described above, before routing."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._path_problem(scope) or query_problem(scope.get("query_string", b""))
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        body = bytearray()
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                problem = InputProblem(("body",), f"larger than {MAX_BODY_BYTES} bytes", "too_large", 413)
                await problem.response()(scope, receive, send)
                return
        content_type = Headers(scope=scope).get("content-type", "").lower()
        # JSON only: a YAML body is checked where it is read (rules.api.rule_document), behind authentication and
        # admission, for the YAML scan is slow Python that anyone could otherwise set every thread to. Only small
        # bodies are checked on the event loop (a megabyte of JSON takes milliseconds).
        if len(body) > ON_THE_LOOP_BODY_BYTES:
            problem = await run_in_threadpool(body_problem, bytes(body), content_type, yaml_read=False)
        else:
            problem = body_problem(bytes(body), content_type, yaml_read=False)
        if problem is not None:
            await problem.response()(scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    def _path_problem(self, scope: Scope) -> InputProblem | None:
        path = scope.get("path", "")
        if text_problem(path) is None:
            return None
        # Name the path parameter: match the path against the documented path templates (rare, so not cached).
        for template in self.api.openapi()["paths"]:
            match = compile_path(template)[0].match(path)
            for name, value in (match.groupdict() if match else {}).items():
                problem = text_at(("path", name), value)
                if problem is not None:
                    return problem
        return text_at(("path",), path)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the app the body already read, then passes on what comes after (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


# --- who am I, and the tokens ------------------------------------------------------------------------------------

access_router = APIRouter(tags=["access"], responses=EVERY_ROUTE)


class WhoAmI(BaseModel):
    """What the presented token grants: its role, the person or system it names, for a technician or a customer
    which one, and when it expires (null for the bootstrap admin token)."""

    role: str
    name: str
    technician_id: int | None
    customer_id: int | None
    expires_at: dt.datetime | None


TokenRead = auth.TokenInfo


class TokenCreate(BaseModel):
    role: Literal["admin", "dispatcher", "marketer", "technician", "customer"]
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")
    technician_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    customer_id: int | None = Field(default=None, ge=1, le=2**63 - 1,
                                    description="the customer a customer's token is bound to (required for one)")
    expires_in: DurationField = Duration(int(auth.DEFAULT_TOKEN_LIFETIME.total_seconds()))


class TokenCreated(TokenRead):
    """A new token: `token` is shown this once."""

    token: str


@access_router.get("/whoami")
def whoami(caller: Caller) -> WhoAmI:
    """Who the token speaks for: role, name, technician or customer, expiry."""
    return WhoAmI(role=caller.role, name=caller.name, technician_id=caller.technician_id,
                  customer_id=caller.customer_id, expires_at=caller.expires_at)


@access_router.get("/tokens", responses=answers(403))
def list_tokens(conn: Conn, revoked: bool = True) -> Page[TokenRead]:
    """Every token issued, newest first, with its role, name, expiry and revocation; never the token itself.
    `revoked=false` leaves revoked ones out."""
    return whole(auth.list_tokens(conn, include_revoked=revoked))


@access_router.post("/tokens", status_code=201, responses=answers(403, 422))
def create_token(request: TokenCreate, conn: Conn, caller: Caller) -> TokenCreated:
    """Issue a token (shown once, in `token`); it expires after `expires_in` (default 90d, at most 3650d)."""
    try:
        token = auth.create_token(conn, role=request.role, name=request.name, technician_id=request.technician_id,
                                  customer_id=request.customer_id,
                                  expires_in=dt.timedelta(seconds=request.expires_in.seconds),
                                  created_by=caller.name)
    except ValueError as error:
        field = ("technician_id" if "technician" in str(error) else "customer_id" if "customer" in str(error)
                 else "expires_in")
        raise HTTPException(422, f"{field}: {error}") from None
    info = next(info for info in auth.list_tokens(conn) if info.prefix == token[: auth.PREFIX_LENGTH])
    return TokenCreated(**info.model_dump(), token=token)


@access_router.delete("/tokens/{token_id}", responses=answers(403, 404))
def revoke_token(token_id: RowId, conn: Conn, caller: Caller) -> TokenRead:
    """Revoke a token at once: its next request is a 401 saying it was revoked. Revoking twice changes nothing."""
    try:
        return auth.revoke_token(conn, token_id, by=caller.name)
    except LookupError:
        raise HTTPException(404, f"no token {token_id}") from None


def create_app(
    database: Database,
    *,
    admin_token: str | None,
    mqtt_url: str | None,
    limits: ApiLimits | None = None,
    broker_accounts: DeviceAccounts | None = None,
) -> FastAPI:
    app = FastAPI(
        title="CareLoop API",
        version=__version__,
        description="Appliances, customers, telemetry, rules, service orders and offers. "
        "Every path but /health needs `Authorization: Bearer <token>`.",
    )
    app.state.database = database
    app.state.admin_token = admin_token
    app.state.broker = BrokerProbe(mqtt_url)
    # who issues devices' broker credentials (careloop.mqtt.BrokerAccounts); None: the credential routes answer 503
    app.state.broker_accounts = broker_accounts
    app.state.limits = limits or ApiLimits()
    app.state.known_tokens = KnownTokens()
    dsn = database.dsn if database is not None else ""
    app.state.backtests = ExpensiveWork(
        dsn, per_role=app.state.limits.backtests_per_role, timeout_s=app.state.limits.backtest_timeout_s
    )
    # reports (the offers' conversion report) are bounded as backtests are, each kind with its own share
    app.state.reports = ExpensiveWork(
        dsn, per_role=app.state.limits.backtests_per_role, timeout_s=app.state.limits.backtest_timeout_s,
        what="reports",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler turns the input into text as UTF-8 and fails (a 500) on a body of other bytes
        # sent as text/plain: here bytes are shown as text whatever they hold.
        readable = jsonable_encoder(error.errors(), custom_encoder={bytes: lambda raw: raw.decode("utf-8", "replace")})
        return JSONResponse({"detail": readable}, status_code=422)

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(psycopg2.DataError)
    async def data_error(_request: Request, error: psycopg2.DataError) -> JSONResponse:
        # A value the database cannot hold (an id too large, say) is the caller's mistake.
        return JSONResponse({"detail": f"invalid value: {str(error).splitlines()[0]}"}, status_code=422)

    # Down, silent, restarting, or over a statement or lock timeout: the request may succeed later, so 503.
    app.add_exception_handler(psycopg2.OperationalError, database_unavailable)
    app.add_exception_handler(psycopg2.InterfaceError, database_unavailable)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, error: Exception) -> JSONResponse:
        # Still a bug (logged by the server, re-raised by the test client), but answered as JSON like the rest.
        return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)

    @app.get("/health", tags=["health"])
    def health() -> JSONResponse:
        """200 with the state of the database, the broker and each ingester's and engine's heartbeat; 503 when
        the database is down. "degraded" when the broker is down or a process's heartbeat is stale."""
        processes: list[dict[str, Any]] = []
        try:
            with database.connection() as conn:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                processes = [process.as_dict() for process in process_health(conn, utc_now())]
            db_state = {"ok": True, "detail": "connected"}
        except psycopg2.Error as error:
            # /health answers anyone: the reason (host, port, user) goes to the log, not to the caller
            log.warning("health: the database is unavailable: %s", _first_line(error))
            db_state = {"ok": False, "detail": "not answering"}
        broker_state = app.state.broker.check()
        fresh = not any(process["stale"] for process in processes)
        status = "ok" if db_state["ok"] and broker_state["ok"] and fresh else "degraded"
        body = {
            "status": status,
            "version": __version__,
            "database": db_state,
            "broker": broker_state,
            "processes": processes,
        }
        if not db_state["ok"]:
            body["detail"] = f"database unavailable: {db_state['detail']}"  # the shape of every other 503
        return JSONResponse(body, status_code=200 if db_state["ok"] else 503)

    app.add_exception_handler(RuleError, rule_error_response)

    # Every router's routes pass the permission table (careloop.auth.PERMISSIONS): one place says who may do what.
    for router in (access_router, fleet_router, devices_router, customers_router, ingest_router, rules_router,
                   service_orders_router, offers_router):
        app.include_router(router, dependencies=[Authorized])
    # Admitted once the guard has read the whole body: a client that sends its body slowly holds no place.
    app.add_middleware(Admission, limit=app.state.limits.requests_in_progress,
                       per_client=app.state.limits.requests_in_progress_per_client, known=app.state.known_tokens)
    app.add_middleware(InputGuard, api=app)
    return app


def database_unavailable(request: Request, error: Exception) -> JSONResponse:
    # The caller learns what happened and when to try again; where the database is (host, port, user) is for the log.
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, _first_line(error))
    return JSONResponse(
        {"detail": f"database unavailable: {_outage(error)}; try again in a few seconds"},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _outage(error: Exception) -> str:
    """What kept the database from answering, in words that name no host, port or user."""
    if isinstance(error, psycopg2.errors.LockNotAvailable):
        return "a row it needed stayed locked past the lock timeout"
    if isinstance(error, psycopg2.errors.QueryCanceled):
        return "the statement ran past the statement timeout"
    return "it did not answer"


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
