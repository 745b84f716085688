"""Hostile input, as properties: message validation and the server's session state
machine take any input and give typed results, never another exception, never
unbounded buffering. (The frame codec's own properties are in test_frames.py.)"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgenet.server.session import (
    BadRequest,
    DeviceSession,
    Fatal,
    HelloReceived,
    LoginTimedOut,
    PeerClosed,
    PeerSilent,
    Phase,
    RequestReceived,
    UploadData,
    UploadDone,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import MAX_HEADER, NEED_DATA, encode_frame, encode_header

TYPES = ["hello", "login", "upload", "compute", "delete", "list_devices", "lookup", "ping",
         "pong", "logout", "ok", "error", "notice", "", "LOGIN"]
KEYS = ["type", "id", "name", "password", "udp_port", "file_id", "op", "version", "agent",
        "body", "x"]
ERROR_CODES = {"bad_message", "unknown_type", "bad_operation"}
FRAME_CODES = {"bad_frame", "frame_too_large", "truncated", "hello_required",
               "unsupported_version"}

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=80),
    st.sampled_from(TYPES), st.sampled_from(m.OPERATIONS),
    st.integers(min_value=0, max_value=2**53), st.integers(min_value=0, max_value=65535))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
headers = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), json_values,
                          max_size=8)


@settings(max_examples=800, deadline=None)
@given(headers, st.integers(min_value=0, max_value=2**33))
def test_any_header_is_a_request_or_a_message_error(fields: dict[str, Any], body: int) -> None:
    try:
        req = m.parse_request(fields, body)
    except m.MessageError as exc:
        assert exc.code in ERROR_CODES
        assert exc.message and "\n" not in exc.message
        assert exc.request_id is None or (isinstance(exc.request_id, int)
                                          and 0 <= exc.request_id <= 2**53)
        # An error reply for it always encodes within the request header limit.
        refusal = m.ErrorReply(exc.request_id, exc.code, exc.message)
        assert len(encode_frame(m.reply_to_fields(refusal))) < MAX_HEADER
        return
    assert isinstance(req, (m.Hello, m.Login, m.Upload, m.Compute, m.Delete, m.ListDevices,
                            m.Lookup, m.Ping, m.Pong, m.Logout))
    if not isinstance(req, m.Upload):
        assert body == 0
    # A valid request survives the trip to the wire and back.
    assert m.parse_request(m.request_to_fields(req), body if isinstance(req, m.Upload) else 0) \
        == req


# -- the session state machine ----------------------------------------------------------


def valid_frames() -> st.SearchStrategy[bytes]:
    ids = st.integers(min_value=0, max_value=2**53)
    return st.one_of(
        st.builds(lambda: encode_frame({"type": "hello", "version": 1})),
        st.builds(lambda i, n, p: encode_frame({"type": "login", "id": i, "name": n,
                                                "password": p, "udp_port": 5}),
                  ids, st.text(max_size=70), st.text(max_size=20)),
        st.builds(lambda i, b: encode_header({"type": "upload", "id": i, "file_id": 1},
                                             len(b)) + b,
                  ids, st.binary(max_size=300)),
        st.builds(lambda i, op: encode_frame({"type": "compute", "id": i, "file_id": 1,
                                              "op": op}), ids, st.text(max_size=8)),
        st.builds(lambda i, t: encode_frame({"type": t, "id": i}), ids, st.sampled_from(TYPES)),
        st.builds(lambda h: encode_frame(h), headers),
    )


hostile_chunks = st.lists(st.one_of(
    valid_frames(),
    st.binary(max_size=200),                                       # noise
    st.builds(lambda f, n: f[:n], valid_frames(), st.integers(0, 40)),  # truncated
    st.builds(lambda n: struct.pack(">I", n), st.integers(0, 2**32 - 1)),  # bare lengths
    st.builds(lambda raw: struct.pack(">I", len(raw)) + raw,
              st.binary(min_size=1, max_size=100)),                  # framed garbage
), max_size=25)

EVENT_TYPES = (HelloReceived, RequestReceived, UploadData, UploadDone, BadRequest, Fatal,
               PeerClosed)


def run_session(chunks: list[bytes], step: int, login_after_first: bool, eof: bool
                ) -> list[object]:
    conn = DeviceSession(max_upload=10_000, heartbeat=10, now=0.0, login_timeout=30)
    stream = b"".join(chunks)
    out: list[object] = []
    for i in range(0, max(len(stream), 1), step):
        conn.receive_data(stream[i: i + step], float(i))
        for _ in range(10_000):
            ev = conn.next_event()
            if ev is NEED_DATA:
                break
            assert isinstance(ev, EVENT_TYPES), ev
            out.append(ev)
            if isinstance(ev, RequestReceived) and isinstance(ev.request, m.Login) \
                    and login_after_first and conn.phase is Phase.LOGIN:
                conn.send(m.LoginOk(ev.request.id, "s1", ev.request.name))
            if isinstance(ev, (Fatal, PeerClosed)):
                return out
        else:
            raise AssertionError("session did not stop producing events")
        # Bounded: one header plus one read is the most ever held.
        assert conn._decoder.buffered <= 4 + MAX_HEADER + step
    if eof:
        conn.receive_data(b"", 1e6)
        for _ in range(10_000):
            ev = conn.next_event()
            if ev is NEED_DATA:
                break
            out.append(ev)
            if isinstance(ev, (Fatal, PeerClosed)):
                break
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_chunks, st.integers(min_value=1, max_value=512), st.booleans(), st.booleans())
def test_session_takes_any_bytes(chunks: list[bytes], step: int, login: bool, eof: bool) -> None:
    events = run_session(chunks, step, login, eof)
    phase_seen_hello = False
    for ev in events:
        if isinstance(ev, Fatal):
            assert ev.code in FRAME_CODES
            reply = json.loads(ev.reply[4:])
            assert reply["type"] == "error" and reply["code"] == ev.code
        elif isinstance(ev, BadRequest):
            assert ev.code in ERROR_CODES | {"not_logged_in"}
            reply = json.loads(ev.reply[4:])
            assert reply["type"] == "error" and reply["code"] == ev.code
        elif isinstance(ev, HelloReceived):
            assert not phase_seen_hello  # a second hello is a BadRequest, not an event
            phase_seen_hello = True
        elif isinstance(ev, RequestReceived):
            # Nothing reaches the server's work before a hello; commands only after login.
            assert phase_seen_hello
            if not login:
                assert isinstance(ev.request, (m.Login, m.Ping, m.Pong, m.Logout)), ev
        elif isinstance(ev, UploadData):
            assert len(ev.data) <= 256 * 1024
    # Fatal or PeerClosed end the stream of events for good.
    for i, ev in enumerate(events):
        if isinstance(ev, (Fatal, PeerClosed)):
            assert i == len(events) - 1


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_liveness_actions_with_a_fake_clock(silence: float, since_open: float) -> None:
    conn = DeviceSession(max_upload=10, heartbeat=1.0, now=0.0, login_timeout=30.0)
    conn.receive_data(encode_frame({"type": "hello", "version": 1})
                      + encode_frame({"type": "login", "id": 1, "name": "a", "password": "p",
                                      "udp_port": 1}), 0.0)
    assert isinstance(conn.next_event(), HelloReceived)
    assert isinstance(conn.next_event(), RequestReceived)
    action = conn.heartbeat_action(since_open)
    if since_open >= 30.0:
        assert action == LoginTimedOut(30.0)
    elif since_open >= 2.5:
        assert isinstance(action, PeerSilent)
    conn.send(m.LoginOk(1, "s1", "a"))
    conn.receive_data(b"", since_open)  # the clock moves; EOF is not consumed here
    assert conn.phase is Phase.READY
    assert not isinstance(conn.heartbeat_action(since_open + silence), LoginTimedOut)
