"""A webhook goes to the very address that was checked: its name is resolved once, every address checked, and the
connection made to a checked one with the URL's Host header and TLS server name. A name that resolves public for
the check and private for the connection (DNS rebinding) cannot reach inside.

The resolver is this test's own (socket.getaddrinfo replaced for one made-up name, answering differently on each
call, as a hostile DNS server with a zero TTL does); the receivers are real HTTP(S) servers on loopback."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from careloop.tls import write_certificates
from offers.delivery import ChannelDown, Transports, resolve_webhook

NAME = "hooks.rebind.test"
PUBLIC = "93.184.216.34"  # a global address: the check lets it through (nothing is listening for this test there)
real_getaddrinfo = socket.getaddrinfo


@dataclass
class Receiver:
    address: str
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server_names: list[str] = field(default_factory=list)


def _serve(address: str, port: int = 0, tls: ssl.SSLContext | None = None) -> tuple[Receiver, ThreadingHTTPServer]:
    receiver = Receiver(address)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's hook name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.requests.append({"host": self.headers["Host"], "path": self.path, "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    if tls is not None:
        tls.sni_callback = lambda _socket, name, _context: receiver.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server


@pytest.fixture
def outside_and_inside() -> Iterator[tuple[Receiver, Receiver]]:
    """Two receivers on one port: 127.0.0.1 plays the receiver that was checked, 127.0.0.2 the inside service a
    rebinding would reach."""
    outside, first = _serve("127.0.0.1")
    inside, second = _serve("127.0.0.2", outside.port)
    yield outside, inside
    for server in (first, second):
        server.shutdown()
        server.server_close()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], list[str]]:
    """`resolver([first, second, ...])`: NAME resolves to each answer in turn (the last one from then on); answers
    the list of lookups made."""
    lookups: list[str] = []

    def install(answers: list[str]) -> list[str]:
        def getaddrinfo(host, port, *args, **kwargs):
            if host != NAME:
                return real_getaddrinfo(host, port, *args, **kwargs)
            answer = answers[min(len(lookups), len(answers) - 1)]
            lookups.append(answer)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, int(port)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return lookups

    return install


def _message(url: str, *, private_network: bool) -> dict[str, Any]:
    return {"transport": "webhook", "destination": url, "private_network": private_network, "body": '{"a": 1}',
            "created_at": dt.datetime(2026, 11, 30, tzinfo=dt.UTC), "idempotency_key": "k-1",
            "event": "offer.issued", "secret": "s", "id": 1, "endpoint_id": 1}


def test_a_name_that_turns_private_after_the_check_never_reaches_inside(outside_and_inside, resolver) -> None:
    """Public for the check, loopback a moment later: the request goes to the public address that was checked
    (unreachable here, so the channel is down and retried later), and the inside receiver sees nothing."""
    outside, inside = outside_and_inside
    lookups = resolver([PUBLIC, "127.0.0.2"])
    transports = Transports(smtp_url=None, mail_from="x@example.com", webhook_timeout_s=2)
    try:
        with pytest.raises(ChannelDown):
            transports.send(_message(f"http://{NAME}:{inside.port}/hooks", private_network=False))
    finally:
        transports.close()
    assert lookups == [PUBLIC], "the name was resolved again after the check"
    assert inside.requests == [] and outside.requests == []


def test_the_connection_goes_to_the_checked_address_with_the_urls_host(outside_and_inside, resolver) -> None:
    """Where private receivers are allowed (on premise), the address checked is still the one connected to: the
    second answer (127.0.0.2) is never used; the receiver sees the URL's own Host header and path."""
    outside, inside = outside_and_inside
    lookups = resolver(["127.0.0.1", "127.0.0.2"])
    transports = Transports(smtp_url=None, mail_from="x@example.com", webhook_timeout_s=3)
    try:
        for _ in range(2):  # a second message resolves afresh, and again connects where its own check said
            transports.send(_message(f"http://crm:pw@{NAME}:{outside.port}/hooks?x=1", private_network=True))
    finally:
        transports.close()
    assert lookups == ["127.0.0.1", "127.0.0.2"]
    assert [request["host"] for request in outside.requests] == [f"{NAME}:{outside.port}"]
    assert outside.requests[0]["path"] == "/hooks?x=1" and outside.requests[0]["body"] == b'{"a": 1}'
    assert [request["host"] for request in inside.requests] == [f"{NAME}:{outside.port}"]


def test_https_to_the_checked_address_sends_and_verifies_the_urls_name(resolver, tmp_path: Path) -> None:
    """TLS: the server name sent (SNI) and checked against the certificate is the URL's host, though the connection
    goes to the address; a certificate for another name is refused."""
    certs = write_certificates(tmp_path / "certs", [NAME])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    receiver, server = _serve("127.0.0.1", tls=context)
    resolver(["127.0.0.1"])
    transports = Transports(smtp_url=None, mail_from="x@example.com", webhook_timeout_s=3,
                            webhook_ca=str(certs.ca_cert))
    try:
        transports.send(_message(f"https://{NAME}:{receiver.port}/in", private_network=True))
        assert receiver.server_names == [NAME]
        assert [request["host"] for request in receiver.requests] == [f"{NAME}:{receiver.port}"]
        other = write_certificates(tmp_path / "other", ["elsewhere.test"])
        context.load_cert_chain(other.server_cert, other.server_key)  # now the receiver shows another name
        with pytest.raises(ChannelDown, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            transports.send(_message(f"https://{NAME}:{receiver.port}/in", private_network=True))
        assert len(receiver.requests) == 1
    finally:
        transports.close()
        server.shutdown()
        server.server_close()


def test_every_address_a_name_resolves_to_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in (PUBLIC, "10.1.2.3")]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    target = resolve_webhook(f"https://{NAME}/in")
    assert target.refused == f"its host {NAME} resolves to 10.1.2.3, a private address"
    assert target.addresses == (PUBLIC, "10.1.2.3")
