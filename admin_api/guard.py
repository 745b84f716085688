"""Limits in front of aiohttp for the admin port: a connection cap, a request-head
deadline and a keep-alive idle deadline.

aiohttp's server has no deadline for a request head that arrives one byte at a
time (slowloris), and no cap on connections. ``ConnectionGuard`` wraps each
connection's protocol (aiohttp's ``RequestHandler``) and, independently of the
aiohttp version:

* refuses a connection beyond ``max_connections`` at once with ``503
  too_many_connections`` (one short response, then close);
* closes a connection whose request head is not complete within
  ``header_timeout`` of the connection opening, or of the first byte after the
  previous response;
* closes a kept-alive connection idle (no request in progress, no byte coming)
  for ``idle_timeout``.

A request is "in progress" from its handler's start (the head is complete; the
guard's middleware marks it) to its end, so a long event stream is never cut
(streams are bounded by their own limit). Closures are logged at most once a
second, with a count, so a flood does not flood the log.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from edgenet.server.acceptor import Acceptor, bind_listeners
from edgenet.server.descriptors import ExhaustionLog

log = structlog.get_logger("edgenet.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class AdminLimits:
    max_connections: int = 128
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


class _RateLimitedCount:
    """Counts events; logs them at most once a second, with how many there were."""

    def __init__(self, event: str, **fields: Any) -> None:
        self.event = event
        self.fields = fields
        self._count = 0
        self._logged = 0.0

    def add(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._logged >= 1.0:
            log.warning(self.event, count=self._count, **self.fields)
            self._count = 0
            self._logged = now


class ConnectionGuard:
    """The protocol factory given to ``loop.create_server``: wraps ``inner()``."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], limits: AdminLimits) -> None:
        self.inner = inner
        self.limits = limits
        self.open: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self._refused = _RateLimitedCount("admin_connection_refused",
                                          reason="max_connections",
                                          limit=limits.max_connections)
        self._header_timeouts = _RateLimitedCount("admin_connection_closed",
                                                  reason="header_timeout",
                                                  seconds=limits.header_timeout)
        self._idle = _RateLimitedCount("admin_connection_closed", reason="idle_timeout",
                                       seconds=limits.idle_timeout)

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self.open.get(request.transport) if request.transport is not None else None
        if conn is None:  # not behind this guard (a test client)
            return await handler(request)
        conn.request_started()
        try:
            return await handler(request)
        finally:
            conn.request_finished()


_BUSY_BODY = json.dumps({"error": {"code": "too_many_connections", "message":
                                   "the admin API is at its connection limit; try again"}}
                        ).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n"
         b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


_EXHAUSTED_BODY = json.dumps({"error": {"code": "server_busy", "message":
                                        "the server has run out of file descriptors; "
                                        "try again"}}).encode()
_EXHAUSTED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
              b"Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n"
              b"Content-Length: " + str(len(_EXHAUSTED_BODY)).encode() + b"\r\n\r\n"
              + _EXHAUSTED_BODY)


class _GuardedConnection(asyncio.Protocol):
    """One admin connection: aiohttp's protocol inside, deadlines around it."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._requests = 0
        self._head_started = False

    # -- asyncio's calls, passed on ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        guard = self.guard
        if len(guard.open) >= guard.limits.max_connections:
            guard._refused.add()
            transport.write(_BUSY)
            transport.close()
            return
        guard.open[transport] = self
        self.inner = guard.inner()
        self.inner.connection_made(transport)
        # The first request's head is due within the header timeout of the opening.
        self._arm(guard.limits.header_timeout, guard._header_timeouts)
        self._head_started = True

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self._requests and not self._head_started:
            self._head_started = True  # the next request's head has begun
            self._arm(self.guard.limits.header_timeout, self.guard._header_timeouts)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is not None:
            self.guard.open.pop(self.transport, None)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- requests (told by the guard's middleware) ------------------------------------

    def request_started(self) -> None:
        self._requests += 1
        self._head_started = False
        self._disarm()

    def request_finished(self) -> None:
        self._requests -= 1
        if not self._requests:
            self._arm(self.guard.limits.idle_timeout, self.guard._idle)

    # -- deadlines -------------------------------------------------------------------

    def _arm(self, seconds: float, count: _RateLimitedCount) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(seconds, self._expire, count)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, count: _RateLimitedCount) -> None:
        self._timer = None
        if self._requests or self.transport is None:
            return
        count.add()
        self.transport.abort()  # a slow sender may not read either: no flush


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard``, accepted by the
    server's own ``Acceptor`` (asyncio's logs a traceback per waiting connection when
    descriptors run out; this one logs ``too_many_open_files`` once per episode and
    answers the waiting connections 503)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 exhaustion: ExhaustionLog, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._exhaustion = exhaustion
        self._opening: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        sockets = await bind_listeners(self._host, self._port, self._backlog)
        acceptor = Acceptor(sockets, self._attach, _EXHAUSTED, self._exhaustion, "admin_accept")
        acceptor.start()
        self._server = acceptor  # type: ignore[assignment]  # close() and .sockets, as aiohttp uses

    def _attach(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(sock))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _connect(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._guard, sock)
        except OSError:
            sock.close()
