"""The relay's limits: rates (token buckets) and byte quotas (per hour), with ``now`` in.

Sans-I/O and exact under a fake clock: a bucket holds at most ``burst`` bytes and refills
at ``rate`` bytes a second; a quota allows ``limit`` bytes in each fixed window
(``floor(now / window)``). A limit of 0 means none.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgenet.config import ServerConfig

#: The byte quotas' window, in seconds.
QUOTA_WINDOW = 3600.0


@dataclass(frozen=True)
class RelayLimits:
    """What the relay carries at most (0: no limit). Rates in bytes a second, quotas in
    bytes an hour; a device's share counts what it sends through the relay."""

    device_rate: float
    total_rate: float
    device_bytes: int
    total_bytes: int
    #: Relay allocations (one per UVF rendezvous) a device takes part in at once, and in all.
    device_allocations: int = 32
    total_allocations: int = 4096
    #: An allocation nothing went through for this long is removed.
    allocation_idle: float = 60.0


def relay_limits(config: ServerConfig) -> RelayLimits:
    return RelayLimits(config.relay_device_rate, config.relay_total_rate,
                       config.relay_device_bytes, config.relay_total_bytes)


class TokenBucket:
    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        self.rate = rate
        # One second of the rate, but never less than a few full datagrams.
        self.burst = max(rate, 256 * 1024.0) if burst is None else burst
        self._tokens = self.burst
        self._at = now

    def take(self, size: int, now: float) -> bool:
        """Spend ``size`` bytes if the bucket holds them (a rate of 0: always)."""
        if self.rate <= 0:
            return True
        tokens = self._tokens
        if now > self._at:
            tokens = min(self.burst, tokens + (now - self._at) * self.rate)
            self._at = now
        if tokens < size:
            self._tokens = tokens
            return False
        self._tokens = tokens - size
        return True


class WindowQuota:
    def __init__(self, limit: int, window: float = QUOTA_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._index = -1
        self.used = 0

    def take(self, size: int, now: float) -> bool:
        """Count ``size`` bytes against this window's quota if they fit (0: no quota)."""
        if self.limit <= 0:
            return True
        index = int(now // self.window)
        if index != self._index:
            self._index = index
            self.used = 0
        if self.used + size > self.limit:
            return False
        self.used += size
        return True
