"""Typed replies (server -> device): encoding, and validation from a header."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenet.wire import messages as m
from edgenet.wire.frames import FrameDecoder, Header, encode_frame

ENTRY = m.DeviceEntry("camera1", "192.0.2.7", 45500, 1764095312.25, "25 November 2026 18:28:32")

#: (request, its ok reply) for every request that has one.
OK_CASES: list[tuple[m.Request, m.OkReply]] = [
    (m.Login(1, "alpha", "pw", 6001), m.LoginOk(1, "s-1", "alpha")),
    (m.Upload(2, 5, 30), m.UploadOk(2, 5, 10, 30)),
    (m.Compute(3, 5, "AVERAGE"), m.ComputeOk(3, 5, "AVERAGE", "4742.3")),
    (m.Delete(4, 5), m.DeleteOk(4, 5, 10)),
    (m.ListDevices(5), m.ListDevicesOk(5, (ENTRY,))),
    (m.ListDevices(6), m.ListDevicesOk(6, ())),
    (m.Lookup(7, "camera1"), m.LookupOk(7, "camera1", "192.0.2.7", 45500)),
    (m.Ping(8), m.Ack(8)),
    (m.Logout(9), m.Ack(9)),
]


def wire_trip(fields: dict[str, Any]) -> dict[str, Any]:
    """Through the frame codec, as a device receives it."""
    dec = FrameDecoder()
    dec.receive_data(encode_frame(fields))
    ev = dec.next_event()
    assert isinstance(ev, Header)
    return ev.fields


@pytest.mark.parametrize(("request_", "reply"), OK_CASES)
def test_ok_replies_survive_the_wire(request_: m.Request, reply: m.OkReply) -> None:
    fields = wire_trip(m.reply_to_fields(reply))
    assert fields["type"] == "ok" and fields["id"] == reply.id
    assert m.parse_reply(fields, request_) == reply


@pytest.mark.parametrize("reply", [
    m.HelloReply(1, "edgenet/1.0", 10.0),
    m.HelloReply(1, "edgenet/1.0"),
    m.ErrorReply(3, "not_found", "the file does not exist at the server side"),
    m.ErrorReply(4, "auth_failed", "Invalid password. Please try again", attempts_left=2),
    m.ErrorReply(5, "blocked", "blocked", seconds_left=10),
    m.ErrorReply(None, "server_busy", "the server is at its limit"),
    m.Notice("replaced", "this session was replaced"),
    m.Ping(12),
])
def test_unprompted_and_error_replies_survive_the_wire(reply: m.Reply) -> None:
    assert m.parse_reply(wire_trip(m.reply_to_fields(reply))) == reply


def test_typed_replies_encode_as_the_protocol_documents() -> None:
    """Byte for byte, fields in the order the server has always sent them."""
    pairs: list[tuple[m.Reply, dict[str, Any]]] = [
        (m.HelloReply(1, "edgenet/1.0", 10.0),
         {"type": "hello", "version": 1, "server": "edgenet/1.0", "heartbeat": 10.0}),
        (m.Notice("shutdown", "the server is shutting down"),
         {"type": "notice", "kind": "shutdown", "message": "the server is shutting down"}),
        (m.ErrorReply(7, "blocked", "wait", seconds_left=9),
         {"type": "error", "id": 7, "code": "blocked", "message": "wait", "seconds_left": 9}),
        (m.ErrorReply(4, "auth_failed", "again", attempts_left=2),
         {"type": "error", "id": 4, "code": "auth_failed", "message": "again",
          "attempts_left": 2}),
        (m.ErrorReply(None, "bad_frame", "empty frame"),
         {"type": "error", "id": None, "code": "bad_frame", "message": "empty frame"}),
        (m.Ack(3), {"type": "ok", "id": 3}),
        (m.LoginOk(1, "s", "alpha"), {"type": "ok", "id": 1, "session": "s", "name": "alpha"}),
        (m.UploadOk(2, 5, 10, 30),
         {"type": "ok", "id": 2, "file_id": 5, "samples": 10, "bytes": 30}),
        (m.ComputeOk(3, 5, "SUM", "12"),
         {"type": "ok", "id": 3, "file_id": 5, "op": "SUM", "result": "12"}),
        (m.DeleteOk(4, 5, 10), {"type": "ok", "id": 4, "file_id": 5, "samples": 10}),
        (m.LookupOk(7, "b", "192.0.2.1", 9),
         {"type": "ok", "id": 7, "name": "b", "ip": "192.0.2.1", "udp_port": 9}),
        (m.Ping(12), {"type": "ping", "id": 12}),
    ]
    for typed, documented in pairs:
        assert encode_frame(m.reply_to_fields(typed)) == encode_frame(documented), typed


def test_device_list_matches_the_servers_cached_encoding() -> None:
    """The AED entry keys and their order are those of the server's cached listing."""
    raw = json.dumps(ENTRY.to_fields(), separators=(",", ":"))
    assert list(json.loads(raw)) == ["name", "ip", "udp_port", "since", "since_text"]
    fields = {"type": "ok", "id": 5, "devices": [json.loads(raw)]}
    assert m.parse_reply(fields, m.ListDevices(5)) == m.ListDevicesOk(5, (ENTRY,))


@pytest.mark.parametrize(("fields", "request_"), [
    ({"type": "ok", "id": 3, "file_id": 5, "op": "SUM"}, m.Compute(3, 5, "SUM")),  # no result
    ({"type": "ok", "id": 3, "file_id": 5, "op": "SUM", "result": 12}, m.Compute(3, 5, "SUM")),
    ({"type": "ok", "id": 3, "file_id": 5, "op": "MEDIAN", "result": "1"},
     m.Compute(3, 5, "SUM")),
    ({"type": "ok", "id": 2, "file_id": -1, "samples": 1, "bytes": 2}, m.Upload(2, 5, 2)),
    ({"type": "ok", "id": 2, "file_id": 5, "samples": True, "bytes": 2}, m.Upload(2, 5, 2)),
    ({"type": "ok", "id": 5, "devices": {}}, m.ListDevices(5)),
    ({"type": "ok", "id": 5, "devices": ["x"]}, m.ListDevices(5)),
    ({"type": "ok", "id": 5, "devices": [{**ENTRY.to_fields(), "udp_port": 70000}]},
     m.ListDevices(5)),
    ({"type": "ok", "id": 5, "devices": [{**ENTRY.to_fields(), "since": "today"}]},
     m.ListDevices(5)),
    ({"type": "ok", "id": 7, "name": "b", "ip": "192.0.2.1"}, m.Lookup(7, "b")),
    ({"type": "ok", "id": 8}, m.Logout(9)),                       # answers another id
    ({"type": "ok", "id": 8}, None),                              # answers nothing
    ({"type": "ok", "id": "8"}, m.Ping(8)),
    ({"type": "ok", "id": 8}, m.Hello(1)),
    ({"type": "hello", "version": "1"}, None),
    ({"type": "hello", "version": 1, "heartbeat": -1}, None),
    ({"type": "error", "id": 3, "code": 404}, None),
    ({"type": "error", "id": 3.5, "code": "x", "message": "y"}, None),
    ({"type": "error", "id": 3, "code": "x", "message": "y", "seconds_left": -1}, None),
    ({"type": "ping"}, None),
    ({"type": "notice", "kind": 1, "message": "m"}, None),
])
def test_malformed_replies_are_message_errors(fields: dict[str, Any],
                                              request_: m.Request | None) -> None:
    with pytest.raises(m.MessageError) as info:
        m.parse_reply(fields, request_)
    assert info.value.code == "bad_message"
    assert info.value.message and "\n" not in info.value.message


def test_unknown_reply_type() -> None:
    with pytest.raises(m.MessageError) as info:
        m.parse_reply({"type": "surprise", "id": 1})
    assert info.value.code == "unknown_type"


def test_newer_fields_are_ignored_and_error_text_may_be_missing() -> None:
    fields = {"type": "ok", "id": 2, "file_id": 5, "samples": 1, "bytes": 2, "sha256": "ab"}
    assert m.parse_reply(fields, m.Upload(2, 5, 2)) == m.UploadOk(2, 5, 1, 2)
    assert m.parse_reply({"type": "error", "id": 4}) == m.ErrorReply(4, "", "")
    assert m.parse_reply({"type": "notice"}) == m.Notice("", "")
    assert m.parse_reply({"type": "hello", "version": 2}) == m.HelloReply(2, "", None)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**64, max_value=2**64),
              st.floats(allow_nan=False), st.text(max_size=20),
              st.sampled_from(["ok", "error", "hello", "ping", "notice", "SUM"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)
reply_keys = st.sampled_from(["type", "id", "code", "message", "file_id", "samples", "bytes",
                              "op", "result", "devices", "name", "ip", "udp_port", "session",
                              "version", "heartbeat", "kind", "seconds_left"])
requests = st.sampled_from([req for req, _ in OK_CASES] + [None])


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(reply_keys, json_values, max_size=8), requests)
def test_any_header_is_a_reply_or_a_message_error(fields: dict[str, Any],
                                                  request_: m.Request | None) -> None:
    try:
        reply = m.parse_reply(fields, request_)
    except m.MessageError as exc:
        assert exc.code in ("bad_message", "unknown_type")
        return
    # A valid reply survives the trip to the wire and back.
    assert m.parse_reply(wire_trip(m.reply_to_fields(reply)), request_) == reply
