"""Wiring for the long-running commands: logging, service URLs (embedded where none is set), signals."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

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


# Set by a command that runs others (careloop demo) to its own pid: the child ends when that parent does.
EXIT_WITH_PARENT = "CARELOOP_EXIT_WITH_PARENT"


def exit_with_parent() -> None:
    """Where CARELOOP_EXIT_WITH_PARENT names this process's parent: on Linux, ask the kernel for a SIGTERM when the
    parent dies, however it dies (SIGKILL included), so nothing it started runs on alone; and exit at once if the
    parent is already gone. The variable is taken out of the environment: this process's own children (the
    dashboard's Streamlit) have another parent."""
    parent = os.environ.pop(EXIT_WITH_PARENT, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if str(os.getppid()) != parent:
        raise SystemExit(f"careloop: the process that started this one ({parent}) is gone")


def exit_on_sigterm() -> None:
    """Make SIGTERM end the process as a normal exit (SystemExit), so atexit handlers run.

    Python's default for SIGTERM ends the process on the spot, without them: an embedded service this
    process uses would then be stopped by its keeper only after noticing the process is gone. Commands that
    stop gracefully install their own handler later (`stop_event_on_signals`); uvicorn puts this one back
    after its shutdown and raises the signal again, which then exits here.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_signal)


def _exit_on_signal(signum: int, _frame) -> None:
    log.info("received %s: exiting", signal.Signals(signum).name)
    raise SystemExit(128 + signum)


def resolve_services(settings: Settings, *, need_broker: bool = True) -> ServiceUrls:
    """The configured URLs; where one is missing, the embedded service under CARELOOP_HOME.

    An embedded service is shared by the commands of one CARELOOP_HOME and stopped when the last of them
    exits, whether by SIGTERM, SIGINT, an error, or a kill (careloop.embedded).
    """
    home = Path(settings.home)
    if settings.database_url is None or (need_broker and settings.mqtt_url is None):
        exit_on_sigterm()
    if settings.database_url is not None:
        database_url = str(settings.database_url)
    else:
        database_url = embedded.start_database(home)
    mqtt_url = str(settings.mqtt_url) if settings.mqtt_url is not None else ""
    if not mqtt_url and need_broker:
        mqtt_url = embedded.start_broker(home)
    log.info("database %s, broker %s", redact_url(database_url), redact_url(mqtt_url) or "(none)")
    return ServiceUrls(database_url=database_url, mqtt_url=mqtt_url)


def freeze_what_is_loaded() -> None:
    """For a long-running process, once it has loaded what it runs with (modules, routes, models, rules: some
    hundred thousand objects that live as long as it does): frozen, the garbage collector no longer walks them on
    each full collection, which otherwise paused the work in hand for 50 ms and more."""
    gc.collect()
    gc.freeze()


# How many more container objects may be alive than were freed before CPython's cycle collector runs, in a process
# that collects rarely (collect_cycles_rarely); CPython's own is 700.
RARE_COLLECTION_THRESHOLD = 200_000


def collect_cycles_rarely() -> None:
    """For the ingester, whose work on a message makes no reference cycle (tests/ingest/test_ingester.py holds it
    to that): at CPython's default the collector ran every 700 objects, walking the thousands of received messages
    in hand (a dozen objects each) to free nothing: 13% of an ingester's time. Now it runs at most once per 200,000
    more objects alive than freed, which also bounds what cycles from elsewhere can hold."""
    gc.set_threshold(RARE_COLLECTION_THRESHOLD, 10, 10)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so long-running commands stop cleanly."""
    stop = threading.Event()

    def handle(signum: int, _frame) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
