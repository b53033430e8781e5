"""Generated hostile traffic through the real broker and the real ingester: nothing stops it, nothing is lost.

Hypothesis draws well over a thousand messages: raw bytes, invalid UTF-8, NUL raw and escaped, deep nesting,
huge and out-of-range numbers, wrong shapes, retained status messages and oversized ones, interleaved with good
readings. Afterwards the ingester is alive, every good reading is stored exactly once, and the quarantine holds
exactly the bad messages, each with a reason it may have.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from careloop.db import Database, fetch_all, fetch_value
from careloop.mqtt import telemetry_topic
from ingest.models import MAX_PAYLOAD_BYTES
from tests.factories import make_device
from tests.helpers import publish_all, wait_until

pytestmark = pytest.mark.integration

GOOD_DEVICES = 12
EXAMPLES = 100  # each draws a batch of 15 to 30 messages: 1,000 and more in all


@dataclass(frozen=True)
class Generated:
    """One message to publish; bad ones carry the reasons quarantine may give them."""

    channel: str
    payload: bytes
    reasons: frozenset[str] = frozenset()  # empty: a good message
    metrics: int = 0  # readings a good message stores

    @property
    def bad(self) -> bool:
        return bool(self.reasons)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _bad(channel: str, payload: bytes, *reasons: str) -> Generated:
    return Generated(channel, payload, frozenset(reasons))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)

raw_bytes = st.binary(min_size=0, max_size=200).map(lambda tail: _bad("telemetry", b"\xff" + tail, "invalid_json"))
invalid_utf8_in_json = st.binary(min_size=1, max_size=20).map(
    lambda junk: _bad(
        "telemetry",
        b'{"seq": 1, "ts": "%s", "metrics": {"run_hours": 1}, "note": "\xc3\x28%s"}' % (_now().encode(), junk),
        "invalid_json",
    )
)
raw_nul = st.sampled_from(["telemetry", "events"]).flatmap(
    lambda channel: st.integers(0, 40).map(
        lambda at: _bad(channel, (b'{"seq": 1, "ts": "%s"}' % _now().encode())[:at] + b"\x00}", "invalid_json")
    )
)
escaped_nul_or_surrogate = st.sampled_from(["\u0000", "\ud800", "a\u0000b", "\udfff\u0000"]).flatmap(
    lambda poison: st.sampled_from([
        _bad("events", json.dumps({"seq": 1, "ts": _now(), "type": "fault", "detail": poison}).encode(),
             "invalid_payload"),
        _bad("events", json.dumps({"seq": 1, "ts": _now(), "type": "fault", "code": poison}).encode(),
             "invalid_payload"),
        _bad("telemetry", json.dumps({"seq": 1, "ts": _now(), "metrics": {poison: 1.0}}).encode(),
             "invalid_payload"),
        _bad("events", json.dumps({"seq": 1, "ts": _now(), "type": poison}).encode(), "invalid_payload"),
    ])
)
deep_nesting = st.tuples(st.integers(2_000, 30_000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")])).map(
    lambda spec: _bad("telemetry", spec[1][0] * spec[0] + b"1" + spec[1][1] * spec[0], "invalid_json", "oversized")
)
huge_numbers = st.one_of(
    st.integers(310, 4_000).map(lambda digits: _bad(
        "telemetry", b'{"seq": 1, "ts": "%s", "metrics": {"run_hours": %s}}' % (_now().encode(), b"9" * digits),
        "non_finite")),
    st.integers(4_301, 20_000).map(lambda digits: _bad(
        "telemetry", b'{"seq": 1, "ts": "%s", "metrics": {"run_hours": %s}}' % (_now().encode(), b"7" * digits),
        "invalid_json")),
    st.integers(2**63, 2**200).map(lambda seq: _bad(
        "telemetry", json.dumps({"seq": seq, "ts": _now(), "metrics": {"run_hours": 1}}).encode(), "invalid_payload")),
    st.integers(-(2**200), -1).map(lambda seq: _bad(
        "events", json.dumps({"seq": seq, "ts": _now(), "type": "fault"}).encode(), "invalid_payload")),
    st.integers(10**16, 10**400).map(lambda ts: _bad(
        "telemetry", json.dumps({"seq": 1, "ts": ts, "metrics": {"run_hours": 1}}).encode(),
        "invalid_payload", "ts_in_future")),
)
wrong_shapes = st.one_of(
    # anything that is not an object
    json_values.filter(lambda value: not isinstance(value, dict)).map(
        lambda value: _bad("telemetry", json.dumps(value).encode(), "invalid_payload", "non_finite")),
    # an object without the fields a reading or an event must have
    st.dictionaries(st.text(max_size=8).filter(lambda key: key not in ("seq", "readings")), json_values,
                    max_size=5).map(
        lambda value: _bad("telemetry", json.dumps(value).encode(), "invalid_payload", "non_finite")),
    st.dictionaries(st.text(max_size=8).filter(lambda key: key not in ("seq",)), json_values, max_size=5).map(
        lambda value: _bad("events", json.dumps(value).encode(), "invalid_payload", "non_finite")),
)
bad_status = st.binary(max_size=30).filter(lambda text: text.strip() not in (b"online", b"offline")).map(
    lambda payload: _bad("status", payload + b"\x00", "bad_status"))
oversized = st.integers(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES + 50_000).map(
    lambda size: _bad("telemetry", b"[" + b" " * size + b"]", "oversized"))

bad_messages = st.one_of(
    raw_bytes, invalid_utf8_in_json, raw_nul, escaped_nul_or_surrogate, deep_nesting, huge_numbers, wrong_shapes,
    bad_status, oversized,
)
good_readings = st.fixed_dictionaries(
    {"fan_current_a": st.floats(0, 5), "run_hours": st.floats(0, 200_000)},
    optional={"fan_speed_rpm": st.floats(0, 3000), "grease_load_pct": st.integers(0, 100)},
)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(batch=st.lists(st.one_of(bad_messages, good_readings), min_size=15, max_size=30))
def _collect(batch: list, into: list) -> None:
    into.extend(batch)


def test_generated_hostile_traffic_leaves_the_ingester_alive_and_every_good_reading_stored_once(
    conn, database: Database, mqtt_url: str, run_ingester
) -> None:
    drawn: list = []
    _collect(into=drawn)
    assert len(drawn) >= 1_000
    run = uuid.uuid4().hex[:6]
    devices = [make_device(conn) for _ in range(GOOD_DEVICES)]
    conn.commit()
    next_seq = dict.fromkeys((device.id for device in devices), 0)
    chooser = random.Random(7)
    messages: list[tuple[str, bytes]] = []
    bad_by_device: dict[str, Generated] = {}
    expected_readings = 0
    for index, item in enumerate(drawn):
        if isinstance(item, Generated):  # bad: each on a topic of its own, so its quarantine row is its own
            device_id = f"GEN{run}-{index}"
            bad_by_device[device_id] = item
            topic = f"careloop/v1/devices/{device_id}/{item.channel}"
            messages.append((topic, item.payload))
        else:
            device_id = chooser.choice(devices).id
            next_seq[device_id] += 1
            body = {"seq": next_seq[device_id], "ts": _now(), "metrics": item}
            messages.append((telemetry_topic(device_id), json.dumps(body).encode()))
            expected_readings += len(item)
    statuses = [(topic, payload) for topic, payload in messages if topic.endswith("/status")]
    chooser.shuffle(messages)

    ingester = run_ingester(batch_wait_s=0.05)
    try:
        publish_all(mqtt_url, [m for m in messages if not m[0].endswith("/status")])
        publish_all(mqtt_url, statuses, retain=True)  # a retained bad status reaches every ingester, every time
        own_quarantine = "SELECT count(*) FROM quarantine WHERE device_id LIKE %s"
        wait_until(lambda: _count(database, "SELECT count(*) FROM telemetry") >= expected_readings, timeout_s=120,
                   what=f"{expected_readings} good readings")
        wait_until(lambda: _count(database, own_quarantine, (f"GEN{run}-%",)) >= len(bad_by_device),
                   timeout_s=60, what=f"{len(bad_by_device)} bad messages in quarantine")
        assert ingester.dead_thread() is None
    finally:
        ingester.stop()
        publish_all(mqtt_url, [(topic, b"") for topic, _payload in statuses], retain=True)

    assert _count(database, "SELECT count(*) FROM telemetry") == expected_readings
    assert _count(database, "SELECT count(DISTINCT (device_id, seq, metric)) FROM telemetry") == expected_readings
    with database.connection() as check:
        rows = fetch_all(check, "SELECT device_id, reason FROM quarantine WHERE device_id LIKE %s", (f"GEN{run}-%",))
        # (a shared broker also hands over other runs' retained status messages: only this run's devices count)
        good_quarantined = _count(database, "SELECT count(*) FROM quarantine WHERE device_id = ANY(%s)",
                                  ([device.id for device in devices],))
    assert good_quarantined == 0
    assert sorted(row["device_id"] for row in rows) == sorted(bad_by_device)  # each bad message, once
    wrong = [(row["device_id"], row["reason"], bad_by_device[row["device_id"]].payload[:80])
             for row in rows if row["reason"] not in bad_by_device[row["device_id"]].reasons]
    assert not wrong, wrong
    assert _count(database, "SELECT sum(seq_count) FROM device_state") == sum(next_seq.values())
    assert _count(database, "SELECT sum(missing_seq) FROM device_state") == 0


def _count(database: Database, query: str, params: tuple = ()) -> int:
    with database.connection() as conn:
        return int(fetch_value(conn, query, params) or 0)


def test_collection_draws_every_kind_of_hostile_message() -> None:
    drawn: list = []
    _collect(into=drawn)
    reasons = {reason for item in drawn if isinstance(item, Generated) for reason in item.reasons}
    assert {"invalid_json", "invalid_payload", "bad_status", "oversized", "non_finite"} <= reasons
    assert any(b"\x00" in item.payload for item in drawn if isinstance(item, Generated))
    assert any(not isinstance(item, Generated) for item in drawn)
