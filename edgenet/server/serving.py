"""What a device connection does with each request, from login to logout.

``RequestServer`` holds a connection's session state (the sans-I/O
``DeviceSession``, the device's name once logged in, the upload in flight) and
serves each request through ``commands``, ``login`` and the ``ServerState`` it
is handed. It writes through four methods the transport side
(``connection.DeviceConnection``) provides: write, drain, wait until written,
and set the write buffer's mark.
"""

from __future__ import annotations

import contextlib
import time

import structlog

from edgenet.server import commands, peering
from edgenet.server.interfaces import BackendUnavailable, PendingUpload
from edgenet.server.login import judge_login
from edgenet.server.session import DeviceSession
from edgenet.server.state import ServerState
from edgenet.wire import messages as m

log = structlog.get_logger("edgenet.server")


def unavailable_reply(request_id: int | None, exc: BackendUnavailable) -> m.ErrorReply:
    """A request that needs the fleet's shared state while it is unreachable."""
    return m.ErrorReply(request_id, "service_unavailable", exc.message)


class SlowReader(ConnectionError):
    """The peer did not read its replies within the send timeout."""


class RequestServer:
    """One device's requests and replies (the transport is the subclass's)."""

    __slots__ = ("state", "proto", "ip", "peer", "name", "session_id", "commands",
                 "bytes_uploaded", "busy",
                 "_closing", "_upload", "_started", "_streaming", "_held",
                 "_close_after_stream", "_stop_after_command")

    #: Replies up to this size are written whole; larger framed replies stream
    #: (set by the subclass: ``connection.WRITE_BUFFER_HIGH``, ``REPLY_PIECE``).
    write_high = 256 * 1024
    reply_piece = 8 * 1024

    def __init__(self, state: ServerState, proto: DeviceSession) -> None:
        self.state = state
        self.proto = proto
        #: The device's address, and as ``ip:port`` (set by the transport side).
        self.ip = "?"
        self.peer = "?:0"
        self.name: str | None = None
        #: The presence entry's session id once logged in.
        self.session_id: str | None = None
        self.commands = 0
        self.bytes_uploaded = 0
        #: True while a request is served (a slow hash check or a reply streaming to a
        #: device that reads slowly is not a silent peer).
        self.busy = False
        self._closing = False
        self._upload: tuple[m.Upload, PendingUpload] | None = None
        self._started = 0.0
        #: True while a reply streams out in pieces: other frames wait for its end, so
        #: that nothing lands inside it.
        self._streaming = False
        self._held: list[bytes] | None = None
        self._close_after_stream: tuple[str, str] | None = None
        self._stop_after_command = False

    # -- the transport side ---------------------------------------------------

    def _write(self, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _transport_closing(self) -> bool:
        raise NotImplementedError

    def _set_write_high(self, high: int) -> None:
        raise NotImplementedError

    async def _drain(self) -> None:
        raise NotImplementedError

    async def _wait_written(self) -> None:
        raise NotImplementedError

    def _hold_reading(self) -> None:
        """Read nothing more from the device until this task is done (an upload waiting
        for a slot: its body waits in the kernels' buffers, not in this process)."""
        raise NotImplementedError

    def disconnect(self, kind: str, message: str) -> None:
        raise NotImplementedError

    # -- the session ------------------------------------------------------------

    @property
    def version(self) -> int:
        """The protocol version the hello settled on."""
        return self.proto.version

    def tell(self, notice: m.PeerNotice) -> None:
        """An unprompted frame for the device (a UVF is coming to it)."""
        if self._closing or self.proto.closed:
            return
        if self._streaming:
            if self._held is None:
                self._held = []
            self._held.append(self.proto.send(notice))
        else:
            self._send(notice)

    def _send(self, reply: m.Reply) -> None:
        """Write a reply through the session (nothing once it is closed: a notice was
        the last word, or the peer is gone)."""
        if not self.proto.closed:
            self._write(self.proto.send(reply))

    async def _stream(self, pieces: list[bytes | memoryview]) -> None:
        """Write an already framed reply in pieces of at most ``reply_piece`` bytes,
        each once the previous one has left the process (no copy of the reply is made;
        what the kernel does not take of one piece is all this connection buffers)."""
        self._streaming = self.busy = True  # busy: a device reading slowly is not silent
        step = self.reply_piece
        try:
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), step):
                    if self._transport_closing():
                        return
                    self._write(view[start:start + step])
                    if self.buffered:
                        self._set_write_high(0)  # the wait is for an empty buffer
                        try:
                            await self._wait_written()
                        finally:
                            self._set_write_high(self.write_high)
        finally:
            self._streaming = self.busy = False
            held, self._held = self._held, None
            for frame in held or ():
                if not self._transport_closing():
                    self._write(frame)
            if self._close_after_stream is not None:
                self.disconnect(*self._close_after_stream)

    @property
    def buffered(self) -> int:
        raise NotImplementedError

    # -- requests ---------------------------------------------------------------

    async def _request(self, req: m.Request) -> bool:
        """Serve one request. True when the connection should end (logout)."""
        if isinstance(req, m.Pong):
            return False
        if isinstance(req, m.Login):
            await self._login(req)
            return False
        if isinstance(req, m.Logout):
            self._send(m.Ack(req.id))
            # A device leaving need not wait for the ack: it logged out all the same.
            with contextlib.suppress(ConnectionError, OSError):
                await self._drain()
            return True
        if isinstance(req, m.Ping):
            self._send(m.Ack(req.id))
            return False
        assert self.name is not None  # the sans-I/O layer refuses commands before login
        if isinstance(req, m.Upload):
            self.busy = True
            if self.state.upload_slots.full:
                self._hold_reading()
            try:
                pending = await commands.begin_upload(self.state, self.name, req)
            finally:
                self.busy = False
            self.proto.waited(time.monotonic())  # for an upload slot, maybe
            self._upload = (req, pending)
            self._started = time.perf_counter()
            if req.size == 0:
                await self._finish_upload()
            return False
        started = time.perf_counter()
        self.busy = True
        reply: m.Reply | list[bytes | memoryview]
        try:
            reply = await self._command(req)
        except BackendUnavailable as exc:
            reply = unavailable_reply(getattr(req, "id", None), exc)
        except Exception:  # a bug of ours: one failed command, not a dead session
            log.exception("command_failed", device=self.name, command=type(req).__name__)
            reply = m.ErrorReply(getattr(req, "id", None), "internal",
                                 "the server failed to run the command")
        finally:
            self.busy = False
        self._finish_command(req, reply, started)
        if isinstance(reply, list) and not self.proto.closed:
            pieces = list(self.proto.send_encoded(reply))
            if sum(len(piece) for piece in pieces) <= self.write_high:
                for piece in pieces:  # small enough to buffer whole (fewer writes, no waits)
                    self._write(piece)
            else:
                await self._stream(pieces)
        await self._drain()
        return False

    async def _command(self, req: m.Request) -> m.Reply | list[bytes | memoryview]:
        assert self.name is not None
        state = self.state
        if isinstance(req, m.Compute):
            return await commands.compute(state, self.name, req)
        if isinstance(req, m.Delete):
            return await commands.delete(state, self.name, req)
        if isinstance(req, m.ListDevices):
            return await state.listing.reply(req.id, self.name)
        if isinstance(req, m.Lookup):
            return await commands.lookup(state, self.name, req)
        if isinstance(req, m.UploadOffset):
            return await commands.upload_offset(state, self.name, req)
        if isinstance(req, m.Connect):
            return await peering.connect(state, self.name, req, time.monotonic())
        if isinstance(req, m.UdpRegister):
            assert self.session_id is not None
            return peering.udp_register(state, self.name, self.session_id, self.ip, req,
                                        time.monotonic())
        return m.ErrorReply(  # pragma: no cover - every request type is handled above
            getattr(req, "id", None), "unknown_type", "unsupported request")

    async def _finish_upload(self) -> None:
        assert self._upload is not None and self.name is not None
        req, up = self._upload
        self.busy = True
        try:
            reply = await commands.finish_upload(self.state, self.name, up, req)
        finally:
            self.busy = False
            self._upload = None
        if isinstance(reply, m.UploadOk):
            self.bytes_uploaded += reply.bytes
            log.info("upload", device=self.name, file_id=req.file_id, samples=reply.samples,
                     bytes=reply.bytes)
        self._finish_command(req, reply, self._started)
        await self._drain()

    def _finish_command(self, req: m.Request, reply: m.Reply | list[bytes | memoryview],
                        started: float) -> None:
        if isinstance(reply, m.ErrorReply):
            outcome = reply.code
            self._send(reply)
        elif isinstance(reply, list):  # already framed, in pieces (AED): written by the caller
            outcome = "ok"
        else:
            outcome = "ok"
            self._send(reply)
        self.commands += 1
        log.info("command", device=self.name, command=commands.COMMAND_NAMES[type(req).__name__],
                 outcome=outcome, duration_ms=round((time.perf_counter() - started) * 1000, 3))
        if isinstance(reply, m.DeleteOk):
            log.info("delete", device=self.name, file_id=reply.file_id, samples=reply.samples)

    async def _login(self, req: m.Login) -> None:
        state = self.state
        self.busy = True  # a slow hash check is not a silent peer
        try:
            refused = await judge_login(state, req, self.ip)
            # A takeover closes the older session through ``Presence.on_evict`` (wherever
            # it lives: on another node, when its kick arrives).
            joined = None if refused is not None or self._closing else \
                await state.presence.join(req.name, self.ip, req.udp_port, state.clock())
        except BackendUnavailable as exc:  # fail closed: nobody logs in without the fleet
            log.warning("login_unavailable", device=req.name, error=exc.message)
            refused, joined = unavailable_reply(req.id, exc), None
        finally:
            self.busy = False
        if joined is None:
            if refused is not None:
                self._send(refused)
                await self._drain()
            return
        dev = joined.device
        self.name, self.session_id = req.name, dev.session_id
        state.sessions.add(dev.session_id, self)
        structlog.contextvars.bind_contextvars(device=req.name, session=dev.session_id)
        if joined.replaced is not None:
            old = state.sessions.get(joined.replaced.session_id)
            log.info("takeover", device=req.name,
                     old_peer=joined.replaced.ip if old is None else old.peer)
        await state.device_log.request()
        log.info("login", device=req.name, udp_port=req.udp_port)
        self._send(m.LoginOk(req.id, dev.session_id, req.name))
        await self._drain()
