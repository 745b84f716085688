"""asyncio adapter for one device connection: bytes in, events out, work done.

It reads from the stream, feeds the sans-I/O ``DeviceSession``, performs what
each event asks (through ``commands``, ``login`` and the ``ServerState`` it is
handed), writes the replies the session encodes, and on the way out removes the
device from the active list, whatever ended the connection.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from edgenet.server import commands, peering
from edgenet.server.interfaces import BackendUnavailable, PendingUpload
from edgenet.server.login import judge_login
from edgenet.server.session import (
    BadRequest,
    DeviceSession,
    Fatal,
    HelloReceived,
    LoginTimedOut,
    PeerClosed,
    PeerSilent,
    PingDue,
    RequestReceived,
    UploadData,
    UploadDone,
    UploadStalled,
)
from edgenet.server.state import ServerState
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA

log = structlog.get_logger("edgenet.server")

READ_SIZE = 256 * 1024
#: Bytes of replies buffered for a peer before ``drain`` waits; a peer that keeps it
#: full for ``send_timeout`` seconds is dropped.
WRITE_BUFFER_HIGH = 256 * 1024
#: An AED reply larger than ``WRITE_BUFFER_HIGH`` (megabytes at 20,000 devices) goes out
#: in pieces of at most this size, each written once the previous one has left the
#: process: every connection refers to the one shared listing (``listing.DeviceListing``)
#: and buffers at most one piece of it of its own, however slowly its device reads.
#: A smaller one is written at once (pieces cost a write and a wake-up each).
REPLY_PIECE = 16 * 1024
SHUTDOWN_MESSAGE = "the server is shutting down"


def unavailable_reply(request_id: int | None, exc: BackendUnavailable) -> m.ErrorReply:
    """A request that needs the fleet's shared state while it is unreachable."""
    return m.ErrorReply(request_id, "service_unavailable", exc.message)


class SlowReader(ConnectionError):
    """The peer did not read its replies within the send timeout."""


class DeviceConnection:
    """One TCP connection from a device, from hello to close."""

    def __init__(self, state: ServerState, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: tuple[str, int] | None = None) -> None:
        self.state = state
        config = state.config
        self.reader = reader
        self.writer = writer
        # The device's address: from a PROXY header when a balancer named it.
        peer = peer or writer.get_extra_info("peername") or ("?", 0)
        self.ip: str = str(peer[0])
        if self.ip.startswith("::ffff:") and "." in self.ip:
            self.ip = self.ip[7:]
        self.peer = f"{self.ip}:{peer[1]}"
        self.proto = DeviceSession(config.max_upload, config.heartbeat, time.monotonic(),
                                   config.login_timeout, config.upload_idle_timeout)
        try:
            writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        except (AttributeError, NotImplementedError):  # a transport without flow control
            pass
        self._stop_after_command = False
        self.name: str | None = None
        #: The presence entry's session id once logged in.
        self.session_id: str | None = None
        self.commands = 0
        self.bytes_uploaded = 0
        self.busy = False
        self._closing = False
        self._upload: tuple[m.Upload, PendingUpload] | None = None
        self._started = 0.0
        #: True while a reply streams out in pieces: other frames wait for its end, so
        #: that nothing lands inside it.
        self._streaming = False
        self._held: list[bytes] = []
        self._close_after_stream: tuple[str, str] | None = None

    @property
    def buffered(self) -> int:
        """Bytes of replies this process holds for the device (not yet taken by the kernel)."""
        return self.writer.transport.get_write_buffer_size()

    @property
    def version(self) -> int:
        """The protocol version the hello settled on."""
        return self.proto.version

    # -- called by others (takeover, admin API, heartbeat, shutdown, UVF) -----

    def tell(self, notice: m.PeerNotice) -> None:
        """An unprompted frame for the device (a UVF is coming to it)."""
        if self._closing or self.proto.closed:
            return
        if self._streaming:
            self._held.append(self.proto.send(notice))
        else:
            self._send(notice)

    def disconnect(self, kind: str, message: str) -> None:
        """Tell the device why, then close. Safe to call more than once."""
        if self._closing:
            return
        if self._streaming:
            # The notice goes after the reply on the wire (each piece waits at most the
            # send timeout): a frame in the middle of another would break the stream.
            self._close_after_stream = self._close_after_stream or (kind, message)
            return
        self._closing = True
        if not self.writer.transport.is_closing():  # else the transport is already gone
            self._send(m.Notice(kind, message))  # the session's last word
        self.proto.close()
        if kind in ("timeout", "upload_timeout") and self.writer.transport.get_write_buffer_size():
            # A silent peer may never read what is still buffered: do not wait to flush it.
            self.writer.transport.abort()
        else:
            self.writer.close()

    def shutdown(self) -> None:
        """The server is stopping: close now, or after the upload or command in flight."""
        if self.busy or self._upload is not None or self.proto.uploading:
            self._stop_after_command = True
        else:
            self.disconnect("shutdown", SHUTDOWN_MESSAGE)

    def heartbeat(self, now: float) -> None:
        if self.busy or self._closing:
            return
        action = self.proto.heartbeat_action(now)
        if isinstance(action, UploadStalled):
            file_id = self._upload[0].file_id if self._upload is not None else None
            log.warning("upload_stalled", device=self.name, peer=self.peer, file_id=file_id,
                        seconds=round(action.seconds, 1), received=action.received,
                        expected=action.expected)
            if self._upload is not None:
                self._upload[1].abort()  # the temporary file goes now, not at the close
            self.disconnect("upload_timeout", f"no upload data for {action.seconds:.0f} "
                                              "seconds; closing the connection")
            return
        if isinstance(action, PingDue):
            self.writer.write(action.frame)
        elif isinstance(action, PeerSilent):
            log.info("heartbeat_timeout", device=self.name, peer=self.peer)
            self.disconnect("timeout", "no heartbeat from the device; closing the connection")
        elif isinstance(action, LoginTimedOut):
            log.info("login_timeout", peer=self.peer, seconds=action.seconds)
            self.disconnect("login_timeout", f"no login within {action.seconds:g} "
                                             "seconds; closing the connection")

    # -- the connection's life ------------------------------------------------

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(peer=self.peer)
        reason = "closed"
        try:
            reason = await self._serve()
        except SlowReader:
            reason = "slow_reader"
        except (ConnectionError, OSError):
            reason = "connection_lost"
        except asyncio.CancelledError:
            # Shutdown's grace is over (an upload or command still running): the device
            # is told why, as every other device was.
            reason = "server_shutdown"
            if self._streaming:  # cut off inside a reply: no frame can follow it
                self._closing = True
                self.proto.close()
                self.writer.transport.abort()
            self.disconnect("shutdown", SHUTDOWN_MESSAGE)
            raise
        finally:
            if self._upload is not None:
                self._upload[1].abort()
            await self._leave(reason)
            if not self.writer.is_closing():
                self.writer.close()

    async def _leave(self, reason: str) -> None:
        if self.name is None or self.session_id is None:
            return
        state = self.state
        state.sessions.remove(self.session_id, self)
        if state.rendezvous is not None:
            state.rendezvous.revoke(self.name, self.session_id)
        try:
            dev = await state.presence.leave(self.name, self.session_id)
        except BackendUnavailable:
            # The fleet's presence takes the entry out when it is reachable again.
            log.warning("leave_deferred", device=self.name, reason=reason)
            return
        if dev is not None:
            state.device_log.request()
            event = "logout" if reason == "logout" else "disconnect"
            log.info(event, device=self.name, reason=reason, commands=self.commands)

    async def _serve(self) -> str:
        while True:
            ev = self.proto.next_event()
            if ev is NEED_DATA:
                data = await self.reader.read(READ_SIZE)
                self.proto.receive_data(data, time.monotonic())
                continue
            if isinstance(ev, PeerClosed):
                return "disconnected" if not self._closing else "closed_by_server"
            if isinstance(ev, Fatal):
                log.warning("protocol_error", code=ev.code, message=ev.message, device=self.name)
                self.writer.write(ev.reply)
                await self._drain()
                return "protocol_error"
            if isinstance(ev, BadRequest):
                log.info("bad_request", code=ev.code, device=self.name)
                self.writer.write(ev.reply)
                await self._drain()
                continue
            if isinstance(ev, HelloReceived):
                self._send(m.HelloReply(self.proto.version, self.state.agent,
                                        self.state.config.heartbeat))
                await self._drain()
                continue
            if isinstance(ev, UploadData):
                if self._upload is not None:
                    self._upload[1].write(ev.data)
                continue
            if isinstance(ev, UploadDone):
                await self._finish_upload()
            elif isinstance(ev, RequestReceived):
                done = await self._request(ev.request)
                if done:
                    return "logout"
            if self._stop_after_command and self._upload is None:
                self.disconnect("shutdown", SHUTDOWN_MESSAGE)

    async def _drain(self) -> None:
        transport = self.writer.transport
        if transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH and not transport.is_closing():
            return  # the common case: nothing to wait for (and wait_for costs a task)
        await self._wait_written()

    async def _stream(self, pieces: list[bytes | memoryview]) -> None:
        """Write an already framed reply in pieces of at most ``REPLY_PIECE`` bytes,
        each once the previous one has left the process (no copy of the reply is made;
        what the kernel does not take of one piece is all this connection buffers)."""
        transport = self.writer.transport
        self._streaming = self.busy = True  # busy: a device reading slowly is not silent
        try:
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), REPLY_PIECE):
                    if transport.is_closing():
                        return
                    self.writer.write(view[start:start + REPLY_PIECE])
                    if transport.get_write_buffer_size():
                        transport.set_write_buffer_limits(high=0)  # drain waits for empty
                        try:
                            await self._wait_written()
                        finally:
                            transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        finally:
            self._streaming = self.busy = False
            held, self._held = self._held, []
            for frame in held:
                if not transport.is_closing():
                    self.writer.write(frame)
            if self._close_after_stream is not None:
                self.disconnect(*self._close_after_stream)

    async def _wait_written(self) -> None:
        try:
            await asyncio.wait_for(self.writer.drain(), self.state.config.send_timeout)
        except asyncio.TimeoutError:
            buffered = self.writer.transport.get_write_buffer_size()
            log.warning("slow_reader_dropped", device=self.name, peer=self.peer,
                        buffered=buffered, seconds=self.state.config.send_timeout)
            self._closing = True
            self.proto.close()
            self.writer.transport.abort()
            raise SlowReader("the peer does not read its replies") from None

    async def _request(self, req: m.Request) -> bool:
        """Serve one request. True when the connection should end (logout)."""
        if isinstance(req, m.Pong):
            return False
        if isinstance(req, m.Login):
            await self._login(req)
            return False
        if isinstance(req, m.Logout):
            self._send(m.Ack(req.id))
            try:
                await self._drain()
            except (ConnectionError, OSError):
                pass  # a device leaving need not wait for the ack: it logged out all the same
            return True
        if isinstance(req, m.Ping):
            self._send(m.Ack(req.id))
            return False
        assert self.name is not None  # the sans-I/O layer refuses commands before login
        if isinstance(req, m.Upload):
            self.busy = True
            try:
                pending = await commands.begin_upload(self.state, self.name, req)
            finally:
                self.busy = False
            self._upload = (req, pending)
            self._started = time.perf_counter()
            if req.size == 0:
                await self._finish_upload()
            return False
        started = time.perf_counter()
        self.busy = True
        reply: m.Reply | list[bytes | memoryview]
        try:
            if isinstance(req, m.Compute):
                reply = await commands.compute(self.state, self.name, req)
            elif isinstance(req, m.Delete):
                reply = await commands.delete(self.state, self.name, req)
            elif isinstance(req, m.ListDevices):
                reply = await self.state.listing.reply(req.id, self.name)
            elif isinstance(req, m.Lookup):
                reply = await commands.lookup(self.state, self.name, req)
            elif isinstance(req, m.UploadOffset):
                reply = await commands.upload_offset(self.state, self.name, req)
            elif isinstance(req, m.Connect):
                reply = await peering.connect(self.state, self.name, req, time.monotonic())
            elif isinstance(req, m.UdpRegister):
                assert self.session_id is not None
                reply = peering.udp_register(self.state, self.name, self.session_id, self.ip,
                                             req, time.monotonic())
            else:  # pragma: no cover - every request type is handled above
                reply = m.ErrorReply(getattr(req, "id", None), "unknown_type",
                                     "unsupported request")
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
            if sum(len(piece) for piece in pieces) <= WRITE_BUFFER_HIGH:
                for piece in pieces:  # small enough to buffer whole (fewer writes, no waits)
                    self.writer.write(piece)
            else:
                await self._stream(pieces)
        await self._drain()
        return False

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
        elif isinstance(reply, list):  # already framed, in pieces (AED): ``_stream`` writes it
            outcome = "ok"
        else:
            outcome = "ok"
            self._send(reply)
        self.commands += 1
        log.info("command", device=self.name, command=commands.COMMAND_NAMES[type(req).__name__],
                 outcome=outcome, duration_ms=round((time.perf_counter() - started) * 1000, 3))
        if isinstance(reply, m.DeleteOk):
            log.info("delete", device=self.name, file_id=reply.file_id, samples=reply.samples)

    def _send(self, reply: m.Reply) -> None:
        """Write a reply through the session (nothing once it is closed: a notice was
        the last word, or the peer is gone)."""
        if not self.proto.closed:
            self.writer.write(self.proto.send(reply))

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
