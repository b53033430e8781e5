"""TLS to and from CareLoop with certificates from `careloop certs`: `careloop api` serving HTTPS that a client
verifies against the CA, and the database URL's sslmode=verify-full&sslrootcert=... reaching libpq wherever
CareLoop connects, against a PostgreSQL of the test's own started with ssl=on (and plaintext refused)."""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from bench.services import OwnPostgres, ServiceUnavailable
from careloop.db import Database, ensure_database, migrate
from careloop.embedded import free_port, stop_process
from careloop.tls import CertificateFiles, write_certificates
from tests.helpers import start_careloop, wait_until


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return write_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])


def test_the_api_serves_https_that_a_client_verifies_against_the_ca(
    certs: CertificateFiles, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    trusting_ca = ssl.create_default_context(cafile=str(certs.ca_cert))
    process = start_careloop(
        ["api", "--port", str(port), "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)],
        env={"CARELOOP_DATABASE_URL": database_url}, log=log, cwd=tmp_path,
    )
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"https://localhost:{port}/health", verify=trusting_ca, timeout=2) \
                    .status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout_s=60, what="the API over HTTPS", log=log)
        health = httpx.get(f"https://127.0.0.1:{port}/health", verify=trusting_ca, timeout=5)
        assert health.status_code == 200 and health.json()["database"]
        # a client that trusts only the system's CAs refuses this server
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://localhost:{port}/health", timeout=5)
        # plain HTTP on the HTTPS port gets no answer from the API
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://localhost:{port}/health", timeout=5)
    finally:
        stop_process(process)


@pytest.mark.parametrize("given", ["--tls-cert", "CARELOOP_API_TLS_KEY"])
def test_the_api_wants_its_certificate_and_its_key_together(
    certs: CertificateFiles, database_url: str, tmp_path: Path, given: str
) -> None:
    arguments = ["api", "--port", str(free_port())]
    env = {"CARELOOP_DATABASE_URL": database_url}
    if given == "--tls-cert":
        arguments += ["--tls-cert", str(certs.server_cert)]
    else:
        env["CARELOOP_API_TLS_KEY"] = str(certs.server_key)
    done = subprocess.run([sys.executable, "-m", "careloop.cli", *arguments], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 2
    assert "--tls-cert (CARELOOP_API_TLS_CERT) and --tls-key (CARELOOP_API_TLS_KEY) go together" in done.stderr
    missing = subprocess.run([sys.executable, "-m", "careloop.cli", "api"], capture_output=True, text=True,
                             env={**os.environ, **env, "CARELOOP_API_TLS_CERT": str(tmp_path / "nowhere.crt")},
                             cwd=tmp_path, timeout=60, check=False)
    assert missing.returncode == 2 and "CARELOOP_API_TLS_CERT" in missing.stderr


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[OwnPostgres, CertificateFiles]]:
    """A PostgreSQL of the test's own (bench.services starts it with initdb) with ssl=on on certificates from
    `careloop certs`, taking TCP connections over TLS only."""
    parent = Path(tempfile.mkdtemp(prefix="careloop-tls-pg-"))
    parent.chmod(0o755)  # PostgreSQL runs as its own user when the tests run as root
    try:
        server = OwnPostgres(parent / "postgres")
    except ServiceUnavailable as missing:
        shutil.rmtree(parent, ignore_errors=True)
        pytest.skip(f"no PostgreSQL of the test's own: {missing}")
    try:
        owner = None
        if server.user is not None:
            entry = pwd.getpwnam(server.user)
            owner = (entry.pw_uid, entry.pw_gid)
        # PostgreSQL refuses a key that others may read, or that is not its own user's (or root's with 0640)
        files = write_certificates(server.folder / "certs", ["localhost", "127.0.0.1"], owner=owner)
        server.initialise()
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{files.server_cert}'\nssl_key_file = '{files.server_key}'\n"
                       "ssl_min_protocol_version = 'TLSv1.2'\n")
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        server.start()
        yield server, files
    finally:
        server.close()
        shutil.rmtree(parent, ignore_errors=True)


def _verified_url(server: OwnPostgres, ca: Path, database: str = "careloop_tls") -> str:
    return f"{server.url(database)}?sslmode=verify-full&sslrootcert={ca}"


def test_the_database_url_verifies_the_server_everywhere_careloop_connects(
    tls_postgres: tuple[OwnPostgres, CertificateFiles], tmp_path: Path
) -> None:
    """ensure_database (creates it), migrate, the pool, and `careloop migrate` as a process: each connects with
    sslmode=verify-full against the CA, and PostgreSQL says each session is encrypted."""
    server, files = tls_postgres
    url = _verified_url(server, files.ca_cert)
    ensure_database(url)
    assert "001_core.sql" in migrate(url)
    database = Database(url, max_connections=2)
    try:
        with database.transaction() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            encrypted, version = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM schema_migrations")
            migrations = cursor.fetchone()[0]
    finally:
        database.close()
    assert encrypted is True and version in ("TLSv1.2", "TLSv1.3") and migrations > 10
    done = subprocess.run([sys.executable, "-m", "careloop.cli", "migrate"], capture_output=True, text=True,
                          env={**os.environ, "CARELOOP_DATABASE_URL": url}, cwd=tmp_path, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_the_database_refuses_plaintext_and_careloop_refuses_another_ca(
    tls_postgres: tuple[OwnPostgres, CertificateFiles], tmp_path: Path
) -> None:
    server, files = tls_postgres
    ensure_database(_verified_url(server, files.ca_cert, "postgres"))
    with pytest.raises(psycopg2.OperationalError, match="no encryption|SSL off"):
        psycopg2.connect(f"{server.url('postgres')}?sslmode=disable").close()
    stranger = write_certificates(tmp_path / "other", ["localhost", "127.0.0.1"])
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        migrate(_verified_url(server, stranger.ca_cert, "postgres"))
    # the name is checked too: the certificate names localhost and 127.0.0.1, and this client reaches the same
    # address under another name (libpq's hostaddr)
    with pytest.raises(psycopg2.OperationalError, match="does not match host name"):
        psycopg2.connect(f"postgresql://careloop@elsewhere.invalid:{server.port}/postgres?sslmode=verify-full"
                         f"&sslrootcert={files.ca_cert}&hostaddr=127.0.0.1").close()
