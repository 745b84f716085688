"""Sans-I/O device side of the protocol: bytes in; typed replies, events and bytes out.

``ClientProtocol`` is what one connection to the server must remember, and nothing
else: hello comes first, which request each reply answers (by ``id``), a ``ping``
is answered with a ``pong`` (held back while an upload's body is on the wire, where
it would corrupt the stream), and a ``notice``, a connection-level error, the end of
the stream or a broken frame end the connection. It owns no socket, no clock and no
task (as h11): ``receive_data`` buffers, ``next_event`` hands out one event at a
time, ``send``/``send_body`` return the bytes to write, ``data_to_send`` returns
what the protocol itself has to say (pongs). ``edgenet.client.connection`` is its
asyncio adapter.

Two kinds of error, as in h11: a caller that breaks the rules (sends before hello,
reuses an id, overruns a body) gets ``LocalProtocolError``, a bug of ours; a server
that breaks them (bad framing, a reply that answers nothing or is malformed) ends
the connection with a ``ProtocolViolation`` event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from edgenet.wire import messages as m
from edgenet.wire.frames import (
    MAX_REPLY_HEADER,
    NEED_DATA,
    Closed,
    FrameDecoder,
    FrameError,
    Header,
    NeedData,
    encode_frame,
    encode_header,
)

#: Protocol versions this client speaks (the server answers hello with the one it chose).
SUPPORTED_VERSIONS: Final = m.PROTOCOL_VERSIONS
#: Requests waiting for their reply at once; the shell and the headless runner have
#: one or two, so more means a caller that never waits for its replies.
MAX_PENDING: Final = 64
#: Pongs kept while an upload's body is on the wire (the server sends no pings to a
#: device it is hearing from, so more than a few means a misbehaving server).
MAX_HELD_PONGS: Final = 8


class Phase(enum.Enum):
    START = "start"        # nothing sent yet
    GREETING = "greeting"  # hello sent, its answer awaited
    OPEN = "open"          # hello answered: requests and replies
    CLOSED = "closed"      # over; nothing more is read or sent


class LocalProtocolError(Exception):
    """The caller broke the protocol's rules (a bug in the client, not the server's)."""


@dataclass(frozen=True)
class ReplyReceived:
    """``reply`` answers ``request`` (a ``HelloReply`` or ``ErrorReply`` for ``Hello``;
    for the others their ``...Ok`` class or ``ErrorReply``)."""

    request: m.Request
    reply: m.Reply


@dataclass(frozen=True)
class PingReceived:
    """The server's heartbeat; the pong is waiting in ``data_to_send``."""

    id: int


@dataclass(frozen=True)
class NoticeReceived:
    """The server says why it is closing the connection; the connection is over."""

    notice: m.Notice


@dataclass(frozen=True)
class PeerOffered:
    """The server says a UVF is coming to this device (version 2): probe the sender's
    candidates, take the relay's datagrams of the token."""

    notice: m.PeerNotice


@dataclass(frozen=True)
class ConnectionRefused:
    """An ``error`` with a null ``id`` after hello (framing, ``server_busy``): the
    server closes the connection after it."""

    reply: m.ErrorReply


@dataclass(frozen=True)
class UnsupportedVersion:
    """The server's hello names a version this client does not speak (as sent)."""

    version: Any


@dataclass(frozen=True)
class ProtocolViolation:
    """The server broke the protocol (``code`` as in docs/PROTOCOL.md); the connection
    is over."""

    code: str
    message: str


@dataclass(frozen=True)
class FrameIgnored:
    """A well-formed frame of a type this client does not know (a newer server's);
    skipped."""

    kind: str


@dataclass(frozen=True)
class ServerClosed:
    """The stream ended at a frame boundary (or had already ended)."""


ClientEvent = (ReplyReceived | PingReceived | NoticeReceived | PeerOffered | ConnectionRefused
               | UnsupportedVersion | ProtocolViolation | FrameIgnored | ServerClosed | NeedData)


class ClientProtocol:
    """One device connection, from hello to close."""

    def __init__(self, max_reply_header: int = MAX_REPLY_HEADER) -> None:
        self._decoder = FrameDecoder(max_header=max_reply_header)
        self.phase = Phase.START
        self._next_id = 1
        self._pending: dict[int, m.Request] = {}
        self._hello: m.Hello | None = None
        self._body_left = 0
        self._pongs: list[int] = []
        self._eof = False
        #: What the server's hello said (set once it has answered).
        self.server_hello: m.HelloReply | None = None

    # -- sending ---------------------------------------------------------------

    def next_id(self) -> int:
        """A request id not used before on this connection (counting up from 1)."""
        rid = self._next_id
        self._next_id += 1
        return rid

    def send(self, request: m.Request) -> bytes:
        """The bytes of ``request``; its reply will come as a ``ReplyReceived``. An
        ``Upload``'s body follows through ``send_body`` before anything else is sent."""
        if self.phase is Phase.CLOSED:
            raise LocalProtocolError("the connection is closed")
        if self._body_left:
            raise LocalProtocolError("an upload's body is still being sent")
        if isinstance(request, m.Hello):
            if self.phase is not Phase.START:
                raise LocalProtocolError("hello was already sent")
            self.phase = Phase.GREETING
            self._hello = request
            return encode_frame(m.request_to_fields(request))
        if self.phase is Phase.START:
            raise LocalProtocolError("hello must be sent first")
        if not isinstance(request, m.Pong):
            if request.id in self._pending:
                raise LocalProtocolError(f"request {request.id} is still waiting for its reply")
            if len(self._pending) >= MAX_PENDING:
                raise LocalProtocolError(f"more than {MAX_PENDING} requests waiting")
            self._pending[request.id] = request
        if isinstance(request, m.Upload):
            self._body_left = request.size
            return encode_header(m.request_to_fields(request), request.size)
        return encode_frame(m.request_to_fields(request))

    def send_body(self, data: bytes) -> bytes:
        """Account for the next piece of the upload's body; returns it to be written
        (the same object: the body is never copied)."""
        if len(data) > self._body_left:
            raise LocalProtocolError(
                f"{len(data)} body bytes given, {self._body_left} announced still to send")
        self._body_left -= len(data)
        return data

    @property
    def body_left(self) -> int:
        """Bytes of the current upload's body not sent yet (0: none is being sent)."""
        return self._body_left

    def data_to_send(self) -> bytes:
        """What the protocol has to say by itself (pongs), once no body is in the way."""
        if self._body_left or not self._pongs or self.phase is Phase.CLOSED:
            return b""
        pongs, self._pongs = self._pongs, []
        return b"".join(encode_frame(m.request_to_fields(m.Pong(rid))) for rid in pongs)

    def close(self) -> None:
        """The caller ends the connection (an upload cut short leaves the stream unusable)."""
        self.phase = Phase.CLOSED
        self._pending.clear()
        self._pongs.clear()
        self._body_left = 0

    @property
    def waiting(self) -> tuple[m.Request, ...]:
        """Requests sent whose reply has not come yet."""
        return tuple(self._pending.values())

    # -- receiving -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes read from the server; ``b""`` at the end of the stream (anything after
        it is ignored)."""
        if self.phase is not Phase.CLOSED and not self._eof:
            self._eof = not data
            self._decoder.receive_data(data)

    def next_event(self) -> ClientEvent:
        while self.phase is not Phase.CLOSED:
            try:
                ev = self._decoder.next_event()
            except FrameError as exc:
                return self._violation(exc.code, exc.message)
            if isinstance(ev, Header):
                result = self._on_header(ev)
                if result is not None:
                    return result
            elif isinstance(ev, NeedData):
                return NEED_DATA
            elif isinstance(ev, Closed):
                self.close()
            # BodyChunk, BodyEnd: the server sends no bodies; a stray one is skipped.
        return ServerClosed()

    def _on_header(self, header: Header) -> ClientEvent | None:
        fields = header.fields
        kind = fields.get("type")
        try:
            if self.phase is Phase.GREETING:
                return self._on_greeting(fields)
            if kind in ("ok", "error"):
                return self._on_reply(fields)
            if kind == "ping":
                return self._on_ping(m.parse_reply(fields))
            if kind == "notice":
                return self._notice(m.parse_reply(fields))
            if kind == "peer":
                notice = m.parse_reply(fields)
                assert isinstance(notice, m.PeerNotice)
                return PeerOffered(notice)
        except m.MessageError as exc:
            return self._violation("bad_message",
                                   f"malformed {str(kind)[:40]} frame: {exc.message}")
        if kind == "pong":
            return None
        return FrameIgnored(str(kind)[:40])

    def _on_greeting(self, fields: dict[str, Any]) -> ClientEvent | None:
        assert self._hello is not None
        kind = fields.get("type")
        if kind == "hello":
            if fields.get("version") not in SUPPORTED_VERSIONS:
                self.close()
                return UnsupportedVersion(fields.get("version"))
            reply = m.parse_reply(fields)
            assert isinstance(reply, m.HelloReply)
            self.server_hello = reply
            self.phase = Phase.OPEN
            return ReplyReceived(self._hello, reply)
        if kind == "error":
            refusal = m.parse_reply(fields)
            self.close()  # a refused hello (version, busy, framing) ends the connection
            return ReplyReceived(self._hello, refusal)
        if kind == "notice":
            return self._notice(m.parse_reply(fields))
        if kind == "ping":
            return self._on_ping(m.parse_reply(fields))
        return self._violation("bad_message", f"a {str(kind)[:40]} frame before hello's answer")

    def _on_reply(self, fields: dict[str, Any]) -> ClientEvent:
        rid = fields.get("id")
        if rid is None and fields.get("type") == "error":
            refusal = m.parse_reply(fields)
            assert isinstance(refusal, m.ErrorReply)
            self.close()
            return ConnectionRefused(refusal)
        if isinstance(rid, bool) or not isinstance(rid, int) or rid not in self._pending:
            return self._violation("bad_message", f"a reply to request {str(rid)[:40]}, "
                                                  "which is not waiting for one")
        request = self._pending.pop(rid)
        return ReplyReceived(request, m.parse_reply(fields, request))

    def _on_ping(self, ping: m.Reply) -> PingReceived:
        assert isinstance(ping, m.Ping)
        if len(self._pongs) < MAX_HELD_PONGS:
            self._pongs.append(ping.id)
        return PingReceived(ping.id)

    def _notice(self, notice: m.Reply) -> NoticeReceived:
        assert isinstance(notice, m.Notice)
        self.close()
        return NoticeReceived(notice)

    def _violation(self, code: str, message: str) -> ProtocolViolation:
        self.close()
        return ProtocolViolation(code, message)
