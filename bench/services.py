"""A PostgreSQL and a Mosquitto of the benchmark's own, in a temporary folder, that it may restart at will.

The machine's shared servers (127.0.0.1:5432, :1883) serve other runs and are never touched: these listen on
free ports and keep their data under the run's folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from careloop.embedded import free_port, mosquitto_config, stop_process, wait_for_port

log = logging.getLogger("careloop.bench")


class ServiceUnavailable(RuntimeError):
    """A server the benchmark needs cannot be had on this machine (binary missing, no user to run it)."""


def postgres_binaries() -> Path:
    """The folder with initdb, pg_ctl and postgres: the machine's newest, else those the pgserver package ships."""
    wanted = ("initdb", "pg_ctl", "postgres")
    machine = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    # find_spec, not import: importing pgserver takes a lock file and registers exit handlers
    spec = importlib.util.find_spec("pgserver")
    shipped = [Path(spec.origin).parent / "pginstall" / "bin"] if spec and spec.origin else []
    on_path = [Path(found).parent] if (found := shutil.which("pg_ctl")) else []
    for folder in [*machine, *shipped, *on_path]:
        if all((folder / name).exists() for name in wanted):
            return folder
    raise ServiceUnavailable(
        "no PostgreSQL binaries (initdb, pg_ctl, postgres): none under /usr/lib/postgresql/*/bin, "
        "in the pgserver package or on PATH"
    )


def mosquitto_binary() -> str:
    binary = shutil.which("mosquitto") or next(
        (path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(path, os.X_OK)), None
    )
    if binary is None:
        raise ServiceUnavailable("no mosquitto binary on PATH or in /usr/sbin (apt-get install mosquitto)")
    return binary


def _postgres_system_user() -> str | None:
    """Who runs PostgreSQL: this user, or when it is root (which PostgreSQL refuses) an unprivileged one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    # The user pgserver itself creates when started by root.
    try:
        subprocess.run(["useradd", "--system", "--shell", "/bin/false", "pgserver"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise ServiceUnavailable(f"running as root and no 'postgres' user to run PostgreSQL as: {error}") from error
    return "pgserver"


class OwnPostgres:
    """A PostgreSQL cluster initialised in `folder`, listening on 127.0.0.1 at a free port."""

    def __init__(self, folder: Path) -> None:
        self.bin = postgres_binaries()
        self.user = _postgres_system_user()
        self.folder = folder
        self.data = folder / "data"
        self.server_log = folder / "postgres.log"
        self.port = free_port(None)
        folder.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        folder.chmod(0o700)

    @property
    def version(self) -> str:
        answer = self._run(["postgres", "--version"])  # "postgres (PostgreSQL) 15.2 (Debian 15.2-1)"
        found = re.search(r"\(PostgreSQL\) (\S+)", answer)
        return found.group(1) if found else answer.strip()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://careloop@127.0.0.1:{self.port}/{database}"

    def _run(self, command: list[str], timeout_s: float = 120) -> str:
        # pg_ctl start leaves the postmaster holding its stdout: a pipe there would never close, so a file.
        output = self.folder / "pg_ctl.out"
        with output.open("w") as sink:
            if self.user is not None:
                os.chown(output, pwd.getpwnam(self.user).pw_uid, -1)
            result = subprocess.run(
                [str(self.bin / command[0]), *command[1:]],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                user=self.user,
                timeout=timeout_s,
                check=False,
            )
        text = output.read_text()
        if result.returncode != 0:
            tail = self.server_log.read_text()[-2000:] if self.server_log.exists() else ""
            raise RuntimeError(f"{' '.join(command[:3])} failed ({result.returncode}): {text.strip()}\n{tail}")
        return text

    def initialise(self) -> None:
        """initdb with a trusted superuser `careloop`, then this run's port and socket folder."""
        self._run(["initdb", "-D", str(self.data), "-U", "careloop", "--auth=trust", "-E", "UTF8", "--no-sync"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# careloop bench: a server of the benchmark's own\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "max_connections = 40\n"
            )

    def start(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-l", str(self.server_log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop; mode `immediate` is a crash as far as the data goes: recovery replays the WAL at start."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                log.warning("could not stop the benchmark's PostgreSQL: %s", error)


class OwnMosquitto:
    """Mosquitto configured like deploy/mosquitto.conf (persistence, no queue limit) on a free port."""

    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.folder = folder
        self.port = free_port(None)
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(mosquitto_config(self.port, folder))
        self.stderr_log = folder / "mosquitto.stderr"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        result = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (result.stdout or result.stderr).splitlines()
        return first[0].rsplit(" ", 1)[-1] if first else "?"

    def start(self) -> None:
        with self.stderr_log.open("ab") as stderr:
            # A session of its own: a Ctrl-C at the terminal reaches the benchmark, which stops this itself.
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        wait_for_port(self.port, self.process, self.stderr_log)

    def stop(self) -> None:
        """SIGTERM: a clean stop, on which mosquitto writes its persistence file (sessions, queued messages)."""
        if self.process is not None:
            stop_process(self.process, timeout_s=15)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
