"""The `careloop` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from careloop.durations import Duration
from careloop.settings import ConfigError, get_settings

log = logging.getLogger("careloop")
DASHBOARD_ENTRY = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
# Default metrics ports, one per kind of process so they never collide on one machine (as in careloop.metrics,
# which the parser does not import: prometheus_client loads only for the commands that serve metrics).
INGEST_METRICS_PORT, ENGINE_METRICS_PORT, SIMULATOR_METRICS_PORT = 9101, 9102, 9103


def duration(text: str) -> Duration:
    """An argparse type: a positive duration such as 30s, 5m, 1h."""
    parsed = Duration.parse(text)
    if parsed.seconds <= 0:
        raise ValueError("a duration must be longer than 0s")
    return parsed


def at_least(minimum: int):
    """An argparse type: an integer no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def port(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def metrics_port(text: str) -> int:
    """An argparse type: a TCP port, or 0 for none."""
    return 0 if text.strip() == "0" else port(text)


class Parser(argparse.ArgumentParser):
    """Mistakes on the command line are one line naming the command and what is wrong, and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (--help shows the options)\n")


class CommandFailed(Exception):
    """A command cannot do what it was asked; the message is the one line the user sees (exit 1)."""


def _services(need_broker: bool = True):
    from careloop.runtime import resolve_services

    return resolve_services(get_settings(), need_broker=need_broker)


def _broker_accounts(mqtt_url: str):
    """Who issues devices' broker credentials: CARELOOP_MQTT_ADMIN_URL, else the embedded mosquitto's when
    `mqtt_url` is that broker; None (amqtt, or a broker without accounts)."""
    from careloop import embedded
    from careloop.mqtt import BrokerAccounts

    settings = get_settings()
    if settings.mqtt_admin_url is not None:
        return BrokerAccounts(str(settings.mqtt_admin_url))
    url = embedded.broker_admin_url(Path(settings.home), mqtt_url)
    return BrokerAccounts(url) if url else None


def _serve_metrics(args: argparse.Namespace, *, process_only: bool = False):
    """The command's Prometheus endpoint on --metrics-host:--metrics-port, or None when the port is 0 (off)."""
    from careloop.metrics import process_registry, serve_metrics

    if not args.metrics_port:
        return None
    registry = process_registry() if process_only else None
    try:
        return serve_metrics(args.metrics_port, args.metrics_host, registry=registry)
    except OSError as error:
        # Storing and evaluating matter more than being watched: go on, and say so loudly.
        log.error("no metrics: cannot listen on %s:%d (%s); choose another --metrics-port, or 0 for none",
                  args.metrics_host, args.metrics_port, error)
        return None


def add_metrics_options(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--metrics-port",
        type=metrics_port,
        default=default_port,
        help=f"serve Prometheus metrics at /metrics on this port; 0 turns them off (default {default_port})",
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address the metrics endpoint listens on (default 127.0.0.1)"
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from careloop.db import ensure_database, migrate

    urls = _services(need_broker=False)
    ensure_database(urls.database_url)
    applied = migrate(urls.database_url)
    print(f"schema up to date ({len(applied)} migration(s) applied: {', '.join(applied) or 'none'})")
    if args.with_catalog:
        from careloop.demo import load_rule_catalog

        print(load_rule_catalog(urls.database_url))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import datetime as dt

    from careloop.db import Database
    from careloop.heartbeat import Heartbeat
    from careloop.runtime import collect_cycles_rarely, freeze_what_is_loaded, stop_event_on_signals
    from ingest.subscriber import Ingester

    urls = _services()
    stop = stop_event_on_signals()
    database = Database(urls.database_url, max_connections=2)
    # A connection of its own: the heartbeat is never queued behind the writer's batches.
    heartbeat_database = Database(urls.database_url, max_connections=1)
    heartbeat = Heartbeat(heartbeat_database, process=f"ingest:{args.name}", kind="ingest")
    metrics_server = _serve_metrics(args)
    ingester = Ingester(
        database,
        urls.mqtt_url,
        name=args.name,
        share_group=args.share_group,
        batch_size=args.batch_size,
        quarantine_retention=dt.timedelta(seconds=args.quarantine_retention.seconds),
        quarantine_max_rows=args.quarantine_max_rows,
        heartbeat=heartbeat,
    )
    freeze_what_is_loaded()
    collect_cycles_rarely()
    heartbeat.start()
    if not wait_for_broker(urls.mqtt_url, stop, who=args.name):
        heartbeat.stop()
        return 0
    try:
        ingester.start()
    except OSError as error:
        # gone again between the probe and the connect: a fresh start (by the supervisor) waits for it again
        log.error("%s: the broker refused the connection (%s); exiting so the ingester is restarted", args.name,
                  error)
        heartbeat.stop(forget=False)
        return 1
    log.info("%s: ingesting; Ctrl-C or SIGTERM stops after the batch in hand", args.name)
    ticks = 0
    while not stop.wait(timeout=1):
        dead = ingester.dead_thread()
        if dead is not None:
            # Up but storing nothing is the worst state: exit so the supervisor starts a fresh process.
            log.critical("%s: essential thread %s died; exiting so the ingester is restarted", args.name, dead)
            ingester.stop(timeout_s=5)
            heartbeat.stop(forget=False)  # its row goes stale: /health says this ingester is gone
            return 1
        ticks += 1
        if ticks % 30 == 0:
            totals = ingester.totals
            log.info(
                "%s: %d messages, %d readings, %d events stored; %d duplicates; quarantined %s",
                args.name,
                totals.messages,
                totals.readings_stored,
                totals.events_stored,
                totals.readings_duplicate + totals.events_duplicate,
                dict(totals.quarantined) or 0,
            )
    ingester.stop()
    heartbeat.stop()
    if metrics_server is not None:
        metrics_server.close()
    database.close()
    heartbeat_database.close()
    return 0


def wait_for_broker(mqtt_url: str, stop, *, who: str, max_delay_s: float = 30) -> bool:
    """Wait until the broker accepts connections, saying once per try what is missing and when it tries again;
    False when stopped first."""
    import socket

    from careloop.mqtt import BrokerAddress

    address = BrokerAddress.from_url(mqtt_url)
    delay = 1.0
    while not stop.is_set():
        try:
            socket.create_connection((address.host, address.port), timeout=3).close()
            return True
        except OSError as error:
            reason = error.strerror or type(error).__name__
            log.warning("%s: the broker at %s:%d is not reachable (%s); trying again in %gs", who, address.host,
                        address.port, reason, delay)
        stop.wait(delay)
        delay = min(delay * 2, max_delay_s)
    return False


def partition_argument(text: str):
    """An argparse type: an engine partition `I/N`, e.g. 0/3."""
    from careloop.partitions import Partition

    try:
        return Partition.parse(text)
    except ValueError as error:  # argparse shows an ArgumentTypeError's own words, a ValueError's not
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_engine(args: argparse.Namespace) -> int:
    import json
    import socket

    from careloop.db import Database
    from careloop.heartbeat import Heartbeat
    from careloop.runtime import freeze_what_is_loaded, stop_event_on_signals
    from careloop.settings import get_settings
    from offers.jobs import JOBS as offer_jobs
    from rules.engine import Engine, EssentialThreadDied, Schedule
    from service_orders.jobs import JOBS as service_order_jobs

    jobs = [*service_order_jobs, *offer_jobs]
    urls = _services(need_broker=False)
    database = Database(urls.database_url, max_connections=3)
    schedule = Schedule(
        sweep_s=args.sweep_every.seconds,
        window_s=args.window_every.seconds,
        baselines_s=args.baselines_every.seconds,
        trends_s=args.trends_every.seconds,
    )
    partition = args.partition if args.partition is not None else get_settings().engine_partition
    if args.once:
        engine = Engine(database, schedule=schedule, jobs=jobs, partition=partition)
        try:
            print(json.dumps(engine.run_once(), indent=2))
        finally:
            database.close()
        return 0
    # Several engines may run at once: each is named by its host and pid, and its partition when it has one.
    heartbeat_database = Database(urls.database_url, max_connections=1)
    name = "engine" if partition is None else f"engine[{partition}]"
    heartbeat = Heartbeat(
        heartbeat_database, process=f"{name}:{socket.gethostname()}-{os.getpid()}", kind="engine", named_by_pid=True
    )
    heartbeat.record(partition=str(partition) if partition is not None else "all")
    metrics_server = _serve_metrics(args)
    engine = Engine(database, schedule=schedule, heartbeat=heartbeat, jobs=jobs, partition=partition)
    freeze_what_is_loaded()
    heartbeat.start()
    try:
        engine.serve(stop_event_on_signals(), database_url=urls.database_url)
    except EssentialThreadDied:
        log.critical("the engine cannot go on; exiting so it is restarted", exc_info=True)
        heartbeat.stop(forget=False)  # its row goes stale: /health says this engine is gone
        return 1
    finally:
        if metrics_server is not None:
            metrics_server.close()
        database.close()
    heartbeat.stop()
    heartbeat_database.close()
    return 0


# `careloop api --workers N` tells the processes it starts how many they are, so each takes its share of the limits.
API_PROCESSES = "CARELOOP_API_PROCESSES"


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    problem = (
        admin_token_problem(args.host, token)
        or database_password_problem(args.host, settings.database_url)
        or api_tls_problem(*_api_tls(args))
        or api_workers_problem(args.workers)
    )
    if problem is not None:
        print(f"careloop api: {problem}", file=sys.stderr)
        return 2
    urls = _services()
    # Every process builds its app from the environment (api_app): the servers resolved here go there, so none of
    # them starts (or races to start) the embedded ones again.
    os.environ.update({"CARELOOP_DATABASE_URL": urls.database_url, API_PROCESSES: str(args.workers)})
    if urls.mqtt_url:
        os.environ["CARELOOP_MQTT_URL"] = urls.mqtt_url
    get_settings.cache_clear()
    tls_cert, tls_key = _api_tls(args)
    # The client's address is the connection's: X-Forwarded-For is not believed (uvicorn believes it from
    # 127.0.0.1 by default), so nothing on this host can pose as other addresses to the per-address limits.
    uvicorn.run("careloop.cli:api_app", factory=True, workers=args.workers if args.workers > 1 else None,
                host=args.host, port=args.port, log_level="info", proxy_headers=False, ssl_certfile=tls_cert,
                ssl_keyfile=tls_key)
    return 0


def _api_tls(args: argparse.Namespace) -> tuple[str | None, str | None]:
    settings = get_settings()
    tls_cert = args.tls_cert or (str(settings.api_tls_cert) if settings.api_tls_cert else None)
    tls_key = args.tls_key or (str(settings.api_tls_key) if settings.api_tls_key else None)
    return tls_cert, tls_key


def api_workers_problem(workers: int) -> str | None:
    """Why the limits cannot be shared among `workers` API processes, or None. Each process keeps its own
    counters, so each takes an equal share of every limit: together they never allow more than configured."""
    settings = get_settings()
    for name, limit in (("CARELOOP_AUTH_FAILURES_PER_MINUTE", settings.auth_failures_per_minute),
                        ("CARELOOP_REDEMPTIONS_PER_MINUTE", settings.redemptions_per_minute),
                        ("CARELOOP_BACKTESTS_PER_ROLE", settings.backtests_per_role)):
        if limit < workers:
            return (f"--workers {workers} cannot share {name}={limit} among {workers} processes (each takes an equal "
                    f"share); raise it to at least {workers} or run fewer workers")
    return None


def api_processes() -> int:
    """How many API processes `careloop api --workers` started; one for a process started another way (uvicorn by
    hand) or with a count that is no whole number."""
    given = os.environ.get(API_PROCESSES, "").strip()
    return max(int(given), 1) if given.isascii() and given.isdigit() else 1


def share_of_limit(limit: int, processes: int) -> int:
    """One process's share of a per-client limit: never more than limit / processes, so together they allow no
    more than one would, and never 0 (cmd_api refuses more processes than a limit can be shared among)."""
    return max(limit // processes, 1)


def api_app():
    """The API of one `careloop api` process, built from the environment (uvicorn calls this in each worker)."""
    import contextlib

    from careloop.app import RedactedAccessLog, create_app
    from careloop.db import Database
    from careloop.deps import ApiLimits
    from careloop.runtime import freeze_what_is_loaded

    settings = get_settings()
    processes = api_processes()
    urls = _services()
    # The pool connects on first use, so the API starts (and answers 503) while the database is down; the limits
    # bound every wait on the database so an outage never hangs a request.
    database = Database(urls.database_url, limits=settings.session_limits())
    limits = ApiLimits(
        auth_failures_per_minute=share_of_limit(settings.auth_failures_per_minute, processes),
        redemptions_per_minute=share_of_limit(settings.redemptions_per_minute, processes),
        backtests_per_role=share_of_limit(settings.backtests_per_role, processes),
        backtest_timeout_s=settings.backtest_timeout_s,
        requests_in_progress=settings.api_requests_in_progress,
        requests_in_progress_per_client=settings.api_requests_in_progress_per_client,
    )
    app = create_app(database, admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
                     mqtt_url=urls.mqtt_url, limits=limits, broker_accounts=_broker_accounts(urls.mqtt_url))
    logging.getLogger("uvicorn.access").addFilter(RedactedAccessLog())  # no unsubscribe tokens in the log

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        app.state.backtests.close()
        app.state.reports.close()
        database.close()

    app.router.lifespan_context = lifespan
    freeze_what_is_loaded()
    return app


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_ADMIN_TOKENS = ("change-me", "changeme", "admin", "secret", "password")
MIN_NETWORK_ADMIN_TOKEN = 24


def admin_token_problem(host: str, token: str | None) -> str | None:
    """Why an API listening on `host` must not start with this admin token, or None. On loopback anything goes
    (a newcomer's first run); facing a network, the bootstrap admin token must be long and not a default."""
    if host in LOOPBACK_HOSTS:
        return None
    where = f"listening on {host} (not loopback)"
    if token is None:
        return (f"{where} needs CARELOOP_ADMIN_TOKEN set to a random secret of at least {MIN_NETWORK_ADMIN_TOKEN} "
                "characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if token.lower() in DEFAULT_ADMIN_TOKENS:
        return f"{where}: CARELOOP_ADMIN_TOKEN is the default {token!r}; set it to a random secret"
    if len(token) < MIN_NETWORK_ADMIN_TOKEN:
        return (f"{where}: CARELOOP_ADMIN_TOKEN is {len(token)} characters; set it to a random secret of at least "
                f"{MIN_NETWORK_ADMIN_TOKEN}")
    return None


DEFAULT_DATABASE_PASSWORDS = ("careloop", "postgres", "password", "change-me")


def database_password_problem(host: str, database_url: str | None) -> str | None:
    """Why an API listening on `host` must not start with this database URL (a shipped default password), or
    None. Loopback is a first run's, where the defaults are fine."""
    from urllib.parse import urlsplit

    if host in LOOPBACK_HOSTS or not database_url:
        return None
    password = urlsplit(database_url).password
    if password is not None and password.lower() in DEFAULT_DATABASE_PASSWORDS:
        return (f"listening on {host} (not loopback): CARELOOP_DATABASE_URL uses the default database password "
                f"{password!r}; set the database user's password to a random secret and put it in the URL")
    return None


def cmd_dashboard(args: argparse.Namespace) -> int:
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD_ENTRY),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    # exec, not a child: a stop signal then reaches Streamlit itself
    os.execv(sys.executable, command)
    return 0


def _issue_fleet_credentials(urls, fleet) -> dict[str, str] | None:
    """New broker credentials for each simulated device (the simulator then signs each in as itself), where a
    credential issuer is known; None otherwise (one connection with the account of CARELOOP_MQTT_URL)."""
    from careloop.db import Database
    from devices.credentials import issue_device_credentials

    accounts = _broker_accounts(urls.mqtt_url)
    if accounts is None:
        return None
    database = Database(urls.database_url)
    try:
        with database.transaction() as conn:
            issued = issue_device_credentials(conn, [device.device_id for device in fleet], accounts=accounts,
                                              issued_by="careloop simulate")
    finally:
        database.close()
    return {device_id: credential.password for device_id, credential in issued.items()}


def cmd_simulate(args: argparse.Namespace) -> int:
    from careloop.demo import register_fleet
    from careloop.runtime import stop_event_on_signals
    from simulators.fleet import make_fleet
    from simulators.run import run_simulation

    urls = _services()
    fleet = make_fleet(args.devices, seed=args.seed)
    register_fleet(urls.database_url, fleet, seed=args.seed)
    device_passwords = _issue_fleet_credentials(urls, fleet)
    stop = stop_event_on_signals()
    # Process metrics only (CPU, memory, start time): enough for its health check and to watch it.
    metrics_server = _serve_metrics(args, process_only=True)
    run_simulation(
        urls.mqtt_url,
        fleet,
        rate=args.rate,
        time_scale=args.time_scale,
        faults=args.faults,
        seed=args.seed,
        ground_truth_path=Path(args.ground_truth) if args.ground_truth else None,
        stop=stop,
        duration=args.duration,
        # Kept across restarts so each device's seq keeps rising instead of starting again at 1.
        state_path=Path(args.state) if args.state else Path(get_settings().home) / "simulator_state.json",
        progress=sys.stderr.isatty(),
        initial_faults=args.initial_faults,
        device_passwords=device_passwords,
    )
    if metrics_server is not None:
        metrics_server.close()
    return 0


def api_tls_problem(cert: str | None, key: str | None) -> str | None:
    """Why the API cannot serve HTTPS with this certificate and key, or None (both given and they match, or
    neither: plain HTTP)."""
    import ssl

    if cert is None and key is None:
        return None
    if cert is None or key is None:
        return ("--tls-cert (CARELOOP_API_TLS_CERT) and --tls-key (CARELOOP_API_TLS_KEY) go together; "
                f"{'the key' if key is None else 'the certificate'} is missing")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        return f"--tls-cert/--tls-key: cannot serve HTTPS with {cert} and {key}: {error}"
    return None


def cmd_broker_accounts(args: argparse.Namespace) -> int:
    """The broker's whole account file rebuilt from the registry (after its volume was lost, or to move it)."""
    import json

    from careloop.db import Database
    from careloop.mqtt import ADMIN_USER, SERVICE_USER
    from devices.credentials import dynsec_file_from_registry

    passwords = {}
    for account, variable in ((SERVICE_USER, "CARELOOP_MQTT_SERVICE_PASSWORD"),
                              (ADMIN_USER, "CARELOOP_MQTT_ADMIN_PASSWORD")):
        passwords[account] = os.environ.get(variable, "")
        if len(passwords[account]) < 16:
            raise CommandFailed(f"{variable}: set the password of the broker's {account} account (16 or more)")
    urls = _services(need_broker=False)
    database = Database(urls.database_url)
    try:
        with database.transaction() as conn:
            config = dynsec_file_from_registry(conn, service_password=passwords[SERVICE_USER],
                                               admin_password=passwords[ADMIN_USER])
    finally:
        database.close()
    target = Path(args.write)
    target.write_text(json.dumps(config, indent=2))
    target.chmod(0o600)
    devices = len(config["clients"]) - 2
    print(f"{target}: the accounts {SERVICE_USER} and {ADMIN_USER} and {devices} devices; put it where the broker's "
          "plugin_opt_config_file points and restart the broker")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """A CA and a server certificate for a first run with TLS (README, TLS)."""
    from careloop.tls import (
        DEFAULT_HOSTS,
        CertificateFiles,
        CertificatesExist,
        UnsafeFolder,
        describe,
        write_certificates,
    )

    owner = None
    if args.owner:
        uid, _, gid = args.owner.partition(":")
        try:
            owner = (int(uid), int(gid or uid))
        except ValueError:
            raise CommandFailed(f"--owner: {args.owner!r} is not UID:GID, e.g. 1883:1883") from None
    try:
        files = write_certificates(Path(args.out), args.host or DEFAULT_HOSTS,
                                   replace=args.replace, owner=owner)
    except CertificatesExist as existing:
        if args.if_missing:
            print(f"{args.out}: certificates exist, kept")
            for line in describe(CertificateFiles(Path(args.out))):
                print(line)
            return 0
        raise CommandFailed(f"{existing} exist: kept (--replace writes new ones; every client must then trust "
                            "the new ca.crt)") from None
    except UnsafeFolder as error:
        raise CommandFailed(f"--out: {error}") from None
    except ValueError as error:
        raise CommandFailed(f"--host: {error}") from None
    for line in describe(files):
        print(line)
    print(f"clients trust {files.ca_cert} (CARELOOP_MQTT_CA, sslrootcert=, httpx verify=); servers use "
          f"{files.server_cert} and {files.server_key}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    import datetime as dt

    from careloop.auth import create_token, list_tokens, revoke_token
    from careloop.db import Database

    if not (args.list or args.revoke or args.role):
        print("careloop token: give --role to create a token, --list to list them, or --revoke ID to revoke one",
              file=sys.stderr)
        return 2
    database = Database(_services(need_broker=False).database_url, max_connections=1)
    try:
        with database.transaction() as conn:
            if args.list:
                print_tokens(list_tokens(conn, include_revoked=args.all))
            elif args.revoke:
                revoked = revoke_token(conn, args.revoke, by=args.name)
                print(f"revoked token {revoked.id} ({revoked.prefix or '?'}..., {revoked.role}, {revoked.name})",
                      file=sys.stderr)
            else:
                print(create_token(conn, role=args.role, name=args.name, technician_id=args.technician_id,
                                   customer_id=args.customer_id,
                                   expires_in=dt.timedelta(seconds=args.expires_in.seconds), created_by="cli"))
    except (ValueError, LookupError) as error:
        print(f"careloop token: {str(error).strip(chr(39))}", file=sys.stderr)
        return 2
    finally:
        database.close()
    return 0


def print_tokens(tokens) -> None:
    """One token a line: id, prefix, role, name, the technician or customer it names, expiry, revocation; never the
    token itself."""
    print(f"{'id':>5}  {'prefix':<14} {'role':<11} {'name':<24} {'of':>7}  {'expires (UTC)':<16}  revoked")
    for token in tokens:
        revoked = f"{token.revoked_at:%Y-%m-%d %H:%M} by {token.revoked_by}" if token.revoked_at else "-"
        # technician 4 is "t4", customer 17 is "c17"
        of = (f"t{token.technician_id}" if token.technician_id else f"c{token.customer_id}" if token.customer_id
              else "-")
        print(f"{token.id:>5}  {(token.prefix or '?') + '...':<14} {token.role:<11} {token.name[:24]:<24} "
              f"{of:>7}  {token.expires_at:%Y-%m-%d %H:%M}  {revoked}")


def cmd_demo(args: argparse.Namespace) -> int:
    from careloop.demo import run_demo

    return run_demo(
        devices=args.devices, rate=args.rate, seed=args.seed, api_port=args.api_port, dashboard_port=args.dashboard_port
    )


# Each benchmark: its module in the top-level bench/ package and the function that runs it.
BENCHMARKS = {name: (f"bench.{name}", f"bench_{name}") for name in (
    "ingest", "engine", "detection", "chaos", "offers", "proactive", "security", "faults", "reads", "storage",
    "all", "partitions",
)}


def cmd_bench(args: argparse.Namespace) -> int:
    # The benchmarks live in the top-level bench/ package, which nothing else imports (an import-linter
    # contract): a benchmark's module is imported here only when it is asked for.
    if args.bench not in BENCHMARKS:
        raise SystemExit(f"careloop bench: no benchmark {args.bench!r}")
    module, function = BENCHMARKS[args.bench]
    return getattr(importlib.import_module(module), function)(args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="careloop",
        description="CareLoop: listens to connected appliances over MQTT, stores their telemetry, "
        "finds faults and maintenance windows, and serves dispatchers and marketers. "
        "Services are found through CARELOOP_DATABASE_URL and CARELOOP_MQTT_URL; where one is "
        "not set, an embedded PostgreSQL or broker starts under CARELOOP_HOME (./.careloop).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="everything on one machine: services, demo fleet, simulator, "
        "ingest, API and dashboard; prints the URLs and an admin token",
    )
    demo.add_argument("--devices", type=at_least(1), default=200, help="size of the demo fleet (default 200)")
    demo.add_argument("--rate", type=float, default=0.1, help="messages per device per second (default 0.1)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the demo fleet and its physics")
    demo.add_argument("--api-port", type=port, default=8000, help="port of the API on 127.0.0.1 (default 8000)")
    demo.add_argument(
        "--dashboard-port", type=port, default=8501, help="port of the dashboard on 127.0.0.1 (default 8501)"
    )
    demo.set_defaults(handler=cmd_demo)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date (idempotent)")
    migrate.add_argument("--with-catalog", action="store_true", help="also load the built-in rule catalog")
    migrate.set_defaults(handler=cmd_migrate)

    ingest = commands.add_parser(
        "ingest", help="the MQTT ingester (several may run side by side, each with its own --name)"
    )
    ingest.add_argument(
        "--name",
        default=os.environ.get("CARELOOP_INGEST_NAME", "ingest-1"),
        help="stable name: the broker keeps this ingester's session and queue under it "
        "while it restarts (default ingest-1)",
    )
    ingest.add_argument(
        "--share-group",
        default="careloop-ingest",
        help="MQTT 5 shared-subscription group; ingesters in one group split the load",
    )
    ingest.add_argument("--batch-size", type=at_least(1), default=1000, help="messages per transaction (default 1000)")
    ingest.add_argument(
        "--quarantine-retention",
        type=duration,
        default=duration("30d"),
        help="how long rejected messages are kept in quarantine (default 30d)",
    )
    ingest.add_argument(
        "--quarantine-max-rows",
        type=at_least(1),
        default=1_000_000,
        help="quarantine keeps at most this many of the newest rejected messages (default 1,000,000)",
    )
    add_metrics_options(ingest, INGEST_METRICS_PORT)
    ingest.set_defaults(handler=cmd_ingest)

    engine = commands.add_parser(
        "engine",
        help="the rule engine: event-driven rules per ingest batch, every rule on a schedule",
        description="Evaluates the enabled rules and opens, keeps and clears detections. Threshold, fault "
        "and offline rules run for the devices of each committed ingest batch and over the whole fleet every "
        "--sweep-every; the other rules (usage, elapsed, age, count, trend, anomaly, birthday) over the whole "
        "fleet every --window-every. Model baselines and per-device trend fits are relearned on their own "
        "schedules. It also runs the domains' jobs: detections' actions carried out (a service order and a "
        "call task, within the second of the detection), overdue orders escalated every minute, and completed "
        "repairs checked against the telemetry every 5 minutes; offers issued for detections' `offer` actions "
        "(within the second), offers held for open service released and expired ones marked every 5 minutes, the "
        "outbox delivered every 5 seconds (SMTP: CARELOOP_SMTP_URL, CARELOOP_MAIL_FROM; webhooks: POST /webhooks), "
        "customer segments recomputed every 6 hours. Restarts and several engines at once never open a detection, "
        "an order, a call or an offer twice. With --partition I/N, several engines share one fleet (see there).",
    )
    engine.add_argument(
        "--partition",
        type=partition_argument,
        default=None,
        metavar="I/N",
        help="evaluate only partition I of N (counting from 0: run 0/N, 1/N ... N-1/N, all with the same N): the "
        "devices whose id hashes to I modulo N, for every job (each ingest batch's devices, the sweep, the window, "
        "the trend fits). Partition 0 also runs what is not about one device: the baselines and the domains' "
        "jobs above. Default: CARELOOP_ENGINE_PARTITION, else the whole fleet",
    )
    engine.add_argument(
        "--once",
        action="store_true",
        help="learn baselines and trend fits, evaluate every rule once over the whole fleet, "
        "print a JSON summary and exit",
    )
    engine.add_argument(
        "--sweep-every",
        type=duration,
        default=duration("1m"),
        help="threshold, fault and offline rules over the whole fleet: silent devices send no batch (default 1m)",
    )
    engine.add_argument(
        "--window-every",
        type=duration,
        default=duration("5m"),
        help="the time-window rules over the whole fleet (default 5m)",
    )
    engine.add_argument(
        "--baselines-every", type=duration, default=duration("1h"), help="relearn the per-model baselines (default 1h)"
    )
    engine.add_argument(
        "--trends-every",
        type=duration,
        default=duration("1h"),
        help="refit the per-device lines trend rules project (default 1h)",
    )
    add_metrics_options(engine, ENGINE_METRICS_PORT)
    engine.set_defaults(handler=cmd_engine)

    api = commands.add_parser("api", help="the HTTP API (OpenAPI docs at /docs)")
    api.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on (default 127.0.0.1); any other needs a strong CARELOOP_ADMIN_TOKEN",
    )
    api.add_argument("--port", type=port, default=8000)
    api.add_argument("--tls-cert", metavar="FILE", default=None,
                     help="serve HTTPS with this certificate (PEM; default CARELOOP_API_TLS_CERT; `careloop certs` "
                     "makes one)")
    api.add_argument("--tls-key", metavar="FILE", default=None,
                     help="the certificate's private key (default CARELOOP_API_TLS_KEY)")
    api.add_argument("--workers", type=at_least(1), default=1, metavar="N",
                     help="API processes serving the port (default 1): one uses about one core; each takes an equal "
                     "share of the per-client limits, so together they allow what one would")
    api.set_defaults(handler=cmd_api)

    dashboard = commands.add_parser("dashboard", help="the dispatcher dashboard (Streamlit)")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=port, default=8501)
    dashboard.set_defaults(handler=cmd_dashboard)

    simulate = commands.add_parser("simulate", help="a fleet of simulated appliances publishing over MQTT")
    simulate.add_argument("--devices", type=at_least(1), required=True, help="how many appliances")
    simulate.add_argument("--rate", type=float, default=0.2, help="messages per device per second (default 0.2)")
    simulate.add_argument(
        "--faults",
        default=None,
        help="faults to inject, e.g. 'E21:0.05,F12:0.02' (probability per device per simulated day) or 'all:0.01'",
    )
    simulate.add_argument("--seed", type=int, default=7, help="seed: the same seed gives the same fleet")
    simulate.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    simulate.add_argument("--ground-truth", default=None, help="JSON-lines file for the injected faults")
    simulate.add_argument(
        "--state",
        default=None,
        help="where the fleet's state is kept between runs (default CARELOOP_HOME/simulator_state.json)",
    )
    simulate.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    simulate.add_argument(
        "--initial-faults", type=int, default=0, help="devices that get a fault of their model at once (default 0)"
    )
    add_metrics_options(simulate, SIMULATOR_METRICS_PORT)
    simulate.set_defaults(handler=cmd_simulate)

    token = commands.add_parser(
        "token", help="create an API token with a role and print it; or list or revoke tokens",
        description="Creates a token (printed alone on stdout, shown this once) that expires after --expires-in; "
        "--list shows the tokens without the tokens themselves; --revoke ends one at once.",
    )
    from careloop.auth import ROLES  # the roles a token may grant are auth's to list

    token.add_argument("--role", choices=ROLES)
    token.add_argument("--name", default="cli", help="who or what the token is for (kept in every history it "
                       "changes); with --revoke, who revokes")
    token.add_argument(
        "--technician-id", type=at_least(1), default=None,
        help="with --role technician: the technician (GET /technicians)",
    )
    token.add_argument(
        "--customer-id", type=at_least(1), default=None,
        help="with --role customer (required): the customer the token is bound to; it sees only their own "
        "profile, devices, offers and coupons",
    )
    token.add_argument("--expires-in", type=duration, default=duration("90d"),
                       help="how long the token is valid, e.g. 30d, 12h (default 90d, at most 3650d)")
    token.add_argument("--list", action="store_true", help="list the tokens (never the tokens themselves)")
    token.add_argument("--all", action="store_true", help="with --list: revoked ones too")
    token.add_argument("--revoke", metavar="ID_OR_PREFIX", help="revoke a token by its id or its first characters")
    token.set_defaults(handler=cmd_token)

    certs = commands.add_parser(
        "certs", help="a CA and a server certificate for TLS on the broker, the API and the database",
        description="Writes a new certificate authority (ca.crt, ca.key) and a server certificate signed by it "
        "(server.crt, server.key) for the host names and addresses given, into a folder. Keys are ECDSA P-256, "
        "unencrypted and mode 0600. Servers use server.crt and server.key (mosquitto's certfile/keyfile, careloop "
        "api --tls-cert/--tls-key, PostgreSQL's ssl_cert_file/ssl_key_file); clients trust ca.crt "
        "(CARELOOP_MQTT_CA, sslrootcert= in the database URL). Certificates already in the folder are kept: the "
        "command refuses (exit 1) unless --replace, or does nothing with --if-missing. Keep ca.key away from "
        "the servers: whoever holds it can make certificates every client trusts.",
    )
    certs.add_argument("--out", required=True, metavar="FOLDER", help="where the four files go (created)")
    certs.add_argument("--host", action="append", metavar="NAME_OR_IP",
                       help="a name or address clients reach the server by; repeat for each (default localhost, "
                       "127.0.0.1 and ::1). Clients check it, so name every one they use")
    certs.add_argument("--replace", action="store_true", help="replace certificates already in the folder")
    certs.add_argument("--if-missing", action="store_true",
                       help="when certificates are already there, keep them and exit 0 (for a first-start step)")
    certs.add_argument("--owner", metavar="UID:GID", help="hand the files to this user (1883:1883 for the "
                       "eclipse-mosquitto image, which must read server.key)")
    certs.set_defaults(handler=cmd_certs)

    broker_accounts = commands.add_parser(
        "broker-accounts", help="rebuild the broker's account file (dynamic-security plugin) from the registry")
    broker_accounts.add_argument("--write", required=True, metavar="FILE",
                                 help="where to write it (e.g. the broker volume's dynamic-security.json)")
    broker_accounts.set_defaults(handler=cmd_broker_accounts)

    bench = commands.add_parser("bench", help="the benchmarks; they print figures and ratios")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    ingest_bench = benches.add_parser("ingest", help="MQTT publish-to-commit throughput against raw limits")
    ingest_bench.add_argument("--messages", type=int, default=40_000, help="messages to publish in all")
    ingest_bench.add_argument("--publishers", type=int, default=4,
                              help="publishing processes of the drain (live: one paced publisher)")
    ingest_bench.add_argument("--devices", type=int, default=400, help="distinct devices")
    ingest_bench.add_argument("--ingesters", type=int, default=1, help="ingesters sharing the subscription")
    ingest_bench.add_argument(
        "--processes", action="store_true",
        help="run each ingester as a `careloop ingest` process of its own, as deployed (default: threads of this "
             "process, which share one interpreter); timed from the first commit to the last",
    )
    ingest_bench.add_argument(
        "--mode", choices=("drain", "live"), default="drain",
        help="drain (default): queue every message in the broker first, then time the ingesters emptying it; "
             "live: the drain, then publish at fixed shares of the ingest drain rate (--rates) and time each "
             "message from publish to commit (p50, p99, max)",
    )
    ingest_bench.add_argument("--rates", default="25,50,90",
                              help="live: offered rates, %% of the ingest drain rate (default 25,50,90)")
    ingest_bench.add_argument(
        "--drain-rate", type=float, default=None,
        help="live: the messages/s the --rates are shares of (default: the ingest drain this run measures; a fixed "
             "one offers the same rates to two versions of the code)",
    )
    ingest_bench.add_argument("--seconds", type=float, default=10.0,
                              help="live: how long each rate runs (default 10)")
    ingest_bench.add_argument(
        "--live-devices", type=int, default=2000,
        help="live: devices publishing at each rate, none of them at another (default 2000: a device's messages "
             "then come 0.1 s apart at 20,000 messages/s)",
    )
    engine_bench = benches.add_parser(
        "engine", help="time of one scheduled evaluation of the built-in catalog over large generated fleets"
    )
    engine_bench.add_argument("--devices", default="10000,100000", help="fleet sizes, comma-separated")
    engine_bench.add_argument("--days", type=int, default=7, help="days of history (default 7)")
    engine_bench.add_argument("--every", type=int, default=3600, help="seconds between readings (default 3600)")
    engine_bench.add_argument("--repeat", type=int, default=3, help="evaluations timed per size")
    detection_bench = benches.add_parser(
        "detection", help="recall, precision and time to detect against injected faults with known ground truth"
    )
    detection_bench.add_argument("--devices", type=int, default=300, help="simulated devices (default 300)")
    detection_bench.add_argument("--days", type=float, default=10, help="simulated days (default 10)")
    detection_bench.add_argument("--step", type=int, default=900, help="seconds between engine ticks (default 900)")
    detection_bench.add_argument("--faults", default="all:0.05", help="fault spec as for simulate (default all:0.05)")
    detection_bench.add_argument("--seed", type=int, default=11)
    detection_bench.add_argument(
        "--live-faults", type=int, default=50, help="faults published over MQTT to time the live path (default 50)"
    )
    chaos_bench = benches.add_parser(
        "chaos",
        help="ingest while the ingester is SIGKILLed and PostgreSQL and Mosquitto restart: stored, duplicates, gaps",
        description="Against a PostgreSQL and a Mosquitto of its own (never the machine's shared ones), devices "
        "publish readings at QoS 1 while the ingester is SIGKILLed --kills times (once between a batch's commit "
        "and its ack), PostgreSQL is restarted in immediate mode and Mosquitto is restarted. Prints readings "
        "stored, duplicates, redeliveries seen, the longest ingest stall and every seq gap, and whether each "
        "guarantee held.",
    )
    chaos_bench.add_argument("--readings", type=int, default=100_000, help="readings to publish (default 100000)")
    chaos_bench.add_argument("--devices", type=int, default=200, help="devices publishing them (default 200)")
    chaos_bench.add_argument(
        "--kills", type=int, default=5, help="ingester SIGKILLs, one of them between commit and ack (default 5)"
    )
    chaos_bench.add_argument("--seed", type=int, default=14, help="seed of the fault times and pauses (default 14)")
    offers_bench = benches.add_parser(
        "offers",
        help="a simulated year of offers for many customers whose true response is known: does the report's uplift "
        "against the holdout land within its interval of the truth?",
    )
    offers_bench.add_argument("--customers", type=int, default=10_000, help="simulated customers (default 10000)")
    offers_bench.add_argument("--days", type=int, default=365, help="simulated days (default 365)")
    offers_bench.add_argument("--seed", type=int, default=10, help="seed of the customers and their responses")
    proactive_bench = benches.add_parser(
        "proactive",
        help="weeks of a fleet with sudden and gradual faults: does our call reach the owner before they call us",
    )
    proactive_bench.add_argument("--devices", type=int, default=300, help="simulated devices (default 300)")
    proactive_bench.add_argument("--days", type=float, default=28, help="simulated days scored (default 28)")
    proactive_bench.add_argument("--step", type=int, default=900, help="seconds between engine ticks (default 900)")
    proactive_bench.add_argument(
        "--history-days", type=float, default=7, help="days of hourly telemetry ingested before the engine starts"
    )
    proactive_bench.add_argument(
        "--warmup-days", type=float, default=2, help="days the engine runs before the scored ones (default 2)"
    )
    proactive_bench.add_argument("--faults", default="all:0.05", help="sudden fault spec as for simulate (all:0.05)")
    proactive_bench.add_argument("--seed", type=int, default=11)
    proactive_bench.add_argument(
        "--ahead-days", type=float, default=14, help="a call up to this long before a failure is about it (default 14)"
    )
    proactive_bench.add_argument(
        "--owner-median-h", type=float, default=6, help="the owner's median delay before calling us, in waking hours"
    )
    proactive_bench.add_argument(
        "--dispatcher-median-min", type=float, default=30, help="a dispatcher's median delay before calling (minutes)"
    )
    proactive_bench.add_argument(
        "--live-faults", type=int, default=100, help="faults published over MQTT to time the live path (default 100)"
    )
    proactive_bench.add_argument(
        "--live-rate", type=float, default=100, help="background telemetry messages per second while timing"
    )
    security_bench = benches.add_parser(
        "security",
        help="many backtests at once against a running `careloop api` on loopback: /health's latency meanwhile",
    )
    security_bench.add_argument("--concurrency", type=at_least(1), default=50,
                                help="clients posting backtests at once (default 50)")
    security_bench.add_argument("--seconds", type=float, default=20, help="how long they post (default 20)")
    security_bench.add_argument("--quiet-seconds", type=float, default=3,
                                help="/health measured alone first, for this long (default 3)")
    security_bench.add_argument("--health-every", type=float, default=0.05,
                                help="seconds between /health requests (default 0.05)")
    security_bench.add_argument("--devices", type=at_least(1), default=200, help="devices in the fleet (default 200)")
    security_bench.add_argument("--days", type=at_least(1), default=7,
                                help="days of hourly readings each backtest replays (default 7)")
    faults_bench = benches.add_parser(
        "faults",
        help="fault published over MQTT to its service order and call task visible through the API, at shares of "
        "the ingest drain rate",
    )
    faults_bench.add_argument("--rates", default="10,50,90",
                              help="percentages of the ingest drain rate to publish at (default 10,50,90)")
    faults_bench.add_argument("--faults", type=at_least(1), default=50, help="faults timed at each rate (default 50)")
    faults_bench.add_argument("--seconds", type=float, default=20,
                              help="seconds of telemetry at each rate, the faults spread over them (default 20)")
    faults_bench.add_argument("--devices", type=at_least(1), default=400,
                              help="devices reporting (at least one per fault and 50 more; default 400)")
    faults_bench.add_argument("--drain-rate", type=float, default=None,
                              help="messages/s one ingester drains; measured first in the same run when not given")
    faults_bench.add_argument("--drain-messages", type=at_least(1), default=20_000,
                              help="messages queued and drained to measure the drain rate (default 20000)")
    faults_bench.add_argument("--seed", type=int, default=12)
    reads_bench = benches.add_parser(
        "reads",
        help="the customer 360, a device's 30-day telemetry and the dispatch board from a real `careloop api` over a "
        "large fleet, at a fixed request rate",
    )
    reads_bench.add_argument("--customers", type=at_least(1), default=100_000, help="customers (default 100000)")
    reads_bench.add_argument("--devices", type=at_least(1), default=300_000, help="devices (default 300000)")
    reads_bench.add_argument("--readings", type=at_least(1), default=50_000_000,
                             help="readings over 30 days, about (default 50000000)")
    reads_bench.add_argument("--rate", default="50",
                             help="requests per second, open-loop; a list (10,25,50) runs each in turn (default 50)")
    reads_bench.add_argument("--seconds", type=float, default=30, help="how long the load runs (default 30)")
    reads_bench.add_argument("--api-workers", default="1",
                             help="`careloop api --workers`; a list (1,2) runs the rates against each in turn "
                             "(default 1)")
    storage_bench = benches.add_parser(
        "storage",
        help="bytes per reading and a device's chart read, as written and after TimescaleDB compression",
        description="Generates a fleet's history in a database of its own, prints the bytes telemetry takes per "
        "reading with its indexes and the time of a device's chart over the whole history (6-hour averages); where "
        "telemetry is a TimescaleDB hypertable, compresses every chunk and measures both again.",
    )
    storage_bench.add_argument("--devices", type=at_least(1), default=200, help="devices (default 200)")
    storage_bench.add_argument("--days", type=float, default=7, help="days of history (default 7)")
    storage_bench.add_argument("--every", type=at_least(1), default=60,
                               help="seconds between a metric's readings (default 60)")
    storage_bench.add_argument("--charts", type=at_least(1), default=200, help="charts read each time (default 200)")
    all_bench = benches.add_parser(
        "all",
        help="the performance suite at a modest size: ingest drain, faults, engine, reads, storage; one table, "
        "bench/results/latest.json and PNG curves",
    )
    all_bench.add_argument("--out", default="bench/results", help="where latest.json and the PNGs go")
    all_bench.add_argument("--drain-messages", type=at_least(1), default=20_000,
                           help="messages drained by one ingester (default 20000)")
    all_bench.add_argument("--fault-rates", default="10,50,90", help="percentages of the drain rate (10,50,90)")
    all_bench.add_argument("--faults", type=at_least(1), default=30, help="faults timed per rate (default 30)")
    all_bench.add_argument("--fault-seconds", type=float, default=15, help="seconds per rate (default 15)")
    all_bench.add_argument("--fault-devices", type=at_least(1), default=300, help="devices reporting (default 300)")
    all_bench.add_argument("--engine-devices", default="1000,10000,30000",
                           help="engine fleet sizes, comma-separated (default 1000,10000,30000)")
    all_bench.add_argument("--engine-days", type=float, default=7, help="days of engine history (default 7)")
    all_bench.add_argument("--engine-every", type=int, default=10800,
                           help="seconds between the engine fleet's readings (default 10800)")
    all_bench.add_argument("--read-customers", type=at_least(1), default=10_000, help="customers (default 10000)")
    all_bench.add_argument("--read-devices", type=at_least(1), default=30_000, help="devices (default 30000)")
    all_bench.add_argument("--read-readings", type=at_least(1), default=5_000_000,
                           help="readings over 30 days (default 5000000)")
    all_bench.add_argument("--read-rates", default="10,25,50", help="requests per second, each in turn (10,25,50)")
    all_bench.add_argument("--read-seconds", type=float, default=30, help="seconds of reads (default 30)")
    all_bench.add_argument("--read-workers", default="1,2",
                           help="`careloop api --workers` for the reads, each in turn (1,2)")
    all_bench.add_argument("--storage-devices", type=at_least(1), default=100, help="storage fleet (default 100)")
    all_bench.add_argument("--storage-days", type=float, default=3, help="days of its history (default 3)")
    all_bench.add_argument("--storage-every", type=at_least(1), default=60,
                           help="seconds between its readings (default 60)")
    partitions_bench = benches.add_parser(
        "partitions",
        help="engine partitions (careloop engine --partition i/N, real processes, one killed and restarted) "
        "against one engine over the same simulated fleet: detections opened, opened twice, missed",
    )
    partitions_bench.add_argument("--devices", type=at_least(1), default=1500,
                                  help="simulated devices (default 1500)")
    partitions_bench.add_argument("--hours", type=float, default=12, help="hours of history published (default 12)")
    partitions_bench.add_argument("--step", type=at_least(60), default=1800,
                                  help="seconds of history per round (default 1800)")
    partitions_bench.add_argument("--faults", default="all:0.3",
                                  help="fault spec as for simulate (default all:0.3)")
    partitions_bench.add_argument("--partitions", type=at_least(2), default=3, help="engine partitions (default 3)")
    partitions_bench.add_argument("--faults-while-down", type=at_least(1), default=10,
                                  help="faults on the killed partition's devices while it is down (default 10)")
    partitions_bench.add_argument("--seed", type=int, default=21)
    partitions_bench.add_argument("--timing-devices", type=at_least(0), default=0,
                                  help="first, time one engine's jobs over this many generated devices against "
                                  "each partition's (default 0: not at all)")
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from careloop.runtime import configure_logging, exit_with_parent

    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    exit_with_parent()
    try:
        get_settings()
    except ConfigError as error:
        print(f"careloop: configuration error: {error}", file=sys.stderr)
        return 2
    import psycopg2

    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except CommandFailed as failure:
        print(f"careloop {args.command}: {failure}", file=sys.stderr)
        return 1
    except psycopg2.OperationalError as error:
        from careloop.settings import redact_url

        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        where = redact_url(str(get_settings().database_url or "the embedded database"))
        print(f"careloop {args.command}: the database at {where} did not answer: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
