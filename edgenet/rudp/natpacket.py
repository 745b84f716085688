"""The datagrams that get UVF across NATs: registration with the server's rendezvous,
probes between devices, and the relay's envelope. Sans-I/O, like ``packet``.

They share the 12-byte UVF header (magic ``"UV"``, version 1, type, a 64-bit id) and
take the types after ABORT, so one UDP socket carries them beside the transfers and a
device that does not know them drops them as malformed:

* REGISTER (9, device -> server): id = a nonce chosen by the device; the 16-byte token the
  server gave over the TCP session, then zero padding to ``REGISTER_SIZE`` (48) bytes.
* REGISTERED (10, server -> device): id = the nonce echoed; the address the server saw the
  REGISTER come from (port u16, family u8 4 or 6, 16 address bytes: IPv4 in the first 4),
  and the keepalive in seconds (u16). 33 bytes: always smaller than the REGISTER it
  answers, so the server never sends more than it received.
* PROBE (11) and PROBE_ACK (12) (device <-> device): id = the rendezvous token of one UVF;
  a nonce u32 and the sender's role u8 (0 sends the file, 1 receives it). An ACK echoes
  the nonce and is exactly as long as the PROBE.
* RELAY (13, device -> server -> device): id = the rendezvous token; the rest is one whole
  UVF datagram (OFFER ... ABORT). The server forwards it unchanged.

Layouts and rules are in docs/PROTOCOL.md, part 2. Decoding never trusts a length:
anything that does not add up raises ``packet.PacketError``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from .packet import HEADER, HEADER_SIZE, MAGIC, VERSION, PacketError


class PathType(IntEnum):
    REGISTER = 9
    REGISTERED = 10
    PROBE = 11
    PROBE_ACK = 12
    RELAY = 13


#: The lowest type of these datagrams: a datagram whose type byte is this or more goes to
#: the path logic, not to the transfers.
FIRST_PATH_TYPE = int(PathType.REGISTER)
TOKEN_BYTES = 16
REGISTER_SIZE = 48
_REGISTERED_BODY = struct.Struct("!HB16sH")  # port, family, address, keepalive
REGISTERED_SIZE = HEADER_SIZE + _REGISTERED_BODY.size  # 33
_PROBE_BODY = struct.Struct("!IB")
PROBE_SIZE = HEADER_SIZE + _PROBE_BODY.size  # 17
#: Bytes the relay's envelope adds to a UVF datagram.
RELAY_OVERHEAD = HEADER_SIZE
ROLE_SENDER = 0
ROLE_RECEIVER = 1
_ID = struct.Struct("!Q")
assert REGISTERED_SIZE < REGISTER_SIZE  # the server's answer is never larger


@dataclass(frozen=True, slots=True)
class Register:
    nonce: int
    token: bytes


@dataclass(frozen=True, slots=True)
class Registered:
    nonce: int
    host: str
    port: int
    keepalive: int


@dataclass(frozen=True, slots=True)
class Probe:
    token: int
    nonce: int
    role: int
    ack: bool


def path_type(data: bytes | memoryview) -> int:
    """The type of a datagram for the path logic, after checking magic and version; raises
    PacketError. Cheap: the header only."""
    if len(data) < HEADER_SIZE:
        raise PacketError("malformed", "datagram shorter than the header")
    magic, version, ptype, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PacketError("malformed", "bad magic")
    if version != VERSION:
        raise PacketError("version", f"unsupported version {version}")
    if not PathType.REGISTER <= ptype <= PathType.RELAY:
        raise PacketError("malformed", f"unknown type {ptype}")
    return int(ptype)


def header_id(data: bytes | memoryview) -> int:
    """The 64-bit id of a datagram whose header was checked."""
    return int(_ID.unpack_from(data, 4)[0])


def encode_register(p: Register) -> bytes:
    if len(p.token) != TOKEN_BYTES:
        raise ValueError(f"a registration token is {TOKEN_BYTES} bytes")
    out = HEADER.pack(MAGIC, VERSION, PathType.REGISTER, p.nonce) + p.token
    return out + bytes(REGISTER_SIZE - len(out))


def decode_register(data: bytes) -> Register:
    if path_type(data) != PathType.REGISTER or len(data) != REGISTER_SIZE:
        raise PacketError("malformed", "bad REGISTER")
    token = bytes(data[HEADER_SIZE : HEADER_SIZE + TOKEN_BYTES])
    return Register(header_id(data), token)


def encode_registered(p: Registered) -> bytes:
    ip = ipaddress.ip_address(p.host.split("%", 1)[0])
    family = 4 if ip.version == 4 else 6
    packed = ip.packed.ljust(16, b"\0")
    body = _REGISTERED_BODY.pack(p.port, family, packed, min(p.keepalive, 0xFFFF))
    return HEADER.pack(MAGIC, VERSION, PathType.REGISTERED, p.nonce) + body


def decode_registered(data: bytes) -> Registered:
    if path_type(data) != PathType.REGISTERED or len(data) != REGISTERED_SIZE:
        raise PacketError("malformed", "bad REGISTERED")
    port, family, packed, keepalive = _REGISTERED_BODY.unpack_from(data, HEADER_SIZE)
    if family == 4:
        host = str(ipaddress.IPv4Address(packed[:4]))
    elif family == 6:
        host = str(ipaddress.IPv6Address(packed))
    else:
        raise PacketError("malformed", "bad address family")
    return Registered(header_id(data), host, port, keepalive)


def encode_probe(p: Probe) -> bytes:
    ptype = PathType.PROBE_ACK if p.ack else PathType.PROBE
    return HEADER.pack(MAGIC, VERSION, ptype, p.token) + _PROBE_BODY.pack(p.nonce, p.role)


def decode_probe(data: bytes) -> Probe:
    ptype = path_type(data)
    if ptype not in (PathType.PROBE, PathType.PROBE_ACK) or len(data) != PROBE_SIZE:
        raise PacketError("malformed", "bad PROBE")
    nonce, role = _PROBE_BODY.unpack_from(data, HEADER_SIZE)
    if role not in (ROLE_SENDER, ROLE_RECEIVER):
        raise PacketError("malformed", "bad role")
    return Probe(header_id(data), nonce, role, ptype == PathType.PROBE_ACK)


def relay_prefix(token: int) -> bytes:
    """The envelope put before each UVF datagram sent through the relay."""
    return HEADER.pack(MAGIC, VERSION, PathType.RELAY, token)
