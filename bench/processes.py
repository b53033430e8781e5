"""The product's own processes started for a benchmark: `careloop ingest`, `careloop engine`, `careloop api`, each a
real subprocess on a database of the benchmark's own, ended with the benchmark (however it ends: Linux's
parent-death signal through CARELOOP_EXIT_WITH_PARENT), and stopped with SIGTERM as a supervisor would."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from careloop.embedded import free_port, stop_process
from careloop.runtime import EXIT_WITH_PARENT

# How a logged line starts: the product's "2026-12-01 14:50:08,423 WARNING careloop.api: ..." or uvicorn's
# "ERROR:    Exception in ASGI application"; a line that starts neither way continues the one before.
LOG_LEVEL = re.compile(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ +([A-Z]+) |([A-Z]+):\s)")


@dataclass
class Started:
    """A careloop command running as a subprocess, its stderr kept in a file for when it fails."""

    name: str
    process: subprocess.Popen
    log: Path

    def tail(self, characters: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""

    def logged_size(self) -> int:
        """Where the log ends now: `problems_since` it tells what the command logged from here on."""
        return self.log.stat().st_size if self.log.exists() else 0

    def problems_since(self, offset: int, at_most: int = 20) -> list[str]:
        """The warnings and errors (and what follows them, a traceback) the command logged after `offset`, the last
        `at_most` lines: why a run it served answered late or not at all, kept before the log goes with the run."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        kept, inside = [], False
        for line in lines:
            level = LOG_LEVEL.match(line)
            if level is not None:
                inside = (level.group(1) or level.group(2)) in ("WARNING", "ERROR", "CRITICAL")
            if inside:
                kept.append(line)
        return kept[-at_most:]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"`careloop {self.name}` exited ({self.process.returncode}):\n{self.tail()}")


def service_env(database_url: str, mqtt_url: str, admin_token: str | None = None) -> dict[str, str]:
    """The environment of a careloop command run against the benchmark's database and broker (and, for an API,
    its admin token)."""
    env = {**os.environ, "CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": mqtt_url}
    return env if admin_token is None else {**env, "CARELOOP_ADMIN_TOKEN": admin_token}


@contextmanager
def careloop_process(name: str, arguments: list[str], env: dict[str, str]) -> Iterator[Started]:
    """`careloop NAME ARGUMENTS...` running until the block ends, then stopped with SIGTERM (SIGKILL after 20 s)."""
    log = Path(tempfile.mkstemp(prefix=f"careloop-bench-{name}-", suffix=".log")[1])
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "careloop.cli", name, *arguments],
            env={**env, EXIT_WITH_PARENT: str(os.getpid())},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    started = Started(name, process, log)
    try:
        yield started
    finally:
        stop_process(process, timeout_s=20)
        log.unlink(missing_ok=True)


@dataclass
class RunningApi:
    base_url: str
    started: Started


@contextmanager
def careloop_api(env: dict[str, str], timeout_s: float = 90, workers: int = 1) -> Iterator[RunningApi]:
    """A real `careloop api` (of `workers` processes) on a free loopback port, answering /health before the block
    begins."""
    port = free_port(None)
    base_url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        started = stack.enter_context(careloop_process("api", ["--port", str(port), "--workers", str(workers)], env))
        deadline = time.monotonic() + timeout_s
        while True:
            started.check_alive()
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"`careloop api` did not answer within {timeout_s:g} s:\n{started.tail()}")
            time.sleep(0.2)
        yield RunningApi(base_url, started)


def percentile(values: list[float], share: float) -> float | None:
    """The value at `share` of the sorted values (nearest rank); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]
