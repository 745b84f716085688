"""The PROXY protocol header parser (sans-I/O): both versions, byte-exact reads, bad input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgenet.server.proxyproto import (
    NEED_DATA,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
    encode_v1,
    encode_v2,
)


def parse_exactly(data: bytes) -> tuple[ProxyHeader, int]:
    """Feed ``data`` as a socket reader would (``bytes_wanted`` at a time); returns the
    header and how many bytes were consumed."""
    parser = ProxyHeaderParser()
    used = 0
    while True:
        event = parser.next_event()
        if isinstance(event, ProxyHeader):
            return event, used
        want = parser.bytes_wanted()
        assert want > 0
        chunk = data[used:used + want]
        assert chunk, "ran out of data"
        parser.receive_data(chunk)
        used += len(chunk)


def test_v2_ipv4_and_not_one_byte_more() -> None:
    head = encode_v2(("192.0.2.7", 40000), ("127.0.0.1", 55000))
    header, used = parse_exactly(head + b"\x16\x03\x01 TLS hello follows")
    assert header == ProxyHeader(2, "proxy", ("192.0.2.7", 40000), ("127.0.0.1", 55000))
    assert used == len(head)


def test_v2_ipv6_with_tlvs_skipped() -> None:
    src, dst = ("2001:db8::5", 1234), ("2001:db8::1", 55000)
    base = encode_v2(src, dst)
    tlv = b"\x01\x00\x02h2"  # ALPN
    payload = base[16:] + tlv
    head = V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x21, len(payload)) + payload
    header, used = parse_exactly(head + b"rest")
    assert (header.source, header.destination, used) == (src, dst, len(head))


def test_v2_local_command_keeps_the_socket_address() -> None:
    head = V2_SIGNATURE + struct.pack(">BBH", 0x20, 0x00, 0)
    header, used = parse_exactly(head)
    assert header == ProxyHeader(2, "local") and used == 16


def test_v2_unix_family_is_treated_as_local() -> None:
    payload = b"\x00" * 216
    head = V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x31, len(payload)) + payload
    assert parse_exactly(head)[0].command == "local"


def test_v1_tcp4_tcp6_unknown() -> None:
    line = encode_v1(("198.51.100.9", 5555), ("127.0.0.1", 55000))
    header, used = parse_exactly(line + b"\x00\x00\x00\x10{...")
    assert header == ProxyHeader(1, "proxy", ("198.51.100.9", 5555), ("127.0.0.1", 55000))
    assert used == len(line)
    six, _ = parse_exactly(b"PROXY TCP6 2001:db8::2 ::1 7 55000\r\n")
    assert six.source == ("2001:db8::2", 7)
    unknown, used = parse_exactly(b"PROXY UNKNOWN\r\n")
    assert unknown.command == "local" and used == 15


def test_whole_header_in_one_piece_with_leftover() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2)) + b"DEVICE")
    assert isinstance(parser.next_event(), ProxyHeader)
    assert parser.leftover == b"DEVICE"


@pytest.mark.parametrize("data, message", [
    (b"\x00\x00\x00\x10{\"type\":\"hello\"}", "does not start"),
    (b"GET / HTTP/1.1\r\n\r\n", "does not start"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "malformed"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 1 99999\r\n", "port"),
    (b"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n", "port"),
    (b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "family"),
    (b"PROXY TCP4 nonsense 192.0.2.2 1 2\r\n", "invalid"),
    (b"PROXY TCP4 " + b"1" * 120, "longer than 107"),
    (b"PROXY TCP4 \xff\xfe 192.0.2.2 1 2\r\n", "ASCII"),
    (V2_SIGNATURE + struct.pack(">BBH", 0x11, 0x11, 12) + b"\x00" * 12, "version 1"),
    (V2_SIGNATURE + struct.pack(">BBH", 0x2F, 0x11, 12) + b"\x00" * 12, "command 15"),
    (V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x11, 4) + b"\x00" * 4, "too short"),
    (V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x11, 60000), "payload of 60000"),
])
def test_malformed_headers_are_refused(data: bytes, message: str) -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyHeaderError, match=message):
        for i in range(len(data)):
            parser.receive_data(data[i:i + 1])
            parser.next_event()


def test_incomplete_input_needs_data() -> None:
    parser = ProxyHeaderParser()
    parser.receive_data(encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2))[:20])
    assert parser.next_event() is NEED_DATA and parser.bytes_wanted() == 8


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_or_overread(data: bytes) -> None:
    parser = ProxyHeaderParser()
    used = 0
    outcome = "need_data"
    while used < len(data) and outcome == "need_data":
        try:
            event = parser.next_event()
        except ProxyHeaderError:
            outcome = "refused"  # the one failure allowed
            break
        if isinstance(event, ProxyHeader):
            outcome = "header"
            break
        want = parser.bytes_wanted()
        assert 0 < want <= 2064
        parser.receive_data(data[used:used + want])
        used += want
    if outcome == "header":
        assert parser.leftover == b""  # reads of bytes_wanted never pass the header
