"""One ``loop.call_at`` timer for a sans-I/O core's next deadline, for the asyncio adapters.

``rearm(deadline)`` moves the timer only when the deadline moved (None: no timer); when it
fires it calls ``fire(now)`` with ``now`` at least the deadline it was armed for, so the core
never sees a timer fire early because the loop's clock and the deadline differ by rounding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DeadlineTimer:
    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[float], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def rearm(self, deadline: float | None) -> None:
        if deadline == self._at:
            return
        self.cancel()
        self._at = deadline
        if deadline is not None:
            self._handle = self._loop.call_at(deadline, self._on_timer)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _on_timer(self) -> None:
        self._handle = None
        now = max(self._loop.time(), self._at or 0.0)
        self._at = None
        self._fire(now)
