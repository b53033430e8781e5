"""No message stops the writer: each hostile input found by an outside attacker, through the real broker."""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import uuid

import pytest
from fastapi.testclient import TestClient

from careloop.app import create_app
from careloop.db import Database, fetch_all, fetch_one, fetch_value
from careloop.mqtt import events_topic, status_topic, telemetry_topic
from ingest.models import MAX_SEQ
from ingest.service import InboundMessage, prune_quarantine
from ingest.subscriber import forget_session
from tests.factories import make_customer, make_device
from tests.helpers import inbound, publish_all, reading, start_careloop, store, wait_until

pytestmark = pytest.mark.integration


def count(database: Database, query: str, params: tuple = ()) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, query, params))


def now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def quarantined(database: Database, device_id: str) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(
            conn, "SELECT reason, detail, payload, payload_raw, topic FROM quarantine WHERE device_id = %s ORDER BY id",
            (device_id,),
        )


# Each case: (topic channel, raw payload, reason expected). Found by an attacker; each one stopped ingestion.
HOSTILE = {
    "raw_nul_and_invalid_utf8": ("telemetry", lambda: b"\xff\xfe\x00garbage", "invalid_json"),
    "json_nested_10000_deep": ("telemetry", lambda: b"[" * 10_000 + b"]" * 10_000, "invalid_json"),
    "metric_integer_of_400_digits": (
        "telemetry",
        lambda: b'{"seq": 5, "ts": "%s", "metrics": {"fan_current_a": %s}}' % (now_text().encode(), b"9" * 400),
        "non_finite",
    ),
    "metric_integer_of_5000_digits": (
        "telemetry",
        lambda: b'{"seq": 5, "ts": "%s", "metrics": {"fan_current_a": %s}}' % (now_text().encode(), b"9" * 5000),
        "invalid_json",
    ),
    "seq_2_to_the_63": (
        "telemetry",
        lambda: json.dumps({"seq": 2**63, "ts": now_text(), "metrics": {"fan_current_a": 0.5}}).encode(),
        "invalid_payload",
    ),
    "escaped_nul_in_event_detail": (
        "events",
        lambda: json.dumps({"seq": 5, "ts": now_text(), "type": "fault", "code": "E21", "detail": "a\u0000b"}).encode(),
        "invalid_payload",
    ),
    "escaped_nul_in_event_code": (
        "events",
        lambda: json.dumps({"seq": 5, "ts": now_text(), "type": "fault", "code": "E\u00002"}).encode(),
        "invalid_payload",
    ),
    "escaped_nul_in_metric_key": (
        "telemetry",
        lambda: json.dumps({"seq": 5, "ts": now_text(), "metrics": {"fan\u0000": 0.5}}).encode(),
        "invalid_payload",
    ),
    "lone_surrogate_in_event_detail": (
        "events",
        lambda: b'{"seq": 5, "ts": "%s", "type": "fault", "detail": "\\ud800"}' % now_text().encode(),
        "invalid_payload",
    ),
    "status_online_with_nul": ("status", lambda: b"online\x00", "bad_status"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_message_is_quarantined_and_ingest_goes_on(case, conn, database, mqtt_url, run_ingester) -> None:
    channel, make_payload, reason = HOSTILE[case]
    device = make_device(conn)
    conn.commit()
    payload = make_payload()
    topic = f"careloop/v1/devices/{device.id}/{channel}"
    ingester = run_ingester()
    retain = channel == "status"  # a retained status reaches every ingester on every subscribe
    publish_all(mqtt_url, [(telemetry_topic(device.id), reading(1))])
    publish_all(mqtt_url, [(topic, payload)], retain=retain)
    publish_all(mqtt_url, [(telemetry_topic(device.id), reading(2))])
    try:
        wait_until(lambda: count(database, "SELECT count(*) FROM telemetry") == 2, what="the good readings around it")
        wait_until(lambda: len(quarantined(database, device.id)) == 1, what="the hostile message in quarantine")
        row = quarantined(database, device.id)[0]
        assert row["reason"] == reason
        assert bytes(row["payload_raw"]) == payload[: len(row["payload_raw"])]  # kept as received
        assert "\x00" not in row["payload"] and "\x00" not in row["detail"]
        assert ingester.dead_thread() is None
        # the writer still stores what comes next
        publish_all(mqtt_url, [(telemetry_topic(device.id), reading(3))])
        wait_until(lambda: count(database, "SELECT count(*) FROM telemetry") == 3, what="a reading after it")
    finally:
        if retain:
            publish_all(mqtt_url, [(topic, b"")], retain=True)  # clear the retained message


def test_a_row_the_database_refuses_quarantines_that_message_alone(conn, database, mqtt_url, run_ingester) -> None:
    device = make_device(conn)
    conn.commit()
    # A constraint the parser knows nothing of stands for any value the database may refuse.
    with database.transaction() as admin:
        admin.cursor().execute("ALTER TABLE telemetry ADD CONSTRAINT refuses_13 CHECK (value <> 13)")
    run_ingester(batch_wait_s=0.3)
    topic = telemetry_topic(device.id)
    messages = [(topic, reading(seq, run_hours=13.0 if seq == 4 else 100.0 + seq)) for seq in range(1, 9)]
    publish_all(mqtt_url, messages)
    wait_until(lambda: count(database, "SELECT count(*) FROM telemetry") == 7, what="the 7 other readings")
    wait_until(lambda: len(quarantined(database, device.id)) == 1, what="the refused message in quarantine")
    row = quarantined(database, device.id)[0]
    assert row["reason"] == "unprocessable"
    assert "refuses_13" in row["detail"] and "CheckViolation" in row["detail"]
    assert json.loads(bytes(row["payload_raw"]))["seq"] == 4
    assert count(database, "SELECT seq_count FROM device_state") == 7


def test_the_batch_split_finds_every_refused_message_among_many(database, conn) -> None:
    device = make_device(conn)
    conn.commit()
    with database.transaction() as admin:
        admin.cursor().execute("ALTER TABLE telemetry ADD CONSTRAINT refuses_13 CHECK (value <> 13)")
    now = dt.datetime.now(dt.UTC)
    bad = {3, 17, 18, 64}
    messages = [
        inbound(telemetry_topic(device.id), reading(seq, at=now, run_hours=13.0 if seq in bad else 100.0 + seq), now)
        for seq in range(1, 101)
    ]
    outcome = store(database, messages, now=now)
    assert outcome.messages == 100 and outcome.readings_stored == 96
    assert outcome.quarantined == {"unprocessable": 4}
    stored = {row["seq"] for row in _select(database, "SELECT seq FROM telemetry")}
    assert stored == set(range(1, 101)) - bad
    # each half's progress counted once: 96 seqs, the 4 refused ones missing
    assert _select(database, "SELECT seq_count, missing_seq FROM device_state") == [{"seq_count": 96, "missing_seq": 4}]


def test_seq_zero_then_the_largest_counts_a_reset_and_every_endpoint_answers(conn, database, mqtt_url) -> None:
    owner = make_customer(conn)
    device = make_device(conn, owner=owner.id)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    topic = telemetry_topic(device.id)
    store(database, [inbound(topic, reading(0, at=now), now)], now=now)
    store(database, [inbound(topic, reading(MAX_SEQ, at=now), now)], now=now)
    # and both in one batch, for another device
    other = make_device(conn)
    conn.commit()
    both = [inbound(telemetry_topic(other.id), reading(seq, at=now), now) for seq in (0, 1, MAX_SEQ)]
    store(database, both, now=now)

    client = TestClient(create_app(database, admin_token="admin-token-for-tests", mqtt_url=mqtt_url))
    headers = {"Authorization": "Bearer admin-token-for-tests"}
    for path in ("/fleet/summary", "/devices", "/ingest/stats", f"/devices/{device.id}", f"/customers/{owner.id}/360"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 200, (path, answer.text)
    assert client.get("/ingest/stats", headers=headers).json()["missing_seq"] == 0
    assert client.get(f"/devices/{device.id}", headers=headers).json()["seq_resets"] == 1
    assert client.get(f"/devices/{other.id}", headers=headers).json()["seq_resets"] == 1


def test_a_forged_jump_of_seq_is_a_reset_not_a_million_missing(conn, database) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    topic = telemetry_topic(device.id)
    for seq in (1, 2, 3, 5):  # 4 is really missing
        store(database, [inbound(topic, reading(seq, at=now), now)], now=now)
    store(database, [inbound(topic, reading(900_000, at=now), now)], now=now)
    store(database, [inbound(topic, reading(900_001, at=now), now)], now=now)
    with database.connection() as check:
        state = fetch_one(check, "SELECT missing_seq, seq_resets, first_seq, last_seq FROM device_state")
    assert state == {"missing_seq": 1, "seq_resets": 1, "first_seq": 900_000, "last_seq": 900_001}


def test_a_device_silent_for_an_hour_may_skip_many_seqs_without_a_reset(conn, database) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    topic = telemetry_topic(device.id)
    store(database, [inbound(topic, reading(1, at=now - dt.timedelta(hours=1)), now)], now=now)
    store(database, [inbound(topic, reading(20_001, at=now), now)], now=now)  # lost 19,999 in an hour: possible
    with database.connection() as check:
        state = fetch_one(check, "SELECT missing_seq, seq_resets FROM device_state")
    assert state == {"missing_seq": 19_999, "seq_resets": 0}


def test_quarantine_retention_drops_old_and_excess_rows(conn, database) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    topic = telemetry_topic(device.id)
    old = [inbound(topic, {"bad": n}, now - dt.timedelta(days=40)) for n in range(3)]
    new = [inbound(topic, {"bad": n}, now) for n in range(3, 8)]
    store(database, old + new, now=now)
    assert count(database, "SELECT count(*) FROM quarantine") == 8
    with database.transaction() as writer:
        assert prune_quarantine(writer, retention=dt.timedelta(days=30), max_rows=4, now=now) == 4
    with database.connection() as check:
        left = [json.loads(bytes(row["payload_raw"]))["bad"] for row in
                fetch_all(check, "SELECT payload_raw FROM quarantine ORDER BY id")]
    assert left == [4, 5, 6, 7]


def test_an_ingester_whose_writer_dies_exits_non_zero_with_the_traceback(
    conn, database, database_url, mqtt_url, tmp_path
):
    device = make_device(conn)
    conn.commit()
    name = f"test-death-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "ingest.log"
    process = start_careloop(["ingest", "--name", name, "--share-group", name],
                             env={"CARELOOP_DATABASE_URL": database_url, "CARELOOP_MQTT_URL": mqtt_url}, log=log)
    try:
        first = (telemetry_topic(device.id), reading(1))

        def stored_once_subscribed() -> bool:
            # published again until the process has subscribed: the dedup key makes the repeats harmless
            publish_all(mqtt_url, [first])
            return count(database, "SELECT count(*) FROM telemetry") == 1

        wait_until(stored_once_subscribed, timeout_s=30, what="a reading", log=log)
        # With no quarantine to write to, a bad message cannot be kept anywhere: the writer cannot go on.
        with database.transaction() as admin:
            admin.cursor().execute("DROP TABLE quarantine")
        publish_all(mqtt_url, [(telemetry_topic(device.id), b"{not json")])
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        forget_session(mqtt_url, name)
    assert code == 1
    stderr = log.read_text()
    assert "Traceback" in stderr and "UndefinedTable" in stderr
    assert "essential thread" in stderr


def _select(database: Database, query: str) -> list[dict]:
    with database.connection() as conn:
        return fetch_all(conn, query)


def test_status_with_nul_from_a_shared_broker_never_reaches_device_state(database, conn) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    outcome = store(database, [InboundMessage(status_topic(device.id), b"online\x00", now)], now=now)
    assert outcome.quarantined == {"bad_status": 1}
    assert count(database, "SELECT count(*) FROM device_state") == 0


def test_an_event_with_nul_is_kept_out_of_events(database, conn) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    payload = {"seq": 1, "ts": now.isoformat(), "type": "fault", "code": "E21", "detail": "x\u0000"}
    outcome = store(database, [inbound(events_topic(device.id), payload, now)], now=now)
    assert outcome.quarantined == {"invalid_payload": 1}
    assert count(database, "SELECT count(*) FROM events") == 0


def test_a_flood_of_bad_messages_logs_one_line_per_reason_and_batch_and_keeps_every_message(
    database, conn, caplog
) -> None:
    device = make_device(conn)
    conn.commit()
    now = dt.datetime.now(dt.UTC)
    junk = [InboundMessage(telemetry_topic(device.id), b"{not json %d" % n, now) for n in range(200)]
    unknown = [inbound(telemetry_topic(f"nobody-{n}"), reading(n + 1), now) for n in range(200)]
    with caplog.at_level(logging.INFO, logger="careloop.ingest"):
        outcome = store(database, junk + unknown, now=now)
    assert outcome.quarantined == {"invalid_json": 200, "unknown_device": 200}
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert len(lines) == 2, lines
    assert any("invalid_json" in line and "and 199 more" in line for line in lines)
    assert count(database, "SELECT count(*) FROM quarantine") == 400
