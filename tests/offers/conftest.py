"""A real SMTP server (aiosmtpd) and a real HTTP receiver for webhooks, both in the test process."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from offers.delivery import Transports


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Mailbox:
    """What the SMTP server received: each message's envelope and raw bytes."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        parsed = email.message_from_bytes(envelope.content)
        with self.lock:
            self.messages.append({"to": list(envelope.rcpt_tos), "from": envelope.mail_from,
                                  "raw": bytes(envelope.content), "message_id": parsed["Message-ID"],
                                  "subject": parsed["Subject"], "text": parsed.get_payload(decode=True).decode()})
        return "250 OK"

    def message_ids(self) -> set[str]:
        return {message["message_id"] for message in self.messages}


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Mailbox]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", mailbox
    controller.stop()


@dataclass
class Receiver:
    """A webhook receiver: keeps every request; answers `status` (503 makes it a dead channel)."""

    url: str = ""
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if name is None or r["headers"]["X-CareLoop-Event"] == name]


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                      "json": json.loads(body), "answered": receiver.status})
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def transports(smtp_server) -> Iterator[Transports]:
    url, _mailbox = smtp_server
    senders = Transports(smtp_url=url, mail_from="CareLoop <offers@careloop.test>", webhook_timeout_s=3,
                         smtp_timeout_s=3)
    yield senders
    senders.close()


@pytest.fixture
def offers_client(database, mqtt_url):
    """The API as `careloop api` serves it, with the admin token `admin-token-for-offer-tests`."""
    from fastapi.testclient import TestClient

    from careloop.app import create_app

    return TestClient(create_app(database, admin_token="admin-token-for-offer-tests", mqtt_url=mqtt_url))
