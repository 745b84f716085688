"""Node leases: a node that stops renewing its lease loses its devices from the fleet.

Each node holds ``node:<id>:lease`` (a random token, ``PX`` = the lease) and
renews it three times a lease; the key expires on Redis's own clock, so the
nodes' clocks do not matter. Every node also reaps: a node listed in ``nodes``
whose lease key is gone (SIGKILL, power cut, a partition longer than the lease)
has its entries removed by one Lua script, so they leave the active list within
one lease (plus a third of one, the reaper's period). A node whose lease ran
out while it was cut off from Redis puts its live devices back when it returns
(``RedisPresence.resync``, run after this lease is renewed).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import structlog

from edgenet.backends.redislink import RedisLink
from edgenet.server.interfaces import BackendUnavailable
from edgenet.server.stopping import stop_loop

log = structlog.get_logger("edgenet.fleet")

_REAP = """
local lease = ARGV[2] .. ':node:' .. ARGV[1] .. ':lease'
if redis.call('EXISTS', lease) == 1 then return -1 end
local set = ARGV[2] .. ':node:' .. ARGV[1] .. ':devs'
local n = 0
for _, name in ipairs(redis.call('SMEMBERS', set)) do
  local cur = redis.call('HGET', KEYS[1], name)
  if cur and cjson.decode(cur).node == ARGV[1] then
    redis.call('HDEL', KEYS[1], name)
    redis.call('ZREM', KEYS[2], name)
    n = n + 1
  end
end
redis.call('DEL', set)
redis.call('SREM', KEYS[4], ARGV[1])
if n > 0 then redis.call('PUBLISH', KEYS[3], redis.call('INCR', KEYS[3])) end
return n
"""


class NodeIdInUse(Exception):
    """Another live node holds this node id."""


class NodeLease:
    def __init__(self, link: RedisLink, lease: float) -> None:
        self.link = link
        self.lease = lease
        self.token = secrets.token_hex(8)
        self._key = link.key("node", link.node, "lease")
        self._nodes = link.key("nodes")
        self._reap = link.redis.register_script(_REAP)
        self._task: asyncio.Task[None] | None = None
        self.stopped = False
        # Renew first after an outage: the presence's resync runs after this.
        link.on_recover.insert(0, self.renew)

    @property
    def _px(self) -> int:
        return max(100, int(self.lease * 1000))

    async def acquire(self) -> None:
        """Take the lease for this node id: at once, or once the lease of an earlier run
        of this node (killed) runs out. Raises NodeIdInUse when a live node renews it,
        BackendUnavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.lease + 1
        while not await self.link.run(
                lambda r: r.set(self._key, self.token, nx=True, px=self._px)):
            if loop.time() > deadline:
                raise NodeIdInUse(f"node id {self.link.node} is held by a live node; give "
                                  "each node its own --node-id")
            await asyncio.sleep(0.2)
        await self.link.run(lambda r: r.sadd(self._nodes, self.link.node))
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def renew(self) -> None:
        async def put(r: object) -> None:
            async with self.link.redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key, self.token, px=self._px)
                pipe.sadd(self._nodes, self.link.node)
                await pipe.execute()
        await self.link.run(put)

    async def reap(self) -> int:
        """Remove the entries of every node whose lease is gone; returns how many."""
        nodes = await self.link.run(lambda r: r.smembers(self._nodes))
        total = 0
        k = self.link.key
        for node in sorted(nodes):
            if node == self.link.node:
                continue
            n = int(await self.link.run(lambda r, node=node: self._reap(  # type: ignore[misc]
                keys=[k("devs"), k("order"), k("version"), self._nodes],
                args=[node, self.link.prefix])))
            if n >= 0:
                log.warning("node_expired", node=node, devices=n)
                total += n
        return total

    async def _loop(self) -> None:
        period = self.lease / 3
        while not self.stopped:
            await asyncio.sleep(period)
            with contextlib.suppress(BackendUnavailable):
                await self.renew()
                await self.reap()

    async def release(self) -> None:
        """Leave the fleet (a clean stop): the lease goes at once."""
        if self._task is not None:
            await stop_loop(self._task, self)
        with contextlib.suppress(BackendUnavailable):
            token = await self.link.run(lambda r: r.get(self._key))
            if token == self.token:
                await self.link.run(lambda r: r.delete(self._key))
            await self.link.run(lambda r: r.srem(self._nodes, self.link.node))
