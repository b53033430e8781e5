"""The ingest→engine notification: payloads fit PostgreSQL's limit, and listeners hear a batch only once it commits."""

from __future__ import annotations

import select

from careloop import notify
from careloop.db import Database, connect


def test_payloads_stay_under_the_limit_and_name_every_device_once_in_order() -> None:
    device_ids = [f"RH-{n:07d}" for n in range(5000)]
    payloads = list(notify.changed_devices_payloads(device_ids))
    assert len(payloads) > 1
    assert all(len(payload) <= notify.NOTIFY_PAYLOAD_LIMIT for payload in payloads)
    assert [device for payload in payloads for device in notify.devices_in(payload)] == device_ids


def test_no_devices_make_no_payload() -> None:
    assert list(notify.changed_devices_payloads([])) == []


def _heard(listener, timeout_s: float) -> list[str]:
    if select.select([listener], [], [], timeout_s) != ([], [], []):
        listener.poll()
    heard = []
    while listener.notifies:
        heard.extend(notify.devices_in(listener.notifies.pop(0).payload))
    return heard


def test_a_listener_hears_the_changed_devices_only_when_the_transaction_commits(
    database: Database, database_url: str
) -> None:
    listener = connect(database_url)
    listener.autocommit = True
    try:
        notify.listen_for_changed_devices(listener)
        try:
            with database.transaction() as conn:
                notify.notify_changed_devices(conn, device_ids=["RH-1", "RH-2"])
                raise RuntimeError("undo the batch")
        except RuntimeError:
            pass
        assert _heard(listener, 0.5) == []
        with database.transaction() as conn:
            notify.notify_changed_devices(conn, device_ids=["RH-3", "RH-4"])
        assert _heard(listener, 5) == ["RH-3", "RH-4"]
    finally:
        listener.close()
