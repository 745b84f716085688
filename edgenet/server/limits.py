"""Per-address limits: failed logins per IP address (a token bucket per address).

Sans-I/O: the caller passes ``now``. The per-name lockout (``LockoutTracker``)
stops guessing one device's password; this stops one address from spraying
guesses over many names (each name staying under its own limit). Only *failed*
logins keep a token, so a site of many devices behind one NAT address that log
in correctly is never slowed; once an address has no token left, every login
from it is refused (``rate_limited``) until a token comes back.

Under concurrency the limit must still hold: a hashed password is checked in a
worker thread, so many attempts from one address can be in flight at once.
``reserve`` therefore takes the token before the password is checked, in the
same step as the check that one is left (no ``await`` in between), and the
caller gives it back with ``refund`` when the attempt turns out not to be a
failure (a correct password, a name already blocked). At most ``per_minute``
attempts from one address are ever being judged or judged failed per minute;
the price is that a burst of correct hashed logins from one address larger
than the tokens left waits its turn (``rate_limited``) while they are checked.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LoginRateLimiter:
    """At most ``per_minute`` failed logins per minute per address, with a burst of
    ``per_minute``. ``per_minute == 0`` disables the limit. At most ``max_entries``
    addresses are tracked (the least recently seen are forgotten first: a forgotten
    address starts again with a full bucket)."""

    def __init__(self, per_minute: int, max_entries: int = 10_000) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must be >= 0")
        self.per_minute = per_minute
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _bucket(self, ip: str, now: float) -> _Bucket | None:
        b = self._buckets.get(ip)
        if b is None:
            return None
        rate = self.per_minute / 60.0
        b.tokens = min(float(self.per_minute), b.tokens + (now - b.updated) * rate)
        b.updated = now
        if b.tokens >= self.per_minute:  # full again: nothing worth remembering
            del self._buckets[ip]
            return None
        return b

    def seconds_left(self, ip: str, now: float) -> float:
        """0.0 when ``ip`` may try a login now, else the seconds until it may."""
        if not self.enabled:
            return 0.0
        b = self._bucket(ip, now)
        if b is None or b.tokens >= 1.0:
            return 0.0
        return (1.0 - b.tokens) * 60.0 / self.per_minute

    def reserve(self, ip: str, now: float) -> float:
        """Take a token for an attempt about to be judged: 0.0 when taken, else the
        seconds until one comes back (nothing is taken then). Atomic: callers
        must not await between deciding to judge and calling this."""
        wait = self.seconds_left(ip, now)
        if wait:
            return wait
        self.record_failure(ip, now)
        return 0.0

    def refund(self, ip: str, now: float) -> None:
        """Give back a token ``reserve`` took, for an attempt that did not fail."""
        if not self.enabled:
            return
        b = self._bucket(ip, now)
        if b is None:  # forgotten meanwhile: the bucket is full anyway
            return
        b.tokens = min(float(self.per_minute), b.tokens + 1.0)
        if b.tokens >= self.per_minute:
            del self._buckets[ip]

    def record_failure(self, ip: str, now: float) -> None:
        """Take one token (a failure not reserved beforehand)."""
        if not self.enabled:
            return
        b = self._bucket(ip, now)
        if b is None:
            while len(self._buckets) >= self.max_entries:
                self._buckets.popitem(last=False)
            b = self._buckets[ip] = _Bucket(float(self.per_minute), now)
        else:
            self._buckets.move_to_end(ip)
        b.tokens = max(0.0, b.tokens - 1.0)

    def __len__(self) -> int:
        return len(self._buckets)
