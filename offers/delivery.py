"""Delivery of the outbox: e-mail over SMTP and webhooks over HTTP (signed, with an idempotency key), run by the
engine with retries and back-off.

How a message is sent at most once in effect:

1. The message was rendered whole when it was written to the outbox, in the transaction of the offer that caused
   it: the e-mail's bytes with its Message-ID, the webhook's body with its Idempotency-Key (and the timestamp its
   signature covers). A retry sends exactly those bytes; nothing is rendered again.
2. A run claims due messages (a lease: next_attempt_at moves past the send) and commits the claim; then sends each
   and commits "sent" right after it. A process killed between the send and that commit leaves the message to be
   claimed again when the lease runs out, and sent again: the same message, which mail clients and receivers
   recognise by its Message-ID and Idempotency-Key. Never a second, different one.
3. Each channel (the SMTP server; each webhook endpoint) is claimed separately, a few messages at a time, and a
   channel that fails is left alone for the rest of the run: a dead channel does not block the others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import ipaddress
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
from pydantic import FilePath
from pydantic_settings import BaseSettings, SettingsConfigDict

from careloop.db import Connection, Row
from offers import repo
from offers.messages import masked_address, masked_url, signature

log = logging.getLogger("careloop.offers.delivery")

LEASE = dt.timedelta(minutes=2)  # a claimed message is due again after this if its sender died
RETRY_FIRST = dt.timedelta(seconds=30)
RETRY_AT_MOST = dt.timedelta(hours=1)
MAX_ATTEMPTS = 10  # then the message is dead, and says why
PER_CHANNEL = 50  # messages of one channel claimed per run
CUSTOMER_EVENTS = ("offer.email", "offer.sms")  # the offer's own message: sending it delivers the offer


class OfferDeliverySettings(BaseSettings):
    """Where offers go out: CARELOOP_SMTP_URL (smtp://user:pass@host:port, or smtps:// for TLS from the start),
    CARELOOP_MAIL_FROM, CARELOOP_WEBHOOK_TIMEOUT_S; CARELOOP_WEBHOOK_PRIVATE_NETWORKS=true lets webhooks go to
    receivers on loopback, link-local and private addresses (on premise), CARELOOP_WEBHOOK_CA trusts a private CA
    for their HTTPS besides the system's; CARELOOP_PUBLIC_URL is where customers
    reach the API (their unsubscribe links)."""

    model_config = SettingsConfigDict(env_prefix="CARELOOP_", env_file=".env", extra="ignore")

    smtp_url: str | None = None
    mail_from: str = "CareLoop <offers@careloop.example>"
    webhook_timeout_s: float = 10
    smtp_timeout_s: float = 10
    webhook_private_networks: bool = False
    # a CA trusted for webhook receivers besides the system's (an on-premise receiver with a private CA)
    webhook_ca: FilePath | None = None
    public_url: str = "http://127.0.0.1:8000"


@functools.cache
def delivery_settings() -> OfferDeliverySettings:
    return OfferDeliverySettings()


@dataclass(frozen=True)
class WebhookTarget:
    """Where a webhook goes, resolved once: the addresses its host had at that moment, and why it must not be
    called (None when it may). The request is sent to `address`, one of those checked, never to whatever the name
    resolves to later: a name that answers a public address for the check and a private one for the connection
    (DNS rebinding) cannot reach inside."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...] = ()
    refused: str | None = None
    unresolved: bool = False

    @property
    def address(self) -> str:
        return self.addresses[0]

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (credentials, path and query kept)."""
        parts = urlsplit(self.url)
        userinfo = parts.netloc.rpartition("@")[0]
        literal = f"[{self.address}]" if ":" in self.address else self.address
        netloc = f"{userinfo + '@' if userinfo else ''}{literal}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def host_header(self) -> str:
        """The Host header the receiver expects: the URL's own host (and port, when not the scheme's default)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        default = 443 if urlsplit(self.url).scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def resolve_webhook(url: str) -> WebhookTarget:
    """Resolve the webhook's host once and check every address it gave (see `private_address`)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return WebhookTarget(url, "", 0, refused="it names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError) as error:
        return WebhookTarget(url, host, 0, refused=f"its host {host} does not resolve ({error})", unresolved=True)
    addresses = tuple(dict.fromkeys(str(address[0]) for *_rest, address in found))
    for text in addresses:
        resolved = ipaddress.ip_address(text.split("%")[0])
        # The IPv4 addresses it carries first (the refusal names the one that matters), then the address itself.
        for ip in (*_embedded_ipv4(resolved), resolved):
            if ip.is_global and not ip.is_multicast:
                continue
            kind = ("a loopback" if ip.is_loopback else "a link-local" if ip.is_link_local
                    else "a private" if ip.is_private else "a multicast" if ip.is_multicast else "a non-public")
            found_as = "is" if _literal(host) == resolved else "resolves to"
            carried = "" if ip == resolved else f", which carries {ip}"
            why = f"its host {host} {found_as} {resolved}{carried}, {kind} address"
            return WebhookTarget(url, host, port, addresses, refused=why)
    return WebhookTarget(url, host, port, addresses)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# Well-known NAT64 prefixes (RFC 6052, RFC 8215): the last 32 bits are the IPv4 address a NAT64 gateway forwards to.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address leads to: IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96),
    NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16) and Teredo (2001::/32, its server and its client).
    Each reaches the IPv4 host through the kernel, a gateway or a relay, so it is checked like that IPv4 address:
    otherwise [64:ff9b::a9fe:a9fe] would be the metadata service under a public-looking name."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    last_32_bits = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.teredo is not None:
        return ip.teredo
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if any(ip in prefix for prefix in _NAT64):
        return (last_32_bits,)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves unspecified and loopback
        return (last_32_bits,)
    return ()


def private_address(url: str) -> str | None:
    """Why a webhook must not be called at `url` from here, or None: its host resolves (now) to an address that is
    not on the public internet (loopback, link-local such as a cloud's metadata service, private, reserved), where
    a webhook would let whoever registers it reach our own network. Resolved, so a public name for a private
    address is refused too; delivery resolves again before each send and connects to the address it checked."""
    return resolve_webhook(url).refused


class ChannelDown(Exception):
    """The channel (the SMTP server, a webhook endpoint) failed: try the message again later."""


class MessageRefused(Exception):
    """The channel works but will never take this message (an unknown mailbox, a 4xx answer): it is dead."""


@dataclass
class Transports:
    """The senders of one delivery run; a run opens one SMTP connection at most and closes it at the end."""

    smtp_url: str | None
    mail_from: str
    webhook_timeout_s: float = 10
    smtp_timeout_s: float = 10
    webhook_ca: str | None = None
    _smtp: smtplib.SMTP | None = field(default=None, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: OfferDeliverySettings | None = None) -> Transports:
        settings = settings or delivery_settings()
        return cls(settings.smtp_url, settings.mail_from, settings.webhook_timeout_s, settings.smtp_timeout_s,
                   str(settings.webhook_ca) if settings.webhook_ca else None)

    def send(self, message: Row) -> None:
        if message["transport"] == "smtp":
            self._send_mail(message)
        else:
            self._post_webhook(message)

    def _send_mail(self, message: Row) -> None:
        if not self.smtp_url:
            raise ChannelDown("no SMTP server: set CARELOOP_SMTP_URL")
        try:
            smtp = self._smtp or self._connect_smtp()
            self._smtp = smtp
            smtp.sendmail(parseaddr(self.mail_from)[1], [message["destination"]], message["body"].encode("utf-8"))
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as error:
            raise MessageRefused(_shown(f"the SMTP server refused it: {error}", message)) from error
        except smtplib.SMTPResponseException as error:
            self._drop_smtp()
            if 500 <= error.smtp_code < 600:
                raise MessageRefused(_shown(f"the SMTP server refused it: {error.smtp_code} {error.smtp_error!r}",
                                            message)) from error
            raise ChannelDown(_shown(f"the SMTP server answered {error.smtp_code}: {error.smtp_error!r}",
                                     message)) from error
        except (OSError, smtplib.SMTPException) as error:
            self._drop_smtp()
            raise ChannelDown(_shown(f"SMTP: {type(error).__name__}: {error}", message)) from error

    def _connect_smtp(self) -> smtplib.SMTP:
        assert self.smtp_url is not None
        parts = urlsplit(self.smtp_url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ChannelDown(f"CARELOOP_SMTP_URL must start with smtp:// or smtps://, not {parts.scheme}://")
        kind = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
        smtp = kind(parts.hostname or "127.0.0.1", parts.port or (465 if parts.scheme == "smtps" else 25),
                    timeout=self.smtp_timeout_s)
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        return smtp

    def _drop_smtp(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def _post_webhook(self, message: Row) -> None:
        target = resolve_webhook(message["destination"])
        if target.unresolved:
            raise ChannelDown(f"webhook: {target.refused}")
        private_allowed = message.get("private_network") or delivery_settings().webhook_private_networks
        if target.refused is not None and not (private_allowed and target.addresses):
            raise MessageRefused(f"not sent: {target.refused}, and webhooks go to public receivers only")
        body: str = message["body"]
        where = masked_url(message["destination"])  # errors are shown in GET /outbox: never the URL's credentials
        timestamp = int(message["created_at"].timestamp())  # part of the message: a retry signs the same bytes
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message["idempotency_key"],
            "X-CareLoop-Event": message["event"],
            "X-CareLoop-Signature": signature(message["secret"] or "", timestamp, body),
            "User-Agent": "CareLoop-Webhooks/1",
            "Host": target.host_header(),
        }
        if self._http is None:
            self._http = httpx.Client(
                timeout=self.webhook_timeout_s, follow_redirects=False,
                # No proxy from the environment: a proxy would resolve the name again, past the check.
                trust_env=False,
                # A connection per message: a pooled one, keyed by address, could carry a request for one host
                # over a TLS session made (and verified) for another host on the same address.
                limits=httpx.Limits(max_keepalive_connections=0),
                verify=self._webhook_tls_context(),
            )
        # TLS: the server name sent and checked against the certificate is the URL's host, not the address.
        extensions = {"sni_hostname": target.host} if urlsplit(target.url).scheme == "https" else {}
        try:
            answer = self._http.post(target.pinned_url(), content=body.encode("utf-8"), headers=headers,
                                     extensions=extensions)
        except httpx.HTTPError as error:
            raise ChannelDown(_shown(f"webhook {where}: {type(error).__name__}: {error}", message)) from error
        # 409: the receiver has this idempotency key already, which is what a retry hopes for
        if answer.is_success or answer.status_code == 409:
            return
        if answer.status_code in (408, 425, 429) or answer.status_code >= 500:
            raise ChannelDown(f"webhook {where} answered {answer.status_code}")
        raise MessageRefused(_shown(f"webhook {where} refused it: {answer.status_code} {answer.text[:200]}", message))

    def _webhook_tls_context(self) -> ssl.SSLContext:
        """The system's CAs, and CARELOOP_WEBHOOK_CA's too where set (an on-premise receiver's own CA)."""
        context = ssl.create_default_context()
        if self.webhook_ca:
            context.load_verify_locations(cafile=self.webhook_ca)
        return context

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None
        if self._http is not None:
            self._http.close()
            self._http = None


def _masked(message: Row) -> str:
    """The message's destination as logs and GET /outbox show it: an address masked, a URL without credentials."""
    if message["transport"] == "webhook":
        return masked_url(message["destination"])
    return masked_address(message["destination"])


def _shown(error: str, message: Row) -> str:
    """An error as it is kept and shown: the destination, where the error quotes it, masked."""
    return error.replace(message["destination"], _masked(message))


def retry_delay(attempts: int) -> dt.timedelta:
    """Back-off after the n-th failed attempt: 30 s, 1 min, 2 min, ... at most an hour."""
    return min(RETRY_FIRST * 2 ** max(attempts - 1, 0), RETRY_AT_MOST)


def deliver_due(
    conn: Connection,
    *,
    now: dt.datetime,
    transports: Transports | None = None,
    per_channel: int = PER_CHANNEL,
    after_send: Callable[[Row], Any] | None = None,
) -> dict[str, int]:
    """Send the messages that are due. Unlike other jobs this one commits as it goes (the claim, then each
    message), so that what was sent is marked so as soon as possible; `after_send` runs between a send and that
    mark (tests kill the process there)."""
    own = transports is None
    transports = transports or Transports.from_settings()
    counts = {"sent": 0, "retrying": 0, "dead": 0, "put_back": 0}
    # a consent withdrawn since the message was written stops it here, whichever way it was withdrawn
    counts["withdrawn"] = repo.cancel_unconsented(conn, now=now)
    claimed = repo.claim_due(conn, now=now, lease_until=now + LEASE, per_channel=per_channel, scan=per_channel * 20)
    conn.commit()
    down: dict[tuple[str, int | None], str] = {}
    try:
        for message in claimed:
            channel = (message["transport"], message["endpoint_id"])
            if channel in down:  # found down in this run: not tried, not counted, due again with the back-off
                repo.put_back(conn, message_id=message["id"], error=down[channel],
                              retry_at=now + retry_delay(message["attempts"]))
                conn.commit()
                counts["put_back"] += 1
                continue
            try:
                transports.send(message)
            except ChannelDown as error:
                down[channel] = str(error)
                counts[_failed(conn, message, str(error), now=now, permanent=False)] += 1
                conn.commit()
                log.warning("outbox %d (%s to %s): %s", message["id"], message["event"], _masked(message), error)
                continue
            except MessageRefused as error:
                counts[_failed(conn, message, str(error), now=now, permanent=True)] += 1
                conn.commit()
                log.warning("outbox %d (%s to %s) dead: %s", message["id"], message["event"], _masked(message),
                            error)
                continue
            if after_send is not None:
                after_send(message)
            repo.mark_sent(conn, message_id=message["id"], at=now)
            if message["offer_id"] is not None and message["event"] in CUSTOMER_EVENTS:
                how = "e-mail" if message["event"] == "offer.email" else "text message"
                repo.delivered(conn, offer_id=message["offer_id"], at=now, status_reason=f"delivered by {how}")
            conn.commit()
            counts["sent"] += 1
    finally:
        if own:
            transports.close()
    if claimed:
        log.info("outbox: %s", counts)
    return counts


def _failed(conn: Connection, message: Row, error: str, *, now: dt.datetime, permanent: bool) -> str:
    dead = permanent or message["attempts"] >= MAX_ATTEMPTS
    retry_at = None if dead else now + retry_delay(message["attempts"])
    repo.mark_failed(conn, message_id=message["id"], error=error, retry_at=retry_at)
    if dead and message["offer_id"] is not None and message["event"] in CUSTOMER_EVENTS:
        repo.undeliverable(conn, offer_id=message["offer_id"],
                           status_reason=f"could not be delivered after {message['attempts']} attempts: {error}")
    return "dead" if dead else "retrying"
