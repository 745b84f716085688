"""The embedded ``Lockouts``: failed-login counters and blocks per name, in memory.

Sans-I/O: the caller passes ``now``. ``attempt`` counts an attempt as a failure
before its password is checked and ``succeeded`` takes it back, so the limit holds
however many attempts run at once. At most ``max_entries`` names are tracked
(unknown names count too); the oldest unblocked entries are dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from edgenet.server.interfaces import Attempt, LockoutEntry


@dataclass
class _Count:
    failures: int
    blocked_until: float | None


class LockoutTracker:
    """After ``max_attempts`` consecutive failures a name is blocked for
    ``block_seconds``, whatever connection it comes from."""

    def __init__(self, max_attempts: int, block_seconds: float, max_entries: int = 10_000) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        #: In order of the last counted failure (oldest first).
        self._entries: OrderedDict[str, _Count] = OrderedDict()

    def _live(self, name: str, now: float) -> _Count | None:
        """The name's entry, after forgetting a block that is over (the count starts
        again from zero)."""
        entry = self._entries.get(name)
        if entry is not None and entry.blocked_until is not None and entry.blocked_until <= now:
            del self._entries[name]
            return None
        return entry

    async def attempt(self, name: str, now: float) -> Attempt:
        entry = self._live(name, now)
        if entry is not None and entry.blocked_until is not None:
            return Attempt(seconds_left=entry.blocked_until - now)
        if entry is None:
            self._evict(now)
            entry = self._entries[name] = _Count(0, None)
        else:
            self._entries.move_to_end(name)
        entry.failures += 1
        if entry.failures >= self.max_attempts:
            entry.blocked_until = now + self.block_seconds
            return Attempt(block_seconds=self.block_seconds)
        return Attempt(attempts_left=self.max_attempts - entry.failures)

    async def succeeded(self, name: str) -> None:
        self._entries.pop(name, None)

    async def entries(self, now: float) -> list[LockoutEntry]:
        self._expire(now)
        return [LockoutEntry(n, e.failures, e.blocked_until) for n, e in self._entries.items()]

    async def lift(self, name: str, now: float) -> LockoutEntry | None:
        entry = self._live(name, now)
        if entry is None:
            return None
        del self._entries[name]
        return LockoutEntry(name, entry.failures, entry.blocked_until)

    def _expire(self, now: float) -> None:
        for name in [n for n, e in self._entries.items()
                     if e.blocked_until is not None and e.blocked_until <= now]:
            del self._entries[name]

    def _evict(self, now: float) -> None:
        if len(self._entries) < self.max_entries:
            return
        self._expire(now)
        while len(self._entries) >= self.max_entries:
            victim = next((n for n, e in self._entries.items() if e.blocked_until is None), None)
            if victim is None:
                victim = next(iter(self._entries))
            del self._entries[victim]
