"""One node's link to the fleet's Redis: the client, the key layout, and its health.

Every Redis backend goes through ``RedisLink.run``: while Redis answers, a call
is one command (or script, or pipeline); when it does not, the call raises
``BackendUnavailable`` at once (no request waits on a dead Redis) and a watcher
task retries with exponential backoff (0.1 s doubling to 2 s) until Redis answers
again, then runs the ``on_recover`` hooks (the presence re-registers this node's
devices, the event log flushes what it queued). ``ready()`` says whether Redis
answers now (``/healthz``).

Commands share a bounded pool of connections (``--redis-max-connections``) that
waits for a free one (``BlockingConnectionPool``): hundreds of devices at once
queue for a connection instead of each opening its own. A wait longer than
``--redis-pool-timeout`` is ``BackendUnavailable`` with a "busy" message for that
request only: Redis answers, so the node stays ready and nothing is torn down.

Keys all start with ``{prefix}:`` where ``prefix`` is ``--redis-prefix`` in
braces (a Redis Cluster hash tag: every key of a fleet lives in one slot, so
the Lua scripts may touch several). The layout is in docs/FLEET.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from edgenet.server.interfaces import BackendUnavailable

log = structlog.get_logger("edgenet.fleet")

T = TypeVar("T")

#: Seconds to connect to Redis and to wait for one answer before calling it down.
SOCKET_TIMEOUT = 2.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0
UNAVAILABLE = "the fleet's shared state (Redis) is unreachable; try again shortly"
BUSY = "this node is busy (every Redis connection is in use); try again shortly"
#: Defaults of ``--redis-max-connections`` and ``--redis-pool-timeout``.
MAX_CONNECTIONS = 64
POOL_TIMEOUT = 5.0
#: Seconds between two ``redis_pool_busy`` events (one per burst, not one per request).
BUSY_LOG_PERIOD = 1.0


class PoolBusy(RedisConnectionError):
    """Every connection of the pool stayed in use for the whole wait."""


class WaitingPool(aioredis.BlockingConnectionPool):
    """redis-py's pool that waits for a free connection, telling a wait that ran out
    (``PoolBusy``) from a connection that failed (any other ``ConnectionError``)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except PoolBusy:
            raise
        except RedisConnectionError as exc:
            # redis-py raises ConnectionError("No connection available.") from the
            # TimeoutError of its wait; a refused or dropped connect has no such cause.
            if isinstance(exc.__cause__, (asyncio.TimeoutError, TimeoutError)):
                raise PoolBusy(str(exc)) from exc
            raise


class RedisLink:
    def __init__(self, url: str, prefix: str, node: str, client: Any = None,
                 max_connections: int = MAX_CONNECTIONS,
                 pool_timeout: float = POOL_TIMEOUT) -> None:
        self.url = url
        self.prefix = "{" + prefix.strip("{}") + "}"
        self.node = node
        # Typed Any: redis-py's own annotations are looser than mypy --strict wants.
        self.redis: Any = client or aioredis.Redis.from_pool(WaitingPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout,
            decode_responses=True, socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT, health_check_interval=5))
        #: A second client for blocking reads (XREAD BLOCK), so they never hold up
        #: the commands of devices.
        self.blocking: Any = aioredis.from_url(
            url, decode_responses=True, socket_connect_timeout=SOCKET_TIMEOUT,
            socket_timeout=SOCKET_TIMEOUT + 5)
        self._up = True
        self._watcher: asyncio.Task[None] | None = None
        self.on_recover: list[Callable[[], Awaitable[None]]] = []
        self.outages = 0
        #: Requests refused because no connection of the pool came free in time.
        self.busy = 0
        self._busy_logged = -BUSY_LOG_PERIOD

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def ready(self) -> bool:
        return self._up

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call(redis)``; BackendUnavailable when Redis is down (or goes down now)."""
        if not self._up:
            if self._watcher is None or self._watcher.done():
                self.down(ConnectionError("still unreachable"))
            raise BackendUnavailable(UNAVAILABLE)
        try:
            return await call(self.redis)
        except ResponseError:
            raise  # a bug of ours (a script, a wrong type): not an outage
        except PoolBusy:
            self._pool_busy()
            raise BackendUnavailable(BUSY) from None
        except (RedisError, OSError) as exc:
            self.down(exc)
            raise BackendUnavailable(UNAVAILABLE) from None

    def _pool_busy(self) -> None:
        self.busy += 1
        now = asyncio.get_running_loop().time()
        if now - self._busy_logged >= BUSY_LOG_PERIOD:
            self._busy_logged = now
            pool = self.redis.connection_pool
            log.warning("redis_pool_busy", refused=self.busy,
                        max_connections=pool.max_connections, wait=pool.timeout)

    def down(self, exc: BaseException) -> None:
        """Redis failed a call: refuse further calls until the watcher reaches it."""
        if self._up:
            self._up = False
            self.outages += 1
            log.error("redis_unavailable", error=str(exc) or type(exc).__name__,
                      url=safe_url(self.url))
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            await asyncio.sleep(delay)
            # Connections made before the outage are dead: drop them before the
            # answer counts (else the first command after it fails again).
            with contextlib.suppress(Exception):
                await self.redis.connection_pool.disconnect()
                await self.redis.ping()
                if await self._recovered():
                    return
            delay = min(BACKOFF_MAX, delay * 2)

    async def _recovered(self) -> bool:
        """Redis answers: run the hooks. False when it went away again meanwhile."""
        self._up = True
        for hook in list(self.on_recover):
            try:
                await hook()
            except BackendUnavailable:
                self._up = False
                return False
            except Exception:  # a bug of ours: the others still run
                log.exception("redis_recover_hook_failed")
        log.info("redis_recovered", url=safe_url(self.url))
        return True

    async def check(self) -> None:
        """Raise BackendUnavailable unless Redis answers now (start-up)."""
        await self.run(lambda r: r.ping())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
        for client in (self.redis, self.blocking):
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()


def safe_url(url: str) -> str:
    """The URL without a password (``redis://:secret@host`` -> ``redis://***@host``)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def decode_hash(values: Any) -> dict[str, str]:
    """A Lua array of ``k1, v1, k2, v2`` (HGETALL inside a script) as a dict."""
    items = list(values or [])
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}
