"""A checked upload into the data dir's partial area, which a cut leaves for a resume.

The body streams into ``partial-uploads/<token>.part`` while it is validated and
hashed. Every ``CHECKPOINT_BYTES`` the part is fsynced and its checkpoint written (in
a worker thread, under the file's disk gate, while the body keeps streaming); a cut
(connection lost, a stalled body, a shutdown) writes a last one. So a server killed
at any moment leaves a part and a checkpoint that agree, up to the last checkpoint.
The commit checks the size and the SHA-256 of the whole file, then stores the part as
``durable.store_file`` stores any upload (renamed to its final name, then logged), and
removes the checkpoint. Bad data, a wrong checksum or a storage fault drop the partial.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog

from edgenet.server.checksum import mismatch_text
from edgenet.server.compute import DataError, SampleValidator
from edgenet.server.durable import store_file
from edgenet.server.interfaces import (
    ChecksumMismatch,
    PendingUpload,
    ResumeRefused,
    ResumeRequest,
    StoredFile,
)
from edgenet.server.logs import FileRecord
from edgenet.server.partials import Checkpoint
from edgenet.server.partialwork import PartialUploads

log = structlog.get_logger("edgenet.server")

#: Body bytes between two checkpoints (each an fsync of what came since).
CHECKPOINT_BYTES = 8 * 2**20


async def open_resumable(store: PartialUploads, device: str, file_id: int, req: ResumeRequest,
                         plain: Callable[[], PendingUpload]) -> PendingUpload:
    """The pending upload of a version-3 upload (``req.offset`` 0: from the start); when no
    partial may be kept, ``plain()`` checked."""
    from edgenet.server.checksum import ChecksummedUpload

    key = (device, file_id)
    ledger, area = store.partials, store.partial_area
    await store.settle(key)
    if req.offset:
        cp = ledger.get(key)
        if cp is None or cp.offset != req.offset or req.size < cp.offset:
            held = cp.offset if cp is not None else 0
            raise ResumeRefused("resume_mismatch", f"the server holds {held} bytes of this "
                                f"file, not {req.offset}; upload it from the start")
        ledger.reserve(key, cp.token, req.size)  # no room for a grown file: keep the old size
        opened: list[tuple[Any, Any]] = []

        known = store.partial_digests.pop(cp.token, None)
        digest = known[1] if known is not None and known[0] == cp.offset else None

        def reopen() -> None:
            opened.append(area.reopen_part(cp, digest))

        try:
            await store.exclusive_disk_work(key, lambda: (reopen, lambda: None))
        except (OSError, ValueError) as exc:
            store.drop_partial(key, cp.token)
            log.warning("partial_unusable", device=device, file_id=file_id,
                        error=str(exc) if isinstance(exc, ValueError) else exc.strerror)
            raise ResumeRefused("resume_mismatch", "the server's partial copy of this file "
                                "cannot be used; upload it from the start") from None
        fh, digest = opened[0]
        validator = SampleValidator.resume(cp.offset, cp.samples, cp.line, cp.tail)
        return ResumableUpload(store, device, file_id, req, cp.token, fh, digest, validator)
    token = secrets.token_hex(8)
    previous = ledger.owner(key)
    why = ledger.reserve(key, token, req.size)
    if why is not None:
        log.info("resume_refused", device=device, file_id=file_id, reason=why)
        return ChecksummedUpload(plain(), req.sha256, req.size)
    if previous is not None:
        store.remove_partial_files(key, previous)
    try:
        store.usable()
        fh = area.create_part(token)
    except OSError as exc:
        ledger.release(key, token)
        failed = ResumableUpload(store, device, file_id, req, token, None, hashlib.sha256(),
                                 SampleValidator())
        failed.fail(store.explain(exc))
        return failed
    return ResumableUpload(store, device, file_id, req, token, fh, hashlib.sha256(),
                           SampleValidator())


class ResumableUpload:
    def __init__(self, store: PartialUploads, device: str, file_id: int, req: ResumeRequest,
                 token: str, fh: Any, digest: Any, validator: SampleValidator) -> None:
        self._store = store
        self.device, self.file_id = device, file_id
        self._req = req
        self.token = token
        self._fh = fh
        self._digest = digest
        self._validator = validator
        self._failed: DataError | OSError | None = None
        self._checkpointed = validator.bytes
        #: Bytes of the part the digest has seen: it is fed in the checkpoints' and the
        #: commit's worker thread, from the part itself (in the page cache), never on the
        #: event loop, so hashing runs beside the receiving.
        self._hashed = validator.bytes
        self._reader: Any = None
        self._pending: asyncio.Task[None] | None = None
        self._over = False  # committed, aborted or dropped
        store.live_uploads[(device, file_id)] = self

    @property
    def key(self) -> tuple[str, int]:
        return (self.device, self.file_id)

    def write(self, chunk: bytes) -> None:
        if self._failed is not None or self._over:
            return
        try:
            self._validator.feed(chunk)
        except DataError as exc:
            self.fail(exc)
            return
        try:
            self._fh.write(chunk)
        except OSError as exc:
            self.fail(exc)
            return
        if self._validator.bytes - self._checkpointed >= CHECKPOINT_BYTES and self._pending is None:
            self._checkpoint()

    def fail(self, why: DataError | OSError) -> None:
        """Nothing will be stored, and the partial goes (``commit`` raises ``why``)."""
        self._failed = why
        self._drop()

    def _hash_upto(self, nbytes: int) -> None:
        """Feed the digest the part's bytes up to ``nbytes`` (blocking: a worker thread,
        under the file's disk gate, after the bytes were flushed)."""
        if self._reader is None:
            self._reader = open(self._store.partial_area.part(self.token), "rb")  # noqa: SIM115
        self._reader.seek(self._hashed)
        while self._hashed < nbytes:
            block = self._reader.read(min(1 << 20, nbytes - self._hashed))
            if not block:
                raise OSError(f"the partial upload is shorter than the {nbytes} bytes written")
            self._digest.update(block)
            self._hashed += len(block)

    def _checkpoint(self, then_close: bool = False) -> None:
        """Flush what was written, and make it durable with its checkpoint in a thread."""
        try:
            self._fh.flush()
        except OSError as exc:
            self.fail(exc)
            return
        state = self._validator.state()
        self._checkpointed = state[0]
        previous = self._pending
        self._pending = self._store.spawn(self.key,
                                          self._write_checkpoint(state, previous, then_close))

    async def _write_checkpoint(self, state: tuple[int, int, int, bytes],
                                previous: asyncio.Task[None] | None, then_close: bool) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        store, fd = self._store, self._fh.fileno()
        nbytes, samples, line, tail = state
        made: list[Checkpoint] = []

        def disk() -> None:
            self._hash_upto(nbytes)
            cp = Checkpoint(self.device, self.file_id, self.token, self._req.size, nbytes,
                            self._digest.hexdigest(), samples, line, tail, time.time())
            store.partial_area.checkpoint(fd, cp)
            made.append(cp)
            store.partial_digests[self.token] = (nbytes, self._digest.copy())

        def recorded() -> None:
            store.partials.record(made[0])

        try:
            await store.exclusive_disk_work(self.key, lambda: (disk, recorded))
        except OSError as exc:
            log.warning("partial_checkpoint_failed", device=self.device, file_id=self.file_id,
                        error=exc.strerror or str(exc))
            if then_close:
                self._close()
                store.drop_partial(self.key, self.token)
            else:
                self.fail(exc)
            return
        finally:
            if self._pending is asyncio.current_task():
                self._pending = None
        if not then_close and not self._over and self._failed is None and \
                self._validator.bytes - self._checkpointed >= CHECKPOINT_BYTES:
            self._checkpoint()  # more came meanwhile: a body that stalls now is covered
        if then_close:
            self._close()
            if store.live_uploads.get(self.key) is self:
                del store.live_uploads[self.key]
            log.info("partial_kept", device=self.device, file_id=self.file_id,
                     bytes=nbytes, size=self._req.size)

    async def commit(self, now: float) -> StoredFile:
        if self._failed is not None:
            raise self._failed
        try:
            samples = self._validator.finish()
        except DataError as exc:
            self.fail(exc)
            raise
        got = self._validator.bytes
        if got != self._req.size:
            self._drop()
            raise ChecksumMismatch(mismatch_text(self._req.size, got))
        try:
            self._fh.flush()
        except OSError as exc:
            self.fail(exc)
            raise
        if self._pending is not None:
            await asyncio.wait({self._pending})
        if self._failed is not None:
            raise self._failed
        self._over = True
        store = self._store
        record = FileRecord(self.device, now, self.file_id, samples)
        stored = StoredFile(self.device, self.file_id, got, samples, now)
        area, fh, token = store.partial_area, self._fh, self.token

        def disk() -> None:
            store.usable()
            self._hash_upto(got)
            self._reader.close()
            self._reader = None
            if self._digest.hexdigest() != self._req.sha256:
                raise ChecksumMismatch(mismatch_text(self._req.size, got))
            store_file(fh, area.part(token), store.path_for(self.device, self.file_id),
                       store.uploads, record)
            area.remove(token)

        def applied() -> None:
            store.uploaded(stored, record)
            store.partials.release(self.key, token)
            store.forget_digest(token)

        try:
            await store.exclusive_disk_work(self.key, lambda: (disk, applied))
        except ChecksumMismatch:
            self._drop()
            raise
        except OSError as exc:
            store.drop_partial(self.key, token)
            raise store.explain(exc) from None
        finally:
            if store.live_uploads.get(self.key) is self:
                del store.live_uploads[self.key]
        return stored

    def abort(self) -> None:
        """A cut: keep what was received for a resume (a last checkpoint), unless there is
        nothing to keep or the upload failed."""
        if self._over or self._failed is not None:
            return
        self._over = True
        if self._validator.bytes == 0:
            self._drop()
            return
        self._checkpoint(then_close=True)

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._fh is not None and not self._fh.closed:
            try:
                self._fh.close()
            except OSError:
                pass

    def _drop(self) -> None:
        self._over = True
        store = self._store
        if self._pending is None:
            self._close()
        else:  # the checkpoint in flight still writes through the descriptor
            self._pending.add_done_callback(lambda _t: self._close())
        store.drop_partial(self.key, self.token)
        if store.live_uploads.get(self.key) is self:
            del store.live_uploads[self.key]
