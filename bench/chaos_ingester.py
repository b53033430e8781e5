"""The ingester `careloop bench chaos` runs, and kills: the product's Ingester in a process of its own.

Run as `python -m bench.chaos_ingester`. It writes one JSON line per committed batch (and per connect and
disconnect) to --journal, so the benchmark sees what the ingester saw: messages, readings stored, duplicates
skipped. When --kill-file exists at the moment a batch has committed and before its messages are acknowledged,
it removes the file, writes the batch's line, and SIGKILLs itself: the crash that must cost redeliveries and
never data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from careloop.db import Database
from careloop.runtime import configure_logging, stop_event_on_signals
from ingest.service import BatchOutcome
from ingest.subscriber import Ingester

log = logging.getLogger("careloop.bench")


def write_line(journal: TextIO, **fields: object) -> None:
    """One journal line; line-buffered, so it reaches the kernel before any SIGKILL that follows."""
    journal.write(json.dumps({"t": time.time(), "pid": os.getpid(), **fields}) + "\n")


def before_ack_hook(journal: TextIO, kill_file: Path):
    """The Ingester's before_ack: journal the committed batch; die here when asked to."""

    def before_ack(outcome: BatchOutcome) -> None:
        try:
            kill_file.unlink()
            killing = True
        except FileNotFoundError:
            killing = False
        write_line(
            journal,
            event="batch",
            messages=outcome.messages,
            stored=outcome.readings_stored + outcome.events_stored,
            duplicates=outcome.readings_duplicate + outcome.events_duplicate,
            quarantined=sum(outcome.quarantined.values()),
            killed_before_ack=killing,
        )
        if killing:
            os.kill(os.getpid(), signal.SIGKILL)

    return before_ack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos_ingester", description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--name", required=True, help="the same at every restart: the broker keeps its session")
    parser.add_argument("--share-group", required=True)
    parser.add_argument("--journal", required=True, type=Path)
    parser.add_argument("--kill-file", required=True, type=Path)
    args = parser.parse_args(argv)
    configure_logging()
    stop = stop_event_on_signals()
    journal = args.journal.open("a", buffering=1)
    database = Database(args.database_url, max_connections=2)
    ingester = Ingester(
        database,
        args.mqtt_url,
        name=args.name,
        share_group=args.share_group,
        before_ack=before_ack_hook(journal, args.kill_file),
    )
    ingester.start()
    # As careloop ingest runs it, plus connection changes in the journal: the benchmark waits on them.
    connected = False
    while not stop.wait(timeout=0.02):
        if ingester.connected.is_set() != connected:
            connected = not connected
            write_line(journal, event="connected" if connected else "disconnected")
        dead = ingester.dead_thread()
        if dead is not None:
            # As careloop ingest does: up but storing nothing is the worst state, so exit and be restarted.
            log.critical("%s: essential thread %s died; exiting", args.name, dead)
            write_line(journal, event="dead_thread", thread=dead)
            ingester.stop(timeout_s=5)
            return 1
    ingester.stop()
    database.close()
    write_line(journal, event="stopped")
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
