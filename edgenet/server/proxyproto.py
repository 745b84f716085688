"""The PROXY protocol header (HAProxy's, versions 1 and 2), sans-I/O.

A load balancer in TCP mode that speaks the PROXY protocol sends one header
before the device's own bytes, naming the device's real address. This module
only parses: ``ProxyHeaderParser.receive_data(bytes)`` buffers,
``bytes_wanted()`` says how many more bytes to read so that not one byte past
the header is consumed (the device's TLS ClientHello may follow at once), and
``next_event()`` gives ``NEED_DATA``, a ``ProxyHeader`` or raises
``ProxyHeaderError``. No sockets, no clock.

Limits: a v1 line is at most 107 bytes (the specification's maximum); a v2
header at most 16 + ``MAX_V2_PAYLOAD`` bytes. TLVs of v2 are skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from edgenet.numbers import NumberError, parse_ascii_int

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest v1 line, CRLF included (the specification's own bound).
MAX_V1_LINE = 107
#: The longest v2 payload (addresses and TLVs) accepted; HAProxy sends far less.
MAX_V2_PAYLOAD = 2048
#: Bytes read before the version is known: both versions' headers are longer.
_PROBE = 12

Address = tuple[str, int]


class ProxyHeaderError(Exception):
    """The bytes are not a valid PROXY header (the peer broke the protocol)."""


@dataclass(frozen=True)
class ProxyHeader:
    """What the balancer says about the connection.

    ``command`` is ``proxy`` (``source`` is the device's address) or ``local``
    (the balancer's own connection, a health check; no addresses): then
    ``source`` is None and the socket's peer address stands.
    """

    version: int
    command: Literal["proxy", "local"]
    source: Address | None = None
    destination: Address | None = None


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class ProxyHeaderParser:
    """Parses one PROXY header from the start of a stream."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._done = False

    def receive_data(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("the header is complete; the rest belongs to the device")
        self._buf += data

    def bytes_wanted(self) -> int:
        """How many bytes to read next without reading past the header (0: complete)."""
        buf = self._buf
        if len(buf) < _PROBE:
            return _PROBE - len(buf)
        if buf.startswith(V2_SIGNATURE):
            if len(buf) < 16:
                return 16 - len(buf)
            length: int = struct.unpack_from(">H", buf, 14)[0]
            return max(0, 16 + length - len(buf))
        if buf.endswith(b"\r\n"):
            return 0
        return 1  # v1: up to the CRLF, one byte at a time (at most 107 of them)

    def next_event(self) -> _NeedData | ProxyHeader:
        buf = self._buf
        if len(buf) < _PROBE:
            return NEED_DATA
        if buf.startswith(V2_SIGNATURE):
            header = self._v2()
        elif buf.startswith(V1_PREFIX):
            header = self._v1()
        else:
            raise ProxyHeaderError("the connection does not start with a PROXY header")
        if header is not None:
            self._done = True
        return NEED_DATA if header is None else header

    @property
    def leftover(self) -> bytes:
        """Bytes received past the header (none, when reads follow ``bytes_wanted``)."""
        if not self._done:
            return b""
        end = self._end()
        return bytes(self._buf[end:])

    def _end(self) -> int:
        if self._buf.startswith(V2_SIGNATURE):
            return 16 + int(struct.unpack_from(">H", self._buf, 14)[0])
        return self._buf.find(b"\r\n") + 2

    # -- version 1: one text line -------------------------------------------------

    def _v1(self) -> ProxyHeader | None:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= MAX_V1_LINE:
                raise ProxyHeaderError(f"PROXY v1 line longer than {MAX_V1_LINE} bytes")
            return None
        if end + 2 > MAX_V1_LINE:
            raise ProxyHeaderError(f"PROXY v1 line longer than {MAX_V1_LINE} bytes")
        try:
            line = bytes(buf[:end]).decode("ascii")
        except UnicodeDecodeError:
            raise ProxyHeaderError("PROXY v1 line is not ASCII") from None
        parts = line.split(" ")
        if parts[1:2] == ["UNKNOWN"]:
            return ProxyHeader(1, "local")
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyHeaderError("PROXY v1 line is malformed")
        family = 4 if parts[1] == "TCP4" else 6
        src = _address(parts[2], parts[4], family)
        dst = _address(parts[3], parts[5], family)
        return ProxyHeader(1, "proxy", src, dst)

    # -- version 2: binary ---------------------------------------------------------

    def _v2(self) -> ProxyHeader | None:
        buf = self._buf
        if len(buf) < 16:
            return None
        ver_cmd, fam, length = struct.unpack_from(">BBH", buf, 12)
        if ver_cmd >> 4 != 2:
            raise ProxyHeaderError(f"PROXY v2 header of version {ver_cmd >> 4}")
        if length > MAX_V2_PAYLOAD:
            raise ProxyHeaderError(f"PROXY v2 payload of {length} bytes (at most "
                                   f"{MAX_V2_PAYLOAD})")
        if len(buf) < 16 + length:
            return None
        command = ver_cmd & 0x0F
        if command == 0:
            return ProxyHeader(2, "local")
        if command != 1:
            raise ProxyHeaderError(f"PROXY v2 command {command} is unknown")
        payload = bytes(buf[16:16 + length])
        family, proto = fam >> 4, fam & 0x0F
        if proto not in (0, 1) or family not in (1, 2):
            # UNSPEC, UNIX or datagram: nothing usable; keep the socket's address.
            return ProxyHeader(2, "local")
        size = 12 if family == 1 else 36
        if length < size:
            raise ProxyHeaderError("PROXY v2 address block is too short")
        alen = 4 if family == 1 else 16
        src_ip = ipaddress.ip_address(payload[:alen])
        dst_ip = ipaddress.ip_address(payload[alen:2 * alen])
        sport, dport = struct.unpack_from(">HH", payload, 2 * alen)
        return ProxyHeader(2, "proxy", (str(src_ip), sport), (str(dst_ip), dport))


def _address(ip: str, port: str, family: int) -> Address:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise ProxyHeaderError(f"PROXY v1 address {ip[:45]!r} is invalid") from None
    if addr.version != family:
        raise ProxyHeaderError("PROXY v1 address does not match its family")
    try:
        if len(port) > 1 and port.startswith("0"):
            raise NumberError("leading zero")
        number = parse_ascii_int(port, 0, 65535, "port")
    except NumberError:
        raise ProxyHeaderError(f"PROXY v1 port {port[:8]!r} is invalid") from None
    return str(addr), number


def encode_v2(source: Address, destination: Address) -> bytes:
    """A PROXY v2 header naming ``source`` (for tests and tools)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21
    payload = src.packed + dst.packed + struct.pack(">HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack(">BBH", 0x21, family, len(payload)) + payload


def encode_v1(source: Address, destination: Address) -> bytes:
    """A PROXY v1 line naming ``source``."""
    family = "TCP4" if ipaddress.ip_address(source[0]).version == 4 else "TCP6"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode("ascii"))
