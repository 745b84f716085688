"""Sans-I/O server side of one device connection.

``ServerConnection`` takes bytes (and ``now``) in and gives typed events out:
it enforces the order hello -> login -> commands, turns frames into validated
requests, streams an upload's body as chunks, and tells the caller when a
heartbeat ping is due or the peer has been silent too long. It owns no socket,
no clock and no server state; the asyncio adapter (``connection.py``) does the
work each event asks for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from edgenet.wire import messages as m
from edgenet.wire.frames import (
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    FrameError,
    Header,
    _NeedData,
    encode_frame,
)


class Phase(enum.Enum):
    HELLO = "hello"
    LOGIN = "login"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True)
class HelloReceived:
    hello: m.Hello


@dataclass(frozen=True)
class RequestReceived:
    request: m.Request


@dataclass(frozen=True)
class UploadData:
    data: bytes


@dataclass(frozen=True)
class UploadDone:
    pass


@dataclass(frozen=True)
class BadRequest:
    """A well-framed request that cannot be served; reply and keep the connection."""

    reply: bytes
    code: str


@dataclass(frozen=True)
class Fatal:
    """The peer broke the protocol: send ``reply`` (if any) and close."""

    reply: bytes
    code: str
    message: str


@dataclass(frozen=True)
class PeerClosed:
    pass


SessionEvent = (HelloReceived | RequestReceived | UploadData | UploadDone | BadRequest | Fatal
                | PeerClosed | _NeedData)

#: Requests allowed before login.
_BEFORE_LOGIN = (m.Login, m.Ping, m.Pong, m.Logout)


class ServerConnection:
    def __init__(self, max_upload: int, heartbeat: float, now: float,
                 login_timeout: float | None = None) -> None:
        self._decoder = FrameDecoder(max_body=max_upload)
        self.phase = Phase.HELLO
        self.heartbeat = heartbeat
        #: A connection not logged in this long after it opened is closed (None: never).
        self.login_timeout = login_timeout
        self.opened = now
        self.last_received = now
        self._last_ping = now
        self._ping_id = 0
        self._uploading = False
        self._discarding = False

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        self.last_received = now
        self._decoder.receive_data(data)

    def next_event(self) -> SessionEvent:
        while True:
            if self.phase is Phase.CLOSED:
                return PeerClosed()
            try:
                ev = self._decoder.next_event()
            except FrameError as exc:
                return self._fatal(exc.code, exc.message)
            if isinstance(ev, _NeedData):
                return NEED_DATA
            if isinstance(ev, Closed):
                self.phase = Phase.CLOSED
                return PeerClosed()
            if isinstance(ev, BodyChunk):
                if self._discarding:
                    continue
                return UploadData(ev.data)
            if isinstance(ev, BodyEnd):
                if self._discarding:
                    self._discarding = False
                    continue
                self._uploading = False
                return UploadDone()
            result = self._on_header(ev)
            if result is not None:
                return result

    def _on_header(self, header: Header) -> SessionEvent | None:
        try:
            req = m.parse_request(header.fields, header.body)
        except m.MessageError as exc:
            self._discarding = header.body > 0
            if self.phase is Phase.HELLO:
                return self._fatal("hello_required", "the first frame must be a valid hello")
            return BadRequest(self.reply(m.error(exc.request_id, exc.code, exc.message)), exc.code)
        if self.phase is Phase.HELLO:
            if not isinstance(req, m.Hello):
                return self._fatal("hello_required", "the first frame must be a hello")
            if req.version != m.PROTOCOL_VERSION:
                return self._fatal("unsupported_version",
                                   f"protocol version {req.version} is not supported; "
                                   f"this server speaks version {m.PROTOCOL_VERSION}")
            self.phase = Phase.LOGIN
            return HelloReceived(req)
        if isinstance(req, m.Hello):
            return BadRequest(self.reply(m.error(None, "bad_message", "hello was already sent")),
                              "bad_message")
        if self.phase is Phase.LOGIN and not isinstance(req, _BEFORE_LOGIN):
            self._discarding = header.body > 0
            return BadRequest(self.reply(m.error(req.id, "not_logged_in", "log in first")),
                              "not_logged_in")
        if isinstance(req, m.Login) and self.phase is Phase.READY:
            return BadRequest(self.reply(m.error(req.id, "bad_message", "already logged in")),
                              "bad_message")
        if isinstance(req, m.Upload):
            self._uploading = header.body > 0
        return RequestReceived(req)

    def _fatal(self, code: str, message: str) -> Fatal:
        self.phase = Phase.CLOSED
        return Fatal(encode_frame(m.error(None, code, message)), code, message)

    # -- state changes told by the adapter -----------------------------------

    def logged_in(self) -> None:
        self.phase = Phase.READY

    def close(self) -> None:
        self.phase = Phase.CLOSED

    @property
    def uploading(self) -> bool:
        return self._uploading

    # -- output --------------------------------------------------------------

    def reply(self, fields: dict[str, Any]) -> bytes:
        return encode_frame(fields)

    # -- liveness --------------------------------------------------------------

    def heartbeat_action(self, now: float) -> bytes | str | None:
        """``"login_timeout"`` when the connection has not logged in within
        ``login_timeout``, ``"timeout"`` when the peer has been silent for 2.5
        heartbeats, the bytes of a ping when one is due, else None."""
        if (self.login_timeout is not None and self.phase in (Phase.HELLO, Phase.LOGIN)
                and now - self.opened >= self.login_timeout):
            return "login_timeout"
        silent = now - self.last_received
        if silent >= 2.5 * self.heartbeat:
            return "timeout"
        if silent >= self.heartbeat and now - self._last_ping >= self.heartbeat:
            self._last_ping = now
            self._ping_id += 1
            return encode_frame({"type": "ping", "id": self._ping_id})
        return None
