"""`careloop bench security`: many backtests at once against a running `careloop api`; does /health stay fast?

A database of its own gets a fleet with a week of hourly readings and a threshold rule. A real `careloop api`
process (loopback) then takes --concurrency clients that each post backtests of that rule, one after another,
for --seconds, as an admin, a dispatcher and a marketer in turn, while one more client asks /health every
--health-every seconds. Backtests run at most a few at once per role on threads and connections of their own
(careloop.deps.ExpensiveWork); the rest are refused with a 429 at once. Printed: /health's latency before and
during the load (p50, p95, p99, max), and how many backtests ran, were refused, or failed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.fixtures import register_devices, temporary_database
from careloop.auth import create_token
from careloop.db import Database, execute
from careloop.embedded import stop_process
from careloop.runtime import resolve_services
from careloop.settings import get_settings

RULE = {
    "id": "bench-fan-high",
    "applies_to": {"kind": "range_hood"},
    "when": {"threshold": {"metric": "fan_current_a", "above": 0.9, "for": "2h"}},
    "severity": "warning",
}
HEALTH_P99_BUDGET_MS = 200.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def _fleet(database_url: str, devices: int, days: int) -> None:
    database = Database(database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            register_devices(conn, [f"RH-SEC-{index:05d}" for index in range(devices)])
            # hourly readings, a few devices drifting above the rule's level now and then
            execute(conn, """
                INSERT INTO telemetry (ts, device_id, metric, value, seq)
                SELECT now() - make_interval(hours => hour), d.id, 'fan_current_a',
                       0.6 + 0.4 * abs(sin(hour / 7.0 + length(d.id) + ascii(right(d.id, 1)))), %(days)s * 24 - hour
                FROM devices d, generate_series(0, %(days)s * 24 - 1) AS hour
            """, {"days": days})
    finally:
        database.close()


def _wait_for_api(base: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"careloop bench security: the API exited ({process.returncode}):\n"
                             f"{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"careloop bench security: the API did not answer within {timeout_s:g}s")


def _watch_health(base: str, every_s: float, stop: threading.Event, latencies: list[float],
                  statuses: Counter) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                statuses[client.get("/health").status_code] += 1
            except httpx.HTTPError as error:
                statuses[type(error).__name__] += 1
            latencies.append((time.perf_counter() - started) * 1000)
            stop.wait(every_s)


def _backtester(base: str, token: str, window: dict, until: float, outcomes: Counter, durations: list[float]) -> None:
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                answer = client.post(f"/rules/{RULE['id']}/backtest", json=window)
                outcomes[answer.status_code] += 1
                if answer.status_code == 200:
                    durations.append(time.perf_counter() - started)
                elif answer.status_code == 429:
                    time.sleep(min(1.0, float(answer.headers.get("Retry-After", "1")) / 5))
            except httpx.HTTPError as error:
                outcomes[type(error).__name__] += 1


def _summary(label: str, latencies: list[float]) -> str:
    if not latencies:
        return f"  {label}: no answers"
    return (f"  {label}: {len(latencies):5d} answers, p50 {statistics.median(latencies):6.1f} ms, "
            f"p95 {_percentile(latencies, 0.95):6.1f} ms, p99 {_percentile(latencies, 0.99):6.1f} ms, "
            f"max {max(latencies):7.1f} ms")


def bench_security(args: argparse.Namespace) -> int:
    settings = get_settings()
    urls = resolve_services(settings, need_broker=False)
    print(f"careloop bench security: {args.concurrency} clients posting backtests for {args.seconds:g} s against "
          f"`careloop api` on loopback; /health every {args.health_every * 1000:g} ms; {args.devices} devices with "
          f"{args.days} days of hourly readings")
    with temporary_database(urls.database_url) as database_url:
        _fleet(database_url, args.devices, args.days)
        admin_token = secrets.token_urlsafe(32)
        database = Database(database_url, max_connections=1)
        with database.transaction() as conn:
            tokens = [admin_token] + [create_token(conn, role=role, name=f"bench {role}")
                                      for role in ("dispatcher", "marketer")]
        database.close()
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(os.environ.get("TMPDIR", "/tmp")) / f"careloop-bench-security-{port}.log"
        env = {**os.environ, "CARELOOP_DATABASE_URL": database_url, "CARELOOP_ADMIN_TOKEN": admin_token,
               # the broker is not what is measured: one that refuses at once keeps /health's probe out of it
               "CARELOOP_MQTT_URL": str(settings.mqtt_url or "mqtt://127.0.0.1:1")}
        with open(log, "w") as stderr:
            api = subprocess.Popen([sys.executable, "-m", "careloop.cli", "api", "--port", str(port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            _wait_for_api(base, api, log)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin_token}"}) as client:
                created = client.post("/rules", json=RULE)
                assert created.status_code == 201, created.text
                probe = client.get("/health").json()
            end = time.time()
            window = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end - args.days * 86400)),
                      "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)), "step": "1h"}

            quiet: list[float] = []
            quiet_statuses: Counter = Counter()
            stop = threading.Event()
            watcher = threading.Thread(target=_watch_health, args=(base, args.health_every, stop, quiet,
                                                                    quiet_statuses))
            watcher.start()
            time.sleep(args.quiet_seconds)
            stop.set()
            watcher.join()

            loaded: list[float] = []
            loaded_statuses: Counter = Counter()
            outcomes: Counter = Counter()
            durations: list[float] = []
            stop = threading.Event()
            watcher = threading.Thread(target=_watch_health, args=(base, args.health_every, stop, loaded,
                                                                    loaded_statuses))
            until = time.monotonic() + args.seconds
            clients = [threading.Thread(target=_backtester,
                                        args=(base, tokens[index % len(tokens)], window, until, outcomes, durations))
                       for index in range(args.concurrency)]
            watcher.start()
            for client_thread in clients:
                client_thread.start()
            for client_thread in clients:
                client_thread.join()
            stop.set()
            watcher.join()
        finally:
            stop_process(api, timeout_s=20)
    p99 = _percentile(loaded, 0.99)
    print(f"  /health said: database {probe['database']['detail']}, broker {probe['broker']['detail']}")
    print(_summary("/health, idle        ", quiet))
    print(_summary(f"/health, {args.concurrency:3d} clients", loaded))
    print(f"  /health answers: {dict(loaded_statuses)}")
    ran = outcomes.get(200, 0)
    print(f"  backtests: {ran} ran ({args.days * 24} evaluations over {args.devices} devices each; "
          f"p50 {statistics.median(durations) if durations else float('nan'):.2f} s), "
          f"{outcomes.get(429, 0)} refused at once (429: the role's share was running), "
          f"other answers {({k: v for k, v in outcomes.items() if k not in (200, 429)}) or 'none'}")
    held = p99 < HEALTH_P99_BUDGET_MS and set(loaded_statuses) == {200}
    print(f"  /health p99 under load {p99:.1f} ms: {'within' if held else 'NOT within'} the "
          f"{HEALTH_P99_BUDGET_MS:g} ms budget")
    return 0 if held else 1
