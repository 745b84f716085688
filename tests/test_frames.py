"""The frame codec, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgenet.wire.frames import (
    MAX_HEADER,
    MAX_REPLY_HEADER,
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    FrameError,
    Header,
    encode_frame,
    encode_header,
)


def drain(dec: FrameDecoder) -> list[object]:
    out = []
    for _ in range(10_000):
        ev = dec.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if isinstance(ev, Closed):
            return out
    raise AssertionError("decoder did not stop")


def test_round_trip_byte_by_byte() -> None:
    wire = encode_frame({"type": "ping", "id": 1}) + encode_frame({"type": "upload", "id": 2}, b"1\n2\n")
    dec = FrameDecoder()
    events: list[object] = []
    for i in range(len(wire)):
        dec.receive_data(wire[i : i + 1])
        events += drain(dec)
    dec.receive_data(b"")
    events += drain(dec)
    assert events[0] == Header({"type": "ping", "id": 1}, 0)
    assert events[1] == Header({"type": "upload", "id": 2}, 4)
    body = b"".join(e.data for e in events if isinstance(e, BodyChunk))
    assert body == b"1\n2\n"
    assert isinstance(events[-2], BodyEnd) and isinstance(events[-1], Closed)


def test_streamed_header_and_body_chunks() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    dec = FrameDecoder()
    dec.receive_data(encode_header({"type": "upload", "id": 1}, len(body)) + body)
    events = drain(dec)
    chunks = [e for e in events if isinstance(e, BodyChunk)]
    assert b"".join(c.data for c in chunks) == body
    assert max(len(c.data) for c in chunks) <= 256 * 1024


@pytest.mark.parametrize("raw,code", [
    (struct.pack(">I", MAX_HEADER + 1), "frame_too_large"),
    (struct.pack(">I", 0), "bad_frame"),
    (struct.pack(">I", 3) + b"abc", "bad_frame"),
    (struct.pack(">I", 2) + b"\xff\xfe", "bad_frame"),
    (struct.pack(">I", 2) + b"[]", "bad_frame"),
    (struct.pack(">I", 11) + b'{"body":-1}', "bad_frame"),
    (struct.pack(">I", 13) + b'{"body":"12"}', "bad_frame"),
])
def test_bad_frames_are_typed_errors(raw: bytes, code: str) -> None:
    dec = FrameDecoder()
    dec.receive_data(raw)
    with pytest.raises(FrameError) as err:
        drain(dec)
    assert err.value.code == code
    with pytest.raises(FrameError):  # stays broken
        dec.next_event()


def test_body_over_limit_is_refused_before_reading_it() -> None:
    dec = FrameDecoder(max_body=10)
    dec.receive_data(encode_header({"type": "upload", "id": 1}, 11))
    with pytest.raises(FrameError) as err:
        drain(dec)
    assert err.value.code == "frame_too_large"


def test_eof_mid_frame_and_mid_body() -> None:
    dec = FrameDecoder()
    dec.receive_data(encode_frame({"type": "x"})[:-1])
    dec.receive_data(b"")
    with pytest.raises(FrameError) as err:
        drain(dec)
    assert err.value.code == "truncated"
    dec = FrameDecoder()
    dec.receive_data(encode_header({"type": "upload", "id": 1}, 100) + b"123")
    dec.receive_data(b"")
    with pytest.raises(FrameError) as err:
        drain(dec)
    assert err.value.code == "truncated"


def test_encoder_refuses_oversize_header() -> None:
    with pytest.raises(ValueError):
        encode_frame({"x": "a" * MAX_HEADER}, max_header=MAX_HEADER)
    with pytest.raises(ValueError):
        encode_header({"x": "a" * MAX_HEADER}, 10)
    # Replies (an AED listing thousands of devices) may be larger than requests.
    big = encode_frame({"x": "a" * MAX_HEADER})
    dec = FrameDecoder(max_header=MAX_REPLY_HEADER)
    dec.receive_data(big)
    assert isinstance(dec.next_event(), Header)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.integers(min_value=1, max_value=64))
def test_any_bytes_give_events_or_a_frame_error(data: bytes, step: int) -> None:
    dec = FrameDecoder(max_body=1 << 20)
    try:
        for i in range(0, len(data), step):
            dec.receive_data(data[i : i + step])
            drain(dec)
            # Bounded buffering: never more than one header plus one step of input.
            assert dec.buffered <= 4 + MAX_HEADER + step
        dec.receive_data(b"")
        drain(dec)
    except FrameError as exc:
        assert exc.code in {"bad_frame", "frame_too_large", "truncated"}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20),
                                                     st.booleans(), st.none()), max_size=8),
       st.binary(max_size=512))
def test_any_header_round_trips(fields: dict[str, object], body: bytes) -> None:
    fields.pop("body", None)
    dec = FrameDecoder()
    dec.receive_data(encode_frame(fields, body))
    events = drain(dec)
    assert events[0] == Header(fields, len(body))
    assert b"".join(e.data for e in events if isinstance(e, BodyChunk)) == body
