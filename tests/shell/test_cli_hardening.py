"""The command line's answers to mistakes and outages: one line saying what is wrong, exit 2 for a mistake and 1
for a service that did not answer, never a traceback; tokens created, listed and revoked from the shell."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import start_careloop, wait_until

pytestmark = pytest.mark.integration


def careloop(arguments: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float = 60):
    """`careloop ARGUMENTS` run to its end, with only the CARELOOP_ variables given (none from this shell)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("CARELOOP_")}
    return subprocess.run([sys.executable, "-m", "careloop.cli", *arguments], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s)


def said(result: subprocess.CompletedProcess) -> list[str]:
    """What the command said on stderr, but its log lines."""
    return [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["simulate", "--devices", "0"], "--devices: must be at least 1, got 0"),
        (["ingest", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["api", "--port", "99999"], "--port: a port is 1 to 65535, got 99999"),
        (["token", "--role", "dispatcher", "--expires-in", "0s"], "--expires-in"),
        (["token"], "give --role to create a token"),
    ],
)
def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(tmp_path, arguments, words) -> None:
    result = careloop(arguments, env={"CARELOOP_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(said(result)) == 1 and words in said(result)[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_token_for_an_unknown_technician_is_one_line_and_exit_2(tmp_path, database_url) -> None:
    result = careloop(["token", "--role", "technician", "--technician-id", "999"],
                      env={"CARELOOP_DATABASE_URL": database_url}, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert said(result) == ["careloop token: no technician 999 (GET /technicians lists them)"]


def test_migrate_with_the_database_down_names_what_failed_in_one_line_and_exits_1(tmp_path) -> None:
    port = free_port()
    result = careloop(["migrate"], env={"CARELOOP_DATABASE_URL": f"postgresql://careloop@127.0.0.1:{port}/careloop"},
                      cwd=tmp_path)
    assert result.returncode == 1
    [line] = said(result)
    assert line.startswith(f"careloop migrate: the database at postgresql://careloop@127.0.0.1:{port}/careloop did "
                           "not answer") and "Traceback" not in result.stderr


def test_tokens_are_created_with_an_expiry_listed_without_the_token_and_revoked_by_prefix(
    tmp_path, database_url
) -> None:
    env = {"CARELOOP_DATABASE_URL": database_url}
    created = careloop(["token", "--role", "marketer", "--name", "chen.jie", "--expires-in", "7d"], env=env,
                       cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("cl_mark_") and len(token) > 30
    listed = careloop(["token", "--list"], env=env, cwd=tmp_path)
    assert listed.returncode == 0 and token not in listed.stdout
    assert token[:12] in listed.stdout and "chen.jie" in listed.stdout
    revoked = careloop(["token", "--revoke", token[:12], "--name", "admin on duty"], env=env, cwd=tmp_path)
    assert revoked.returncode == 0 and "revoked token" in revoked.stderr
    assert "chen.jie" not in careloop(["token", "--list"], env=env, cwd=tmp_path).stdout
    assert "admin on duty" in careloop(["token", "--list", "--all"], env=env, cwd=tmp_path).stdout
    unknown = careloop(["token", "--revoke", "cl_nope_abcd"], env=env, cwd=tmp_path)
    assert unknown.returncode == 2 and said(unknown) == [
        "careloop token: no token 'cl_nope_abcd' (careloop token --list shows them)"]


@pytest.mark.parametrize(
    ("token", "words"),
    [
        (None, "needs CARELOOP_ADMIN_TOKEN set to a random secret of at least 24 characters"),
        ("change-me", "CARELOOP_ADMIN_TOKEN is the default 'change-me'"),
        ("short-but-ok-1234", "CARELOOP_ADMIN_TOKEN is 17 characters"),
    ],
)
def test_the_api_refuses_to_face_the_network_without_a_strong_admin_token(tmp_path, token, words) -> None:
    env = {"CARELOOP_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    if token is not None:
        env["CARELOOP_ADMIN_TOKEN"] = token
    result = careloop(["api", "--host", "0.0.0.0", "--port", str(free_port())], env=env, cwd=tmp_path)
    assert result.returncode == 2
    [line] = said(result)
    assert line.startswith("careloop api: listening on 0.0.0.0 (not loopback)") and words in line, line


def test_ingest_with_the_broker_down_says_so_and_retries_without_a_traceback(tmp_path, database_url) -> None:
    log = tmp_path / "ingest.log"
    port = free_port()
    process = start_careloop(["ingest", "--name", f"down-{port}", "--metrics-port", "0"],
                             env={"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": f"mqtt://127.0.0.1:{port}"},
                             log=log, cwd=tmp_path)
    try:
        wait_until(lambda: log.read_text().count("is not reachable") >= 2, timeout_s=20,
                   what="two retries of the broker", log=log)
        assert process.poll() is None, "the ingester gave up instead of waiting for the broker"
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=20) == 0
    text = log.read_text()
    assert f"the broker at 127.0.0.1:{port} is not reachable (Connection refused); trying again in" in text
    assert "Traceback" not in text and time.monotonic() - started < 15


def test_the_api_refuses_to_face_the_network_with_the_default_database_password(tmp_path) -> None:
    env = {"CARELOOP_DATABASE_URL": "postgresql://careloop:careloop@127.0.0.1:1/careloop",
           "CARELOOP_ADMIN_TOKEN": "a-long-random-admin-token-0123456789"}
    result = careloop(["api", "--host", "0.0.0.0", "--port", str(free_port())], env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert said(result) == ["careloop api: listening on 0.0.0.0 (not loopback): CARELOOP_DATABASE_URL uses the "
                            "default database password 'careloop'; set the database user's password to a random "
                            "secret and put it in the URL"]


def test_careloop_apis_access_log_hides_unsubscribe_tokens_and_query_values(database_url, tmp_path) -> None:
    import httpx

    from careloop.embedded import free_port
    from tests.helpers import api_answers, start_careloop, wait_until

    port = free_port()
    log = tmp_path / "api.log"
    process = start_careloop(["api", "--port", str(port)], env={"CARELOOP_DATABASE_URL": database_url}, log=log,
                             cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: api_answers(base), timeout_s=30, what="careloop api", log=log)
        httpx.get(f"{base}/unsubscribe/SECRET-UNSUBSCRIBE-TOKEN", timeout=5)
        httpx.get(f"{base}/whoami?token=cl_disp_SECRET-BEARER", timeout=5)
        wait_until(lambda: "/whoami?token=***" in log.read_text(), timeout_s=10, what="the access log line", log=log)
    finally:
        process.terminate()
        process.wait(timeout=20)
    written = log.read_text()
    assert "SECRET" not in written
    assert "/unsubscribe/***" in written
