"""The device's link to the server: the asyncio adapter over ``ClientProtocol``.

One reader task feeds what the socket reads to the protocol core and acts on its
events: a reply resolves the request waiting for it, a ping's pong is written at
once (even while the user is typing), and a notice, a connection-level error, the
end of the stream or a broken frame resolve ``closed`` (one line for the user).
Each request method builds its typed request, sends it and returns the typed reply
(its ``...Ok`` class or an ``ErrorReply``); frames go out one at a time, so nothing
lands inside an upload's body. Uploads stream from the file in MAX_CHUNK pieces
with ``drain`` between, so memory stays bounded whatever the file size; pongs due
meanwhile wait in the core until the body is complete. Dialling is in ``dial``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import structlog

from edgenet import __version__
from edgenet.client.errors import (
    SERVER_CLOSED,
    ConnectFailed,
    ReplyTimeout,
    ServerGone,
    lost_text,
    notice_text,
    refusal_text,
    violation_text,
)
from edgenet.client.resume import hash_file, resume_offset
from edgenet.client.protocol import (
    MAX_PENDING,
    ClientProtocol,
    ConnectionRefused,
    FrameIgnored,
    NoticeReceived,
    PeerOffered,
    ProtocolViolation,
    ReplyReceived,
    ServerClosed,
    UnsupportedVersion,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import MAX_CHUNK, NEED_DATA

log = structlog.get_logger("edgenet.client")

CONNECT_TIMEOUT: Final = 10.0
REPLY_TIMEOUT: Final = 60.0
LOGOUT_TIMEOUT: Final = 5.0
#: Largest read from the socket at a time (the decoder buffers at most this plus a header).
READ_SIZE: Final = 64 * 1024
AGENT: Final = f"edgenet-client/{__version__}"
_HELLO: Final = "hello"  # the waiter key of the hello (requests have integer ids)

OkT = TypeVar("OkT", bound=m.OkReply)


class ServerLink:
    """One TCP (or TLS) connection from this device to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 tls: bool = False) -> None:
        self._reader = reader
        self._writer = writer
        self._proto = ClientProtocol()
        loop = asyncio.get_running_loop()
        #: Resolves to one line for the user when the connection is over.
        self.closed: asyncio.Future[str] = loop.create_future()
        self._waiters: dict[int | str, asyncio.Future[m.Reply]] = {}
        self._send_lock = asyncio.Lock()
        self._read_task = asyncio.create_task(self._read_loop(), name="edgenet-client-reader")
        #: The server's ping interval in seconds (from its hello).
        self.heartbeat: float | None = None
        #: True when the connection runs over TLS.
        self.tls = tls
        #: The ``kind`` of the server's closing notice (``replaced``, ``shutdown``, ...).
        self.notice_kind: str | None = None
        #: The protocol version the server chose (its hello's answer).
        self.version = m.PROTOCOL_VERSION
        #: Why the server will keep no partial of the last upload (its resume budget).
        self.resume_note: str | None = None
        #: The login sent with the hello: its arguments, id and the future of its answer.
        self._early_login: tuple[tuple[str, str, int], int,
                                 asyncio.Future[m.Reply]] | None = None
        #: Told of each ``peer`` frame (a UVF is coming to this device).
        self.on_peer: Callable[[m.PeerNotice], None] | None = None
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        #: The server's address and this device's own, as this connection uses them.
        self.server_ip, self.local_ip = _plain_ip(str(peer[0])), _plain_ip(str(local[0]))

    # --- requests ----------------------------------------------------------

    async def hello(self, login: tuple[str, str, int] | None = None) -> m.HelloReply:
        """Exchange hellos; raises ConnectFailed if the server does not speak our version.
        ``login`` (name, password, UDP port): the login goes in the same write as the
        hello (one round trip for both, docs/PROTOCOL.md); ``login`` with the same
        arguments then returns its answer."""
        fut = self._waiter(_HELLO)
        async with self._send_lock:
            data = self._proto.send(m.Hello(m.PROTOCOL_VERSION, AGENT, m.PROTOCOL_VERSIONS))
            if login is not None:
                request = m.Login(self._proto.next_id(), *login)
                self._early_login = (login, request.id, self._waiter(request.id))
                data += self._proto.send(request)
            await self._write(data)
        try:
            reply = await self._wait(_HELLO, fut, CONNECT_TIMEOUT)
        except ServerGone as exc:
            # A TLS server drops a plain client's first bytes without a word.
            hint = "" if self.tls else "; if it uses TLS, start the client with --tls-ca FILE"
            raise ConnectFailed(f"{exc.message} before answering hello{hint}") from None
        if isinstance(reply, m.ErrorReply):
            raise ConnectFailed(refusal_text(reply))
        assert isinstance(reply, m.HelloReply)
        self.heartbeat = reply.heartbeat
        self.version = reply.version
        return reply

    async def login(self, name: str, password: str, udp_port: int
                    ) -> m.LoginOk | m.ErrorReply:
        early, self._early_login = self._early_login, None
        if early is not None and early[0] == (name, password, udp_port):
            _, rid, fut = early
            return self._expect(await self._wait(rid, fut, REPLY_TIMEOUT), m.LoginOk)
        if early is not None:  # sent with the hello for other credentials: its answer is moot
            early[2].cancel()
        return await self._call(lambda rid: m.Login(rid, name, password, udp_port), m.LoginOk)

    async def compute(self, file_id: int, op: str) -> m.ComputeOk | m.ErrorReply:
        return await self._call(lambda rid: m.Compute(rid, file_id, op), m.ComputeOk)

    async def delete(self, file_id: int) -> m.DeleteOk | m.ErrorReply:
        return await self._call(lambda rid: m.Delete(rid, file_id), m.DeleteOk)

    async def list_devices(self) -> m.ListDevicesOk | m.ErrorReply:
        return await self._call(m.ListDevices, m.ListDevicesOk)

    async def lookup(self, name: str) -> m.LookupOk | m.ErrorReply:
        return await self._call(lambda rid: m.Lookup(rid, name), m.LookupOk)

    async def udp_register(self, local: tuple[m.Candidate, ...]
                           ) -> m.UdpRegisterOk | m.ErrorReply:
        return await self._call(lambda rid: m.UdpRegister(rid, local), m.UdpRegisterOk)

    async def connect(self, name: str) -> m.ConnectOk | m.ErrorReply:
        return await self._call(lambda rid: m.Connect(rid, name), m.ConnectOk)

    async def ping(self, timeout: float) -> m.Ack | m.ErrorReply:
        return await self._call(m.Ping, m.Ack, timeout)

    async def logout(self, timeout: float = LOGOUT_TIMEOUT) -> bool:
        """Best effort and bounded: True when the server acknowledged; never raises for
        a server that is gone or silent (the caller is leaving either way)."""
        if self.closed.done():
            return False
        try:
            return isinstance(await self._call(m.Logout, m.Ack, timeout), m.Ack)
        except (ServerGone, ReplyTimeout, OSError):
            return False

    async def upload(self, file_id: int, path: Path, timeout: float = REPLY_TIMEOUT
                     ) -> m.UploadOk | m.ErrorReply:
        """Stream ``path`` as the body of one ``upload`` frame. No timeout while the body
        is on the wire; ``timeout`` for the reply after it. From protocol version 3 the
        upload is checked (the whole file's SHA-256) and resumes where the server holds
        the start of this very file (``edgenet.client.resume``). Raises OSError if the
        file cannot be opened (nothing sent then), ServerGone or ReplyTimeout.
        ``resume_note`` is set when the server said it would keep no partial of it."""
        self.resume_note = None
        offset, sha256 = 0, None
        if self.version >= m.RESUME_VERSION:
            size = path.stat().st_size
            asked = await self._call(lambda rid: m.UploadOffset(rid, file_id, size),
                                     m.UploadOffsetOk, timeout)
            if isinstance(asked, m.ErrorReply) and asked.code != "resume_budget":
                return asked
            if isinstance(asked, m.ErrorReply):
                self.resume_note = asked.message
                point, point_sha = 0, ""
            else:
                point, point_sha = asked.offset, asked.sha256
            digest = await asyncio.to_thread(hash_file, path, point)
            offset, sha256 = resume_offset(point, point_sha, digest), digest.sha256
        # A local open is quick; the reads that follow are bounded by MAX_CHUNK each.
        with open(path, "rb") as src:  # noqa: ASYNC230
            size = os.fstat(src.fileno()).st_size
            offset = min(offset, size)
            src.seek(offset)
            async with self._send_lock:
                self._check_open()
                request = m.Upload(self._proto.next_id(), file_id, size - offset, offset,
                                   sha256)
                fut = self._waiter(request.id)
                await self._stream(src, self._proto.send(request), fut)
        return self._expect(await self._wait(request.id, fut, timeout), m.UploadOk)

    async def _call(self, build: Callable[[int], m.Request], ok: type[OkT],
                    timeout: float = REPLY_TIMEOUT) -> OkT | m.ErrorReply:
        """Send the request ``build(id)`` and wait for its reply. Raises ServerGone or
        ReplyTimeout."""
        async with self._send_lock:
            self._check_open()
            request = build(self._proto.next_id())
            assert not isinstance(request, (m.Hello, m.Pong))
            fut = self._waiter(request.id)
            await self._write(self._proto.send(request))
        return self._expect(await self._wait(request.id, fut, timeout), ok)

    @staticmethod
    def _expect(reply: m.Reply, ok: type[OkT]) -> OkT | m.ErrorReply:
        # The core parsed the reply for this request: it is its ok class or an error.
        if isinstance(reply, (ok, m.ErrorReply)):
            return reply
        raise AssertionError(f"{type(reply).__name__} is no answer for {ok.__name__}")

    async def _stream(self, src: BinaryIO, header: bytes, fut: asyncio.Future[m.Reply]
                      ) -> None:
        complete = False
        left = self._proto.body_left
        try:
            self._writer.write(header)
            # An early reply (a refused header) does not stop the body: the server skips
            # the rest of it and the connection stays usable only if it is all sent.
            while left and not self.closed.done():
                chunk = src.read(min(MAX_CHUNK, left))
                if not chunk:
                    self._close(f"{Path(src.name).name} shrank while it was being uploaded; "
                                "the connection was closed")
                    break
                self._writer.write(self._proto.send_body(chunk))
                left = self._proto.body_left
                await self._writer.drain()
            complete = left == 0
        except (ConnectionError, OSError) as exc:
            if not fut.done():
                self._close(lost_text(exc))
        finally:
            if complete:
                self._flush()  # pongs held back while the body was on the wire
            else:
                # A cut-short body leaves the stream unusable: end it ourselves.
                self._close("the upload was interrupted; the connection was closed")
                self._writer.transport.abort()

    def _waiter(self, key: int | str) -> asyncio.Future[m.Reply]:
        fut: asyncio.Future[m.Reply] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        return fut

    def _check_open(self) -> None:
        if self.closed.done():
            raise ServerGone(self.closed.result())

    async def _write(self, data: bytes) -> None:
        self._check_open()
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._close(lost_text(exc))
            self._check_open()

    async def _wait(self, key: int | str, fut: asyncio.Future[m.Reply], timeout: float | None
                    ) -> m.Reply:
        waits: set[asyncio.Future[Any]] = {fut, self.closed}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not fut.done() and self._waiters.get(key) is fut:
                del self._waiters[key]
        if fut.done():
            return fut.result()
        self._check_open()
        if len(self._proto.waiting) >= MAX_PENDING // 2:  # replies stopped coming at all
            self._close(f"the server stopped answering; {len(self._proto.waiting)} requests "
                        "are without a reply")
        raise ReplyTimeout(timeout or 0)

    # --- the reader task ---------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self.closed.done():
                self._proto.receive_data(await self._reader.read(READ_SIZE))
                self._handle_events()
                self._flush()
        except (ConnectionError, OSError) as exc:
            self._close(lost_text(exc))
        except asyncio.CancelledError:
            self._close(SERVER_CLOSED)
            raise

    def _handle_events(self) -> None:
        while not self.closed.done():
            ev = self._proto.next_event()
            if ev is NEED_DATA:
                return
            if isinstance(ev, ReplyReceived):
                self._resolve(ev)
            elif isinstance(ev, PeerOffered):
                if self.on_peer is not None:
                    self.on_peer(ev.notice)
            elif isinstance(ev, FrameIgnored):
                log.warning("unexpected_frame", frame_type=ev.kind)
            elif isinstance(ev, NoticeReceived):
                log.info("server_notice", kind=ev.notice.kind, notice=notice_text(ev.notice))
                if self.notice_kind is None:
                    self.notice_kind = ev.notice.kind
                self._close(notice_text(ev.notice))
            elif isinstance(ev, ConnectionRefused):
                self._close(refusal_text(ev.reply))
            elif isinstance(ev, UnsupportedVersion):
                mismatch = ConnectFailed(f"the server speaks protocol version {ev.version!r}; "
                                         "this client speaks versions "
                                         f"{', '.join(map(str, m.PROTOCOL_VERSIONS))}")
                fut = self._waiters.pop(_HELLO, None)
                if fut is not None and not fut.done():
                    fut.set_exception(mismatch)
                self._close(mismatch.message)
            elif isinstance(ev, ProtocolViolation):
                log.warning("server_protocol_error", code=ev.code, error=ev.message)
                self._close(violation_text(ev.message))
            elif isinstance(ev, ServerClosed):
                self._close(SERVER_CLOSED)
            # PingReceived: its pong is in the core's data_to_send

    def _resolve(self, ev: ReplyReceived) -> None:
        key: int | str = _HELLO if isinstance(ev.request, m.Hello) else ev.request.id
        fut = self._waiters.pop(key, None)
        if fut is None or fut.done():
            log.warning("unexpected_reply", id=key, reply_type=type(ev.reply).__name__)
        else:
            fut.set_result(ev.reply)
        if isinstance(ev.reply, m.ErrorReply) and key == _HELLO:
            self._close(refusal_text(ev.reply))  # a refused hello ends the connection

    def _flush(self) -> None:
        out = self._proto.data_to_send()
        if out and not self.closed.done() and not self._writer.is_closing():
            self._writer.write(out)

    def _close(self, reason: str) -> None:
        self._proto.close()
        if not self.closed.done():
            self.closed.set_result(reason)

    # --- shutdown ----------------------------------------------------------

    async def close(self) -> None:
        self._close(SERVER_CLOSED)
        self._read_task.cancel()
        await asyncio.wait({self._read_task})
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            pass


def _plain_ip(ip: str) -> str:
    """An IPv4-mapped IPv6 address as plain IPv4 (what the UVF socket's family takes)."""
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip
