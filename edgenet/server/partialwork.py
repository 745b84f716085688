"""The background work of a store's partial uploads (``resumable``), as a part of
``DataDirStore``: tasks on one file's partial that a resume waits for, removing a
partial's files after the work in flight on them, and expiring old partials (called
from the store's once-a-second ``check``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from edgenet.server.interfaces import StoredFile
from edgenet.server.logs import FileLog, FileRecord
from edgenet.server.partialdir import PartialArea
from edgenet.server.partials import PartialLedger
from edgenet.server.recovery import Key

log = structlog.get_logger("edgenet.server")

DiskWork = Callable[[], None]


class PartialUploads:
    """Mixed into the store, which sets these and provides ``exclusive_disk_work``."""

    partials: PartialLedger
    partial_area: PartialArea
    live_uploads: dict[Key, Any]
    _tasks: dict[Key, set[asyncio.Task[None]]]
    #: Per partial's token: (offset, the running SHA-256 at that checkpoint), kept while
    #: this process runs, so that a resume need not read the part again to hash it.
    partial_digests: dict[str, tuple[int, Any]]

    uploads: FileLog

    async def exclusive_disk_work(self, key: Key,
                                  plan: Callable[[], tuple[DiskWork, DiskWork] | None]
                                  ) -> None:
        raise NotImplementedError

    def usable(self) -> None:
        raise NotImplementedError

    def explain(self, exc: OSError) -> OSError:
        raise NotImplementedError

    def path_for(self, device: str, file_id: int) -> Path:
        raise NotImplementedError

    def uploaded(self, stored: StoredFile, record: FileRecord) -> None:
        raise NotImplementedError

    def spawn(self, key: Key, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` (disk work of ``key``'s partial) as a task that ``settle`` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        tasks = self._tasks.setdefault(key, set())
        tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            tasks.discard(t)
            if not tasks and self._tasks.get(key) is tasks:
                del self._tasks[key]
            if not t.cancelled() and t.exception() is not None:
                log.error("partial_work_failed", error=repr(t.exception()))

        task.add_done_callback(done)
        return task

    async def settle(self, key: Key, patience: float = 2.0) -> None:
        """Wait for ``key``'s partial work in flight, and (a while) for an upload of it
        still streaming on another connection (a takeover closes it)."""
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            tasks = self._tasks.get(key)
            if tasks:
                await asyncio.wait(set(tasks))
                continue
            if key not in self.live_uploads or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.05)

    async def finish_background(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) for every partial's work in flight, the last
        checkpoint of an upload a shutdown cut included: it waits for the checkpoint
        before it, which the end of the event loop would otherwise cancel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tasks = {t for work in self._tasks.values() for t in work}
            left = deadline - loop.time()
            if not tasks or left <= 0:
                return not tasks
            await asyncio.wait(tasks, timeout=left)

    def drop_partial(self, key: Key, token: str) -> None:
        """Forget ``token``'s partial of ``key`` and remove its files (after the work in
        flight on them)."""
        self.partials.release(key, token)
        self.remove_partial_files(key, token)

    def forget_digest(self, token: str) -> None:
        self.partial_digests.pop(token, None)

    def remove_partial_files(self, key: Key, token: str) -> None:
        self.partial_digests.pop(token, None)
        before = set(self._tasks.get(key, ()))

        async def remove() -> None:
            if before:
                await asyncio.wait(before)
            try:
                await self.exclusive_disk_work(key, lambda: (
                    partial(self.partial_area.remove, token), lambda: None))
            except OSError:
                pass  # the next start-up sweeps it

        self.spawn(key, remove())

    def expire_partials(self, now: float) -> int:
        """Remove partials kept longer than ``--resume-hours`` (not those streaming)."""
        expired = [cp for cp in self.partials.expired(now) if cp.key not in self.live_uploads]
        for cp in expired:
            log.info("partial_expired", device=cp.device, file_id=cp.file_id, bytes=cp.offset)
            self.drop_partial(cp.key, cp.token)
        return len(expired)

