"""End to end in a real browser: the dashboard, the real API and the real database. People sign in with their own
tokens (tokens in the server's environment sign nobody in); a dispatcher acknowledges a detection, assigns an order
and records a call; a marketer finds no assignment control anywhere. Every page is saved as a screenshot under the
test's output folder (screenshots/) to look at."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from careloop.app import create_app
from careloop.auth import create_token
from careloop.db import fetch_value
from careloop.embedded import free_port, wait_for_port
from careloop.mqtt import events_topic, telemetry_topic
from offers import service as offers_service
from offers.models import Redemption
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
def running_dashboard(api_url: str, cwd: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a port of its own; stopped on exit. The admin token is in its environment,
    as `careloop demo` and docker compose put it there: it must sign nobody in."""
    port = free_port(None)
    env = {**os.environ, "CARELOOP_API_URL": api_url, "CARELOOP_API_TOKEN": ADMIN, "CARELOOP_ADMIN_TOKEN": ADMIN}
    env.pop("CARELOOP_DASHBOARD_DEV_TOKEN", None)
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
    with running_dashboard(api_url, tmp_path) as url:
        yield url


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the browser tests save what they saw (under the test's own output folder)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder


def sign_in(browser, url: str, token: str, name: str):
    """A new browser page signed in through the form, as a person does; answers the page."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.get_by_role("heading", name="Sign in to CareLoop").wait_for(timeout=60_000)
    page.get_by_label("Your token").fill(token)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_test_id("stSidebar").get_by_text(name, exact=True).wait_for(timeout=60_000)
    return page


def sidebar_pages(page) -> list[str]:
    """The titles of the pages in the sidebar's navigation."""
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    # Each link's text is its icon's ligature name, then its title.
    return [text.strip().splitlines()[-1].strip() for text in links.all_inner_texts()]


def go_to(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title).first.wait_for(timeout=60_000)


def test_a_visitor_meets_the_sign_in_form_even_on_a_deep_link_then_a_dispatcher_acknowledges_a_detection(
    conn, database, api_url, dashboard_url, browser, screenshots
) -> None:
    create_rule(conn, FAN_STALL)
    device = make_device(conn)
    dispatcher = create_token(conn, role="dispatcher", name="Zhang Wei")
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    store(database, [inbound(events_topic(device.id), event(1, at=now, kind="fault", code="E21"), now)], now=now)
    Engine(database).sweep()

    # The first visit of a fresh server is a deep link: it runs inside app.py's frame, which asks who you are.
    visitor = browser.new_page(viewport={"width": 1440, "height": 900})
    visitor.goto(f"{dashboard_url}/detections")
    visitor.get_by_role("heading", name="Sign in to CareLoop").wait_for(timeout=60_000)
    assert visitor.get_by_text("open fault E21").count() == 0
    assert visitor.get_by_text("Page not found").count() == 0
    assert visitor.get_by_label("Your token").get_attribute("type") == "password"
    # Streamlit's developer toolbar (Deploy, settings) is not offered.
    assert visitor.get_by_role("button", name="Deploy").count() == 0
    shoot(visitor, screenshots, "sign-in")

    # Signing in there opens the page the link named.
    visitor.get_by_label("Your token").fill(dispatcher)
    visitor.get_by_role("button", name="Sign in", exact=True).click()
    page = visitor
    page.get_by_test_id("stSidebar").get_by_text("Zhang Wei", exact=True).wait_for(timeout=60_000)
    assert page.get_by_test_id("stSidebar").get_by_text("dispatcher").count() > 0
    page.get_by_text("open fault E21 (fan motor stall)").first.wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Detections").count() > 0
    page.get_by_test_id("stButton").get_by_role("button", name="Acknowledge").click()
    page.get_by_text("is now acknowledged").first.wait_for(timeout=30_000)
    with database.connection() as check:
        assert fetch_value(check, "SELECT status FROM detections WHERE device_id = %s", (device.id,)) == "acknowledged"


def settle(page) -> None:
    """Wait until the page's script has finished its run and drawn everything."""
    # The status widget ("Running...", "Stop") shows while a run is under way, though only after a moment; Streamlit
    # keeps the elements of the run before, marked stale, until this run has drawn their successors. So the page has
    # settled when neither is there, twice, a second apart.
    idle = ("() => !document.querySelector('[data-testid=stStatusWidget]')"
            " && !document.querySelector('[data-stale=true]')")
    for _ in range(60):
        page.wait_for_function(idle, timeout=60_000)
        page.wait_for_timeout(1000)
        if page.evaluate(idle):
            return
    raise AssertionError("the page never settled")


def shoot(page, folder: Path, name: str) -> Path:
    """The whole page as a PNG: the viewport is made as tall as Streamlit's scrolling main area first."""
    settle(page)
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], body')].map(e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": 1440, "height": max(900, min(int(height) + 40, 12_000))})
    settle(page)
    page.wait_for_timeout(500)  # let the charts lay themselves out at the new size
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    return path


def test_a_dispatcher_assigns_an_order_and_records_a_call_and_a_marketer_finds_no_assignment_control(
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

    # Something for the marketer's pages: trade-in coupons to consenting owners, one redeemed.
    for number in range(6):
        fan = make_customer(conn, name=f"Owner {number}", email=f"owner{number}@example.com", timezone="UTC",
                            consents=[{"purpose": "marketing", "channel": "email", "granted": True}])
        oven = make_device(conn, owner=fan.id, purchased_on="2016-03-01")
        issued = offers_service.issue_offer(conn, template_code="trade-in", customer_id=fan.id, device_id=oven.id,
                                            key=f"browser:trade-in:{number}", now=now).offer
        if issued is not None and number == 0:
            offers_service.redeem(conn, issued.code, Redemption(customer_id=fan.id, amount=Decimal("900")), now=now)
    # Range hoods turning five in the coming weeks, in three regions: the Fleet page's trade-in windows to come.
    create_rule(conn, {"id": "hood-trade-in-at-five", "description": "Range hood five years old",
                       "applies_to": {"kind": "range_hood"}, "when": {"age": {"at_least": "5y"}},
                       "then": [{"offer": {"template": "trade-in"}}], "severity": "info"})
    for days, region in ((3, "east"), (8, "east"), (15, "west"), (20, "north"), (26, "east")):
        make_device(conn, region=region, purchased_on=(now - dt.timedelta(days=5 * 365 - days)).date().isoformat())
    silent = make_customer(conn, name="No Consent", email="silent@example.com", timezone="UTC", consents=[])
    offers_service.issue_offer(conn, template_code="member-cleaning", customer_id=silent.id,
                               device_id=make_device(conn, owner=silent.id).id, key="browser:blocked", now=now)
    marketer = create_token(conn, role="marketer", name="Max Marketer")
    conn.commit()

    with running_dashboard(api_url, tmp_path) as dashboard_url:
        page = sign_in(browser, dashboard_url, dispatcher, "Zhang Wei")
        # A dispatcher lands on the queue.
        page.get_by_role("heading", name="Dispatch board").first.wait_for(timeout=60_000)
        page.get_by_role("heading", name=f"Order #{order_id}").first.wait_for(timeout=60_000)
        page.get_by_text("open fault E21").first.wait_for(timeout=30_000)
        page.locator("[data-testid=stVegaLiteChart]").first.wait_for(timeout=30_000)
        page.get_by_role("heading", name="Call Chen Jie · +86 139 5555 6666").wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatcher-dispatch-board")

        page.get_by_role("button", name="Assign with this window").click()
        page.get_by_text(f"Order #{order_id} is assigned to Liu Yang").first.wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatcher-dispatch-board-assigned")

        page.get_by_role("button", name="Reached").click()
        page.get_by_text(f"Call #{task_id} to Chen Jie: reached; the call is done.").first.wait_for(timeout=30_000)
        shoot(page, screenshots, "dispatcher-dispatch-board-called")

        # Every other page the dispatcher has, as they see it.
        titles = sidebar_pages(page)
        assert titles[0] == "Dispatch board" and {"Offers and campaigns", "Rules", "Customer 360"} <= set(titles)
        for title in titles[1:]:
            go_to(page, title)
            if title == "Fleet health":
                page.get_by_role("heading", name="Coming in the next 30 days").first.wait_for(timeout=30_000)
                page.get_by_text("Windows opening per week, by region").first.wait_for(timeout=30_000)
            shoot(page, screenshots, "dispatcher-" + title.lower().replace(" ", "-"))

        # A marketer, in a browser of their own: no dispatch board, and no assignment control on any page.
        page = sign_in(browser, dashboard_url, marketer, "Max Marketer")
        titles = sidebar_pages(page)
        assert "Dispatch board" not in titles and "Detections" not in titles
        assert titles[0] == "Offers and campaigns"
        for title in titles:
            go_to(page, title)
            settle(page)
            assert page.get_by_role("button", name="Assign with this window").count() == 0
            assert page.get_by_role("button", name="Assign, soonest free window").count() == 0
            assert page.get_by_text("Book another window").count() == 0
            shoot(page, screenshots, "marketer-" + title.lower().replace(" ", "-"))
        # A link to the dispatch board asks a marketer who they are, then shows their own first page.
        page.goto(f"{dashboard_url}/dispatch")
        page.get_by_label("Your token").fill(marketer)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.get_by_role("heading", name="Offers and campaigns").first.wait_for(timeout=60_000)
        assert page.get_by_role("heading", name="Dispatch board").count() == 0

    admin = {"Authorization": f"Bearer {ADMIN}"}
    order = httpx.get(f"{api_url}/service-orders/{order_id}", headers=admin, timeout=10).json()
    assert (order["status"], order["technician_id"]) == ("assigned", technician.id)
    assert [(h["change"], h["actor"]) for h in order["history"]][-2:] == [("assigned", "Zhang Wei"),
                                                                         ("call", "Zhang Wei")]
    task = httpx.get(f"{api_url}/call-tasks", params={"order_id": order_id}, headers=admin, timeout=10).json()
    assert [(t["id"], t["status"], t["outcome"]) for t in task["items"]] == [(task_id, "done", "reached")]
