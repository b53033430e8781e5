"""End to end in a real browser: the dashboard, the real API and the real database, a detection acknowledged."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from careloop.app import create_app
from careloop.db import fetch_value
from careloop.embedded import free_port, wait_for_port
from careloop.mqtt import events_topic
from rules.engine import Engine
from rules.service import create_rule
from tests.factories import make_device
from tests.helpers import event, inbound, store

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


@pytest.fixture
def dashboard_url(api_url: str, tmp_path: Path) -> str:
    port = free_port(None)
    env = {**os.environ, "CARELOOP_API_URL": api_url, "CARELOOP_API_TOKEN": ADMIN}
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
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


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
