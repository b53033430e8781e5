"""`careloop certs`: a CA and a server certificate for the names given, keys private, nothing overwritten unasked."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from careloop.tls import CertificatesExist, write_certificates


def _careloop(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "careloop.cli", *arguments], capture_output=True, text=True,
                          timeout=60, check=False)


def test_certs_writes_a_ca_and_a_server_certificate_for_the_names_given(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    done = _careloop("certs", "--out", str(out), "--host", "broker.example", "--host", "10.1.2.3")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["ca.crt", "ca.key", "server.crt", "server.key"]
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (out / "server.key").stat().st_mode & 0o777 == 0o600
    assert "broker.example, 10.1.2.3" in done.stdout and "mode 0600" in done.stdout
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    server.verify_directly_issued_by(ca)  # raises unless the CA signed it
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert server.not_valid_after_utc - server.not_valid_before_utc <= dt.timedelta(days=826)


def test_certs_refuse_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert _careloop("certs", "--out", str(out)).returncode == 0
    first = (out / "ca.crt").read_bytes()
    refused = _careloop("certs", "--out", str(out))
    assert refused.returncode == 1 and "exist: kept" in refused.stderr and "--replace" in refused.stderr
    assert (out / "ca.crt").read_bytes() == first
    kept = _careloop("certs", "--out", str(out), "--if-missing")
    assert kept.returncode == 0 and "kept" in kept.stdout and (out / "ca.crt").read_bytes() == first
    replaced = _careloop("certs", "--out", str(out), "--replace")
    assert replaced.returncode == 0 and (out / "ca.crt").read_bytes() != first
    # a single file left there counts too: nothing is half replaced
    (out / "ca.crt").unlink()
    with pytest.raises(CertificatesExist, match="server.key"):
        write_certificates(out)


def test_certs_name_a_bad_host_and_explain_themselves(tmp_path: Path) -> None:
    bad = _careloop("certs", "--out", str(tmp_path / "c"), "--host", "not a host/")
    assert bad.returncode == 1 and "--host" in bad.stderr and "not a host/" in bad.stderr
    assert not (tmp_path / "c").exists()
    helped = _careloop("certs", "--help")
    assert helped.returncode == 0
    for words in ("ca.crt", "server.key", "0600", "--replace", "CARELOOP_MQTT_CA", "sslrootcert"):
        assert words in helped.stdout


def test_certs_make_their_folder_private_whatever_the_umask(tmp_path: Path) -> None:
    out = tmp_path / "tls" / "certs"
    previous = os.umask(0o000)
    try:
        done = _careloop("certs", "--out", str(out))
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o755  # a parent it had to make: not writable by others
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.crt").stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_certs_refuse_a_folder_others_can_write_to_and_leave_it_as_it_was(tmp_path: Path, mode: int) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, mode)
    refused = _careloop("certs", "--out", str(out))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "--out" in refused.stderr and "writable by" in refused.stderr
    assert f"{mode & 0o777:04o}" in refused.stderr
    assert list(out.iterdir()) == [] and stat.S_IMODE(out.stat().st_mode) == mode


def test_certs_use_a_folder_only_its_owner_can_write_to_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "existing"
    out.mkdir()
    os.chmod(out, 0o755)
    assert _careloop("certs", "--out", str(out)).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and (out / "server.key").exists()
