"""Sans-I/O server side of one device connection.

``DeviceSession`` takes bytes (and ``now``) in and gives typed events out: it
enforces the order hello -> login -> commands, turns frames into validated
requests, streams an upload's body as chunks, and says when a heartbeat ping
is due or the peer has been silent too long. Replies go out through ``send``,
which encodes them and makes the change of state they stand for (the ``ok`` of
the login opens the commands; a notice closes the session), as h11's
``Connection.send`` does. It owns no socket, no clock and no server state; the
asyncio adapter (``connection.py``) does the work each event asks for.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from edgenet.config import SILENT_HEARTBEATS
from edgenet.wire import messages as m
from edgenet.wire.frames import (
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    FrameError,
    Header,
    NeedData,
    encode_frame,
)


class Phase(enum.Enum):
    HELLO = "hello"
    LOGIN = "login"
    READY = "ready"
    CLOSED = "closed"


class LocalProtocolError(Exception):
    """The server side tried to send what the protocol does not allow now (our bug)."""


# -- events from the device ------------------------------------------------------


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
                | PeerClosed | NeedData)

# -- liveness (``heartbeat_action``) -----------------------------------------------


@dataclass(frozen=True)
class PingDue:
    """Send ``frame`` (a ping): the peer has been quiet for a heartbeat."""

    frame: bytes


@dataclass(frozen=True)
class PeerSilent:
    """Nothing received for ``seconds`` (2.5 heartbeats): give up on the peer."""

    seconds: float


@dataclass(frozen=True)
class LoginTimedOut:
    """Not logged in within ``seconds`` of opening: close the connection."""

    seconds: float


@dataclass(frozen=True)
class UploadStalled:
    """No byte of an upload's body for ``seconds`` (the upload idle timeout): drop the
    upload and the connection."""

    seconds: float
    #: Body bytes received before the stall.
    received: int
    expected: int


Liveness = PingDue | PeerSilent | LoginTimedOut | UploadStalled | None

#: Requests allowed before login.
_BEFORE_LOGIN = (m.Login, m.Ping, m.Pong, m.Logout)


class DeviceSession:
    # One a connection, 20,000 of them held at once: no instance dict.
    __slots__ = ("_decoder", "phase", "heartbeat", "login_timeout", "upload_idle_timeout",
                 "opened", "last_received", "last_read", "_last_ping", "_ping_id", "_uploading",
                 "_upload_expected", "_upload_received", "_discarding", "_hello_answered",
                 "_login_id", "version")

    def __init__(self, max_upload: int, heartbeat: float, now: float,
                 login_timeout: float | None = None,
                 upload_idle_timeout: float | None = None) -> None:
        self._decoder = FrameDecoder(max_body=max_upload)
        self.phase = Phase.HELLO
        self.heartbeat = heartbeat
        #: A connection not logged in this long after it opened is closed (None: never).
        self.login_timeout = login_timeout
        #: An upload whose body makes no progress this long is given up (None: never).
        self.upload_idle_timeout = upload_idle_timeout
        self.opened = now
        self.last_received = now
        #: When the device was last seen taking bytes of ours (``peer_read``).
        self.last_read = now
        self._last_ping = now
        self._ping_id = 0
        self._uploading = False
        self._upload_expected = 0
        self._upload_received = 0
        self._discarding = False
        self._hello_answered = False
        #: The id of the login request waiting for its reply.
        self._login_id: int | None = None
        #: The protocol version the hello settled on (the highest both speak).
        self.version = m.PROTOCOL_VERSION

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        self.last_received = now
        self._decoder.receive_data(data)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as events."""
        return self._decoder.buffered

    def next_event(self) -> SessionEvent:
        while True:
            if self.phase is Phase.CLOSED:
                return PeerClosed()
            try:
                ev = self._decoder.next_event()
            except FrameError as exc:
                return self._fatal(exc.code, exc.message)
            if ev is NEED_DATA:
                return NEED_DATA
            if isinstance(ev, Closed):
                self.phase = Phase.CLOSED
                return PeerClosed()
            if isinstance(ev, BodyChunk):
                if self._discarding:
                    continue
                self._upload_received += len(ev.data)
                return UploadData(ev.data)
            if isinstance(ev, BodyEnd):
                if self._discarding:
                    self._discarding = False
                    continue
                self._uploading = False
                return UploadDone()
            assert isinstance(ev, Header)
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
            return self._bad(exc.request_id, exc.code, exc.message)
        if self.phase is Phase.HELLO:
            if not isinstance(req, m.Hello):
                return self._fatal("hello_required", "the first frame must be a hello")
            version = negotiate(req)
            if version is None:
                spoken = ", ".join(str(v) for v in m.PROTOCOL_VERSIONS)
                asked = req.versions or (req.version,)
                return self._fatal("unsupported_version",
                                   f"protocol version {', '.join(map(str, asked))} is not "
                                   f"supported; this server speaks versions {spoken}")
            self.version = version
            self.phase = Phase.LOGIN
            return HelloReceived(req)
        if isinstance(req, m.Hello):
            return self._bad(None, "bad_message", "hello was already sent")
        if self.phase is Phase.LOGIN and not isinstance(req, _BEFORE_LOGIN):
            self._discarding = header.body > 0
            return self._bad(req.id, "not_logged_in", "log in first")
        if isinstance(req, m.Login):
            if self.phase is Phase.READY:
                return self._bad(req.id, "bad_message", "already logged in")
            self._login_id = req.id
        if isinstance(req, m.Upload):
            self._uploading = header.body > 0
            self._upload_expected, self._upload_received = header.body, 0
        return RequestReceived(req)

    def _bad(self, request_id: int | None, code: str, message: str) -> BadRequest:
        return BadRequest(_encode(m.ErrorReply(request_id, code, message)), code)

    def _fatal(self, code: str, message: str) -> Fatal:
        self.phase = Phase.CLOSED
        return Fatal(_encode(m.ErrorReply(None, code, message)), code, message)

    # -- output --------------------------------------------------------------

    def send(self, reply: m.Reply) -> bytes:
        """The frame of ``reply``, after the change of state it makes: the ``ok`` of the
        pending login (``LoginOk``) opens the commands, a ``Notice`` closes the session.
        Raises LocalProtocolError for a reply the protocol does not allow now."""
        if self.phase is Phase.CLOSED:
            raise LocalProtocolError("the session is closed")
        if isinstance(reply, m.Notice):
            self.phase = Phase.CLOSED
        elif isinstance(reply, m.HelloReply):
            if self.phase is Phase.HELLO or self._hello_answered:
                raise LocalProtocolError("hello is answered once, after the device's hello")
            self._hello_answered = True
        elif isinstance(reply, m.LoginOk):
            if self.phase is not Phase.LOGIN or reply.id != self._login_id:
                raise LocalProtocolError(f"no login {reply.id} waits for its ok")
            self.phase = Phase.READY
            self._login_id = None
        elif isinstance(reply, m.ErrorReply):
            if reply.id is not None and reply.id == self._login_id:
                self._login_id = None
        elif self.phase is not Phase.READY and not isinstance(reply, m.Ack):
            raise LocalProtocolError(f"{type(reply).__name__} before login")
        return _encode(reply)

    def send_encoded(self, pieces: Sequence[bytes | memoryview]) -> Sequence[bytes | memoryview]:
        """A reply already framed in pieces (AED's, assembled from a cache without a
        copy): checked like ``send`` of an ``ok`` to a command, returned as it is."""
        if self.phase is not Phase.READY:
            raise LocalProtocolError("a command's reply before login or after close")
        return pieces

    def close(self) -> None:
        """Closed without a word (the peer stopped reading): nothing more goes out."""
        self.phase = Phase.CLOSED

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def uploading(self) -> bool:
        return self._uploading

    # -- liveness --------------------------------------------------------------

    def waited(self, now: float) -> None:
        """The server made the device wait (an upload for a free slot) until ``now``:
        the device's silence meanwhile does not count against it."""
        self.last_received = max(self.last_received, now)

    def peer_read(self, now: float) -> None:
        """The device took bytes of ours since the adapter last looked (the connection's
        send queue shrank): it is alive, busy reading a long reply, and a ping queued
        behind that reply cannot be answered before it is read. As good as a frame
        from it for the heartbeat; a device that stops reading is silent again."""
        self.last_read = now

    def quiet(self, now: float) -> bool:
        """Whether the device has been silent long enough for a ping (the adapter then
        looks whether it is still reading, ``peer_read``)."""
        return not self._uploading and now - max(self.last_received, self.last_read) \
            >= self.heartbeat

    def deadline(self) -> float | None:
        """The next time at which ``heartbeat_action`` has something to say (the adapter
        calls it at or after this time; None: nothing is due, the session is closed)."""
        if self.phase is Phase.CLOSED:
            return None
        if self._uploading:
            if self.upload_idle_timeout is None:
                return None
            return self.last_received + self.upload_idle_timeout
        heard = max(self.last_received, self.last_read)
        due = [heard + SILENT_HEARTBEATS * self.heartbeat,
               max(heard, self._last_ping) + self.heartbeat]
        if self.login_timeout is not None and self.phase in (Phase.HELLO, Phase.LOGIN):
            due.append(self.opened + self.login_timeout)
        return min(due)

    def heartbeat_action(self, now: float) -> Liveness:
        """What the peer's silence calls for at ``now``, if anything. While an upload's
        body streams there are no pings (the device is busy sending); a body that
        makes no progress for ``upload_idle_timeout`` is ``UploadStalled``."""
        if self._uploading:
            idle = now - self.last_received
            if self.upload_idle_timeout is not None and idle >= self.upload_idle_timeout:
                return UploadStalled(idle, self._upload_received, self._upload_expected)
            return None
        if (self.login_timeout is not None and self.phase in (Phase.HELLO, Phase.LOGIN)
                and now - self.opened >= self.login_timeout):
            return LoginTimedOut(self.login_timeout)
        silent = now - max(self.last_received, self.last_read)
        if silent >= SILENT_HEARTBEATS * self.heartbeat:
            return PeerSilent(silent)
        if silent >= self.heartbeat and now - self._last_ping >= self.heartbeat:
            self._last_ping = now
            self._ping_id += 1
            return PingDue(_encode(m.Ping(self._ping_id)))
        return None


def negotiate(hello: m.Hello) -> int | None:
    """The version of a session: the highest of the hello's ``versions`` this server speaks
    (a version-1 device lists none: then its ``version``), or None."""
    common = set(hello.versions or (hello.version,)) & set(m.PROTOCOL_VERSIONS)
    return max(common) if common else None


#: The hello answers given so far (a server gives one or two: its version, its agent
#: and its heartbeat do not change), encoded once each.
_HELLO_FRAMES: dict[m.HelloReply, bytes] = {}


def _encode(reply: m.Reply) -> bytes:
    if type(reply) is m.HelloReply:
        frame = _HELLO_FRAMES.get(reply)
        if frame is None:
            frame = encode_frame(m.reply_to_fields(reply))
            if len(_HELLO_FRAMES) < 16:
                _HELLO_FRAMES[reply] = frame
        return frame
    return encode_frame(m.reply_to_fields(reply))
