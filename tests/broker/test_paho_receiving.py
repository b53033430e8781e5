"""How careloop's paho clients receive: a PUBLISH's property block is stepped over, so whatever a device puts there
the message comes through with its payload (paho's own reading refused some and dropped the connection); a block
whose length does not fit the packet is refused as paho refuses it; other packets' properties are read as paho
reads them; per-topic callbacks still reach their messages."""

from __future__ import annotations

import struct
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from careloop.mqtt import _PacketProperties, make_connection

TOPIC = b"careloop/v1/devices/dev-1/telemetry"
QOS1_PUBLISH = 0x32


@contextmanager
def pahos_own_properties():
    """paho's decoding as shipped, for comparison."""
    _packet.Properties = Properties
    try:
        yield
    finally:
        _packet.Properties = _PacketProperties


def publish_packet(properties: bytes, payload: bytes, mid: int = 7) -> bytes:
    return struct.pack("!H", len(TOPIC)) + TOPIC + struct.pack("!H", mid) + properties + payload


def decode(packet: bytes):
    return _packet.decode_publish(QOS1_PUBLISH, packet, MQTTProtocolVersion.MQTTv5)


def outcome(packet: bytes) -> tuple:
    """What decoding a packet gives: its properties and payload, or the refusal."""
    try:
        result = decode(packet)
    except _packet.MalformedPacket as error:
        return ("refused", str(error))
    return ("decoded", result.properties.json(), result.payload)


def test_paho_decodes_with_the_shared_tables() -> None:
    result = decode(publish_packet(b"\x00", b"{}"))
    assert type(result.properties) is _PacketProperties
    assert result.properties.json() == {} and result.properties.isEmpty()
    assert (result.payload, result.mid, result.qos) == (b"{}", 7, 1)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@st.composite
def publish_properties(draw) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    if draw(st.booleans()):
        properties.PayloadFormatIndicator = draw(st.integers(0, 1))
    if draw(st.booleans()):
        properties.MessageExpiryInterval = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        properties.ContentType = draw(text)
    if draw(st.booleans()):
        properties.ResponseTopic = draw(text.filter(bool))
    if draw(st.booleans()):
        properties.CorrelationData = draw(st.binary(max_size=20))
    if draw(st.booleans()):
        properties.TopicAlias = draw(st.integers(1, 65535))
    for name, value in draw(st.lists(st.tuples(text, text), max_size=3)):
        properties.UserProperty = (name, value)
    return properties


@settings(max_examples=200, deadline=None)
@given(properties=publish_properties(), payload=st.binary(max_size=50))
def test_whatever_properties_a_publish_carries_its_payload_comes_through(properties: Properties,
                                                                        payload: bytes) -> None:
    packet = publish_packet(properties.pack(), payload)
    with pahos_own_properties():
        pahos = outcome(packet)
    assert outcome(packet) == ("decoded", {}, payload)
    if pahos[0] == "decoded":
        assert pahos == ("decoded", properties.json(), payload)


def test_strings_and_counts_paho_refuses_or_chokes_on_no_longer_stop_the_message() -> None:
    byte_order_mark = Properties(PacketTypes.PUBLISH)
    byte_order_mark.ContentType = "\ufeff"  # MQTT 5 allows it and Mosquitto passes it on; paho refused it
    many = Properties(PacketTypes.PUBLISH)
    many.UserProperty = [("k", str(n)) for n in range(20_000)]  # paho's reading: time growing with their square
    for properties in (byte_order_mark, many):
        packet = publish_packet(properties.pack(), b'{"seq": 1}')
        if properties is byte_order_mark:
            with pahos_own_properties():
                assert outcome(packet)[0] == "refused"
        assert outcome(packet) == ("decoded", {}, b'{"seq": 1}')


@pytest.mark.parametrize(
    "block",
    [
        b"\x05\x02\x00",  # a length past the end of the packet
        b"\x80",  # a variable byte integer that never ends
        b"\xff\xff\xff\xff\x01",  # one more than four bytes long
        b"",  # no property length at all
    ],
)
def test_a_property_length_that_does_not_fit_the_packet_is_refused_as_paho_refuses_it(block: bytes) -> None:
    packet = publish_packet(block, b"")
    with pahos_own_properties():
        assert outcome(packet)[0] == "refused"
    assert outcome(packet)[0] == "refused"


@pytest.mark.parametrize(
    "block",
    [
        b"\x02\x7f\x00",  # an identifier MQTT 5 does not define
        b"\x04\x23\x00\x01\x23",  # Topic Alias, then a property cut short within the block
    ],
)
def test_a_block_paho_cannot_read_is_stepped_over_with_the_payload_kept(block: bytes) -> None:
    packet = publish_packet(block, b"{}")
    with pahos_own_properties():
        assert outcome(packet)[0] == "refused"
    assert outcome(packet) == ("decoded", {}, b"{}")


def test_other_packets_properties_are_read_as_paho_reads_them() -> None:
    sent = Properties(PacketTypes.CONNACK)
    sent.ReceiveMaximum = 20
    sent.AssignedClientIdentifier = "ingest-1"
    read, length = _PacketProperties(PacketTypes.CONNACK).unpack(sent.pack())
    assert read.json() == sent.json() and length == len(sent.pack())


def test_properties_built_for_sending_keep_pahos_checks() -> None:
    properties = _PacketProperties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = 60
    with pytest.raises(Exception, match="does not apply"):
        properties.SessionExpiryInterval = 5
    assert properties.json() == {"MessageExpiryInterval": 60}
    assert Properties(PacketTypes.PUBLISH).json() == {}  # the shared tables are not another object's attributes


def test_a_per_topic_callback_still_gets_its_messages() -> None:
    client = make_connection("mqtt://127.0.0.1:1", "test-callbacks").client
    assert list(client._on_message_filtered.iter_match("careloop/v1/devices/d1/telemetry")) == []
    callback = object()
    client.message_callback_add("careloop/v1/devices/+/telemetry", callback)
    assert list(client._on_message_filtered.iter_match("careloop/v1/devices/d1/telemetry")) == [callback]
    assert list(client._on_message_filtered.iter_match("careloop/v1/devices/d1/events")) == []
    client.message_callback_remove("careloop/v1/devices/+/telemetry")
    assert list(client._on_message_filtered.iter_match("careloop/v1/devices/d1/telemetry")) == []
