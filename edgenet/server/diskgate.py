"""Ordering the disk work of a store: one file at a time, and a re-open alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class DiskGate:
    """Disk work on one file runs one at a time, and opening the data dir again runs
    alone (it waits for the work in flight, and new work waits for it)."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: dict[Hashable, int] = {}
        self._active = 0
        self._idle: asyncio.Event | None = None
        self._alone: asyncio.Future[None] | None = None

    async def enter(self, key: Hashable) -> None:
        while True:
            while self._alone is not None:
                await asyncio.shield(self._alone)
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = asyncio.Lock()
            self._users[key] = self._users.get(key, 0) + 1
            try:
                await lock.acquire()
            except BaseException:
                self._forget(key)
                raise
            if self._alone is None:
                self._active += 1
                return
            lock.release()
            self._forget(key)

    def leave(self, key: Hashable) -> None:
        self._locks[key].release()
        self._forget(key)
        self._active -= 1
        if not self._active and self._idle is not None:
            self._idle.set()

    def _forget(self, key: Hashable) -> None:
        self._users[key] -= 1
        if not self._users[key]:
            del self._users[key]
            del self._locks[key]

    async def alone(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``await work()`` with no disk work in flight."""
        while self._alone is not None:
            await asyncio.shield(self._alone)
        self._alone = asyncio.get_running_loop().create_future()
        try:
            while self._active:
                self._idle = asyncio.Event()
                await self._idle.wait()
            return await work()
        finally:
            self._alone.set_result(None)
            self._alone = None
