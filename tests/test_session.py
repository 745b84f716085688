"""The server's sans-I/O session state machine, with a fake clock."""

from __future__ import annotations

import json

import pytest

from edgenet.server.session import (
    BadRequest,
    DeviceSession,
    Fatal,
    HelloReceived,
    LocalProtocolError,
    LoginTimedOut,
    PeerClosed,
    PeerSilent,
    Phase,
    PingDue,
    RequestReceived,
    UploadData,
    UploadDone,
    UploadStalled,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA, FrameDecoder, Header, encode_frame


def events(conn: DeviceSession, data: bytes, now: float = 0.0) -> list[object]:
    conn.receive_data(data, now)
    out: list[object] = []
    for _ in range(1000):
        ev = conn.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, (Fatal, PeerClosed)):
            return out
    raise AssertionError("no end")


def reply_of(raw: bytes) -> dict[str, object]:
    dec = FrameDecoder()
    dec.receive_data(raw)
    ev = dec.next_event()
    assert isinstance(ev, Header)
    return ev.fields


def hello() -> bytes:
    return encode_frame({"type": "hello", "version": 1})


def logged_in(c: DeviceSession) -> None:
    """Hello, a login, and the server's ``ok`` to it through ``send``."""
    evs = events(c, hello() + encode_frame({"type": "login", "id": 99, "name": "a",
                                            "password": "p", "udp_port": 5}))
    assert isinstance(evs[-1], RequestReceived)
    c.send(m.HelloReply(1, "edgenet/test", 10))
    c.send(m.LoginOk(99, "s1", "a"))
    assert c.phase is Phase.READY


def test_hello_then_login_then_commands() -> None:
    c = DeviceSession(max_upload=1000, heartbeat=10, now=0)
    evs = events(c, hello() + encode_frame({"type": "login", "id": 1, "name": "a",
                                            "password": "p", "udp_port": 5}))
    assert isinstance(evs[0], HelloReceived)
    assert isinstance(evs[1], RequestReceived) and evs[1].request == m.Login(1, "a", "p", 5)
    # Before the login's ok has been sent, commands are refused.
    evs = events(c, encode_frame({"type": "compute", "id": 2, "file_id": 1, "op": "SUM"}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "not_logged_in"
    assert reply_of(c.send(m.LoginOk(1, "s1", "a"))) == {"type": "ok", "id": 1,
                                                         "session": "s1", "name": "a"}
    evs = events(c, encode_frame({"type": "compute", "id": 3, "file_id": 1, "op": "SUM"}))
    assert evs == [RequestReceived(m.Compute(3, 1, "SUM"))]


def test_a_refused_login_keeps_the_commands_closed() -> None:
    c = DeviceSession(1000, 10, 0)
    events(c, hello() + encode_frame({"type": "login", "id": 1, "name": "a",
                                      "password": "p", "udp_port": 5}))
    refusal = m.ErrorReply(1, "auth_failed", "Invalid password. Please try again",
                           attempts_left=2)
    assert reply_of(c.send(refusal))["attempts_left"] == 2
    assert c.phase is Phase.LOGIN
    with pytest.raises(LocalProtocolError):
        c.send(m.LoginOk(1, "s1", "a"))  # that login was answered already
    evs = events(c, encode_frame({"type": "delete", "id": 2, "file_id": 1}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "not_logged_in"


def test_send_refuses_what_the_protocol_does_not_allow() -> None:
    c = DeviceSession(1000, 10, 0)
    with pytest.raises(LocalProtocolError):
        c.send(m.HelloReply(1, "edgenet/test", 10))  # before the device's hello
    events(c, hello())
    c.send(m.HelloReply(1, "edgenet/test", 10))
    with pytest.raises(LocalProtocolError):
        c.send(m.HelloReply(1, "edgenet/test", 10))  # once
    with pytest.raises(LocalProtocolError):
        c.send(m.ComputeOk(5, 1, "SUM", "3"))  # a command's ok before login
    with pytest.raises(LocalProtocolError):
        c.send_encoded([b"\0\0\0\2{}"])
    assert reply_of(c.send(m.Ack(6))) == {"type": "ok", "id": 6}  # ping, logout: any time
    notice = c.send(m.Notice("shutdown", "the server is shutting down"))
    assert reply_of(notice)["kind"] == "shutdown" and c.phase is Phase.CLOSED
    with pytest.raises(LocalProtocolError):
        c.send(m.Ack(7))  # nothing after the notice
    assert isinstance(events(c, encode_frame({"type": "ping", "id": 8}))[0], PeerClosed)


def test_pre_encoded_replies_pass_through_unchanged_once_logged_in() -> None:
    c = DeviceSession(1000, 10, 0)
    logged_in(c)
    pieces: list[bytes | memoryview] = [b"\0\0\0\x1c",
                                        memoryview(b'{"type":"ok","id":3,"devices":[]}')]
    assert c.send_encoded(pieces) is pieces


def test_first_frame_must_be_hello_of_our_version() -> None:
    c = DeviceSession(1000, 10, 0)
    evs = events(c, encode_frame({"type": "ping", "id": 1}))
    assert isinstance(evs[0], Fatal) and evs[0].code == "hello_required"
    c = DeviceSession(1000, 10, 0)
    evs = events(c, encode_frame({"type": "hello", "version": 99}))
    assert isinstance(evs[0], Fatal) and evs[0].code == "unsupported_version"
    assert reply_of(evs[0].reply)["code"] == "unsupported_version"
    assert c.phase is Phase.CLOSED


def test_upload_streams_body_then_done() -> None:
    c = DeviceSession(1000, 10, 0)
    logged_in(c)
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": 7}, b"1\n2\n"))
    assert evs[0] == RequestReceived(m.Upload(1, 7, 4))
    assert b"".join(e.data for e in evs if isinstance(e, UploadData)) == b"1\n2\n"
    assert isinstance(evs[-1], UploadDone)


def test_bad_request_body_is_discarded_and_connection_continues() -> None:
    c = DeviceSession(1000, 10, 0)
    logged_in(c)
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": "x"}, b"junk")
                 + encode_frame({"type": "ping", "id": 2}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "bad_message"
    assert evs[1:] == [RequestReceived(m.Ping(2))]
    evs = events(c, encode_frame({"type": "compute", "id": 3, "file_id": 1, "op": "MEDIAN"}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "bad_operation"
    assert json.loads(evs[0].reply[4:])["id"] == 3


def test_oversize_upload_is_fatal() -> None:
    c = DeviceSession(max_upload=10, heartbeat=10, now=0)
    logged_in(c)
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": 1}, b"1\n" * 6))
    assert isinstance(evs[-1], Fatal) and evs[-1].code == "frame_too_large"


def test_heartbeat_pings_then_times_out() -> None:
    c = DeviceSession(1000, heartbeat=10, now=0)
    assert c.heartbeat_action(9.9) is None
    ping = c.heartbeat_action(10.0)
    assert isinstance(ping, PingDue) and reply_of(ping.frame) == {"type": "ping", "id": 1}
    assert c.heartbeat_action(15.0) is None  # one ping per interval
    second = c.heartbeat_action(20.0)
    assert isinstance(second, PingDue) and reply_of(second.frame)["id"] == 2
    assert c.heartbeat_action(25.0) == PeerSilent(25.0)  # 2.5 heartbeats


def test_traffic_resets_the_heartbeat() -> None:
    c = DeviceSession(1000, heartbeat=10, now=0)
    events(c, hello(), now=24.0)
    assert c.heartbeat_action(25.0) is None
    assert isinstance(c.heartbeat_action(48.9), PingDue)  # pinged, not yet dead
    assert c.heartbeat_action(49.0) == PeerSilent(25.0)


def test_a_device_reading_a_long_reply_is_not_silent_until_it_stops_reading() -> None:
    c = DeviceSession(1000, heartbeat=10, now=0)
    assert not c.quiet(9.9)
    assert c.quiet(10.0)  # the adapter looks whether the device still takes our bytes
    for t in (10.0, 20.0, 30.0):  # it does: no ping (it would wait behind the reply)
        c.peer_read(t)
        assert not c.quiet(t)
        assert c.heartbeat_action(t + 9.9) is None
    assert c.deadline() == 40.0  # the next look, a heartbeat after the last read
    assert isinstance(c.heartbeat_action(40.0), PingDue)  # it stopped reading
    assert c.heartbeat_action(49.9) is None
    assert isinstance(c.heartbeat_action(50.0), PingDue)
    assert c.heartbeat_action(54.9) is None
    assert c.heartbeat_action(55.0) == PeerSilent(25.0)  # 2.5 heartbeats after its last read


def test_reading_does_not_hold_off_a_stalled_upload() -> None:
    c = DeviceSession(1000, heartbeat=10, now=0, upload_idle_timeout=5)
    logged_in(c)
    body = encode_frame({"type": "upload", "id": 1, "file_id": 7}, b"1\n2\n")
    evs = events(c, body[:-2], now=1.0)  # the body's last two bytes never come
    assert isinstance(evs[-1], UploadData)
    assert not c.quiet(100.0)  # an upload's body is awaited: no pings, nothing to look at
    c.peer_read(5.5)
    assert c.heartbeat_action(6.0) == UploadStalled(5.0, 2, 4)


def test_clean_eof_is_peer_closed() -> None:
    c = DeviceSession(1000, 10, 0)
    events(c, hello())
    assert isinstance(events(c, b"")[0], PeerClosed)


def test_a_login_not_made_in_time() -> None:
    c = DeviceSession(1000, heartbeat=10, now=0, login_timeout=30)
    events(c, hello(), now=29.0)
    assert c.heartbeat_action(29.9) is None
    assert c.heartbeat_action(30.0) == LoginTimedOut(30)
