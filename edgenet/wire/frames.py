"""Sans-I/O frame codec for the device protocol (see docs/PROTOCOL.md).

A frame is a 4-byte big-endian length, then that many bytes of a UTF-8 JSON
object (the header). When the header carries ``"body": N`` (N > 0), exactly N
raw bytes follow the header: an upload's content travels as bytes, never as
base64. The decoder only buffers what it is given and hands out events; it owns
no socket and no clock, so it is tested without I/O (in the manner of h11).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final

#: Largest JSON header of a request (device -> server), after the length prefix.
MAX_HEADER: Final = 64 * 1024
#: Largest JSON header of a reply (server -> device): an AED reply lists every
#: active device, about 100 bytes each, so replies may be larger than requests.
MAX_REPLY_HEADER: Final = 16 * 2**20
#: Default largest body (an upload). The server may set its own limit.
DEFAULT_MAX_BODY: Final = 4 * 2**30
#: Largest body chunk handed out by one event.
MAX_CHUNK: Final = 256 * 1024

_LEN = struct.Struct(">I")


class FrameError(Exception):
    """The peer broke the framing rules. ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Header:
    """A complete JSON header. ``body`` raw bytes follow as BodyChunk events."""

    fields: dict[str, Any]
    body: int


@dataclass(frozen=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True)
class BodyEnd:
    pass


@dataclass(frozen=True)
class Closed:
    """The peer closed the stream at a frame boundary."""


class NeedData:
    """The type of NEED_DATA: more bytes are needed before the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


_NeedData = NeedData  # the older private name, still imported by the server's session
NEED_DATA: Final = NeedData()

FrameEvent = Header | BodyChunk | BodyEnd | Closed | NeedData


#: One encoder for every header (``json.dumps`` with arguments builds one per call).
_HEADER_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_frame(fields: dict[str, Any], body: bytes | None = None,
                 max_header: int = MAX_REPLY_HEADER) -> bytes:
    """Encode one frame. ``body`` (if any) is appended raw and announced in the header."""
    if body:
        fields = {**fields, "body": len(body)}
    raw = _HEADER_JSON.encode(fields).encode("utf-8")
    out = encode_raw_header(raw, max_header)
    return out + body if body else out


def encode_raw_header(raw: bytes, max_header: int = MAX_REPLY_HEADER) -> bytes:
    """Frame an already-encoded JSON object (for replies assembled from cached parts)."""
    if len(raw) > max_header:
        raise ValueError(f"frame header of {len(raw)} bytes exceeds {max_header}")
    return _LEN.pack(len(raw)) + raw


def encode_header(fields: dict[str, Any], body_len: int) -> bytes:
    """Encode a header that announces ``body_len`` bytes the caller streams after it."""
    if body_len < 0:
        raise ValueError("negative body length")
    return encode_frame({**fields, "body": body_len} if body_len else fields, None, MAX_HEADER)


class FrameDecoder:
    """Turns a byte stream into Header, BodyChunk, BodyEnd and Closed events.

    Buffering is bounded: at most one header (MAX_HEADER + 4 bytes) plus what
    one ``receive_data`` call brought in. After a FrameError the decoder stays
    broken and keeps raising the same error.
    """

    __slots__ = ("_max_header", "_max_body", "_buf", "_direct", "_body_left", "_in_body",
                 "_eof", "_error")

    def __init__(self, max_header: int = MAX_HEADER, max_body: int = DEFAULT_MAX_BODY) -> None:
        self._max_header = max_header
        self._max_body = max_body
        self._buf = bytearray()
        #: Body bytes received while nothing else was buffered: handed out as they
        #: are, without copying them through ``_buf`` (uploads run at disk speed).
        self._direct: bytes = b""
        self._body_left = 0
        self._in_body = False
        self._eof = False
        self._error: FrameError | None = None

    @property
    def in_body(self) -> bool:
        return self._in_body

    @property
    def buffered(self) -> int:
        return len(self._buf) + len(self._direct)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means end of stream."""
        if data:
            if self._eof:
                raise RuntimeError("data after EOF")
            if self._in_body and not self._buf and not self._direct:
                self._direct = bytes(data)
            else:
                if self._direct:
                    self._buf += self._direct
                    self._direct = b""
                self._buf += data
        else:
            self._eof = True

    def next_event(self) -> FrameEvent:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except FrameError as exc:
            self._error = exc
            raise

    def _next(self) -> FrameEvent:
        if self._in_body:
            if self._body_left == 0:
                self._in_body = False
                if self._direct:  # bytes after the body: the next frame
                    self._buf += self._direct
                    self._direct = b""
                return BodyEnd()
            if self._direct:
                n = min(self._body_left, len(self._direct), MAX_CHUNK)
                if n == len(self._direct):
                    chunk, self._direct = self._direct, b""
                else:
                    chunk, self._direct = self._direct[:n], self._direct[n:]
                self._body_left -= n
                return BodyChunk(chunk)
            if not self._buf:
                if self._eof:
                    raise FrameError("truncated", "connection closed in the middle of a body")
                return NEED_DATA
            n = min(self._body_left, len(self._buf), MAX_CHUNK)
            chunk = bytes(self._buf[:n])
            del self._buf[:n]
            self._body_left -= n
            return BodyChunk(chunk)
        if len(self._buf) < 4:
            if self._eof:
                if self._buf:
                    raise FrameError("truncated", "connection closed in the middle of a frame")
                return Closed()
            return NEED_DATA
        (length,) = _LEN.unpack_from(self._buf)
        if length > self._max_header:
            raise FrameError(
                "frame_too_large", f"frame header of {length} bytes exceeds {self._max_header}"
            )
        if length == 0:
            raise FrameError("bad_frame", "empty frame")
        if len(self._buf) < 4 + length:
            if self._eof:
                raise FrameError("truncated", "connection closed in the middle of a frame")
            return NEED_DATA
        raw = bytes(self._buf[4 : 4 + length])
        del self._buf[: 4 + length]
        fields = parse_header(raw)
        body = fields.pop("body", 0)
        if isinstance(body, bool) or not isinstance(body, int) or body < 0:
            raise FrameError("bad_frame", "'body' must be a non-negative integer")
        if body > self._max_body:
            raise FrameError(
                "frame_too_large", f"body of {body} bytes exceeds the limit of {self._max_body}"
            )
        if body:
            self._in_body = True
            self._body_left = body
        return Header(fields, body)


def parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("bad_frame", "frame header is not valid UTF-8") from None
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError("bad_frame", "frame header is not valid JSON") from None
    if not isinstance(fields, dict):
        raise FrameError("bad_frame", "frame header must be a JSON object")
    return fields
