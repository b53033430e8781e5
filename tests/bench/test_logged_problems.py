"""What a benchmark keeps of a served run's log before the log goes with the run: the warnings and errors logged
after a point, with the lines (a traceback) that continue them, and nothing from before that point."""

from __future__ import annotations

import subprocess
import sys

from bench.processes import Started


def test_warnings_and_errors_after_a_point_are_kept_with_their_tracebacks(tmp_path) -> None:
    log = tmp_path / "api.log"
    log.write_text("2026-12-01 14:50:08,423 WARNING careloop.db: before the rate, not kept\n")
    started = Started("api", subprocess.Popen([sys.executable, "-c", "pass"]), log)
    started.process.wait()
    mark = started.logged_size()
    with log.open("a") as out:
        out.write(
            "2026-12-01 14:51:00,001 INFO    careloop.api: served\n"
            "INFO:     127.0.0.1:5000 - \"GET /health HTTP/1.1\" 200 OK\n"
            "2026-12-01 14:51:00,002 WARNING careloop.db: statement timeout for GET /customers/7/360\n"
            "ERROR:    Exception in ASGI application\n"
            "Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in <module>\n"
            "psycopg2.errors.QueryCanceled: canceling statement due to statement timeout\n"
            "2026-12-01 14:51:00,003 INFO    careloop.api: served again\n"
        )

    problems = started.problems_since(mark)

    assert problems == [
        "2026-12-01 14:51:00,002 WARNING careloop.db: statement timeout for GET /customers/7/360",
        "ERROR:    Exception in ASGI application",
        "Traceback (most recent call last):",
        "  File \"x.py\", line 1, in <module>",
        "psycopg2.errors.QueryCanceled: canceling statement due to statement timeout",
    ]
    assert started.problems_since(mark, at_most=2) == problems[-2:]
    assert started.problems_since(started.logged_size()) == []
