"""Certificates for a first run with TLS: a private CA and a server certificate it signs, for the broker, the API
and the database (`careloop certs`).

A CA of one's own rather than a self-signed server certificate: clients trust the CA file once, and a server
certificate can be issued again (other host names, expiry) without touching any client. Keys are ECDSA P-256,
which Mosquitto, PostgreSQL, uvicorn and every current TLS client accept, and written readable by their owner only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
# Browsers and Apple's TLS refuse server certificates valid for longer than 825 days.
SERVER_DAYS = 825


class CertificatesExist(Exception):
    """The folder holds certificates already; they are kept unless replacing them is asked for."""


class UnsafeFolder(Exception):
    """The folder is writable by others than its owner: whoever can write there can swap a key or a CA."""


@dataclass(frozen=True)
class CertificateFiles:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.folder / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.folder / SERVER_KEY

    def all(self) -> list[Path]:
        return [self.ca_cert, self.ca_key, self.server_cert, self.server_key]

    def existing(self) -> list[Path]:
        return [path for path in self.all() if path.exists()]


def write_certificates(
    folder: Path,
    hosts: list[str] | tuple[str, ...] = DEFAULT_HOSTS,
    *,
    replace: bool = False,
    owner: tuple[int, int] | None = None,
    now: dt.datetime | None = None,
) -> CertificateFiles:
    """A new CA and a server certificate for `hosts` (names and IP addresses) in `folder`: ca.crt, ca.key,
    server.crt, server.key; keys mode 0600 (handed to `owner`, uid and gid, when given). Raises CertificatesExist
    when any of them is there already, unless `replace`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    files = CertificateFiles(Path(folder))
    if not hosts:
        raise ValueError("name at least one host the server is reached by")
    names = list(dict.fromkeys(_subject_alternative_name(host) for host in hosts))  # each name once, in order
    _private_folder(files.folder, owner)
    if files.existing() and not replace:
        raise CertificatesExist(", ".join(str(path) for path in files.existing()))
    now = now or dt.datetime.now(dt.UTC)
    # A little in the past: a client whose clock is a few minutes behind still accepts a certificate made now.
    not_before = now - dt.timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareLoop"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"CareLoop CA {now:%Y-%m-%d %H:%M}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CareLoop"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
        # Unencrypted PKCS#8: a server started by a supervisor has nobody to type a passphrase.
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    _write(files.ca_key, key_bytes(ca_key), 0o600, owner)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    _write(files.server_key, key_bytes(server_key), 0o600, owner)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), 0o644, owner)
    return files


def _subject_alternative_name(host: str):
    from cryptography import x509

    host = host.strip().strip("[]")
    if not host:
        raise ValueError("a host name may not be empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    if any(character in host for character in "/ :@"):
        raise ValueError(f"{host!r} is neither a host name nor an IP address")
    return x509.DNSName(host.lower())


def _private_folder(folder: Path, owner: tuple[int, int] | None) -> None:
    """Create `folder` mode 0700 (handed to `owner` too, who must reach its key), whatever the umask; parents it
    needs are made 0755. A folder already there is used as it is, unless others may write to it: then UnsafeFolder.
    Refused rather than tightened: the folder is someone's choice (a shared /srv/tls, a mounted volume, even /tmp
    with its sticky bit) whose mode other programs rely on, and silently changing it would break them or hide a
    folder that someone else may already have written into."""
    if folder.exists():
        mode = folder.stat().st_mode
        if not folder.is_dir():
            raise UnsafeFolder(f"{folder} is not a folder")
        if mode & 0o022:
            raise UnsafeFolder(f"{folder} is writable by {'others' if mode & 0o002 else 'its group'} "
                               f"(mode {mode & 0o777:04o}): keys go only into a folder only its owner can write "
                               f"(chmod go-w {folder}, or name a new folder)")
        return
    missing = [folder, *(parent for parent in folder.parents if not parent.exists())]
    for created in reversed(missing):
        mode = 0o700 if created == folder else 0o755
        created.mkdir(mode=mode)
        os.chmod(created, mode)  # mkdir's mode passes through the umask (0277 would leave it unwritable)
    if owner is not None:
        os.chown(folder, *owner)


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    # Created with its mode, written aside and renamed: a key is never readable by others, not even for a moment,
    # and a reader never sees half a file.
    temporary = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(descriptor, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)  # the umask may have taken bits off a certificate's 0644
    if owner is not None:
        os.chown(temporary, *owner)
    os.replace(temporary, path)


def describe(files: CertificateFiles) -> list[str]:
    """What each file is, one line each: subject, names, expiry, fingerprint (what `careloop certs` prints)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    lines = []
    for path in (files.ca_cert, files.server_cert):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            hosts = ", ".join(str(name.value) for name in names)
        except x509.ExtensionNotFound:
            hosts = ""
        subject = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        fingerprint = cert.fingerprint(hashes.SHA256()).hex(":")[:23]
        lines.append(f"{path}: {subject}{f' for {hosts}' if hosts else ''}, valid until "
                     f"{cert.not_valid_after_utc:%Y-%m-%d}, sha256 {fingerprint}...")
    for path in (files.ca_key, files.server_key):
        lines.append(f"{path}: private key, mode {path.stat().st_mode & 0o777:04o}")
    return lines
