"""Accepting connections on listening sockets, also at the descriptor limit (asyncio).

asyncio's own accept loop (``loop.create_server``) logs a traceback for every
connection left in the backlog each time it meets EMFILE (tens of thousands of
them with a long backlog), and leaves those connections waiting. ``Acceptor``
accepts with ``loop.sock_accept`` instead, then takes what else waits in the backlog
without waiting (``ACCEPT_BATCH`` at most: one wake-up for a burst of connections,
as asyncio's own loop does). On EMFILE/ENFILE it pauses for
``PAUSE`` seconds and resumes, reports one ``too_many_open_files`` event per
episode (``ExhaustionLog``), and sheds the backlog: it gives up its spare
descriptor for a moment, accepts the waiting connections one at a time, sends
each a one-line ``busy`` reply and closes it, then takes the spare again. When
accepting works again it logs ``accepting_resumed``. Used by the device port
(``DeviceListener``, and ``ProxiedListener`` behind a load balancer) and by the
admin port (its aiohttp protocol is attached with ``connect_accepted_socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable

import structlog

from edgenet.server.descriptors import ExhaustionLog, SpareDescriptor

log = structlog.get_logger("edgenet.server")

#: Seconds accepting pauses after the process (or the system) ran out of descriptors.
PAUSE = 0.1
#: Connections shed (told ``busy`` and closed) per pause at most.
SHED_PER_PAUSE = 64
#: Connections accepted after one wake-up at most (those waiting in the backlog).
ACCEPT_BATCH = 64
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

#: Called with each accepted (non-blocking) socket and its peer address.
OnSocket = Callable[[socket.socket, tuple[str, int]], None]
#: Makes the protocol of one device connection, given the device's address when a
#: PROXY header named it (None: the socket's peer is the device).
ProtocolFactory = Callable[[tuple[str, int] | None], asyncio.BaseProtocol]
#: Called with the peer of a connection just accepted and how many are still starting:
#: None to serve it, else the bytes to send it before it is closed at once.
Admission = Callable[[tuple[str, int], int], "bytes | None"]


async def bind_listeners(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets for ``host`` (None: every address) and ``port``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, type_, proto, _, addr in infos:
            if (family, addr) in seen:
                continue
            seen.add((family, addr))
            if port == 0 and sockets:  # the other families take the port the first one got
                addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Acceptor:
    """Accept loops over ``sockets``; ``close`` stops them and closes the sockets."""

    def __init__(self, sockets: list[socket.socket], on_socket: OnSocket, busy: bytes,
                 exhaustion: ExhaustionLog, where: str) -> None:
        self.sockets = sockets
        self._on_socket = on_socket
        self._busy = busy
        self._exhaustion = exhaustion
        self.where = where
        self._spare = SpareDescriptor()
        self._tasks: list[asyncio.Task[None]] = []
        #: Connections told ``busy`` because the descriptor table was full.
        self.shed = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._loop(s)) for s in self.sockets]

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for sock in self.sockets:
            sock.close()
        self._spare.close()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        paused_at: float | None = None
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except OSError as exc:
                if lsock.fileno() < 0:
                    return
                if exc.errno not in _RESOURCE_ERRNOS:
                    continue  # a connection that went away in the backlog (ECONNABORTED)
                if paused_at is None:
                    paused_at = time.monotonic()
                shed = self._shed(lsock)
                self._exhaustion.report(self.where, time.monotonic(), shed=shed,
                                        error=exc.strerror or str(exc))
                await asyncio.sleep(PAUSE)
                continue
            if paused_at is not None:
                log.info("accepting_resumed", where=self.where, shed=self.shed,
                         paused_ms=round((time.monotonic() - paused_at) * 1000))
                paused_at = None
            self._take(sock, addr)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, addr = lsock.accept()
                except OSError:
                    # Nothing more waits (EAGAIN), or an error the awaited accept meets
                    # again and handles (EMFILE, a connection gone from the backlog).
                    break
                self._take(sock, addr)

    def _take(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        try:
            sock.setblocking(False)
            self._on_socket(sock, (str(addr[0]), int(addr[1])))
        except Exception:  # a bug of ours (or a socket gone): this connection only
            log.exception("accept_handler_failed", where=self.where)
            sock.close()

    def _shed(self, lsock: socket.socket) -> int:
        """Tell the connections waiting in the backlog ``busy``, with the spare's slot."""
        if not self._spare.release():
            self._spare.restore()
            return 0
        shed = 0
        try:
            for _ in range(SHED_PER_PAUSE):
                try:
                    conn, _ = lsock.accept()
                except OSError:  # the backlog is empty, or still no descriptor
                    break
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(self._busy)
                    conn.shutdown(socket.SHUT_WR)
                conn.close()
                shed += 1
        finally:
            self._spare.restore()
        self.shed += shed
        return shed


class DeviceListener:
    """The device port: each accepted socket gets the protocol ``factory`` makes,
    after the TLS handshake when configured. Connections still in their handshake
    are cancelled by ``close``."""

    def __init__(self, factory: ProtocolFactory, ssl_context: ssl.SSLContext | None,
                 handshake_timeout: float | None, busy: bytes, exhaustion: ExhaustionLog,
                 admission: Admission | None = None) -> None:
        self._factory = factory
        self._admission = admission
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._busy = busy
        self._exhaustion = exhaustion
        self._acceptor: Acceptor | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.sockets: list[socket.socket] = []

    async def start(self, host: str | None, port: int, backlog: int = 4096) -> None:
        self.sockets = await bind_listeners(host, port, backlog)
        self._acceptor = Acceptor(self.sockets, self._spawn, self._busy, self._exhaustion,
                                  "device_accept")
        self._acceptor.start()

    def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        for task in list(self._pending):
            task.cancel()

    def _spawn(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        refusal = self._admission(peer, len(self._pending)) if self._admission else None
        if refusal is not None:  # told and closed now: refusals hold no descriptor
            with contextlib.suppress(OSError):
                sock.send(refusal)
                sock.shutdown(socket.SHUT_WR)
            sock.close()
            return
        if self._ssl is None and attach_plain(sock, lambda: self._factory(None)):
            return
        task = asyncio.get_running_loop().create_task(self._connection(sock))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _connection(self, sock: socket.socket) -> None:
        await attach(sock, lambda: self._factory(None), self._ssl, self._handshake_timeout)


def attach_plain(sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> bool:
    """Give an accepted plain TCP socket its protocol now, without a task: what
    ``connect_accepted_socket`` does for plain TCP, less its coroutine and the future
    it waits on (a burst of logins costs one of each per connection). False where the
    event loop has no selector transports (the caller then takes the public way)."""
    loop = asyncio.get_running_loop()
    make = getattr(loop, "_make_socket_transport", None)
    if make is None:
        return False
    protocol = factory()
    # connection_made follows in the loop's next turn, as with connect_accepted_socket.
    make(sock, protocol)
    return True


async def attach(sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol],
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float | None,
                 peer: str | None = None) -> bool:
    """Give an accepted socket its protocol (after the TLS handshake). False if the
    handshake failed (logged, the socket closed). ``peer``: the name to log."""
    loop = asyncio.get_running_loop()
    # No TCP_NODELAY here: asyncio's socket transports set it on every TCP socket.
    try:
        await loop.connect_accepted_socket(
            factory, sock, ssl=ssl_context,
            ssl_handshake_timeout=handshake_timeout if ssl_context else None)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
        if peer is None:
            peer = "?"
            with contextlib.suppress(OSError):
                peer = "%s:%s" % sock.getpeername()[:2]
        log.info("tls_handshake_failed", peer=peer, error=str(exc) or type(exc).__name__)
        sock.close()
        return False
    return True
