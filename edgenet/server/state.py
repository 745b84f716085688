"""The server's in-memory state of who is connected and who is locked out.

One owner each (the server app); TCP sessions and the admin API read and change
them only through these methods. Nothing here does I/O or reads a clock: the
caller passes ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


class Disconnectable(Protocol):
    """What the state needs from a live session: a way to end it."""

    def disconnect(self, kind: str, message: str) -> None: ...


@dataclass
class ActiveDevice:
    name: str
    ip: str
    udp_port: int
    since: float
    session_id: str
    session: Disconnectable = field(repr=False, compare=False)
    commands: int = 0
    bytes_uploaded: int = 0


class ActiveDevices:
    """Devices logged in now, in login order. A name is active at most once."""

    def __init__(self) -> None:
        self._by_name: dict[str, ActiveDevice] = {}
        #: Bumped on every change, so a log writer can tell when to rewrite.
        self.version = 0

    def add(self, name: str, ip: str, udp_port: int, now: float,
            session: Disconnectable) -> tuple[ActiveDevice, ActiveDevice | None]:
        """Register a login. Returns the new entry and the one it replaced, if any
        (a duplicate login takes over, as an MQTT broker does with a client id)."""
        old = self._by_name.pop(name, None)
        dev = ActiveDevice(name, ip, udp_port, now, secrets.token_hex(8), session)
        self._by_name[name] = dev
        self.version += 1
        return dev, old

    def remove(self, name: str, session: Disconnectable | None = None) -> ActiveDevice | None:
        """Remove a device; with ``session``, only if that session still owns the name
        (a session replaced by a takeover must not remove its successor)."""
        dev = self._by_name.get(name)
        if dev is None or (session is not None and dev.session is not session):
            return None
        del self._by_name[name]
        self.version += 1
        return dev

    def get(self, name: str) -> ActiveDevice | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[ActiveDevice]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def others(self, name: str) -> list[ActiveDevice]:
        return [d for d in self._by_name.values() if d.name != name]


@dataclass
class LockoutEntry:
    name: str
    failures: int
    blocked_until: float | None


class LockoutTracker:
    """Consecutive failed logins per device name, and blocks.

    After ``max_attempts`` consecutive failures a name is blocked for
    ``block_seconds``, whatever connection it comes from. Checks and updates
    happen without an await in between, so concurrent attempts cannot race past
    the limit. At most ``max_entries`` names are tracked (unknown names count
    too); the oldest unblocked entries are dropped first.
    """

    def __init__(self, max_attempts: int, block_seconds: float, max_entries: int = 10_000) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, LockoutEntry] = OrderedDict()

    def seconds_left(self, name: str, now: float) -> float:
        """Seconds the name stays blocked, or 0.0."""
        entry = self._entries.get(name)
        if entry is None or entry.blocked_until is None:
            return 0.0
        if entry.blocked_until <= now:
            # The block is over: the count starts again from zero.
            del self._entries[name]
            return 0.0
        return entry.blocked_until - now

    def record_failure(self, name: str, now: float) -> float:
        """Count a failure. Returns the block length if this failure started a block."""
        if self.seconds_left(name, now):
            return 0.0
        entry = self._entries.get(name)
        if entry is None:
            self._evict(now)
            entry = self._entries[name] = LockoutEntry(name, 0, None)
        else:
            self._entries.move_to_end(name)
        entry.failures += 1
        if entry.failures >= self.max_attempts:
            entry.blocked_until = now + self.block_seconds
            return self.block_seconds
        return 0.0

    def failures_left(self, name: str) -> int:
        entry = self._entries.get(name)
        return self.max_attempts - (entry.failures if entry else 0)

    def record_success(self, name: str) -> None:
        self._entries.pop(name, None)

    def lift(self, name: str) -> bool:
        """Forget a name's failures and block. True if there was anything to forget."""
        return self._entries.pop(name, None) is not None

    def snapshot(self, now: float) -> list[LockoutEntry]:
        for name in [n for n, e in self._entries.items()
                     if e.blocked_until is not None and e.blocked_until <= now]:
            del self._entries[name]
        return [LockoutEntry(e.name, e.failures, e.blocked_until) for e in self._entries.values()]

    def _evict(self, now: float) -> None:
        if len(self._entries) < self.max_entries:
            return
        for name in [n for n, e in self._entries.items()
                     if e.blocked_until is not None and e.blocked_until <= now]:
            del self._entries[name]
        while len(self._entries) >= self.max_entries:
            victim = next((n for n, e in self._entries.items() if e.blocked_until is None), None)
            if victim is None:
                victim = next(iter(self._entries))
            del self._entries[victim]
