"""A device's credentials on the broker: issued when it is registered, replaced on request, shown once.

The registry keeps each password hashed as the broker's dynamic-security plugin keeps it, so the plugin's file can
be rebuilt from the registry (`dynsec_file_from_registry`). The broker is told through `DeviceAccounts`, which the
composition root provides (careloop.mqtt.BrokerAccounts): this domain never speaks MQTT itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, Field

from careloop.db import Connection, savepoint
from careloop.errors import DomainError, InvalidInput, NotFound
from careloop.mqtt import (
    CHANNELS,
    BrokerAccountError,
    device_topic,
    dynsec_config,
    dynsec_password,
    is_reserved_name,
    new_secret,
)
from devices import repo


class BrokerUnavailable(DomainError):
    """The broker did not take the credential; nothing was issued (the API answers 503: try again)."""

    status_code = 503


class DeviceAccounts(Protocol):
    """The broker's side of devices' credentials: creates each account, or replaces its password (device id ->
    password), all or none."""

    def set_device_passwords(self, passwords: Mapping[str, str]) -> None: ...


class DeviceCredential(BaseModel):
    """What a device needs to connect, with its password: shown this once, never stored in clear."""

    device_id: str
    username: str = Field(description="the MQTT user name: the device id")
    password: str = Field(description="shown once; issue a new one if it is lost")
    client_id: str = Field(description="the only MQTT client id the broker accepts with this user name")
    topics: list[str] = Field(description="where the device may publish; it may subscribe to nothing")
    issued_at: dt.datetime
    rotations: int = Field(description="how many credentials this one replaced")


class DeviceCredentialStatus(BaseModel):
    """When a device's credential was issued and by whom; never the password."""

    device_id: str
    issued_at: dt.datetime
    issued_by: str | None
    rotations: int


def issue_device_credential(
    conn: Connection, device_id: str, *, accounts: DeviceAccounts, issued_by: str | None = None
) -> DeviceCredential:
    """A new password for a registered device, replacing any previous one at once on the broker.

    The registry row is written first, then the broker is told: when the broker refuses or is away, the row is
    undone and BrokerUnavailable raised, so the registry never holds a password the broker does not know (and a
    device's previous credential keeps working).
    """
    return issue_device_credentials(conn, [device_id], accounts=accounts, issued_by=issued_by)[device_id]


def issue_device_credentials(
    conn: Connection, device_ids: list[str], *, accounts: DeviceAccounts, issued_by: str | None = None
) -> dict[str, DeviceCredential]:
    """`issue_device_credential` for many devices at once (one message to the broker): all or none."""
    for device_id in device_ids:
        if is_reserved_name(device_id):
            raise InvalidInput("id", "device ids starting with 'careloop' are kept for CareLoop's own broker accounts")
    known = repo.device_models(conn, device_ids=device_ids)
    unknown = [device_id for device_id in device_ids if device_id not in known]
    if unknown:
        raise NotFound(f"no device {', '.join(unknown[:5])}")
    passwords = {device_id: new_secret() for device_id in device_ids}
    issued: dict[str, DeviceCredential] = {}
    with savepoint(conn, "issue_device_credentials"):
        for device_id, password in passwords.items():
            stored = dynsec_password(password)
            row = repo.store_device_credential(
                conn, device_id=device_id, salt=stored["salt"], password_hash=stored["password"],
                iterations=stored["iterations"], issued_by=issued_by,
            )
            issued[device_id] = DeviceCredential(
                device_id=device_id,
                username=device_id,
                password=password,
                client_id=device_id,
                topics=[device_topic(device_id, channel) for channel in CHANNELS],
                issued_at=row.issued_at,
                rotations=row.rotations,
            )
        try:
            accounts.set_device_passwords(passwords)
        except BrokerAccountError as error:
            raise BrokerUnavailable(f"no credential issued for {', '.join(device_ids[:5])}: {error}") from None
    return issued


def device_credential_status(conn: Connection, device_id: str) -> DeviceCredentialStatus:
    row = repo.device_credential(conn, device_id=device_id)
    if row is None:
        raise NotFound(f"device {device_id} has no broker credential; issue one")
    return DeviceCredentialStatus(
        device_id=row.device_id, issued_at=row.issued_at, issued_by=row.issued_by, rotations=row.rotations
    )


def dynsec_file_from_registry(conn: Connection, *, service_password: str, admin_password: str) -> dict[str, Any]:
    """The broker's whole account file rebuilt from the registry: the two service accounts with these passwords,
    and every device that has a credential, with the password it was last issued."""
    devices = {
        row.device_id: {"salt": row.salt, "password": row.password_hash, "iterations": row.iterations}
        for row in repo.stored_device_passwords(conn)
    }
    return dynsec_config(
        service_password=dynsec_password(service_password), admin_password=dynsec_password(admin_password),
        devices=devices,
    )
