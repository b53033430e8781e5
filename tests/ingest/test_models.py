"""Payload parsing per CONTRACT.md, without any server."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.catalog import get_model
from ingest import models
from ingest.models import Rejected, check_against_model, parse_message

NOW = dt.datetime(2026, 11, 22, 8, 15, tzinfo=dt.UTC)
TOPIC = "careloop/v1/devices/RH-000123/telemetry"


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def reason_of(topic: str, payload: bytes) -> str:
    with pytest.raises(Rejected) as rejected:
        parse_message(topic, payload, NOW)
    return rejected.value.reason


def test_contract_example_telemetry_is_accepted() -> None:
    payload = encode({"seq": 1042, "ts": "2026-11-22T08:15:30.250Z", "metrics": {"fan_current_a": 0.61}})
    message = parse_message(TOPIC, payload, NOW)
    assert message.device_id == "RH-000123"
    assert message.readings[0].seq == 1042
    assert message.readings[0].ts == dt.datetime(2026, 11, 22, 8, 15, 30, 250000, tzinfo=dt.UTC)


def test_epoch_milliseconds_are_accepted() -> None:
    millis = int(NOW.timestamp() * 1000)
    message = parse_message(TOPIC, encode({"seq": 1, "ts": millis, "metrics": {"run_hours": 3}}), NOW)
    assert message.readings[0].ts == NOW


def test_buffered_readings_keep_the_good_and_quarantine_the_bad_one() -> None:
    good = {"seq": 5, "ts": "2026-11-22T08:00:00Z", "metrics": {"run_hours": 1.0}}
    bad = {"seq": "six", "ts": "2026-11-22T08:01:00Z", "metrics": {"run_hours": 1.1}}
    message = parse_message(TOPIC, encode({"readings": [good, bad]}), NOW)
    assert [reading.seq for reading in message.readings] == [5]
    assert message.rejected[0].reason == models.INVALID_PAYLOAD
    assert "readings[1]" in message.rejected[0].detail


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, b"{not json", models.INVALID_JSON),
        (TOPIC, encode({"seq": "1", "ts": "2026-11-22T08:00:00Z", "metrics": {"a": 1}}), models.INVALID_PAYLOAD),
        (TOPIC, encode({"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {"a": "x"}}), models.INVALID_PAYLOAD),
        (TOPIC, encode({"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {}}), models.INVALID_PAYLOAD),
        (TOPIC, encode({"seq": 1, "ts": "2026-11-22T08:00:00", "metrics": {"a": 1}}), models.INVALID_PAYLOAD),
        (TOPIC, b'{"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {"a": NaN}}', models.NON_FINITE),
        (TOPIC, b'{"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {"a": Infinity}}', models.NON_FINITE),
        (TOPIC, b'{"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {"a": 1e999}}', models.NON_FINITE),
        (TOPIC, encode({"seq": 1, "ts": "2026-11-22T09:00:00Z", "metrics": {"a": 1}}), models.TS_IN_FUTURE),
        (TOPIC, encode({"seq": 1, "ts": "2026-09-01T00:00:00Z", "metrics": {"a": 1}}), models.TS_TOO_OLD),
        (TOPIC, encode({"seq": 1, "ts": "2026-11-22T08:00:00Z", "metrics": {"a": 1}, "device_id": "X"}),
         models.DEVICE_MISMATCH),
        (TOPIC, b"[1, 2]", models.INVALID_PAYLOAD),
        (TOPIC, b" " * (models.MAX_PAYLOAD_BYTES + 1), models.OVERSIZED),
        ("careloop/v1/devices/bad id/telemetry", b"{}", models.BAD_TOPIC),
        ("careloop/v1/devices/RH-1/status", b"maybe", models.BAD_STATUS),
        ("careloop/v1/devices/RH-1/events", encode({"seq": 1, "ts": "2026-11-22T08:00:00Z"}), models.INVALID_PAYLOAD),
    ],
)
def test_each_kind_of_bad_input_has_its_own_reason(topic: str, payload: bytes, reason: str) -> None:
    assert reason_of(topic, payload) == reason


def test_metric_unknown_to_the_model_or_out_of_range_is_rejected() -> None:
    model = get_model("RH-900")
    unknown = parse_message(TOPIC, encode({"seq": 1, "ts": NOW.isoformat(), "metrics": {"water_temp_c": 40}}), NOW)
    with pytest.raises(Rejected, match="no metric 'water_temp_c'"):
        check_against_model(unknown.readings[0], model)
    too_high = parse_message(TOPIC, encode({"seq": 1, "ts": NOW.isoformat(), "metrics": {"fan_current_a": 99}}), NOW)
    with pytest.raises(Rejected) as rejected:
        check_against_model(too_high.readings[0], model)
    assert rejected.value.reason == models.OUT_OF_RANGE


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_rejected(payload: bytes) -> None:
    try:
        parse_message(TOPIC, payload, NOW)
    except Rejected as rejected:
        assert rejected.reason in {models.INVALID_JSON, models.INVALID_PAYLOAD, models.NON_FINITE}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["seq", "ts", "metrics", "readings", "type", "code"]), json_values))
def test_arbitrary_documents_are_accepted_or_rejected_with_a_reason(document: dict) -> None:
    for channel in ("telemetry", "events"):
        try:
            message = parse_message(f"careloop/v1/devices/RH-1/{channel}", json.dumps(document).encode(), NOW)
        except Rejected as rejected:
            assert rejected.reason and rejected.detail
        else:
            assert message.readings or message.event or message.rejected


@pytest.mark.parametrize(("ts", "reason"), [("9999-12-31T23:59:59-14:00", models.TS_IN_FUTURE),
                                            ("0001-01-01T00:00:00+14:00", models.TS_TOO_OLD)])
def test_a_time_beyond_the_calendar_in_utc_is_out_of_the_window_not_a_defect(ts: str, reason: str) -> None:
    assert reason_of(TOPIC, encode({"seq": 1, "ts": ts, "metrics": {"run_hours": 1}})) == reason



def _outcome(topic: str, payload: bytes, now: dt.datetime) -> tuple:
    try:
        parsed = parse_message(topic, payload, now)
    except Rejected as rejected:
        return ("rejected", rejected.reason)
    return ("parsed", parsed.readings, parsed.event, [(part.reason, part.detail) for part in parsed.rejected])


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
_payloads = st.one_of(
    st.builds(lambda seq, ts, metrics: {"seq": seq, "ts": ts, "metrics": metrics},
              _json_values, st.sampled_from(["2026-06-01T11:59:00Z", 1780315140000]) | _json_values,
              st.dictionaries(st.sampled_from(["fan_current_a", "run_hours", "x"]), _json_values)),
    st.dictionaries(st.sampled_from(["seq", "ts", "metrics", "readings", "type", "code", "device_id"]), _json_values),
    _json_values,
).map(lambda document: json.dumps(document).encode())


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payload=_payloads | st.binary(max_size=64), channel=st.sampled_from(["telemetry", "events"]))
def test_the_fast_json_parser_reads_every_payload_as_the_standard_one_does(payload, channel, monkeypatch) -> None:
    # (monkeypatch is only ever used inside its own context below, undone before the next example)
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    topic = f"careloop/v1/devices/RH-000123/{channel}"
    fast = _outcome(topic, payload, now)

    def refuse(_payload):
        raise models.orjson.JSONDecodeError("forced", "", 0)

    with monkeypatch.context() as patched:
        patched.setattr(models.orjson, "loads", refuse)
        standard = _outcome(topic, payload, now)
    assert fast == standard


def test_a_rejected_message_is_labelled_with_the_device_its_topic_names_and_never_with_another() -> None:
    from careloop.mqtt import device_named_in, telemetry_topic

    registered = "RH-" + "7" * 61  # a device id of the longest kind: 64 characters
    assert device_named_in(telemetry_topic(registered)) == registered
    longer = device_named_in(telemetry_topic(registered + "Z"))
    assert longer is not None and longer != registered
    assert len(longer) == 64 and longer.endswith("…") and longer.startswith(registered[:63])
    assert device_named_in("elsewhere/RH-1/telemetry") is None
