"""Uploads in flight at once: each holds a file descriptor (its temporary file) for
as long as its body streams, so the server gives out a fixed number of slots
(``descriptors.upload_slots``) and an upload beyond them waits for one.

The wait is part of the upload: the server reads nothing more from that device
until it has a slot (the body waits in the kernels' buffers, not in this
process), the device is not called silent meanwhile, and a slot comes back when
the upload is stored, refused or aborted.
That keeps every connection the server admits within its open-file limit while
admitting almost as many devices as the limit has descriptors: an idle device
needs one, and only the uploading ones (at most the slots) a second.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from edgenet.server.descriptors import RateLimitedCount
from edgenet.server.interfaces import PendingUpload, StoredFile

log = structlog.get_logger("edgenet.server")

#: At most one ``upload_slots_full`` event per this many seconds.
FULL_LOG_SECONDS = 10.0


class UploadSlots:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._free = asyncio.Semaphore(slots)
        self.in_use = 0
        #: Uploads waiting for a slot now.
        self.waiting = 0
        self._full_log = RateLimitedCount(FULL_LOG_SECONDS)

    @property
    def full(self) -> bool:
        """No slot is free now (the next upload waits)."""
        return self._free.locked()

    async def acquire(self) -> None:
        """Take a slot, waiting for one while all are in use."""
        if self.full:
            self.waiting += 1
            more = self._full_log.hit(time.monotonic())
            if more is not None:
                log.warning("upload_slots_full", slots=self.slots, waiting=self.waiting,
                            more=more, hint="uploads beyond the slots wait for one")
            try:
                await self._free.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._free.acquire()
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._free.release()

    def hold(self, upload: PendingUpload) -> PendingUpload:
        """``upload``, giving its slot back once it is stored, refused or aborted."""
        return SlottedUpload(upload, self)


class SlottedUpload:
    """A pending upload holding a slot (given back once, whichever way it ends)."""

    __slots__ = ("_inner", "_slots")

    def __init__(self, inner: PendingUpload, slots: UploadSlots) -> None:
        self._inner = inner
        self._slots: UploadSlots | None = slots

    def write(self, chunk: bytes) -> None:
        self._inner.write(chunk)

    async def commit(self, now: float) -> StoredFile:
        try:
            return await self._inner.commit(now)
        finally:
            self._give_back()

    def abort(self) -> None:
        try:
            self._inner.abort()
        finally:
            self._give_back()

    def _give_back(self) -> None:
        if self._slots is not None:
            slots, self._slots = self._slots, None
            slots.release()
