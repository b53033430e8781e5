"""Helpers for integration tests: publishing over the real broker and waiting for outcomes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from careloop.mqtt import make_connection
from ingest.service import BatchOutcome, InboundMessage, ingest_batch


def publish_all(mqtt_url: str, messages: Iterable[tuple[str, bytes | dict | str]], *, retain: bool = False) -> int:
    """Publish at QoS 1 and wait until the broker acknowledged each message; answers how many."""
    connection = make_connection(mqtt_url, f"test-publisher-{uuid.uuid4().hex[:8]}")
    connected = threading.Event()
    connection.client.on_connect = lambda *_args: connected.set()
    connection.connect()
    connection.client.loop_start()
    assert connected.wait(timeout=10), "publisher could not connect to the broker"
    infos = []
    for topic, payload in messages:
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        infos.append(connection.client.publish(topic, body, qos=1, retain=retain))
    for info in infos:
        info.wait_for_publish(timeout=30)
        assert info.is_published(), "the broker did not acknowledge a publish"
    connection.client.disconnect()
    connection.client.loop_stop()
    return len(infos)


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float = 20, what: str = "condition",
    log: Path | None = None,
) -> None:
    """`log`: a process's log whose end the failure shows, so a timeout says what the process was doing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    tail = f"\n--- end of {log} ---\n{log.read_text(errors='replace')[-3000:]}" if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")


def start_careloop(
    arguments: list[str], *, env: dict[str, str | None], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """`careloop ARGUMENTS` as a process whose output goes to `log`: a file never fills up as an unread pipe does
    (a process writing to a full pipe blocks, whatever else it was doing). A None in `env` unsets the variable."""
    environment = {**os.environ, **env}
    with open(log, "a") as output:
        return subprocess.Popen([sys.executable, "-m", "careloop.cli", *arguments],
                                env={name: value for name, value in environment.items() if value is not None},
                                cwd=cwd, stdout=output, stderr=subprocess.STDOUT, text=True)


def api_answers(base_url: str) -> bool:
    """Whether a `careloop api` at `base_url` answers /health yet (200, or 503 while a service it needs is down)."""
    import httpx

    try:
        return httpx.get(f"{base_url}/health", timeout=2).status_code in (200, 503)
    except httpx.TransportError:
        return False


def reading(seq: int, *, at: dt.datetime | None = None, **metrics: float) -> dict:
    moment = at or dt.datetime.now(dt.UTC)
    return {"seq": seq, "ts": moment.isoformat().replace("+00:00", "Z"), "metrics": metrics or {"fan_current_a": 0.6}}


def event(seq: int, *, at: dt.datetime, kind: str, code: str | None = None) -> dict:
    """An events payload."""
    return {"seq": seq, "ts": at.isoformat(), "type": kind} | ({"code": code} if code else {})


def inbound(topic: str, payload: dict, received_at: dt.datetime) -> InboundMessage:
    """A message as the broker would hand it to the ingester."""
    return InboundMessage(topic, json.dumps(payload).encode(), received_at)


def store(database, messages: list[InboundMessage], *, now: dt.datetime) -> BatchOutcome:
    """Ingest messages through the ingest service at `now`, without the broker, and commit."""
    with database.transaction() as writer:
        return ingest_batch(writer, messages, now=now)
