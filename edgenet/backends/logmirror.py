"""Each fleet node's copy of the fleet's logs in its own data dir.

The fleet's upload and deletion logs live in Redis (``log:uploads``,
``log:deletions``); every node writes them to its own ``upload-log.txt`` and
``deletion-log.txt`` in the usual format: rewritten whole at start-up (the file
then equals the fleet's log), then appended, one write per batch of whole lines,
as the fleet's log grows. ``edge-device-log.txt`` is rewritten (by the node's
``DeviceLogWriter``) whenever the fleet's active list changes, wherever the
change was made. A node polls every ``PERIOD`` seconds, so its files trail the
fleet by at most that much (plus an outage of Redis: they catch up after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

import structlog

from edgenet.server.interfaces import BackendUnavailable, LogName, Presence
from edgenet.server.logs import DELETION_LOG, UPLOAD_LOG, FileRecord, write_atomically
from edgenet.server.stopping import stop_loop

log = structlog.get_logger("edgenet.fleet")

PERIOD = 0.5
#: Records read from Redis per round trip.
PAGE = 5000


class FleetLogs(Protocol):
    async def log_length(self, log: LogName) -> int: ...

    async def log_range(self, log: LogName, start: int, stop: int) -> list[FileRecord]: ...


class DeviceLogRequester(Protocol):
    def request(self) -> asyncio.Future[None]: ...


class LogMirror:
    def __init__(self, data_dir: Path, logs: FleetLogs | None, presence: Presence,
                 device_log: DeviceLogRequester) -> None:
        self.data_dir = data_dir
        self.logs = logs
        self.presence = presence
        self.device_log = device_log
        self._written: dict[LogName, int | None] = {"uploads": None, "deletions": None}
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await stop_loop(self._task, self)
        with contextlib.suppress(BackendUnavailable, OSError):
            await self.sync()  # the files agree with the fleet when the node stops

    async def _run(self) -> None:
        while not self.stopped:
            try:
                await self.sync()
            except BackendUnavailable:
                pass
            except OSError as exc:
                log.error("fleet_log_write_failed", error=str(exc))
            await asyncio.sleep(PERIOD)

    async def sync(self) -> None:
        """Bring the three files up to the fleet's logs and active list now."""
        version = await self.presence.version()
        if version != self._version:
            self._version = version
            self.device_log.request()
        if self.logs is None:
            return
        for name, file in (("uploads", UPLOAD_LOG), ("deletions", DELETION_LOG)):
            await self._sync_log(name, self.data_dir / file)  # type: ignore[arg-type]

    async def _sync_log(self, name: LogName, path: Path) -> None:
        assert self.logs is not None
        total = await self.logs.log_length(name)
        written = self._written[name]
        if written is None or total < written:  # start-up, or the fleet's log was reset
            lines = []
            for start in range(0, total, PAGE):
                lines += [r.line() for r in await self.logs.log_range(name, start,
                                                                       min(total, start + PAGE))]
            await asyncio.to_thread(write_atomically, path, "".join(lines), True)
        elif total > written:
            records = await self.logs.log_range(name, written, total)
            await asyncio.to_thread(_append, path, "".join(r.line() for r in records))
        self._written[name] = total


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
