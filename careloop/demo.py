"""`careloop demo`: everything on one machine, and the demo fleet it seeds."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from careloop import embedded
from careloop.auth import create_token, role_of_token
from careloop.db import Database, ensure_database, fetch_all, migrate
from careloop.runtime import EXIT_WITH_PARENT, resolve_services, stop_event_on_signals
from careloop.settings import get_settings
from customers import service as customers_service
from customers.models import CustomerCreate
from devices import repo as devices_repo
from devices import service as devices_service
from devices.models import DeviceCreate
from simulators.device import SimDevice
from simulators.fleet import default_customer_count, make_customers, make_fleet

log = logging.getLogger("careloop.demo")


def register_fleet(database_url: str, fleet: Sequence[SimDevice], *, seed: int) -> int:
    """Register the fleet's devices and their owners where missing (idempotent); answers how many were new."""
    database = Database(database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            known = set(devices_repo.device_models(conn, device_ids=[d.device_id for d in fleet]))
            missing = [device for device in fleet if device.device_id not in known]
            if not missing:
                return 0
            people = make_customers(default_customer_count(len(fleet)), seed)
            emails = [person["email"] for person in people]
            existing = {
                row["email"]: row["id"]
                for row in fetch_all(conn, "SELECT id, email FROM customers WHERE email = ANY(%s)", (emails,))
            }
            for device in missing:
                person = people[device.owner_index]
                if person["email"] not in existing:
                    created = customers_service.create_customer(conn, CustomerCreate.model_validate(person))
                    existing[person["email"]] = created.id
                owner = existing[person["email"]]
                devices_service.register_device(conn, DeviceCreate.model_validate(device.document(owner)))
        log.info("registered %d demo devices and their owners", len(missing))
        return len(missing)
    finally:
        database.close()


# Each region's crew covers every skill of the catalog between them, with some overlap.
DEMO_CREW = (
    ("cleaning", "plumbing"),
    ("motor", "mechanical", "electrical"),
    ("hvac", "electrical", "cleaning"),
)
DEMO_NAMES = ("Alex Moreno", "Brooke Lin", "Chris Osei", "Dana Kowalski", "Eli Sato", "Fay Novak", "Gus Haddad",
              "Hana Berg", "Ivan Petrov", "Jo Mensah", "Kai Larsen", "Lena Vogel", "Milo Costa", "Nia Reyes",
              "Otto Brandt")  # fmt: skip


def seed_technicians(database_url: str) -> int:
    """Three technicians in each demo region, working 08:00-18:00 on weekdays in the region's time zone, unless
    technicians exist already; answers how many were added."""
    from service_orders import service as service_orders_service
    from service_orders.models import TechnicianCreate
    from simulators.fleet import REGIONS

    database = Database(database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            if service_orders_service.list_technicians(conn, limit=1).total:
                return 0
            names = iter(DEMO_NAMES)
            added = 0
            for region, (timezone, _offset, area_code) in REGIONS.items():
                for skills in DEMO_CREW:
                    name = next(names)
                    service_orders_service.create_technician(conn, TechnicianCreate(
                        name=name, skills=list(skills), region=region, timezone=timezone,
                        phone=f"+1 {area_code} 555 {1000 + added:04d}",
                        email=f"{name.split()[0].lower()}@service.example.com",
                        work_start=dt.time(8), work_end=dt.time(18), daily_capacity=5,
                    ))
                    added += 1
        log.info("seeded %d demo technicians", added)
        return added
    finally:
        database.close()


def load_rule_catalog(database_url: str) -> str:
    """Load the built-in rules; answers a line saying what was loaded."""
    try:
        from rules.service import load_builtin_catalog
    except ImportError:
        return "the rule catalog is not available in this version"
    database = Database(database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            loaded = load_builtin_catalog(conn)
        return f"rule catalog: {loaded} rule(s) loaded or updated"
    finally:
        database.close()


def _admin_token(database_url: str, home: Path) -> str:
    """CARELOOP_ADMIN_TOKEN when set, else the demo's own admin token kept under CARELOOP_HOME."""
    settings = get_settings()
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value()
    return demo_logins(database_url, home)["admin"]


# One sign-in per role, so each can be tried in the dashboard and from curl.
DEMO_PEOPLE = {"admin": "demo", "dispatcher": "Dee Dispatcher", "marketer": "Max Marketer",
               "technician": DEMO_NAMES[0]}


def demo_logins(database_url: str, home: Path) -> dict[str, str]:
    """A token per role (the technician's is the first demo technician's), kept in CARELOOP_HOME/logins.json,
    readable by its owner alone; made again where one has expired or was revoked."""
    logins_file = home / "logins.json"
    logins = json.loads(logins_file.read_text()) if logins_file.exists() else {}
    if "admin" not in logins and (home / "admin.token").exists():  # a home from before there were roles
        logins["admin"] = (home / "admin.token").read_text().strip()
    database = Database(database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            logins = {role: token for role, token in logins.items()
                      if role_of_token(conn, token, admin_token=None) == role}
            missing = [role for role in DEMO_PEOPLE if role not in logins]
            if not missing:
                return logins
            technician = fetch_all(conn, "SELECT id FROM technicians WHERE name = %s ORDER BY id LIMIT 1",
                                   (DEMO_PEOPLE["technician"],))
            for role in missing:
                if role == "technician" and not technician:
                    continue
                logins[role] = create_token(conn, role=role, name=DEMO_PEOPLE[role],
                                            technician_id=technician[0]["id"] if role == "technician" else None)
    finally:
        database.close()
    logins_file.parent.mkdir(parents=True, exist_ok=True)
    logins_file.touch(mode=0o600)
    logins_file.write_text(json.dumps(logins, indent=2))
    return logins


def start_mailbox(home: Path):
    """An SMTP server on loopback that keeps every e-mail in CARELOOP_HOME/mail (a Maildir), so offers the engine
    sends in the demo arrive somewhere to read; answers (server, smtp URL). aiosmtpd is the standard asyncio
    SMTP server, the one the offers tests deliver to."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Mailbox

    home.mkdir(parents=True, exist_ok=True)  # Maildir makes mail/ with its new, cur and tmp itself
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    port = embedded.free_port(None)
    server = Controller(Mailbox(home / "mail"), hostname="127.0.0.1", port=port)
    server.start()
    return server, f"smtp://127.0.0.1:{port}"


def _fallback_broker_warning(home: Path) -> str:
    """A plain warning when the embedded broker is amqtt (no mosquitto on PATH), else nothing."""
    if embedded.running_broker_kind(home) != "amqtt":
        return ""
    return (
        "  WARNING: the broker is the amqtt fallback (no mosquitto on PATH). It keeps what is queued for an\n"
        "  ingester that stops cleanly, but it loses the messages in flight to one that crashes or takes over\n"
        "  5 s to store a batch. Install mosquitto (e.g. apt-get install mosquitto) for anything beyond a look.\n"
    )


def _without_password(url: str) -> str:
    """A broker URL as printed: its password is in CARELOOP_HOME, not on the screen."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _spawn(arguments: list[str], env: dict[str, str]) -> subprocess.Popen:
    # CARELOOP_EXIT_WITH_PARENT: the child ends when the demo does, however it ends (careloop.runtime)
    return subprocess.Popen([sys.executable, "-m", "careloop.cli", *arguments],
                            env={**env, EXIT_WITH_PARENT: str(os.getpid())})


API_START_S = 60.0


def _wait_for_api(
    base_url: str, children: dict[str, subprocess.Popen], stop: threading.Event, *, timeout_s: float
) -> bool:
    """Until the API answers /health (True), a child exits or the demo is stopped, or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.is_set():
        if any(child.poll() is not None for child in children.values()):
            return False
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.2)
    return False


def run_demo(*, devices: int, rate: float, seed: int, api_port: int = 8000, dashboard_port: int = 8501) -> int:
    taken = [f"{what} port {port}" for what, port in (("API", api_port), ("dashboard", dashboard_port))
             if embedded.free_port(port) != port]
    if taken:
        print(f"careloop demo: {' and '.join(taken)} in use; choose others with --api-port / --dashboard-port",
              file=sys.stderr)
        return 1
    settings = get_settings()
    home = Path(settings.home)
    urls = resolve_services(settings)
    ensure_database(urls.database_url)
    migrate(urls.database_url)
    print(load_rule_catalog(urls.database_url))
    fleet = make_fleet(devices, seed=seed)
    register_fleet(urls.database_url, fleet, seed=seed)
    seed_technicians(urls.database_url)
    token = _admin_token(urls.database_url, home)
    logins = {**demo_logins(urls.database_url, home), "admin": token}
    given_smtp = os.environ.get("CARELOOP_SMTP_URL")
    mailbox, smtp_url = (None, given_smtp) if given_smtp else start_mailbox(home)

    env: dict[str, Any] = {
        **os.environ,
        "CARELOOP_DATABASE_URL": urls.database_url,
        "CARELOOP_MQTT_URL": urls.mqtt_url,
        "CARELOOP_API_URL": f"http://127.0.0.1:{api_port}",
        "CARELOOP_SMTP_URL": smtp_url,
        # where the e-mails' unsubscribe links lead: this demo's API
        "CARELOOP_PUBLIC_URL": os.environ.get("CARELOOP_PUBLIC_URL", f"http://127.0.0.1:{api_port}"),
    }
    stop = stop_event_on_signals()

    def metrics_port() -> list[str]:
        # a free port each, so two demos (or a demo beside a running ingester) do not fight over 9101-9103
        return ["--metrics-port", str(embedded.free_port(None))]

    ingester = f"demo-{hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]}"
    children = {
        # Named after its home: two demos on one broker neither take each other's session nor split the messages.
        "ingest": _spawn(["ingest", "--name", ingester, "--share-group", ingester, *metrics_port()], env),
        "api": _spawn(["api", "--port", str(api_port)], env),
        "dashboard": _spawn(["dashboard", "--port", str(dashboard_port)], env),
        "simulator": _spawn(
            [
                "simulate",
                "--devices",
                str(devices),
                "--rate",
                str(rate),
                "--seed",
                str(seed),
                "--faults",
                "all:0.02",
                "--ground-truth",
                str(home / "ground_truth.jsonl"),
                # a few faults at once: orders and call tasks appear within a minute of starting
                "--initial-faults",
                str(max(3, devices // 50)),
                *metrics_port(),
            ],
            env,
        ),
        "engine": _spawn(["engine", *metrics_port()], env),
    }
    # The sign-ins are printed once the API answers, so what they say to try works at once.
    api_up = _wait_for_api(f"http://127.0.0.1:{api_port}", children, stop, timeout_s=API_START_S)
    print(
        ("\nCareLoop demo is running:\n" if api_up
         else f"\nCareLoop demo started; the API did not answer within {API_START_S:.0f} s (its log lines above say "
              "why):\n")
        + f"  API        http://127.0.0.1:{api_port}  (docs: http://127.0.0.1:{api_port}/docs)\n"
        f"  dashboard  http://127.0.0.1:{dashboard_port}\n"
        f"  broker     {_without_password(urls.mqtt_url)}\n"
        f"{_fallback_broker_warning(home)}"
        f"  e-mails    {'kept in ' + str(home / 'mail') + ' (a Maildir)' if mailbox else smtp_url}\n"
        "  sign in (dashboard and API) as:\n"
        + "".join(f"    {role:<11} {DEMO_PEOPLE[role]:<16} {logins[role]}\n" for role in DEMO_PEOPLE if role in logins)
        + f"    (the technician sees an order once a dispatcher assigns it to {DEMO_PEOPLE['technician']})\n"
        + f"  try: curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{api_port}/fleet/summary\n"
        f"       curl -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{api_port}/detections?status=open'\n"
        f"       curl -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{api_port}/service-orders?status=open'\n"
        f"       curl -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{api_port}/call-tasks?status=open'\n"
        "Ctrl-C stops everything; the data stays under CARELOOP_HOME for the next run.\n",
        flush=True,
    )
    failed = []
    while not stop.wait(timeout=1):
        for name, child in children.items():
            if child.poll() is not None:
                log.error("%s exited with %s; stopping the demo", name, child.returncode)
                failed.append(name)
                stop.set()
    # The simulator first, so the ingester can store what is already on its way.
    for name in ("simulator", "engine", "ingest", "api", "dashboard"):
        child = children.get(name)
        if child is not None:
            embedded.stop_process(child, timeout_s=30)
    if mailbox is not None:
        mailbox.stop()
    if failed:
        print(f"CareLoop demo stopped: {', '.join(failed)} failed (its log lines above say why).", file=sys.stderr)
        return 1
    print("CareLoop demo stopped.")
    return 0

