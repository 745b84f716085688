"""Delays between a device's retries (reconnecting, or a login the server could not
take for now): exponential, with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

#: Refusals that say "not now" rather than "no": the fleet's shared state is
#: unreachable or busy (``service_unavailable``), the server is at its connection
#: limit (``server_busy``). The same login is tried again after a backoff.
RETRYABLE_CODES = frozenset({"service_unavailable", "server_busy"})


class Backoff:
    """Delays between attempts: ``base`` doubling up to ``cap``, each drawn uniformly
    from its upper half ("equal jitter"), so that devices cut off by one server
    restart do not all come back in the same instant."""

    def __init__(self, base: float = 0.5, cap: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.base = min(base, cap)
        self.cap = cap
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0
