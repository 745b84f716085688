"""The device's TCP connection to the server (asyncio adapter over edgenet.wire).

One background task reads frames for the whole session: it answers ``ping``
with ``pong`` at once (even while the user is typing), hands replies to the
request waiting for that ``id``, and turns a ``notice``, EOF or a broken stream
into ``closed`` (a future holding one line for the user). Requests go one at a
time, ids counting up from 1. Uploads stream from the file in MAX_CHUNK pieces
with ``drain`` between, so memory stays bounded whatever the file size; pongs
due while a body is on the wire wait until it is complete.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog

from edgenet import __version__
from edgenet.wire.frames import (
    MAX_CHUNK,
    MAX_REPLY_HEADER,
    NEED_DATA,
    BodyChunk,
    BodyEnd,
    Closed,
    FrameDecoder,
    FrameError,
    Header,
    encode_frame,
    encode_header,
)
from edgenet.wire.messages import PROTOCOL_VERSION

if TYPE_CHECKING:
    from edgenet.config import ClientConfig

log = structlog.get_logger("edgenet.client")

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 60.0
#: Largest read from the socket at a time (the decoder buffers at most this plus a header).
READ_SIZE = 64 * 1024

SERVER_CLOSED = "the server closed the connection"
_NOTICE_FALLBACK = {
    "replaced": "you logged in from another place; this session was replaced",
    "disconnected": "an operator disconnected this device",
    "shutdown": "the server is shutting down",
    "timeout": "the server timed out this connection",
}


class ConnectFailed(Exception):
    """The server cannot be reached or does not speak our protocol; one line in ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerGone(Exception):
    """The connection is over (EOF, reset, notice, broken stream); ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ReplyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        self.message = f"the server did not reply within {seconds:g} seconds"
        super().__init__(self.message)


@dataclass(frozen=True)
class Reply:
    fields: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.fields.get("type") == "ok"

    @property
    def code(self) -> str:
        return str(self.fields.get("code", ""))

    @property
    def message(self) -> str:
        msg = self.fields.get("message")
        if isinstance(msg, str) and msg:
            return " ".join(msg.splitlines())
        return f"the server refused the request ({self.code or 'no reason given'})"


def describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name ({exc.strerror or exc})".lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_tls(config: ClientConfig) -> ssl.SSLContext | None:
    """The TLS context ``config`` asks for (None: plain TCP); raises ConnectFailed."""
    if config.tls_ca is None and not config.tls_insecure:
        return None
    from edgenet.tls import TlsSetupError, client_context

    try:
        return client_context(config.tls_ca, config.tls_insecure)
    except TlsSetupError as exc:
        raise ConnectFailed(exc.message) from None


async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """The server's addresses (getaddrinfo rows); raises ConnectFailed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectFailed(
            f"cannot reach the server at {host_port(host, port)}: {describe_os_error(exc)}"
        ) from None
    if not infos:
        raise ConnectFailed(f"cannot reach the server at {host_port(host, port)}: no address")
    return infos


class ServerConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_header=MAX_REPLY_HEADER)
        loop = asyncio.get_running_loop()
        #: Resolves to one line for the user when the connection is over.
        self.closed: asyncio.Future[str] = loop.create_future()
        self._waiters: dict[int | str, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 1
        self._streaming = False
        self._deferred_pongs: list[Any] = []
        self._read_task = asyncio.create_task(self._read_loop(), name="edgenet-client-reader")
        self.heartbeat: float | None = None
        #: True when the connection runs over TLS (set by ``open``).
        self.tls = False
        #: The ``kind`` of the server's closing notice (``replaced``, ``shutdown``, ...).
        self.notice_kind: str | None = None

    @classmethod
    async def open(cls, host: str, port: int, infos: list[tuple[Any, ...]] | None = None,
                   ssl_context: ssl.SSLContext | None = None) -> ServerConnection:
        """Connect (within CONNECT_TIMEOUT in all) to the first address that answers;
        over TLS with ``ssl_context`` (the certificate must name ``host``)."""
        where = host_port(host, port)
        if infos is None:
            infos = await resolve(host, port)
        first_error: BaseException | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        for *_, addr in infos:
            left = deadline - loop.time()
            if left <= 0:
                first_error = first_error or TimeoutError()
                break
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        addr[0], addr[1], ssl=ssl_context,
                        server_hostname=host if ssl_context is not None else None), left)
            except ssl.SSLError as exc:
                from edgenet.tls import describe_handshake_error

                raise ConnectFailed(f"cannot talk to the server at {where}: "
                                    f"{describe_handshake_error(exc)}") from None
            except (OSError, asyncio.TimeoutError) as exc:
                first_error = first_error or exc
                continue
            conn = cls(reader, writer)
            conn.tls = ssl_context is not None
            return conn
        assert first_error is not None
        reason = describe_os_error(first_error)
        if isinstance(first_error, (TimeoutError, asyncio.TimeoutError)):
            reason = f"no answer within {CONNECT_TIMEOUT:g} seconds"
        raise ConnectFailed(f"cannot reach the server at {where}: {reason}")

    # --- requests ----------------------------------------------------------

    async def hello(self) -> dict[str, Any]:
        """Exchange hellos; raises ConnectFailed if the server does not speak our version."""
        fut = self._waiter("hello")
        await self._send({"type": "hello", "version": PROTOCOL_VERSION,
                          "agent": f"edgenet-client/{__version__}"})
        try:
            fields = await self._wait(fut, CONNECT_TIMEOUT)
        except ServerGone as exc:
            # A TLS server drops a plain client's first bytes without a word.
            hint = "" if self.tls else "; if it uses TLS, start the client with --tls-ca FILE"
            raise ConnectFailed(f"{exc.message} before answering hello{hint}") from None
        if fields.get("type") == "error":
            raise ConnectFailed(Reply(fields).message)
        version = fields.get("version")
        if fields.get("type") != "hello" or version != PROTOCOL_VERSION:
            raise ConnectFailed(
                f"the server speaks protocol version {version!r}; "
                f"this client speaks version {PROTOCOL_VERSION}")
        hb = fields.get("heartbeat")
        if isinstance(hb, (int, float)) and not isinstance(hb, bool):
            self.heartbeat = float(hb)
        return fields

    async def request(self, fields: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> Reply:
        """Send one request (an ``id`` is added) and wait for its reply.
        Raises ServerGone or ReplyTimeout."""
        rid = self._take_id()
        fut = self._waiter(rid)
        await self._send({**fields, "id": rid})
        return Reply(await self._wait(fut, timeout))

    async def upload(self, file_id: int, path: Path, timeout: float = REPLY_TIMEOUT) -> Reply:
        """Stream ``path`` as the body of one ``upload`` frame. No timeout while the body
        is on the wire; ``timeout`` for the reply after it. Raises OSError if the file
        cannot be opened (nothing sent then), ServerGone or ReplyTimeout."""
        # A local open is quick; the reads that follow are bounded by MAX_CHUNK each.
        with open(path, "rb") as src:  # noqa: ASYNC230
            size = os.fstat(src.fileno()).st_size
            self._check_open()
            rid = self._take_id()
            fut = self._waiter(rid)
            await self._stream(src, encode_header(
                {"type": "upload", "id": rid, "file_id": file_id}, size), size, fut)
        return Reply(await self._wait(fut, timeout))

    async def _stream(self, src: BinaryIO, header: bytes, size: int,
                      fut: asyncio.Future[dict[str, Any]]) -> None:
        complete = False
        self._streaming = True
        try:
            self._writer.write(header)
            left = size
            # An early reply (a refused header) does not stop the body: the server skips
            # the rest of it and the connection stays usable only if it is all sent.
            while left and not self.closed.done():
                chunk = src.read(min(MAX_CHUNK, left))
                if not chunk:
                    self._close(f"{Path(src.name).name} shrank while it was being uploaded; "
                                "the connection was closed")
                    break
                self._writer.write(chunk)
                left -= len(chunk)
                await self._writer.drain()
            complete = left == 0
        except (ConnectionError, OSError) as exc:
            if not fut.done():
                self._close(f"the connection to the server was lost: {describe_os_error(exc)}")
        finally:
            self._streaming = False
            if complete:
                self._flush_pongs()
            else:
                # A cut-short body leaves the stream unusable: end it ourselves.
                self._close("the upload was interrupted; the connection was closed")
                self._writer.transport.abort()

    def _take_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def _waiter(self, key: int | str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        return fut

    def _check_open(self) -> None:
        if self.closed.done():
            raise ServerGone(self.closed.result())

    async def _send(self, fields: dict[str, Any]) -> None:
        self._check_open()
        self._writer.write(encode_frame(fields))
        try:
            await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._close(f"the connection to the server was lost: {describe_os_error(exc)}")
            self._check_open()

    async def _wait(self, fut: asyncio.Future[dict[str, Any]], timeout: float | None
                    ) -> dict[str, Any]:
        waits: set[asyncio.Future[Any]] = {fut, self.closed}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for key, waiter in list(self._waiters.items()):
                if waiter is fut and not fut.done():
                    del self._waiters[key]
        if fut.done():
            return fut.result()
        self._check_open()
        raise ReplyTimeout(timeout or 0)

    # --- the reader task ---------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(READ_SIZE)
                self._decoder.receive_data(data)
                while True:
                    event = self._decoder.next_event()
                    if event is NEED_DATA:
                        break
                    if isinstance(event, Closed):
                        self._close(SERVER_CLOSED)
                        return
                    if isinstance(event, Header):
                        self._dispatch(event.fields)
                    elif isinstance(event, (BodyChunk, BodyEnd)):
                        pass  # the server sends no bodies; a stray one is skipped
        except FrameError as exc:
            log.warning("server_frame_error", code=exc.code, error=exc.message)
            self._close(f"the server broke the protocol ({exc.message}); "
                        "the connection was closed")
        except (ConnectionError, OSError) as exc:
            self._close(f"the connection to the server was lost: {describe_os_error(exc)}")
        except asyncio.CancelledError:
            self._close(SERVER_CLOSED)
            raise

    def _dispatch(self, fields: dict[str, Any]) -> None:
        kind = fields.get("type")
        rid = fields.get("id")
        if kind == "ping":
            self._pong(rid)
        elif kind == "notice":
            msg = fields.get("message")
            if not isinstance(msg, str) or not msg:
                msg = _NOTICE_FALLBACK.get(str(fields.get("kind")), SERVER_CLOSED)
            log.info("server_notice", kind=fields.get("kind"), notice=msg)
            if self.notice_kind is None:
                self.notice_kind = str(fields.get("kind"))
            self._close(" ".join(msg.splitlines()))
        elif kind == "hello" and "hello" in self._waiters:
            self._resolve("hello", fields)
        elif kind in ("ok", "error"):
            if rid is None and "hello" in self._waiters:
                self._resolve("hello", fields)
            elif isinstance(rid, int) and not isinstance(rid, bool) and rid in self._waiters:
                self._resolve(rid, fields)
            elif rid is None and kind == "error":
                # A connection-level error (framing): the server closes right after.
                self._close(Reply(fields).message)
            else:
                log.warning("unexpected_reply", id=rid, reply_type=kind)
        elif kind == "pong":
            pass
        else:
            log.warning("unexpected_frame", frame_type=str(kind)[:40])

    def _resolve(self, key: int | str, fields: dict[str, Any]) -> None:
        fut = self._waiters.pop(key)
        if not fut.done():
            fut.set_result(fields)

    def _pong(self, rid: Any) -> None:
        if self._streaming:
            self._deferred_pongs.append(rid)
            return
        if self.closed.done() or self._writer.is_closing():
            return
        self._writer.write(encode_frame({"type": "pong", "id": rid}))

    def _flush_pongs(self) -> None:
        pongs, self._deferred_pongs = self._deferred_pongs, []
        for rid in pongs:
            self._pong(rid)

    def _close(self, reason: str) -> None:
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
