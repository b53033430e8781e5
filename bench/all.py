"""`careloop bench all`: the performance suite at a stated, modest size, in one run: the ingest drain, fault to
action at shares of that drain rate, the engine over growing fleets, the reads under a fixed request rate, and the
bytes a reading takes (after TimescaleDB compression too, where telemetry is a hypertable).

Prints one table, writes every figure to bench/results/latest.json (or --out), and draws each scaling curve to a
PNG beside it: the engine's time against fleet size, fault-to-action latency against the ingest rate, and each
read's p50 and p99. The sizing figures (readings per second per ingester core, devices per core at one message
every 30 s, engine seconds per 100,000 devices) are derived from the same run. Each benchmark runs in a database
of its own, one after the other, never beside another.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import psycopg2

from bench.engine import EngineFigures, measure_engine
from bench.faults import P99_TARGET_S as FAULT_P99_TARGET_S
from bench.faults import FaultFigures, measure_faults
from bench.fixtures import register_devices, temporary_database
from bench.ingest import METRICS_PER_MESSAGE, device_ids, measure_ingest
from bench.reads import P99_TARGET_S as READ_P99_TARGET_S
from bench.reads import ReadFigures, measure_reads
from bench.storage import measure_storage
from careloop.runtime import resolve_services
from careloop.settings import get_settings

RESULTS = Path(__file__).parent / "results"
REPORT_EVERY_S = 30  # the sizing's device: one message every 30 s
ENGINE_JOBS = ("window", "sweep", "batch of 500")


def measure_drain(messages: int, devices: int) -> dict:
    """One ingester draining `messages` queued in the broker (bench ingest --mode drain's measurement)."""
    urls = resolve_services(get_settings(), need_broker=True)
    with temporary_database(urls.database_url) as database_url:
        ids = device_ids(devices)
        conn = psycopg2.connect(database_url)
        with conn:
            register_devices(conn, ids)
        conn.close()
        figure, stored, _size = measure_ingest(database_url, urls.mqtt_url, messages, 2, ids, 1)
    return {
        "messages": messages, "stored_readings": stored, "seconds": figure.seconds,
        # from the readings stored: a broker with a queue limit drops what is past it, and measure_ingest says so
        "readings_per_s": figure.rows_per_s, "messages_per_s": figure.rows_per_s / METRICS_PER_MESSAGE,
    }  # fmt: skip


def engine_dict(figures: EngineFigures) -> dict:
    jobs = {job: min(seconds for seconds, _summary in runs) for job, runs in figures.jobs.items()}
    return {
        "devices": figures.devices, "readings": figures.readings, "best_s": jobs,
        "first_window_s": figures.first["window"][0], "first_sweep_s": figures.first["sweep"][0],
        "baselines_s": figures.baselines_s, "trend_fits_s": figures.trends_s,
    }  # fmt: skip


def sizing(drain: dict, engines: list[dict]) -> dict:
    """What one machine's figures say about capacity: per ingester core and per 100,000 devices."""
    largest = max(engines, key=lambda engine: engine["devices"]) if engines else None
    per_100k = (lambda seconds: seconds * 100_000 / largest["devices"]) if largest else (lambda seconds: None)
    return {
        "readings_per_s_per_ingester_core": drain["readings_per_s"],
        "messages_per_s_per_ingester_core": drain["messages_per_s"],
        "devices_per_ingester_core_at_one_message_every_30_s": drain["messages_per_s"] * REPORT_EVERY_S,
        "engine_from_devices": largest["devices"] if largest else None,
        "engine_window_s_per_100k_devices": per_100k(largest["best_s"]["window"]) if largest else None,
        "engine_sweep_s_per_100k_devices": per_100k(largest["best_s"]["sweep"]) if largest else None,
    }


def table(results: dict) -> list[str]:
    """One table of every figure, its target where the product has one."""
    rows: list[tuple[str, str, str, str]] = []
    drain = results["ingest"]
    rows.append(("ingest", "drain, one ingester", f"{drain['messages_per_s']:,.0f} messages/s", ""))
    rows.append(("ingest", "drain, one ingester", f"{drain['readings_per_s']:,.0f} readings/s", ""))
    for rate in results["faults"]["rates"]:
        target = f"p99 ≤ {FAULT_P99_TARGET_S * 1000:.0f} ms" if abs(rate["share"] - 0.5) < 1e-9 else ""
        mark = ""
        if target and rate["p99_s"] is not None:
            mark = " ✓" if rate["p99_s"] <= FAULT_P99_TARGET_S and rate["visible"] == rate["faults"] else " ✗"
        rows.append((
            "fault to action", f"{rate['share']:.0%} of drain ({rate['achieved_rate']:,.0f} msg/s)",
            f"p50 {_ms(rate['p50_s'])} p99 {_ms(rate['p99_s'])} max {_ms(rate['max_s'])} ms; "
            f"{rate['visible']}/{rate['faults']} seen",
            target + mark,
        ))  # fmt: skip
    for engine in results["engine"]:
        best = engine["best_s"]
        rows.append((
            "engine", f"{engine['devices']:,} devices ({engine['readings']:,} readings)",
            f"window {best['window']:.2f} s, sweep {best['sweep']:.2f} s, batch of 500 {best['batch of 500']:.2f} s",
            "",
        ))  # fmt: skip
    reads = results["reads"]
    for run in reads["runs"]:
        for name, endpoint in run["endpoints"].items():
            p99 = endpoint["p99_s"]
            mark = "" if p99 is None else (" ✓" if p99 <= READ_P99_TARGET_S else " ✗")
            others = {status: n for status, n in endpoint["statuses"].items() if status != "200"}
            rows.append((
                "reads", f"{name} at {run['rate']:g} req/s" + (f", {run['workers']} API processes"
                                                                 if run.get("workers", 1) > 1 else ""),
                f"p50 {_ms(endpoint['p50_s'], 1)} p99 {_ms(p99, 1)} max {_ms(endpoint['max_s'], 1)} ms"
                + (f"; not answered 200: {others}" if others else ""),
                f"p99 ≤ {READ_P99_TARGET_S * 1000:.0f} ms{mark}",
            ))  # fmt: skip
    storage = results.get("storage")  # absent from results written before the suite measured storage
    if storage:
        rows.append((
            "storage", f"{storage['readings']:,} readings, {storage['days']:g} days every {storage['every_s']} s",
            f"{storage['bytes_per_reading']:.0f} bytes/reading"
            + ("; compressed " + f"{storage['compressed_bytes_per_reading']:.0f}" if storage["timescaledb"]
               else "; no TimescaleDB: compression not measured")
            + f"; chart p99 {_ms(storage['chart_p99_s'], 1)} ms"
            + (f", compressed {_ms(storage['compressed_chart_p99_s'], 1)} ms" if storage["timescaledb"] else ""),
            "",
        ))  # fmt: skip
    size = results["sizing"]
    rows.append(("sizing", "readings/s per ingester core", f"{size['readings_per_s_per_ingester_core']:,.0f}", ""))
    rows.append((
        "sizing", f"devices per ingester core, a message every {REPORT_EVERY_S} s",
        f"{size['devices_per_ingester_core_at_one_message_every_30_s']:,.0f}", "",
    ))  # fmt: skip
    if size["engine_window_s_per_100k_devices"] is not None:
        rows.append((
            "sizing", "engine window s per 100k devices", f"{size['engine_window_s_per_100k_devices']:.2f}",
            f"(from {size['engine_from_devices']:,} devices)",
        ))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    header = ("benchmark", "measure", "figure", "target")
    widths = [max(width, len(header[column])) for column, width in enumerate(widths)]
    lines = ["  ".join(text.ljust(width) for text, width in zip(header, [*widths, 0], strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(text.ljust(width) for text, width in zip(row, [*widths, 0], strict=True)).rstrip())
    return lines


def _ms(seconds: float | None, digits: int = 0) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f}"


def draw(results: dict, folder: Path) -> list[Path]:
    """The scaling curves as PNGs in `folder`; answers their paths."""
    try:
        import matplotlib
    except ImportError as missing:
        raise SystemExit(
            "careloop bench all draws its curves with matplotlib: pip install -e '.[bench]'"
        ) from missing
    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot

    drawn = []
    engines = results["engine"]
    if engines:
        figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
        sizes = [engine["devices"] for engine in engines]
        for job in ENGINE_JOBS:
            axes.plot(sizes, [engine["best_s"][job] for engine in engines], marker="o", label=job)
        axes.plot(sizes, [engine["first_window_s"] for engine in engines], marker="o", linestyle="--",
                  label="first window (opens the fleet's detections)")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("devices")
        axes.set_ylabel("seconds (best of the repeats)")
        axes.set_title("Rule engine: time per evaluation against fleet size")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        drawn.append(_save(figure, folder / "engine_scaling.png"))
    rates = results["faults"]["rates"]
    if rates:
        figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
        shares = [100 * rate["share"] for rate in rates]
        for key, label in (("p50_s", "p50"), ("p99_s", "p99"), ("max_s", "max")):
            axes.plot(shares, [(rate[key] or 0) * 1000 for rate in rates], marker="o", label=label)
        axes.axhline(FAULT_P99_TARGET_S * 1000, color="grey", linestyle=":", label="target p99 at 50%")
        axes.set_xlabel(f"load, % of one ingester's drain rate ({results['faults']['drain_rate']:,.0f} messages/s)")
        axes.set_ylabel("ms from publish to order and call task in the API")
        axes.set_title("Fault to action against ingest load")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        drawn.append(_save(figure, folder / "faults_latency.png"))
    reads = results["reads"]
    if reads["runs"]:
        figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
        processes = sorted({run.get("workers", 1) for run in reads["runs"]})
        for count, style in zip(processes, ("-", "--", ":", "-."), strict=False):
            runs = [run for run in reads["runs"] if run.get("workers", 1) == count]
            for index, name in enumerate(runs[0]["endpoints"]):  # an endpoint's colour, a process count's line
                axes.plot([run["rate"] for run in runs],
                          [(run["endpoints"][name]["p99_s"] or float("nan")) * 1000 for run in runs],
                          marker="o", linestyle=style, color=f"C{index}",
                          label=f"{name} p99, {count} API process{'es' * (count > 1)}")
        axes.axhline(READ_P99_TARGET_S * 1000, color="grey", linestyle=":", label="target p99")
        axes.set_yscale("log")
        axes.set_xlabel("requests per second, open-loop, over the three endpoints in turn")
        axes.set_ylabel("ms from the request's due time to its answer")
        axes.set_title(
            f"Reads from careloop api: {reads['devices']:,} devices, {reads['readings']:,} readings", fontsize=10
        )
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        drawn.append(_save(figure, folder / "reads_p99.png"))
    return drawn


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    from matplotlib import pyplot

    pyplot.close(figure)
    return path


def faults_dict(figures: FaultFigures) -> dict:
    return {
        "drain_rate": figures.drain_rate, "devices": figures.devices,
        "rates": [rate.as_dict() for rate in figures.rates],
        "with_order_and_call": figures.with_order_and_call, "faulted": len(figures.faulted),
    }  # fmt: skip


def reads_dict(figures: ReadFigures) -> dict:
    return {
        "customers": figures.customers, "devices": figures.devices, "readings": figures.readings,
        "open_orders": figures.open_orders, "load_s": figures.load_seconds, "seconds": figures.seconds,
        "runs": [
            {"rate": run.rate, "workers": run.workers, "generator_late_s": run.late_s,
             "endpoints": {name: endpoint.as_dict() for name, endpoint in run.endpoints.items()}}
            for run in figures.runs
        ],
    }  # fmt: skip


def run_suite(args: argparse.Namespace) -> dict:
    """Every benchmark of the suite in turn; answers the results as latest.json holds them."""
    started = time.perf_counter()
    print(f"1/5 ingest drain: {args.drain_messages:,} messages queued, one ingester", flush=True)
    drain = measure_drain(args.drain_messages, 400)
    shares = [int(share) / 100 for share in args.fault_rates.split(",")]
    print(f"2/5 fault to action: {args.faults} faults at each of {args.fault_rates}% of the drain rate", flush=True)
    faults = measure_faults(
        shares=shares, faults=args.faults, seconds=args.fault_seconds, devices=args.fault_devices,
        drain_rate=drain["messages_per_s"], drain_messages=args.drain_messages, seed=12,
    )  # fmt: skip
    sizes = [int(size) for size in args.engine_devices.split(",") if size]
    urls = resolve_services(get_settings(), need_broker=False)
    engines = []
    for size in sizes:
        print(f"3/5 engine: {size:,} devices, {args.engine_days} days every {args.engine_every} s", flush=True)
        engines.append(engine_dict(
            measure_engine(urls.database_url, size, days=args.engine_days, every_s=args.engine_every, repeat=3)
        ))  # fmt: skip
    print(
        f"4/5 reads: {args.read_customers:,} customers, {args.read_devices:,} devices, {args.read_readings:,} "
        f"readings; {args.read_rates} requests/s for {args.read_seconds:g} s each, from {args.read_workers} API "
        "processes in turn",
        flush=True,
    )
    reads = measure_reads(
        customers=args.read_customers, devices=args.read_devices, readings=args.read_readings,
        rates=[float(rate) for rate in args.read_rates.split(",")], seconds=args.read_seconds,
        workers=[int(count) for count in args.read_workers.split(",")],
    )  # fmt: skip
    print(f"5/5 storage: {args.storage_devices:,} devices, {args.storage_days:g} days every {args.storage_every} s",
          flush=True)
    storage = measure_storage(urls.database_url, devices=args.storage_devices, days=args.storage_days,
                              every_s=args.storage_every)
    return {
        "ran_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cores": _cores(), "python": platform.python_version(), "system": platform.platform()},
        "seconds": time.perf_counter() - started,
        "ingest": drain,
        "faults": faults_dict(faults),
        "engine": engines,
        "reads": reads_dict(reads),
        "storage": storage.as_dict(),
        "sizing": sizing(drain, engines),
    }


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def bench_all(args: argparse.Namespace) -> int:
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    results = run_suite(args)
    (folder / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    drawn = draw(results, folder)
    print()
    print(
        f"careloop bench all: {results['machine']['cores']} cores, {results['seconds'] / 60:.1f} minutes; "
        f"PostgreSQL and broker from the environment"
    )
    print("\n".join(table(results)))
    print(f"wrote {folder / 'latest.json'} and {', '.join(path.name for path in drawn)}")
    return 0
