"""Wiring for the long-running commands: logging, service URLs (embedded where none is set), signals."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from careloop import embedded
from careloop.settings import Settings, redact_url

log = logging.getLogger("careloop")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "httpx", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    mqtt_url: str


def _broker_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=1).close()
        return True
    except OSError:
        return False


def resolve_services(settings: Settings, *, need_broker: bool = True) -> ServiceUrls:
    """The configured URLs; where one is missing, the embedded service under CARELOOP_HOME."""
    home = Path(settings.home)
    if settings.database_url is not None:
        database_url = str(settings.database_url)
    else:
        database_url = embedded.start_database(home)
    mqtt_url = str(settings.mqtt_url) if settings.mqtt_url is not None else ""
    if not mqtt_url and need_broker:
        # One embedded broker per CARELOOP_HOME: a second command joins the one already running.
        url_file = home / "broker.url"
        known = url_file.read_text().strip() if url_file.exists() else ""
        if known and _broker_answers(known):
            mqtt_url = known
        else:
            mqtt_url = embedded.start_broker(home)
            url_file.parent.mkdir(parents=True, exist_ok=True)
            url_file.write_text(mqtt_url)
    log.info("database %s, broker %s", redact_url(database_url), redact_url(mqtt_url) or "(none)")
    return ServiceUrls(database_url=database_url, mqtt_url=mqtt_url)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so long-running commands stop cleanly."""
    stop = threading.Event()

    def handle(signum: int, _frame) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
