"""Watching the file store: a missing data dir seen within a second, and its return.

Once a second (and at once after a storage call failed) the watch asks the store
(``FileStore.check``) whether it can be used. A new problem is one event named by
its code (``data_dir_missing``) and a problem in ``/healthz``; when it is over, one
``storage_restored`` event. A store that was opened again (its data dir came back)
reports what that cleaned up and repaired, as at start-up, and the device log is
written again into it.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from edgenet.server.state import ServerState

log = structlog.get_logger("edgenet.server")

#: Seconds between two looks at the store when nothing failed.
CHECK_INTERVAL = 1.0


class StorageWatch:
    def __init__(self, state: ServerState, interval: float = CHECK_INTERVAL) -> None:
        self.state = state
        self.interval = interval
        self._problem: str | None = None

    async def run(self) -> None:
        suspect = self.state.health.storage_event()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(suspect.wait(), self.interval)
            suspect.clear()
            try:
                await self.check()
            except Exception:  # a bug of ours: keep watching
                log.exception("storage_check_failed")

    async def check(self) -> None:
        state = self.state
        status = await state.files.check(state.clock())
        if status.reopened:
            log.warning("data_dir_reopened", data_dir=str(state.config.data_dir),
                        removed_temporaries=status.removed_temporaries,
                        repairs=len(status.repairs))
            for repair in status.repairs:
                log.warning("log_repaired", **repair)
            state.device_log.request()
        if status.problem != self._problem and self._problem is not None:
            gone = state.health.clear(self._problem)
            log.info("storage_restored", problem=self._problem,
                     seconds=round(state.clock() - gone.since, 1) if gone else None)
        if status.problem is not None and state.health.report(
                status.problem, status.message, state.clock(), ready=False):
            log.error(status.problem, reason=status.message,
                      data_dir=str(state.config.data_dir))
        self._problem = status.problem
