"""The fleet's ``Presence`` in Redis: who is active on any node, takeovers across nodes.

A join, a leave and an evict are each one Lua script (atomic): the entry, the
login order, this node's set of names and the version change together. When a
script replaces or removes an entry held by another node, it appends a kick to
that node's Redis Stream in the same step; each node reads its own stream
(``XREAD BLOCK``) from the last entry it handled, so a kick is never lost while
a node reconnects (a stream keeps it; plain pub/sub would drop it), and calls its
``on_evict`` handlers, which close the session. Entries held by this node are
announced here at once, as the embedded presence does.

Liveness is ``leases.NodeLease``'s; after an outage this node first handles the
kicks it missed, then puts back the entries of its live sessions (``resync``),
unless a login elsewhere took the name meanwhile (the local session is told it
was replaced) or another node kicked the session meanwhile (the restore script
finds the kick in this node's stream, atomically, and leaves the entry out).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

import structlog
from redis.exceptions import RedisError

from edgenet.backends.redislink import RedisLink
from edgenet.server.interfaces import (
    ActiveDevice,
    BackendUnavailable,
    EvictHandler,
    EvictReason,
    Joined,
)

log = structlog.get_logger("edgenet.fleet")

#: Kicks kept per node's stream (approximately: XADD MAXLEN ~).
KICKS_KEPT = 10_000
#: Seconds one XREAD waits for a kick before it asks again.
KICK_BLOCK_MS = 2000

_JOIN = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local o = cjson.decode(old)
  redis.call('SREM', ARGV[4] .. ':node:' .. o.node .. ':devs', ARGV[1])
  if o.node ~= ARGV[3] then
    redis.call('XADD', ARGV[4] .. ':kick:' .. o.node, 'MAXLEN', '~', ARGV[6], '*',
               'dev', old, 'reason', ARGV[5])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('SADD', ARGV[4] .. ':node:' .. ARGV[3] .. ':devs', ARGV[1])
redis.call('PUBLISH', KEYS[4], redis.call('INCR', KEYS[4]))
return old
"""

# ARGV: name, session id ('' = whoever holds it), reason ('' = a leave), this node,
# prefix, kicks kept.
_REMOVE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local o = cjson.decode(cur)
if ARGV[2] ~= '' and o.session_id ~= ARGV[2] then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', ARGV[5] .. ':node:' .. o.node .. ':devs', ARGV[1])
redis.call('PUBLISH', KEYS[3], redis.call('INCR', KEYS[3]))
if ARGV[3] ~= '' and o.node ~= ARGV[4] then
  redis.call('XADD', ARGV[5] .. ':kick:' .. o.node, 'MAXLEN', '~', ARGV[6], '*',
             'dev', cur, 'reason', ARGV[3])
end
return cur
"""

# Put back one of this node's entries after an outage, unless a kick of that session
# is in this node's stream after the last one it handled (another node evicted it
# meanwhile; the kick reader will announce it). KEYS[5]: this node's kick stream.
# ARGV: name, entry, node, prefix, the last kick handled.
_RESTORE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local mine = cjson.decode(ARGV[2])
if not cur then
  for _, e in ipairs(redis.call('XRANGE', KEYS[5], '(' .. ARGV[5], '+')) do
    local f = e[2]
    for i = 1, #f - 1, 2 do
      if f[i] == 'dev' then
        local ok, d = pcall(cjson.decode, f[i + 1])
        if ok and type(d) == 'table' and d.session_id == mine.session_id then
          return 'kicked'
        end
      end
    end
  end
end
if cur then
  if cjson.decode(cur).session_id == mine.session_id then
    redis.call('SADD', ARGV[4] .. ':node:' .. ARGV[3] .. ':devs', ARGV[1])
    return 'kept'
  end
  return 'taken'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('SADD', ARGV[4] .. ':node:' .. ARGV[3] .. ':devs', ARGV[1])
redis.call('PUBLISH', KEYS[4], redis.call('INCR', KEYS[4]))
return 'restored'
"""


def encode_device(d: ActiveDevice) -> str:
    return json.dumps({"name": d.name, "ip": d.ip, "udp_port": d.udp_port, "since": d.since,
                       "session_id": d.session_id, "node": d.node}, separators=(",", ":"))


def decode_device(text: str) -> ActiveDevice:
    v: dict[str, Any] = json.loads(text)
    return ActiveDevice(str(v["name"]), str(v["ip"]), int(v["udp_port"]), float(v["since"]),
                        str(v["session_id"]), None if v.get("node") is None else str(v["node"]))


class RedisPresence:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.node = link.node
        k = link.key
        self._devs, self._order = k("devs"), k("order")
        self._seq, self._version = k("seq"), k("version")
        self._kicks = k("kick", self.node)
        r = link.redis
        self._join = r.register_script(_JOIN)
        self._remove = r.register_script(_REMOVE)
        self._restore = r.register_script(_RESTORE)
        self._handlers: list[EvictHandler] = []
        #: The entries of this node's sessions, by session id (put back by ``resync``).
        self._mine: dict[str, ActiveDevice] = {}
        #: Leaves that could not reach Redis (done by ``resync``).
        self._unleft: dict[str, str] = {}
        self._kick_task: asyncio.Task[None] | None = None
        self._last_kick = "0-0"
        self._stopping = False
        self._cached: int | None = None
        self._generation = 0
        self._listening = False
        self._pubsub: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        link.on_recover.append(self.resync)

    # -- Presence -----------------------------------------------------------------

    def on_evict(self, handler: EvictHandler) -> None:
        self._handlers.append(handler)

    def _announce(self, dev: ActiveDevice, reason: EvictReason) -> None:
        self._mine.pop(dev.session_id, None)
        for handler in self._handlers:
            handler(dev, reason)

    async def join(self, name: str, ip: str, udp_port: int, now: float) -> Joined:
        dev = ActiveDevice(name, ip, udp_port, now, secrets.token_hex(8), self.node)
        old = await self.link.run(lambda r: self._join(
            keys=[self._devs, self._order, self._seq, self._version],
            args=[name, encode_device(dev), self.node, self.link.prefix, "replaced",
                  KICKS_KEPT]))
        self._changed()
        self._mine[dev.session_id] = dev
        replaced = decode_device(old) if old else None
        if replaced is not None and replaced.node == self.node:
            self._announce(replaced, "replaced")
        return Joined(dev, replaced)

    async def _remove_entry(self, name: str, session_id: str, reason: str) -> ActiveDevice | None:
        removed = await self.link.run(lambda r: self._remove(
            keys=[self._devs, self._order, self._version],
            args=[name, session_id, reason, self.node, self.link.prefix, KICKS_KEPT]))
        if removed:
            self._changed()
        return decode_device(removed) if removed else None

    async def leave(self, name: str, session_id: str) -> ActiveDevice | None:
        self._mine.pop(session_id, None)
        try:
            return await self._remove_entry(name, session_id, "")
        except BackendUnavailable:
            self._unleft[session_id] = name
            raise

    async def evict(self, name: str, reason: EvictReason) -> ActiveDevice | None:
        dev = await self._remove_entry(name, "", reason)
        if dev is not None and dev.node == self.node:
            self._announce(dev, reason)
        return dev

    async def get(self, name: str) -> ActiveDevice | None:
        text = await self.link.run(lambda r: r.hget(self._devs, name))
        return decode_device(text) if text else None

    async def devices(self) -> list[ActiveDevice]:
        async def snapshot(r: Any) -> list[Any]:
            async with r.pipeline(transaction=True) as pipe:
                pipe.zrange(self._order, 0, -1)
                pipe.hgetall(self._devs)
                result: list[Any] = await pipe.execute()
                return result
        order, entries = await self.link.run(snapshot)
        return [decode_device(entries[n]) for n in order if n in entries]

    async def count(self) -> int:
        return int(await self.link.run(lambda r: r.hlen(self._devs)))

    async def version(self) -> int:
        """The list's version; kept here between changes while this node hears of them
        (every change publishes on the version's channel), so an AED with nothing new
        costs no round trip."""
        if self._cached is not None:
            return self._cached
        generation = self._generation
        value = int(await self.link.run(lambda r: r.get(self._version)) or 0)
        if self._listening and generation == self._generation:
            self._cached = value
        return value

    def _changed(self) -> None:
        self._cached = None
        self._generation += 1

    async def _listen(self) -> None:
        """Hear of every change of the list (pub/sub: a message lost while reconnecting
        only means the next ``version`` asks Redis, as the cache is dropped then)."""
        delay = 0.1
        while not self._stopping:
            self._pubsub = pubsub = self.link.blocking.pubsub()
            with contextlib.suppress(Exception):  # lost: ask Redis until subscribed again
                await pubsub.subscribe(self._version)
                self._listening = True
                self._changed()
                delay = 0.1
                while not self._stopping:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None:
                        self._changed()
            self._listening = False
            self._changed()
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    # -- kicks from other nodes ---------------------------------------------------------

    async def start(self) -> None:
        """Start reading this node's kicks (from the newest one now: older ones name
        sessions of an earlier run of this node)."""
        newest = await self.link.run(lambda r: r.xrevrange(self._kicks, count=1))
        self._last_kick = newest[0][0] if newest else "0-0"
        self._kick_task = asyncio.get_running_loop().create_task(self._read_kicks())
        self._listen_task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        """Stop reading kicks. The blocking read is ended by closing its connection
        (cancelling it makes redis-py wait out the socket timeout first)."""
        self._stopping = True
        tasks = {t for t in (self._kick_task, self._listen_task) if t is not None}
        if not tasks:
            return
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await self._pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.link.blocking.connection_pool.disconnect()
        _, pending = await asyncio.wait(tasks, timeout=1.5)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def _read_kicks(self) -> None:
        delay = 0.1
        while True:
            try:
                got = await self.link.blocking.xread({self._kicks: self._last_kick}, count=500,
                                                     block=KICK_BLOCK_MS)
            except Exception as exc:
                if self._stopping:  # the connection was closed under the read on purpose
                    return
                if not isinstance(exc, (RedisError, OSError)):
                    log.exception("kick_read_failed")
                self.link.down(exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.1
            self._handle_kicks(got)

    def _handle_kicks(self, got: Any) -> None:
        """Announce the kicks of an XREAD answer not handled yet (the reader and
        ``resync`` may both read the same entries; each is handled once)."""
        for _stream, entries in got or ():
            for entry_id, fields in entries:
                if _stream_id(entry_id) <= _stream_id(self._last_kick):
                    continue
                self._last_kick = entry_id
                self._kicked(fields)

    def _kicked(self, fields: dict[str, str]) -> None:
        try:
            dev = decode_device(fields["dev"])
            reason = fields.get("reason", "replaced")
        except (KeyError, ValueError, TypeError):
            log.warning("kick_malformed", fields=str(fields)[:200])
            return
        if reason not in ("replaced", "disconnected", "revoked"):
            reason = "disconnected"
        self._announce(dev, reason)  # type: ignore[arg-type]

    # -- after an outage --------------------------------------------------------------

    async def resync(self) -> None:
        """Make Redis agree with this node's sessions again: leaves that failed are
        done, this node's live entries put back (or their sessions closed when the
        name was taken meanwhile), entries of this node without a session removed."""
        for session_id, name in list(self._unleft.items()):
            await self._remove_entry(name, session_id, "")
            self._unleft.pop(session_id, None)
        # Kicks sent while this node was cut off come first: a session kicked meanwhile
        # is not put back (the restore script checks again for one sent since).
        self._handle_kicks(await self.link.run(
            lambda r: r.xread({self._kicks: self._last_kick}, count=KICKS_KEPT)))
        for dev in list(self._mine.values()):
            outcome = await self.restore(dev)
            if outcome == "taken":
                self._announce(dev, "replaced")
            self._changed()
        listed = await self.link.run(lambda r: r.smembers(self.link.key("node", self.node,
                                                                         "devs")))
        live = {d.name: d.session_id for d in self._mine.values()}
        for name in listed:
            if name not in live:
                entry = await self.get(name)
                if entry is not None and entry.node == self.node:
                    await self._remove_entry(name, entry.session_id, "")
        log.info("presence_resynced", devices=len(self._mine))

    async def restore(self, dev: ActiveDevice) -> str:
        """Put one of this node's entries back: ``restored``, ``kept`` (it was there),
        ``taken`` (another session holds the name) or ``kicked`` (another node evicted
        this session after the last kick this node handled)."""
        outcome = await self.link.run(lambda r: self._restore(
            keys=[self._devs, self._order, self._seq, self._version, self._kicks],
            args=[dev.name, encode_device(dev), self.node, self.link.prefix,
                  self._last_kick]))
        return str(outcome)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
