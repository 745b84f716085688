"""asyncio adapter for one device connection: bytes in, events out, work done.

``DeviceConnection`` is the connection's protocol. Its bytes are read into one
buffer shared by the connections of the event loop's thread (``READ_SIZE``), and
copied out only as long as they are (asyncio's plain protocols get a new 256 KiB
bytes object for each read, which glibc maps and unmaps each time until a block that
large has been freed: 4-5 times the copy, bench/recv_cost.py). ``data_received``
feeds the sans-I/O ``DeviceSession`` and handles at once the events that need no
waiting (pings, pongs, an upload's body, a bad request); the first event that does
(a login, a command, the end of an upload, the end of the connection) starts a
task that serves it and every event after it, and that ends as soon as the session
needs data again. An idle connection therefore holds no task, no coroutine and no
stream buffer: the transport, this object and its session (measured: about 5 KB a
connection less than asyncio's streams and a task, docs/PERFORMANCE.md).

Small replies written while one batch of received bytes is handled go out in one
write (the "cork": a hello and the login sent with it are answered in one segment,
docs/PROTOCOL.md); a reply over ``CORK_PIECE`` is never held or copied. Replies go
through the transport; ``pause_writing``/``resume_writing`` are its backpressure: a
peer that leaves more than ``WRITE_BUFFER_HIGH`` unread for the send timeout is
dropped. Reading pauses while a task works and more than
``READ_BUFFER_HIGH`` bytes wait in the session. What each request does is
``serving.RequestServer``'s; on the way out the device leaves the active list,
whatever ended the connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from edgenet.server.interfaces import BackendUnavailable
from edgenet.server.sendqueue import unsent
from edgenet.server.serving import RequestServer, SlowReader
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
    SessionEvent,
    UploadData,
    UploadStalled,
)
from edgenet.server.state import ServerState
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA

log = structlog.get_logger("edgenet.server")

#: Bytes of requests read ahead of a task still serving an earlier one; past this
#: the transport stops reading until the task is done (the session's decoder holds them).
READ_BUFFER_HIGH = 256 * 1024
#: Bytes of replies buffered for a peer before the serving task waits; a peer that
#: keeps it full for ``send_timeout`` seconds is dropped.
WRITE_BUFFER_HIGH = 256 * 1024
#: An AED reply larger than ``WRITE_BUFFER_HIGH`` (megabytes at 20,000 devices) goes out
#: in pieces of at most this size, each written once the previous one has left the
#: process: every connection refers to the one shared listing (``listing.DeviceListing``)
#: and buffers at most one piece of it of its own, however slowly its device reads.
#: A smaller one is written at once (pieces cost a write and a wake-up each).
REPLY_PIECE = 8 * 1024
#: Bytes of replies held back at most to leave in one write (the replies to the
#: requests of one read).
CORK_MAX = 64 * 1024
#: Larger replies are never held (nor copied): they go out at once, after those held.
CORK_PIECE = 4 * 1024
SHUTDOWN_MESSAGE = "the server is shutting down"
#: One read from a device's socket at most (asyncio's own read size).
READ_SIZE = 256 * 1024

_THREAD = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's connections: reads go into it, and each is
    copied out before the next can happen (one event loop a thread)."""
    view: memoryview | None = getattr(_THREAD, "read_buffer", None)
    if view is None:
        view = _THREAD.read_buffer = memoryview(bytearray(READ_SIZE))
    return view


@dataclass(frozen=True)
class ConnectionHooks:
    """How connections tell their owner (the server) they start and end; one object
    shared by all of them."""

    #: Called with a connection whose transport is up and the socket's peer: None
    #: (it is served, and the owner holds it) or the frame that turns it away.
    admit: Callable[[DeviceConnection, tuple[str, int]], bytes | None]
    #: Called once when an admitted connection has ended (the device has left).
    closed: Callable[[DeviceConnection], None]


class _Drain:
    """Not an event of the session: the serving task starts by waiting for the replies
    written so far to leave (a peer that does not read stops being read)."""


_DRAIN = _Drain()
_Work = SessionEvent | _Drain


class DeviceConnection(RequestServer, asyncio.BufferedProtocol):
    """One TCP connection from a device, from hello to close."""

    write_high = WRITE_BUFFER_HIGH
    reply_piece = REPLY_PIECE

    __slots__ = ("_hooks", "_given_peer", "transport", "_tls", "_task",
                 "_ended", "_lost", "_lost_reason", "_reading_paused", "_write_paused",
                 "_drain_waiter", "_written", "_taken", "_cork", "_corked", "_rbuf")

    def __init__(self, state: ServerState, hooks: ConnectionHooks,
                 peer: tuple[str, int] | None = None) -> None:
        config = state.config
        # The session's clock starts again at ``connection_made`` (after TLS).
        super().__init__(state, DeviceSession(config.max_upload, config.heartbeat,
                                              time.monotonic(), config.login_timeout,
                                              config.upload_idle_timeout))
        self._hooks = hooks
        #: The device's address from a PROXY header (None: the socket's peer).
        self._given_peer = peer
        self.transport: asyncio.Transport | None = None
        self._tls = False
        #: The task serving events now (None: idle, waiting for the device).
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self._lost = False
        #: Why the connection ended when the transport said so first.
        self._lost_reason: str | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        #: Bytes written to the transport, and how many of them the device had taken
        #: when last looked at (``_peer_read``).
        self._written = 0
        self._taken = 0
        #: Replies held back to go out in one write (None: each is written at once).
        self._cork: list[bytes] | None = None
        self._corked = 0
        self._rbuf = _read_buffer()

    # -- asyncio.BufferedProtocol -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        own = transport.get_extra_info("peername") or ("?", 0)
        peer = self._given_peer or own
        self.ip = str(peer[0])
        if self.ip.startswith("::ffff:") and "." in self.ip:
            self.ip = self.ip[7:]
        self.peer = f"{self.ip}:{peer[1]}"
        self._tls = transport.get_extra_info("sslcontext") is not None
        refusal = self._hooks.admit(self, own)
        if refusal is not None:  # told why and closed; it never was the server's
            self._ended = self._closing = True
            self.proto.close()
            transport.write(refusal)
            transport.close()  # flushes what is buffered, then closes
            return
        # No TCP_NODELAY here: asyncio's socket transports set it on every TCP socket.
        try:
            transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        except (AttributeError, NotImplementedError):  # a transport without flow control
            pass
        now = time.monotonic()
        self.proto.opened = self.proto.last_received = now

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rbuf[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        self.proto.receive_data(data, time.monotonic())
        if self._task is None:
            self._cork = []
            self._pump()
            if self._task is None:  # else the task writes them with its first replies
                self._uncork()
        elif self.proto.buffered > READ_BUFFER_HIGH and not self._reading_paused:
            self._reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if not self._ended:
            self.proto.receive_data(b"", time.monotonic())
            if self._task is None:
                self._pump()
        # Plain TCP stays open for the replies still to come (the session closes it);
        # asyncio's TLS ignores the answer (and warns when it is True).
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("Connection lost"))
        if self._ended:
            return
        if exc is not None:
            self._lost_reason = self._lost_reason or "connection_lost"
        self.proto.receive_data(b"", time.monotonic())
        if self._task is None:
            if self._lost_reason is not None:
                self._start(NEED_DATA)
            else:
                self._pump()

    def _hold_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True  # resumed once the task is done, as below
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- events handled at once, and the serving task ---------------------------

    def _pump(self) -> None:
        """Handle what the session has, at once, until it needs data or an event needs
        waiting for (then a task takes over from that event)."""
        proto = self.proto
        while True:
            ev = proto.next_event()
            if ev is NEED_DATA:
                return
            if not self._handle_now(ev):
                self._start(ev)
                return
            if self._stop_after_command and self._upload is None:
                self.disconnect("shutdown", SHUTDOWN_MESSAGE)
            if self._must_drain():
                self._start(_DRAIN)
                return

    def _handle_now(self, ev: SessionEvent) -> bool:
        """Handle ``ev`` if it needs no waiting (True), else leave it (False)."""
        if isinstance(ev, UploadData):
            if self._upload is not None:
                self._upload[1].write(ev.data)
            return True
        if isinstance(ev, RequestReceived):
            req = ev.request
            if isinstance(req, m.Pong):
                return True
            if isinstance(req, m.Ping):
                self._send(m.Ack(req.id))
                return True
            return False
        if isinstance(ev, BadRequest):
            log.info("bad_request", code=ev.code, device=self.name, peer=self.peer)
            self._write(ev.reply)
            return True
        if isinstance(ev, HelloReceived):
            self._send(m.HelloReply(self.proto.version, self.state.agent,
                                    self.state.config.heartbeat))
            return True
        return False

    def _must_drain(self) -> bool:
        transport = self.transport
        assert transport is not None
        return transport.is_closing() or transport.get_write_buffer_size() > WRITE_BUFFER_HIGH

    def _start(self, first: _Work) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(first))

    async def _run(self, first: _Work) -> None:
        binds: dict[str, Any] = {"peer": self.peer}
        if self.name is not None:
            binds.update(device=self.name, session=self.session_id)
        structlog.contextvars.bind_contextvars(**binds)
        reason: str | None = "closed"
        try:
            reason = await self._serve(first)
        except SlowReader:
            reason = "slow_reader"
        except (ConnectionError, OSError):
            reason = "connection_lost"
        except asyncio.CancelledError:
            # Shutdown's grace is over (an upload or command still running): the device
            # is told why, as every other device was.
            reason = "server_shutdown"
            self._cut_off()
        except Exception:  # a bug of ours: log it, keep serving everybody else
            log.exception("connection_crashed", peer=self.peer)
        finally:
            self._task = None
            self._uncork()
        if reason is None:  # idle again: the device's next bytes start the next task
            if self._reading_paused and not self._ended:
                self._reading_paused = False
                assert self.transport is not None
                self.transport.resume_reading()
            return
        await self._end(reason)

    async def _serve(self, ev: _Work) -> str | None:
        """Serve events from ``ev`` on. None: the session needs data (the connection is
        idle again); else why the connection ended."""
        while True:
            if self._lost_reason is not None:
                return self._lost_reason
            if ev is NEED_DATA:
                return None
            if isinstance(ev, _Drain):
                await self._drain()
            elif isinstance(ev, PeerClosed):
                return "disconnected" if not self._closing else "closed_by_server"
            elif isinstance(ev, Fatal):
                log.warning("protocol_error", code=ev.code, message=ev.message, device=self.name)
                self._write(ev.reply)
                await self._drain()
                return "protocol_error"
            elif self._handle_now(ev):
                await self._drain()
            elif isinstance(ev, RequestReceived):
                if await self._request(ev.request):
                    return "logout"
            else:
                await self._finish_upload()
            if self._stop_after_command and self._upload is None:
                self.disconnect("shutdown", SHUTDOWN_MESSAGE)
            self._uncork()
            ev = self.proto.next_event()

    def _cut_off(self) -> None:
        if self._streaming:  # cut off inside a reply: no frame can follow it
            self._closing = True
            self.proto.close()
            assert self.transport is not None
            self.transport.abort()
        self.disconnect("shutdown", SHUTDOWN_MESSAGE)

    async def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        if self._upload is not None:
            self._upload[1].abort()
        try:
            await self._leave(reason)
        finally:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                self._uncork()
                transport.close()
            self._hooks.closed(self)

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

    # -- writing (``RequestServer`` writes through these) ------------------------

    @property
    def buffered(self) -> int:
        """Bytes of replies this process holds for the device (not yet taken by the kernel)."""
        if self.transport is None:
            return 0
        return self.transport.get_write_buffer_size() + self._corked

    def _write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self._written += len(data)
        cork = self._cork
        if (cork is not None and not self._streaming and len(data) <= CORK_PIECE
                and self._corked + len(data) <= CORK_MAX):
            cork.append(bytes(data))
            self._corked += len(data)
            return
        self._uncork()
        self.transport.write(data)

    def _uncork(self) -> None:
        """Write the replies held back, in one write (the cork stays off until the next
        read)."""
        cork, self._cork = self._cork, None
        if cork:
            self._corked = 0
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(cork[0] if len(cork) == 1 else b"".join(cork))

    def _transport_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _abort(self) -> None:
        self._cork, self._corked = None, 0
        if self.transport is not None:
            self.transport.abort()

    def _set_write_high(self, high: int) -> None:
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=high)

    async def _drain(self) -> None:
        transport = self.transport
        assert transport is not None
        self._uncork()
        if transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH and not transport.is_closing():
            return  # the common case: nothing to wait for
        await self._wait_written()

    async def _wait_written(self) -> None:
        """Wait until the transport resumes writing (its buffer is at its low mark).
        Raises ConnectionResetError when the connection is gone, SlowReader when the
        device does not read within the send timeout."""
        assert self.transport is not None
        self._uncork()
        if self.transport.is_closing():
            await asyncio.sleep(0)  # let a pending connection_lost arrive first
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._write_paused:
            return
        waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, self.state.config.send_timeout)
        except asyncio.TimeoutError:
            buffered = self.transport.get_write_buffer_size()
            log.warning("slow_reader_dropped", device=self.name, peer=self.peer,
                        buffered=buffered, seconds=self.state.config.send_timeout)
            self._closing = True
            self.proto.close()
            self.transport.abort()
            raise SlowReader("the peer does not read its replies") from None
        finally:
            self._drain_waiter = None

    # -- called by others (takeover, admin API, heartbeat, shutdown, UVF) -----

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
        transport = self.transport
        if transport is None:
            self.proto.close()
            return
        if not transport.is_closing():  # else the transport is already gone
            self._send(m.Notice(kind, message))  # the session's last word
            self._uncork()
        self.proto.close()
        if kind in ("timeout", "upload_timeout") and transport.get_write_buffer_size():
            # A silent peer may never read what is still buffered: do not wait to flush it.
            transport.abort()
        else:
            transport.close()

    def shutdown(self) -> None:
        """The server is stopping: close now, or after the upload or command in flight."""
        if self.busy or self._upload is not None or self.proto.uploading:
            self._stop_after_command = True
        else:
            self.disconnect("shutdown", SHUTDOWN_MESSAGE)

    def cancel(self) -> None:
        """Shutdown's grace is over: stop what runs (the device is told why) and end."""
        if self._ended:
            return
        if self._task is not None:
            self._task.cancel()
            return
        # Idle (an upload waiting for its next bytes): end as a cancelled task would.
        self._cut_off()
        self._lost_reason = "server_shutdown"
        self._start(NEED_DATA)

    def _peer_read(self) -> bool:
        """Whether the device took bytes of its replies since the last look: bytes
        written, less those still in the transport's buffer and in the kernel's send
        queue (pings are not counted: only a device that reads takes more of a reply
        than its kernel's receive buffer holds)."""
        if self._written == self._taken or self.transport is None:
            return False
        taken = self._written - self.buffered - unsent(self.transport)
        if taken <= self._taken:
            return False
        self._taken = taken
        return True

    def heartbeat(self, now: float) -> None:
        if self.busy or self._closing:
            return
        if self.proto.quiet(now) and self._peer_read():
            self.proto.peer_read(now)  # reading a long reply: no ping, not silent
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
            # Not counted in ``_written``: a device whose kernel takes our pings while
            # nothing answers them is not reading (only bytes of replies are).
            assert self.transport is not None
            self._uncork()  # after the replies held back, never before them
            self.transport.write(action.frame)
        elif isinstance(action, PeerSilent):
            log.info("heartbeat_timeout", device=self.name, peer=self.peer)
            self.disconnect("timeout", "no heartbeat from the device; closing the connection")
        elif isinstance(action, LoginTimedOut):
            log.info("login_timeout", peer=self.peer, seconds=action.seconds)
            self.disconnect("login_timeout", f"no login within {action.seconds:g} "
                                             "seconds; closing the connection")
