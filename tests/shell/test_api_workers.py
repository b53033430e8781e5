"""`careloop api --workers N`: several processes serve one port, and together they allow no more than the limits
configured for one (each takes an equal share); a limit too small to share is refused before anything starts."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from careloop.embedded import free_port
from tests.helpers import api_answers, start_careloop, wait_until
from tests.shell.test_cli_hardening import careloop, said

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "admin-token-for-the-workers-test"


def worker_pids(parent: int) -> list[int]:
    """The API processes uvicorn started (multiprocessing's spawn), not its resource tracker."""
    listed = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True)
    return [int(line.split()[0]) for line in listed.stdout.splitlines() if "spawn_main" in line]


def test_two_api_processes_serve_one_port_and_share_the_auth_failure_limit(database_url, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    environment = {"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
                   "CARELOOP_ADMIN_TOKEN": ADMIN_TOKEN, "CARELOOP_AUTH_FAILURES_PER_MINUTE": "4",
                   "CARELOOP_HOME": str(tmp_path / "home")}
    process = start_careloop(["api", "--port", str(port), "--workers", "2"], env=environment, log=log, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: api_answers(base), timeout_s=60, what="careloop api --workers 2", log=log)
        wait_until(lambda: log.read_text().count("Application startup complete") == 2, timeout_s=30,
                   what="both API processes started", log=log)
        assert len(worker_pids(process.pid)) == 2, log.read_text()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert httpx.get(f"{base}/customers", headers=admin, timeout=10).status_code == 200
        # each on a connection of its own, so the kernel hands them to either process
        statuses = [httpx.get(f"{base}/customers", headers={"Authorization": f"Bearer wrong-{n}"}, timeout=10)
                    .status_code for n in range(16)]
        refused, limited = statuses.count(401), statuses.count(429)
        print(f"16 wrong tokens over 2 processes: {refused} refused (401), {limited} limited (429)")
        assert refused + limited == 16
        assert 2 <= refused <= 4, statuses  # each process allows its 2 of the 4 a minute: never more than 4
        assert httpx.get(f"{base}/customers", headers=admin, timeout=10).status_code == 200  # a good token still
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert worker_pids(process.pid) == []


def test_more_workers_than_a_limit_can_be_shared_among_are_refused(database_url, tmp_path) -> None:
    result = careloop(["api", "--workers", "3"], env={"CARELOOP_DATABASE_URL": database_url,
                                                    "CARELOOP_BACKTESTS_PER_ROLE": "2"}, cwd=tmp_path)
    assert result.returncode == 2
    assert said(result) == ["careloop api: --workers 3 cannot share CARELOOP_BACKTESTS_PER_ROLE=2 among 3 processes "
                            "(each takes an equal share); raise it to at least 3 or run fewer workers"]
    nonsense = careloop(["api", "--workers", "0"], env={"CARELOOP_DATABASE_URL": database_url}, cwd=tmp_path)
    assert nonsense.returncode == 2 and "--workers: must be at least 1, got 0" in nonsense.stderr


@pytest.mark.parametrize(("given", "processes"), [
    ("2", 2), (" 3 ", 3), ("", 1), ("0", 1), ("-3", 1), ("two", 1), ("2.5", 1), ("１２", 1), ("٣", 1),
    ("9" * 400, int("9" * 400)),
])  # fmt: skip
def test_a_process_count_that_is_no_whole_number_counts_as_one_process(monkeypatch, given, processes) -> None:
    from careloop.cli import API_PROCESSES, api_processes, share_of_limit

    monkeypatch.setenv(API_PROCESSES, given)
    assert api_processes() == processes
    # however many: each process keeps at least one of each limit, and no more than its share
    assert 1 <= share_of_limit(20, api_processes()) <= max(20 // processes, 1)
