"""The fleet's ``Lockouts`` in Redis: one Lua script judges and counts each attempt.

``lock:<name>`` is a hash (``failures``, ``blocked_until``); ``locks`` a sorted
set of the names by their last counted failure (the order ``entries`` lists).
``attempt`` is one script on every node: a running block answers with the
seconds left; otherwise the attempt is counted *before* its password is checked,
so 50 concurrent guesses spread over any number of nodes get at most
MAX_ATTEMPTS checks. ``now`` comes from the node (the nodes' clocks should agree,
as NTP keeps them); floats travel as their ``repr`` so no precision is lost.
At most ``max_entries`` names are tracked; the oldest unblocked one goes first.
"""

from __future__ import annotations

from edgenet.backends.redislink import RedisLink, decode_hash
from edgenet.server.interfaces import Attempt, LockoutEntry

MAX_ENTRIES = 10_000

# KEYS: lock:<name>, locks. ARGV: name, now, max attempts, blocked until if this one
# blocks, max entries, prefix. Returns {kind, value}: {'blocked', until} or
# {'counted', failures}.
_ATTEMPT = """
local now = tonumber(ARGV[2])
local e = redis.call('HMGET', KEYS[1], 'failures', 'blocked_until')
if e[2] and tonumber(e[2]) <= now then
  redis.call('DEL', KEYS[1]); redis.call('ZREM', KEYS[2], ARGV[1]); e = {false, false}
end
if e[2] then return {'blocked', e[2]} end
if not e[1] and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  local victim = nil
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 31)
  for _, n in ipairs(oldest) do
    if redis.call('HEXISTS', ARGV[6] .. ':lock:' .. n, 'blocked_until') == 0 then
      victim = n; break
    end
  end
  victim = victim or oldest[1]
  if victim then
    redis.call('DEL', ARGV[6] .. ':lock:' .. victim); redis.call('ZREM', KEYS[2], victim)
  end
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('ZADD', KEYS[2], now, ARGV[1])
if failures >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'blocked_until', ARGV[4])
end
return {'counted', tostring(failures)}
"""

# KEYS: lock:<name>, locks. ARGV: name, now. Returns the hash it removed (or {}).
_LIFT = """
local e = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1]); redis.call('ZREM', KEYS[2], ARGV[1])
local h = {}
for i = 1, #e, 2 do h[e[i]] = e[i + 1] end
if h['blocked_until'] and tonumber(h['blocked_until']) <= tonumber(ARGV[2]) then return {} end
return e
"""


class RedisLockouts:
    def __init__(self, link: RedisLink, max_attempts: int, block_seconds: float,
                 max_entries: int = MAX_ENTRIES) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.link = link
        self.max_attempts = max_attempts
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        self._index = link.key("locks")
        self._attempt = link.redis.register_script(_ATTEMPT)
        self._lift = link.redis.register_script(_LIFT)

    def _key(self, name: str) -> str:
        return self.link.key("lock", name)

    async def attempt(self, name: str, now: float) -> Attempt:
        until = now + self.block_seconds
        kind, value = await self.link.run(lambda r: self._attempt(
            keys=[self._key(name), self._index],
            args=[name, repr(now), self.max_attempts, repr(until), self.max_entries,
                  self.link.prefix]))
        if kind == "blocked":
            return Attempt(seconds_left=float(value) - now)
        failures = int(value)
        if failures >= self.max_attempts:
            return Attempt(block_seconds=self.block_seconds)
        return Attempt(attempts_left=self.max_attempts - failures)

    async def succeeded(self, name: str) -> None:
        async def forget(r: object) -> None:
            async with self.link.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(name))
                pipe.zrem(self._index, name)
                await pipe.execute()
        await self.link.run(forget)

    async def entries(self, now: float) -> list[LockoutEntry]:
        names = await self.link.run(lambda r: r.zrange(self._index, 0, -1))
        if not names:
            return []

        async def read(r: object) -> list[list[str | None]]:
            async with self.link.redis.pipeline(transaction=False) as pipe:
                for n in names:
                    pipe.hmget(self._key(n), "failures", "blocked_until")
                result: list[list[str | None]] = await pipe.execute()
                return result
        out = []
        for name, (failures, until) in zip(names, await self.link.run(read)):
            if failures is None:
                continue
            blocked = float(until) if until is not None else None
            if blocked is not None and blocked <= now:
                continue
            out.append(LockoutEntry(name, int(failures), blocked))
        return out

    async def lift(self, name: str, now: float) -> LockoutEntry | None:
        raw = await self.link.run(lambda r: self._lift(keys=[self._key(name), self._index],
                                                       args=[name, repr(now)]))
        h = decode_hash(raw)
        if "failures" not in h:
            return None
        until = h.get("blocked_until")
        return LockoutEntry(name, int(h["failures"]), float(until) if until else None)
