"""The timer that feeds the counters' history: once a second, on the event loop.

The admin app runs it for as long as it serves (``cleanup_ctx``); the history
itself (``admin_api.history``) is sans-I/O and is handed ``now`` and the totals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web

from admin_api.history import SERIES_NAMES, CounterHistory
from admin_api.metrics import ServerMetrics, counter_totals
from edgenet.server.interfaces import BackendUnavailable
from edgenet.server.stopping import stop_loop

log = structlog.get_logger("edgenet.admin")

#: Seconds between samples (the history's finest resolution).
INTERVAL = 1.0
#: Just after the second turns, so each sample lands in its own second.
PHASE = 0.02


class HistorySampler:
    """Samples one server's metrics into a CounterHistory, and reads it back."""

    def __init__(self, metrics: ServerMetrics, clock: Callable[[], float],
                 history: CounterHistory | None = None) -> None:
        self.metrics = metrics
        self.clock = clock
        self.history = history if history is not None else CounterHistory()
        self.failures = 0
        self.stopped = False

    async def sample_now(self) -> None:
        await self.metrics.refresh()  # the gauges read from the server's state
        self.history.sample(self.clock(), counter_totals(self.metrics))

    def window(self, name: str, series: tuple[str, ...] = SERIES_NAMES) -> dict[str, Any]:
        return self.history.window(name, self.clock(), series)

    async def run(self) -> None:
        while not self.stopped:
            try:
                await self.sample_now()
            except BackendUnavailable:
                pass  # a fleet's shared state is out of reach: no point this second
            except Exception:
                self.failures += 1
                if self.failures == 1:
                    log.exception("history_sample_failed")
            delay = INTERVAL - (self.clock() % INTERVAL) + PHASE
            await asyncio.sleep(min(max(delay, 0.1), INTERVAL + PHASE))

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: sample while the app runs."""
        task = asyncio.create_task(self.run(), name="edgenet-admin-history")
        yield
        await stop_loop(task, self)

