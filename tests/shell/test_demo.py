"""`careloop demo` as a newcomer runs it: everything starts, a sign-in per role works, offers have a mailbox."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import httpx
import pytest

from careloop.embedded import free_port
from tests.helpers import start_careloop, wait_until

pytestmark = pytest.mark.integration


def test_careloop_demo_prints_a_working_sign_in_per_role_and_keeps_mail_in_its_home(
    database_url, mqtt_url, tmp_path
) -> None:
    home = tmp_path / "home"
    log = tmp_path / "demo.log"
    api_port, dashboard_port = free_port(), free_port()
    env = {"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": mqtt_url, "CARELOOP_HOME": str(home),
           "CARELOOP_ADMIN_TOKEN": None, "CARELOOP_SMTP_URL": None}
    process = start_careloop(["demo", "--devices", "10", "--api-port", str(api_port),
                              "--dashboard-port", str(dashboard_port)], env=env, log=log)
    try:
        wait_until(lambda: (home / "logins.json").exists(), timeout_s=90, what="the demo's logins", log=log)
        logins = json.loads((home / "logins.json").read_text())
        assert set(logins) == {"admin", "dispatcher", "marketer", "technician"}
        assert (home / "logins.json").stat().st_mode & 0o077 == 0, "only its owner may read the logins"
        base = f"http://127.0.0.1:{api_port}"

        def answers(path: str, token: str) -> int | None:
            try:
                return httpx.get(base + path, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code
            except httpx.TransportError:
                return None

        wait_until(lambda: answers("/fleet/summary", logins["admin"]) == 200, timeout_s=60, what="the API",
                   log=log)
        assert answers("/service-orders", logins["dispatcher"]) == 200
        assert answers("/offer-templates", logins["marketer"]) == 200
        assert answers("/service-orders", logins["technician"]) == 200
        assert answers("/service-orders", "not-a-token") == 401
        assert (home / "mail" / "new").is_dir(), "the demo's mailbox is a Maildir under CARELOOP_HOME"
        # printed once the API answers, which may be a moment after the first answer seen here
        wait_until(lambda: "CareLoop demo is running" in log.read_text(), timeout_s=10, what="the sign-ins", log=log)
        printed = log.read_text()
        for role in logins:
            assert f"    {role}" in printed and logins[role] in printed, f"no sign-in printed for {role}"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_the_demos_sign_ins_are_made_again_where_one_expired_or_was_revoked(database, database_url, tmp_path) -> None:
    from careloop.db import execute
    from careloop.demo import demo_logins

    first = demo_logins(database_url, tmp_path)
    assert demo_logins(database_url, tmp_path) == first, "valid sign-ins are kept"
    with database.transaction() as conn:
        execute(conn, "UPDATE api_tokens SET revoked_at = now() WHERE role = 'dispatcher'")
        execute(conn, "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE role = 'marketer'")
    again = demo_logins(database_url, tmp_path)
    assert again["admin"] == first["admin"]
    assert again["dispatcher"] != first["dispatcher"] and again["marketer"] != first["marketer"]


def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented child nobody has reaped yet has ended all the same)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        state = next(line for line in status.splitlines() if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return False
    return "Z" not in state.split()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's (prctl)")
def test_a_demo_killed_outright_leaves_none_of_its_processes_running(database_url, mqtt_url, tmp_path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "demo.log"
    env = {"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": mqtt_url, "CARELOOP_HOME": str(home),
           "CARELOOP_ADMIN_TOKEN": None, "CARELOOP_SMTP_URL": None}
    process = start_careloop(["demo", "--devices", "5", "--api-port", str(free_port()),
                              "--dashboard-port", str(free_port())], env=env, log=log)
    children: list[int] = []
    try:
        def started() -> bool:
            listed = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            children[:] = [int(pid) for pid in listed.split()]
            return len(children) >= 5
        wait_until(started, timeout_s=90, what="the demo's five processes", log=log)
    finally:
        process.kill()  # no chance to stop them itself
        process.wait(timeout=10)
    wait_until(lambda: not any(_alive(pid) for pid in children), timeout_s=45,
               what=f"the demo's processes {children} to end with it", log=log)
