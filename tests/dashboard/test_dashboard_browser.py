"""End to end in a real browser: the dashboard, the real API and the real database; a detection acknowledged, an
order assigned and a call recorded on the dispatch board, with screenshots to look at."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_value
from careloop.embedded import free_port, wait_for_port
from careloop.mqtt import events_topic, telemetry_topic
from rules.engine import Engine
from rules.service import create_rule
from service_orders import flows
from service_orders import service as orders_service
from service_orders.models import TechnicianCreate
from tests.factories import make_customer, make_device
from tests.helpers import event, inbound, reading, store

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-token-for-the-browser-test"
FAN_STALL = {
    "id": "hood-stall",
    "description": "Fan motor stalled",
    "applies_to": {"kind": "range_hood"},
    "when": {"fault": {"codes": ["E21"]}},
    "then": [{"open_service_order": {"type": "repair", "priority": "urgent", "sla": "24h", "skill": "motor"}}],
    "severity": "critical",
}
# The same fault, asking also for a call to the owner, as the built-in rules do.
FAN_STALL_WITH_CALL = {
    **FAN_STALL,
    "then": [*FAN_STALL["then"], {"call_customer": {"reason": "your range hood reported a stalled fan motor"}}],
}


@pytest.fixture
def browser():
    """Headless Chromium through Playwright; skipped, saying what is missing, where either is absent."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium for the browser test: install Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def api_url(database) -> str:
    """The real API on a port of its own, in this process."""
    import uvicorn

    port = free_port(None)
    server = uvicorn.Server(
        uvicorn.Config(create_app(database, admin_token=ADMIN, mqtt_url=None), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, timeout_s=60)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@contextmanager
def running_dashboard(api_url: str, token: str, cwd: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a port of its own, sending `token` to the API; stopped on exit."""
    port = free_port(None)
    env = {**os.environ, "CARELOOP_API_URL": api_url, "CARELOOP_API_TOKEN": token}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "dashboard" / "app.py"),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def dashboard_url(api_url: str, tmp_path: Path) -> Iterator[str]:
    with running_dashboard(api_url, ADMIN, tmp_path) as url:
        yield url


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the browser tests save what they saw (under the test's own output folder)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def test_a_dispatcher_sees_why_a_detection_opened_and_acknowledges_it(
    conn, database, api_url, dashboard_url, browser
) -> None:
    create_rule(conn, FAN_STALL)
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    store(database, [inbound(events_topic(device.id), event(1, at=now, kind="fault", code="E21"), now)], now=now)
    Engine(database).sweep()

    page = browser.new_page()
    page.goto(f"{dashboard_url}/detections")
    page.get_by_text("open fault E21 (fan motor stall)").first.wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Detections").count() > 0
    page.get_by_test_id("stButton").get_by_role("button", name="Acknowledge").click()
    page.get_by_text("is now acknowledged").first.wait_for(timeout=30_000)
    with database.connection() as check:
        assert fetch_value(check, "SELECT status FROM detections WHERE device_id = %s", (device.id,)) == "acknowledged"


def shoot(page, folder: Path, name: str) -> Path:
    """The whole page as a PNG: the viewport is made as tall as Streamlit's scrolling main area first."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], body')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": 1440, "height": max(900, min(int(height) + 40, 12_000))})
    # Streamlit keeps the elements of the run before, marked stale, until this run has drawn their successors.
    page.wait_for_function("() => !document.querySelector('[data-stale=true]')", timeout=30_000)
    page.wait_for_timeout(500)  # let the charts lay themselves out at the new size
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    return path


def test_a_dispatcher_assigns_an_order_and_records_a_call_on_the_dispatch_board(
    conn, database, api_url, browser, tmp_path, screenshots
) -> None:
    create_rule(conn, FAN_STALL_WITH_CALL)
    owner = make_customer(conn, name="Chen Jie", phone="+86 139 5555 6666", timezone="UTC")
    device = make_device(conn, owner=owner.id, region="east")
    technician = orders_service.create_technician(conn, TechnicianCreate(
        name="Liu Yang", skills=["motor"], region="east", timezone="UTC", work_days=[1, 2, 3, 4, 5, 6, 7],
        work_start=dt.time(0, 0), work_end=dt.time(23, 59), daily_capacity=8,
    ))
    dispatcher = create_token(conn, role="dispatcher", name="Zhang Wei")
    conn.commit()
    # Three hours of a fan slowing down and drawing more current, then the stall.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    steps = 36
    messages = [
        inbound(telemetry_topic(device.id), reading(
            seq, at=now - dt.timedelta(minutes=5 * (steps - seq)), fan_current_a=0.6 + 0.04 * seq,
            fan_speed_rpm=1200 - 25 * seq, airflow_m3h=650 - 12 * seq), now)
        for seq in range(1, steps + 1)
    ]
    messages.append(inbound(events_topic(device.id), event(steps + 1, at=now, kind="fault", code="E21"), now))
    store(database, messages, now=now)
    Engine(database).sweep()
    with database.transaction() as writer:
        flows.carry_out_detection_actions(writer, now=dt.datetime.now(dt.UTC))
    order_id = fetch_value(conn, "SELECT id FROM service_orders WHERE device_id = %s", (device.id,))
    task_id = fetch_value(conn, "SELECT id FROM call_tasks WHERE device_id = %s", (device.id,))
    assert order_id is not None and task_id is not None

    with running_dashboard(api_url, dispatcher, tmp_path) as dashboard_url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        # In from the front door, then by the sidebar, as a dispatcher does.
        page.goto(dashboard_url)
        page.get_by_role("link", name="Dispatch board").click()
        page.get_by_role("heading", name=f"Order #{order_id}").first.wait_for(timeout=60_000)
        page.get_by_text("open fault E21").first.wait_for(timeout=30_000)
        page.locator("[data-testid=stVegaLiteChart]").first.wait_for(timeout=30_000)
        page.get_by_role("heading", name="Call Chen Jie · +86 139 5555 6666").wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatch-board")

        page.get_by_role("button", name="Assign with this window").click()
        page.get_by_text(f"Order #{order_id} is assigned to Liu Yang").first.wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatch-board-assigned")

        page.get_by_role("button", name="Reached").click()
        page.get_by_text(f"Call #{task_id} to Chen Jie: reached; the call is done.").first.wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatch-board-called")

    admin = {"Authorization": f"Bearer {ADMIN}"}
    order = httpx.get(f"{api_url}/service-orders/{order_id}", headers=admin, timeout=10).json()
    assert (order["status"], order["technician_id"]) == ("assigned", technician.id)
    assert [(h["change"], h["actor"]) for h in order["history"]][-2:] == [("assigned", "Zhang Wei"),
                                                                         ("call", "Zhang Wei")]
    task = httpx.get(f"{api_url}/call-tasks", params={"order_id": order_id}, headers=admin, timeout=10).json()
    assert [(t["id"], t["status"], t["outcome"]) for t in task["items"]] == [(task_id, "done", "reached")]
