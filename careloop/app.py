"""The HTTP API: every domain's router, error handling and the health check."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import psycopg2
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from careloop import __version__
from careloop.db import Database
from careloop.errors import DomainError
from careloop.heartbeat import process_health, utc_now
from careloop.mqtt import make_connection
from customers.api import router as customers_router
from devices.api import router as devices_router
from ingest.api import router as ingest_router
from rules.api import router as rules_router
from rules.api import rule_error_response
from rules.models import RuleError

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
        connection.client.on_connect = lambda *_args: connected.set()
        try:
            connection.connect(keepalive=5)
            connection.client.loop_start()
            ok = connected.wait(timeout=2)
        except (OSError, mqtt.WebsocketConnectionError) as error:
            return {"ok": False, "detail": str(error)}
        finally:
            connection.client.disconnect()
            connection.client.loop_stop()
        return {"ok": ok, "detail": "connected" if ok else "no CONNACK within 2s"}


def create_app(database: Database, *, admin_token: str | None, mqtt_url: str | None) -> FastAPI:
    app = FastAPI(
        title="CareLoop API",
        version=__version__,
        description="Appliances, customers, telemetry, rules, service orders and offers. "
        "Every path but /health needs `Authorization: Bearer <token>`.",
    )
    app.state.database = database
    app.state.admin_token = admin_token
    app.state.broker = BrokerProbe(mqtt_url)

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, error: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(psycopg2.DataError)
    async def data_error(_request: Request, error: psycopg2.DataError) -> JSONResponse:
        # A value the database cannot hold (an id too large, say) is the caller's mistake.
        return JSONResponse({"detail": f"invalid value: {str(error).splitlines()[0]}"}, status_code=422)

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
            db_state = {"ok": False, "detail": str(error).strip().splitlines()[0]}
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
        return JSONResponse(body, status_code=200 if db_state["ok"] else 503)

    app.add_exception_handler(RuleError, rule_error_response)

    for router in (devices_router, customers_router, ingest_router, rules_router):
        app.include_router(router)
    return app
