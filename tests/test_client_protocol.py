"""The device's sans-I/O protocol core: frames in, typed events out, no sockets."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenet.client.protocol import (
    MAX_PENDING,
    ClientProtocol,
    ConnectionRefused,
    FrameIgnored,
    LocalProtocolError,
    NoticeReceived,
    Phase,
    PingReceived,
    ProtocolViolation,
    ReplyReceived,
    ServerClosed,
    UnsupportedVersion,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA, FrameDecoder, Header, encode_frame

HELLO = m.Hello(1, "edgenet-client/test")
SERVER_HELLO = m.HelloReply(1, "edgenet/test", 10.0)


def frame(reply: m.Reply | dict[str, Any]) -> bytes:
    return encode_frame(reply if isinstance(reply, dict) else m.reply_to_fields(reply))


def events(proto: ClientProtocol, data: bytes = b"") -> list[object]:
    if data:
        proto.receive_data(data)
    out: list[object] = []
    for _ in range(100):
        ev = proto.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if proto.phase is Phase.CLOSED:  # every event after this is ServerClosed
            return out
    raise AssertionError("no end")


def headers(data: bytes) -> list[tuple[dict[str, Any], int]]:
    """What a server would read from ``data``: (header, announced body) per frame."""
    dec = FrameDecoder()
    dec.receive_data(data)
    out = []
    while (ev := dec.next_event()) is not NEED_DATA:
        if isinstance(ev, Header):
            out.append((ev.fields, ev.body))
    return out


def greeted() -> ClientProtocol:
    proto = ClientProtocol()
    proto.send(HELLO)
    assert events(proto, frame(SERVER_HELLO)) == [ReplyReceived(HELLO, SERVER_HELLO)]
    return proto


def test_hello_first_then_requests() -> None:
    proto = ClientProtocol()
    with pytest.raises(LocalProtocolError):
        proto.send(m.ListDevices(proto.next_id()))
    data = proto.send(HELLO)
    assert headers(data) == [({"type": "hello", "version": 1, "agent": "edgenet-client/test"}, 0)]
    versions = ClientProtocol()
    data = versions.send(m.Hello(1, "edgenet-client/test", (1, 2)))
    assert headers(data) == [({"type": "hello", "version": 1, "agent": "edgenet-client/test",
                               "versions": [1, 2]}, 0)]
    assert proto.phase.value == "greeting"
    assert events(proto, frame(SERVER_HELLO)) == [ReplyReceived(HELLO, SERVER_HELLO)]
    assert proto.phase is Phase.OPEN and proto.server_hello == SERVER_HELLO
    with pytest.raises(LocalProtocolError):
        proto.send(HELLO)


def test_replies_are_matched_to_their_requests_by_id() -> None:
    proto = greeted()
    compute = m.Compute(proto.next_id(), 5, "SUM")
    delete = m.Delete(proto.next_id(), 6)
    sent = headers(proto.send(compute) + proto.send(delete))
    assert [f["id"] for f, _ in sent] == [1, 2]
    assert proto.waiting == (compute, delete)
    evs = events(proto, frame(m.DeleteOk(2, 6, 10)) + frame(m.ComputeOk(1, 5, "SUM", "99")))
    assert evs == [ReplyReceived(delete, m.DeleteOk(2, 6, 10)),
                   ReplyReceived(compute, m.ComputeOk(1, 5, "SUM", "99"))]
    assert not proto.waiting


def test_every_command_gets_its_typed_reply() -> None:
    proto = greeted()
    cases: list[tuple[m.Request, m.Reply]] = [
        (m.Login(proto.next_id(), "alpha", "pw", 6001), m.LoginOk(1, "s1", "alpha")),
        (m.Compute(proto.next_id(), 5, "MAX"), m.ComputeOk(2, 5, "MAX", "9")),
        (m.Delete(proto.next_id(), 5), m.ErrorReply(3, "not_found", "no such file")),
        (m.ListDevices(proto.next_id()), m.ListDevicesOk(4, (m.DeviceEntry(
            "beta", "192.0.2.2", 7, 1.5, "1 January 1970 00:00:01"),))),
        (m.Lookup(proto.next_id(), "beta"), m.LookupOk(5, "beta", "192.0.2.2", 7)),
        (m.Ping(proto.next_id()), m.Ack(6)),
        (m.Logout(proto.next_id()), m.Ack(7)),
    ]
    for request, reply in cases:
        proto.send(request)
        assert events(proto, frame(reply)) == [ReplyReceived(request, reply)]


def test_upload_header_then_body_and_pongs_wait_for_the_body() -> None:
    proto = greeted()
    upload = m.Upload(proto.next_id(), 5, 10)
    assert headers(proto.send(upload)) == [({"type": "upload", "id": 1, "file_id": 5}, 10)]
    with pytest.raises(LocalProtocolError):
        proto.send(m.Ping(proto.next_id()))  # would land inside the body
    piece = b"1\n2\n3\n"
    assert proto.send_body(piece) is piece
    assert proto.body_left == 4
    assert events(proto, frame(m.Ping(7))) == [PingReceived(7)]
    assert proto.data_to_send() == b""  # a pong now would corrupt the body
    with pytest.raises(LocalProtocolError):
        proto.send_body(b"12345")
    proto.send_body(b"4\n5\n")
    assert headers(proto.data_to_send()) == [({"type": "pong", "id": 7}, 0)]
    assert proto.data_to_send() == b""
    assert events(proto, frame(m.UploadOk(1, 5, 5, 10))) == [
        ReplyReceived(upload, m.UploadOk(1, 5, 5, 10))]


def test_an_early_refusal_of_an_upload_does_not_end_its_body() -> None:
    proto = greeted()
    upload = m.Upload(proto.next_id(), 5, 4)
    proto.send(upload)
    refusal = m.ErrorReply(1, "not_logged_in", "log in first")
    assert events(proto, frame(refusal)) == [ReplyReceived(upload, refusal)]
    assert proto.body_left == 4
    proto.send_body(b"1\n2\n")
    proto.send(m.ListDevices(proto.next_id()))


def test_empty_upload_has_no_body() -> None:
    proto = greeted()
    assert headers(proto.send(m.Upload(proto.next_id(), 5, 0))) == [
        ({"type": "upload", "id": 1, "file_id": 5}, 0)]
    assert proto.body_left == 0
    proto.send(m.Ping(proto.next_id()))


def test_ids_cannot_be_reused_while_waiting_and_waiting_is_bounded() -> None:
    proto = greeted()
    proto.send(m.Ping(1))
    with pytest.raises(LocalProtocolError):
        proto.send(m.Delete(1, 2))
    for rid in range(2, MAX_PENDING + 1):
        proto.send(m.Ping(rid))
    with pytest.raises(LocalProtocolError):
        proto.send(m.Ping(MAX_PENDING + 1))
    proto.send(m.Pong(3))  # a pong waits for nothing


@pytest.mark.parametrize("notice", [m.Notice("replaced", "this session was replaced"),
                                    m.Notice("shutdown", "")])
def test_a_notice_ends_the_connection(notice: m.Notice) -> None:
    proto = greeted()
    proto.send(m.ListDevices(proto.next_id()))
    assert events(proto, frame(notice) + frame(m.Ack(1))) == [NoticeReceived(notice)]
    assert proto.phase is Phase.CLOSED and proto.waiting == ()
    assert proto.next_event() == ServerClosed()
    with pytest.raises(LocalProtocolError):
        proto.send(m.Ping(proto.next_id()))


def test_hello_refusals() -> None:
    busy = m.ErrorReply(None, "server_busy", "the server is at its limit")
    proto = ClientProtocol()
    proto.send(HELLO)
    assert events(proto, frame(busy)) == [ReplyReceived(HELLO, busy)]
    assert proto.phase is Phase.CLOSED
    proto = ClientProtocol()
    proto.send(HELLO)
    assert events(proto, frame({"type": "hello", "version": 4, "server": "future"})) == [
        UnsupportedVersion(4)]
    assert proto.phase is Phase.CLOSED
    proto = ClientProtocol()
    proto.send(HELLO)
    shutdown = m.Notice("shutdown", "the server is shutting down")
    assert events(proto, frame(shutdown)) == [NoticeReceived(shutdown)]


def test_a_connection_level_error_after_hello_ends_it() -> None:
    proto = greeted()
    proto.send(m.ListDevices(proto.next_id()))
    refusal = m.ErrorReply(None, "bad_frame", "frame header is not valid JSON")
    assert events(proto, frame(refusal)) == [ConnectionRefused(refusal)]
    assert proto.phase is Phase.CLOSED


@pytest.mark.parametrize("data", [
    frame(m.Ack(9)),                                                # answers nothing sent
    frame({"type": "ok", "id": True}),                              # a bool is not an id
    frame({"type": "ok", "id": 1, "file_id": 5, "op": "SUM"}),      # no result
    frame({"type": "ping", "id": "x"}),
    b"\x15\x03\x03\x00\x02\x02\x46",                                # a TLS alert
    b"\x00\x00\x00\x00",                                            # an empty frame
    b"\x00\x00\x00\x02[]",                                          # not an object
])
def test_a_server_that_breaks_the_protocol_ends_the_connection(data: bytes) -> None:
    proto = greeted()
    proto.send(m.Compute(proto.next_id(), 5, "SUM"))
    proto.send(m.Ping(proto.next_id()))
    evs = events(proto, data)
    assert len(evs) == 1 and isinstance(evs[0], ProtocolViolation), evs
    assert evs[0].message and "\n" not in evs[0].message
    assert proto.phase is Phase.CLOSED and proto.data_to_send() == b""


def test_a_frame_other_than_hello_before_its_answer_is_a_violation() -> None:
    proto = ClientProtocol()
    proto.send(HELLO)
    evs = events(proto, frame(m.Ack(1)))
    assert len(evs) == 1 and isinstance(evs[0], ProtocolViolation)


def test_unknown_frames_pongs_and_bodies_are_skipped() -> None:
    proto = greeted()
    ping = m.Ping(proto.next_id())
    proto.send(ping)
    data = (frame({"type": "stats", "load": 1}) + frame({"type": "pong", "id": 4})
            + encode_frame({"type": "surprise"}, b"raw bytes") + frame(m.Ack(1)))
    assert events(proto, data) == [FrameIgnored("stats"), FrameIgnored("surprise"),
                                   ReplyReceived(ping, m.Ack(1))]


def test_end_of_stream() -> None:
    proto = greeted()
    proto.receive_data(b"")
    assert proto.next_event() == ServerClosed()
    assert proto.phase is Phase.CLOSED
    proto = greeted()
    proto.receive_data(b"")
    proto.receive_data(frame(m.Ack(1)))  # after the end: ignored
    assert proto.next_event() == ServerClosed()
    proto = greeted()
    proto.receive_data(frame(m.Ack(1))[:5])
    proto.receive_data(b"")
    ev = proto.next_event()
    assert isinstance(ev, ProtocolViolation) and ev.code == "truncated"


def test_byte_at_a_time_gives_the_same_events() -> None:
    data = (frame(SERVER_HELLO) + frame(m.Ping(3)) + frame(m.ComputeOk(1, 5, "MIN", "-2"))
            + frame(m.Notice("timeout", "bye")))
    whole, trickled = ClientProtocol(), ClientProtocol()
    for proto in (whole, trickled):
        proto.send(HELLO)
    expected = events(whole, data[:len(frame(SERVER_HELLO))])
    whole.send(m.Compute(1, 5, "MIN"))
    expected += events(whole, data[len(frame(SERVER_HELLO)):])
    got: list[object] = []
    for i in range(len(data)):
        if i == len(frame(SERVER_HELLO)):
            trickled.send(m.Compute(1, 5, "MIN"))
        got += events(trickled, data[i:i + 1])
    assert got == expected
    assert [type(e).__name__ for e in got] == ["ReplyReceived", "PingReceived", "ReplyReceived",
                                               "NoticeReceived"]


def test_pongs_answer_every_ping_in_order() -> None:
    proto = greeted()
    assert events(proto, frame(m.Ping(1)) + frame(m.Ping(2))) == [PingReceived(1),
                                                                 PingReceived(2)]
    assert headers(proto.data_to_send()) == [({"type": "pong", "id": 1}, 0),
                                             ({"type": "pong", "id": 2}, 0)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_any_bytes_from_the_server_give_events_never_exceptions(data: bytes, step: int) -> None:
    proto = greeted()
    proto.send(m.Compute(proto.next_id(), 5, "SUM"))
    proto.send(m.Upload(proto.next_id(), 6, 0))
    for i in range(0, len(data), step):
        events(proto, data[i:i + step])
    proto.receive_data(b"")
    assert isinstance(events(proto)[-1], (ServerClosed, ProtocolViolation))
    assert proto.phase is Phase.CLOSED


def test_the_core_and_the_wire_load_no_io() -> None:
    """Sans-I/O for real: importing them brings in no asyncio, socket or structlog."""
    code = ("import sys, edgenet.client.protocol, edgenet.wire.messages, edgenet.wire.frames; "
            "print(sorted({'asyncio', 'socket', 'ssl', 'structlog'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
