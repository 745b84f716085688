"""UVF datagram codec: one struct-based, versioned binary header and a small body per type.

Every datagram starts with the same 12-byte header::

    magic "UV" (2) | version u8 | type u8 | transfer id u64      (network byte order)

DATA adds ``chunk index u32 | send timestamp u32 (microseconds)`` and carries the chunk bytes in
the rest of the datagram, so its header is 20 bytes. The layouts are documented in
docs/PROTOCOL.md (part 2). Decoding never trusts a length field: anything that does not add up
raises ``PacketError`` and the caller drops (and counts) the datagram.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"UV"
VERSION = 1
#: The version of the one datagram that is new in version 2: an ACCEPT that lists the
#: chunks the receiver already holds (resumable UVF). Every other datagram stays version 1,
#: and a version-1 peer drops this one as a version it does not know (docs/PROTOCOL.md).
RESUME_VERSION = 2

HEADER = struct.Struct("!2sBBQ")
HEADER_SIZE = HEADER.size  # 12
DATA_HEADER = struct.Struct("!2sBBQII")
DATA_HEADER_SIZE = DATA_HEADER.size  # 20

#: Largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP).
MAX_DATAGRAM = 65507
#: Largest chunk that still fits in one datagram.
MAX_CHUNK_SIZE = MAX_DATAGRAM - DATA_HEADER_SIZE
MIN_CHUNK_SIZE = 64
#: UDP payload that fits a 1500-byte Ethernet MTU over IPv4 without fragmentation.
MTU_PAYLOAD_IPV4 = 1472
#: Control datagrams (ACK with ranges, OFFER with names) stay below this many bytes.
MAX_CONTROL_SIZE = 1200
#: Upper bound on SACK ranges in one ACK (also bounded by MAX_CONTROL_SIZE).
MAX_ACK_RANGES = 256
#: Upper bound on the held ranges a version-2 ACCEPT lists.
MAX_HELD_RANGES = 64
MAX_NAME_BYTES = 255
MAX_CODE_BYTES = 32
MAX_MESSAGE_BYTES = 512
U32 = 0xFFFFFFFF


class PacketType(IntEnum):
    OFFER = 1
    ACCEPT = 2
    DATA = 3
    ACK = 4
    FIN = 5
    DONE = 6
    CLOSE = 7
    ABORT = 8


class PacketError(ValueError):
    """A datagram that is not a valid UVF datagram; ``reason`` is "malformed" or "version"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Offer:
    """Sender -> receiver: "may I send you this file?" (retransmitted until answered)."""

    transfer_id: int
    size: int
    chunk_size: int
    sha256: bytes
    sender_name: str
    filename: str
    timestamp: int


@dataclass(frozen=True, slots=True)
class Accept:
    """Receiver -> sender: offer accepted; ``limit`` is the first chunk index not yet allowed.
    ``held`` (version 2 only): half-open chunk ranges the receiver already holds from an
    earlier transfer of the same file, ascending and disjoint; the sender skips them."""

    transfer_id: int
    limit: int
    timestamp_echo: int
    held: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Data:
    transfer_id: int
    index: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """Receiver -> sender: every chunk below ``cumulative`` arrived, plus the half-open
    ``ranges`` above it; the sender may send chunks below ``limit`` (flow control)."""

    transfer_id: int
    cumulative: int
    limit: int
    timestamp_echo: int
    ack_delay_us: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Fin:
    """Sender -> receiver: every chunk is acknowledged; waiting for DONE."""

    transfer_id: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Done:
    """Receiver -> sender: SHA-256 verified and the file renamed into place as ``saved_name``."""

    transfer_id: int
    saved_name: str


@dataclass(frozen=True, slots=True)
class Close:
    """Sender -> receiver: DONE received; the receiver may forget the transfer."""

    transfer_id: int


@dataclass(frozen=True, slots=True)
class Abort:
    """Either way: the transfer is over with an error (also the reply refusing an offer)."""

    transfer_id: int
    code: str
    message: str


Packet = Offer | Accept | Data | Ack | Fin | Done | Close | Abort

_OFFER_BODY = struct.Struct("!QII32sBH")  # size, chunk size, timestamp, sha256, name lengths
_ACCEPT_BODY = struct.Struct("!II")
_HELD_COUNT = struct.Struct("!H")
_ACK_BODY = struct.Struct("!IIIIH")  # cumulative, limit, ts echo, ack delay, range count
_FIN_BODY = struct.Struct("!I")
_ABORT_BODY = struct.Struct("!BH")


def _header(ptype: PacketType, transfer_id: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, ptype, transfer_id)


def peek(data: bytes | memoryview) -> tuple[int, int]:
    """Return ``(type, transfer id)`` after checking magic, version and type; cheap."""
    if len(data) < HEADER_SIZE:
        raise PacketError("malformed", "datagram shorter than the header")
    magic, version, ptype, transfer_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError("malformed", "bad magic")
    if version != VERSION and not (version == RESUME_VERSION and ptype == PacketType.ACCEPT):
        raise PacketError("version", f"unsupported version {version}")
    if not PacketType.OFFER <= ptype <= PacketType.ABORT:
        raise PacketError("malformed", f"unknown type {ptype}")
    return ptype, transfer_id


def _encode_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > limit:
        raise ValueError(f"text longer than {limit} bytes")
    return raw


def _decode_text(raw: bytes | memoryview) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketError("malformed", "text is not UTF-8") from exc


def encode_offer(p: Offer) -> bytes:
    sender = _encode_text(p.sender_name, MAX_NAME_BYTES)
    name = _encode_text(p.filename, MAX_NAME_BYTES * 4)
    if len(p.sha256) != 32:
        raise ValueError("sha256 must be 32 bytes")
    body = _OFFER_BODY.pack(
        p.size, p.chunk_size, p.timestamp & U32, p.sha256, len(sender), len(name)
    )
    return _header(PacketType.OFFER, p.transfer_id) + body + sender + name


def encode_accept(p: Accept) -> bytes:
    """Version 1 without ``held``; with it, version 2 (at most MAX_HELD_RANGES ranges)."""
    body = _ACCEPT_BODY.pack(p.limit, p.timestamp_echo & U32)
    if not p.held:
        return _header(PacketType.ACCEPT, p.transfer_id) + body
    if len(p.held) > MAX_HELD_RANGES:
        raise ValueError(f"at most {MAX_HELD_RANGES} held ranges")
    out = bytearray()
    previous_end = 0
    for start, end in p.held:
        if start < previous_end or end <= start or end > U32:
            raise ValueError("held ranges must be ascending, disjoint and non-empty")
        _put_varint(out, start - previous_end)
        _put_varint(out, end - start)
        previous_end = end
    header = HEADER.pack(MAGIC, RESUME_VERSION, PacketType.ACCEPT, p.transfer_id)
    return header + body + _HELD_COUNT.pack(len(p.held)) + bytes(out)


def encode_data_header(transfer_id: int, index: int, timestamp: int) -> bytes:
    return DATA_HEADER.pack(MAGIC, VERSION, PacketType.DATA, transfer_id, index, timestamp & U32)


def encode_data(p: Data) -> bytes:
    return encode_data_header(p.transfer_id, p.index, p.timestamp) + p.payload


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_ack(p: Ack, max_size: int = MAX_CONTROL_SIZE) -> bytes:
    """Encode an ACK; ranges (ascending, above ``cumulative``) that do not fit are left out,
    lowest first kept, since the lowest gaps are the ones the sender must repair first."""
    out = bytearray()
    count = 0
    previous_end = p.cumulative
    budget = max_size - HEADER_SIZE - _ACK_BODY.size
    for start, end in p.ranges:
        if count >= MAX_ACK_RANGES:
            break
        if start < previous_end or end <= start:
            raise ValueError("ACK ranges must be ascending, disjoint, above cumulative")
        item = bytearray()
        _put_varint(item, start - previous_end)
        _put_varint(item, end - start)
        if len(out) + len(item) > budget:
            break
        out += item
        count += 1
        previous_end = end
    body = _ACK_BODY.pack(
        p.cumulative, p.limit, p.timestamp_echo & U32, min(p.ack_delay_us, U32), count
    )
    return _header(PacketType.ACK, p.transfer_id) + body + bytes(out)


def encode_fin(p: Fin) -> bytes:
    return _header(PacketType.FIN, p.transfer_id) + _FIN_BODY.pack(p.timestamp & U32)


def encode_done(p: Done) -> bytes:
    return _header(PacketType.DONE, p.transfer_id) + _encode_text(p.saved_name, MAX_NAME_BYTES * 4)


def encode_close(p: Close) -> bytes:
    return _header(PacketType.CLOSE, p.transfer_id)


def encode_abort(p: Abort) -> bytes:
    code = _encode_text(p.code, MAX_CODE_BYTES)
    message = p.message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
    # Cutting at a byte limit can split a character; keep the message decodable.
    message = message.decode("utf-8", "ignore").encode("utf-8")
    return (
        _header(PacketType.ABORT, p.transfer_id)
        + _ABORT_BODY.pack(len(code), len(message))
        + code
        + message
    )


def encode(p: Packet) -> bytes:
    if isinstance(p, Data):
        return encode_data(p)
    if isinstance(p, Ack):
        return encode_ack(p)
    if isinstance(p, Offer):
        return encode_offer(p)
    if isinstance(p, Accept):
        return encode_accept(p)
    if isinstance(p, Fin):
        return encode_fin(p)
    if isinstance(p, Done):
        return encode_done(p)
    if isinstance(p, Close):
        return encode_close(p)
    return encode_abort(p)


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise PacketError("malformed", "truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 35:
            raise PacketError("malformed", "varint too long")


def decode(data: bytes) -> Packet:
    """Decode one datagram; raises PacketError for anything malformed."""
    ptype, tid = peek(data)
    size = len(data)
    if ptype == PacketType.DATA:
        if size < DATA_HEADER_SIZE:
            raise PacketError("malformed", "DATA shorter than its header")
        _, _, _, _, index, ts = DATA_HEADER.unpack_from(data)
        return Data(tid, index, ts, data[DATA_HEADER_SIZE:])
    body = HEADER_SIZE
    if ptype == PacketType.ACK:
        if size < body + _ACK_BODY.size:
            raise PacketError("malformed", "short ACK")
        cumulative, limit, echo, delay, count = _ACK_BODY.unpack_from(data, body)
        if count > MAX_ACK_RANGES:
            raise PacketError("malformed", "too many ACK ranges")
        ranges, pos = _get_ranges(data, body + _ACK_BODY.size, count, cumulative, "ACK")
        if pos != size:
            raise PacketError("malformed", "trailing bytes in ACK")
        return Ack(tid, cumulative, limit, echo, delay, tuple(ranges))
    if ptype == PacketType.OFFER:
        if size < body + _OFFER_BODY.size:
            raise PacketError("malformed", "short OFFER")
        fsize, chunk, ts, digest, sender_len, name_len = _OFFER_BODY.unpack_from(data, body)
        pos = body + _OFFER_BODY.size
        if pos + sender_len + name_len != size:
            raise PacketError("malformed", "OFFER lengths do not add up")
        sender = _decode_text(data[pos : pos + sender_len])
        name = _decode_text(data[pos + sender_len :])
        return Offer(tid, fsize, chunk, digest, sender, name, ts)
    if ptype == PacketType.ACCEPT:
        if data[2] == RESUME_VERSION:
            return _decode_held_accept(data, tid)
        if size != body + _ACCEPT_BODY.size:
            raise PacketError("malformed", "bad ACCEPT length")
        limit, echo = _ACCEPT_BODY.unpack_from(data, body)
        return Accept(tid, limit, echo)
    if ptype == PacketType.FIN:
        if size != body + _FIN_BODY.size:
            raise PacketError("malformed", "bad FIN length")
        return Fin(tid, _FIN_BODY.unpack_from(data, body)[0])
    if ptype == PacketType.DONE:
        if size > body + MAX_NAME_BYTES * 4:
            raise PacketError("malformed", "DONE too long")
        return Done(tid, _decode_text(data[body:]))
    if ptype == PacketType.CLOSE:
        if size != body:
            raise PacketError("malformed", "bad CLOSE length")
        return Close(tid)
    if size < body + _ABORT_BODY.size:
        raise PacketError("malformed", "short ABORT")
    code_len, message_len = _ABORT_BODY.unpack_from(data, body)
    pos = body + _ABORT_BODY.size
    if pos + code_len + message_len != size or code_len > MAX_CODE_BYTES:
        raise PacketError("malformed", "ABORT lengths do not add up")
    return Abort(
        tid, _decode_text(data[pos : pos + code_len]), _decode_text(data[pos + code_len :])
    )


def _get_ranges(data: bytes, pos: int, count: int, base: int, what: str
                ) -> tuple[list[tuple[int, int]], int]:
    """``count`` ranges as (gap, length) varint pairs, each gap from the end of the one
    before (the first from ``base``): the ranges and the position after them."""
    ranges: list[tuple[int, int]] = []
    previous_end = base
    for _ in range(count):
        gap, pos = _get_varint(data, pos)
        length, pos = _get_varint(data, pos)
        start = previous_end + gap
        end = start + length
        if length == 0 or end > U32:
            raise PacketError("malformed", f"bad {what} range")
        ranges.append((start, end))
        previous_end = end
    return ranges, pos


def _decode_held_accept(data: bytes, tid: int) -> Accept:
    pos = HEADER_SIZE + _ACCEPT_BODY.size + _HELD_COUNT.size
    if len(data) < pos or len(data) > MAX_CONTROL_SIZE:
        raise PacketError("malformed", "bad version-2 ACCEPT length")
    limit, echo = _ACCEPT_BODY.unpack_from(data, HEADER_SIZE)
    (count,) = _HELD_COUNT.unpack_from(data, HEADER_SIZE + _ACCEPT_BODY.size)
    if not 0 < count <= MAX_HELD_RANGES:
        raise PacketError("malformed", f"an ACCEPT lists 1 to {MAX_HELD_RANGES} held ranges")
    held, pos = _get_ranges(data, pos, count, 0, "held")
    if pos != len(data):
        raise PacketError("malformed", "trailing bytes in ACCEPT")
    return Accept(tid, limit, echo, tuple(held))
