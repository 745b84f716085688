"""The server's sans-I/O connection state machine, with a fake clock."""

from __future__ import annotations

import json

from edgenet.server.session import (
    BadRequest,
    Fatal,
    HelloReceived,
    PeerClosed,
    Phase,
    RequestReceived,
    ServerConnection,
    UploadData,
    UploadDone,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA, FrameDecoder, Header, encode_frame


def events(conn: ServerConnection, data: bytes, now: float = 0.0) -> list[object]:
    conn.receive_data(data, now)
    out = []
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


def test_hello_then_login_then_commands() -> None:
    c = ServerConnection(max_upload=1000, heartbeat=10, now=0)
    evs = events(c, hello() + encode_frame({"type": "login", "id": 1, "name": "a",
                                            "password": "p", "udp_port": 5}))
    assert isinstance(evs[0], HelloReceived)
    assert isinstance(evs[1], RequestReceived) and evs[1].request == m.Login(1, "a", "p", 5)
    # Before the adapter says the login succeeded, commands are refused.
    evs = events(c, encode_frame({"type": "compute", "id": 2, "file_id": 1, "op": "SUM"}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "not_logged_in"
    c.logged_in()
    evs = events(c, encode_frame({"type": "compute", "id": 3, "file_id": 1, "op": "SUM"}))
    assert evs == [RequestReceived(m.Compute(3, 1, "SUM"))]


def test_first_frame_must_be_hello_of_our_version() -> None:
    c = ServerConnection(1000, 10, 0)
    evs = events(c, encode_frame({"type": "ping", "id": 1}))
    assert isinstance(evs[0], Fatal) and evs[0].code == "hello_required"
    c = ServerConnection(1000, 10, 0)
    evs = events(c, encode_frame({"type": "hello", "version": 99}))
    assert isinstance(evs[0], Fatal) and evs[0].code == "unsupported_version"
    assert reply_of(evs[0].reply)["code"] == "unsupported_version"
    assert c.phase is Phase.CLOSED


def test_upload_streams_body_then_done() -> None:
    c = ServerConnection(1000, 10, 0)
    events(c, hello())
    c.logged_in()
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": 7}, b"1\n2\n"))
    assert evs[0] == RequestReceived(m.Upload(1, 7, 4))
    assert b"".join(e.data for e in evs if isinstance(e, UploadData)) == b"1\n2\n"
    assert isinstance(evs[-1], UploadDone)


def test_bad_request_body_is_discarded_and_connection_continues() -> None:
    c = ServerConnection(1000, 10, 0)
    events(c, hello())
    c.logged_in()
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": "x"}, b"junk")
                 + encode_frame({"type": "ping", "id": 2}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "bad_message"
    assert evs[1:] == [RequestReceived(m.Ping(2))]
    evs = events(c, encode_frame({"type": "compute", "id": 3, "file_id": 1, "op": "MEDIAN"}))
    assert isinstance(evs[0], BadRequest) and evs[0].code == "bad_operation"
    assert json.loads(evs[0].reply[4:])["id"] == 3


def test_oversize_upload_is_fatal() -> None:
    c = ServerConnection(max_upload=10, heartbeat=10, now=0)
    events(c, hello())
    c.logged_in()
    evs = events(c, encode_frame({"type": "upload", "id": 1, "file_id": 1}, b"1\n" * 6))
    assert isinstance(evs[-1], Fatal) and evs[-1].code == "frame_too_large"


def test_heartbeat_pings_then_times_out() -> None:
    c = ServerConnection(1000, heartbeat=10, now=0)
    assert c.heartbeat_action(9.9) is None
    ping = c.heartbeat_action(10.0)
    assert isinstance(ping, bytes) and reply_of(ping)["type"] == "ping"
    assert c.heartbeat_action(15.0) is None  # one ping per interval
    assert isinstance(c.heartbeat_action(20.0), bytes)
    assert c.heartbeat_action(25.0) == "timeout"


def test_traffic_resets_the_heartbeat() -> None:
    c = ServerConnection(1000, heartbeat=10, now=0)
    events(c, hello(), now=24.0)
    assert c.heartbeat_action(25.0) is None
    assert c.heartbeat_action(48.9) is not None  # pinged, not yet dead
    assert c.heartbeat_action(49.0) == "timeout"


def test_clean_eof_is_peer_closed() -> None:
    c = ServerConnection(1000, 10, 0)
    events(c, hello())
    assert isinstance(events(c, b"")[0], PeerClosed)
