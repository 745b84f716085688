"""The embedded ``FileStore``: ``<device>-<fileID>.txt`` in the data dir, and its logs.

Uploads stream into a temporary file in the same folder; a commit stores and logs
them, and a deletion removes and logs, in the order ``durable`` describes, so that
a failure changes nothing and a crash leaves the old state or the new one.
Opening a store (``DataDirStore.open``, once, at start-up) removes leftover
temporary files and reconciles the logs with the files a crash left (see
``recovery``). A commit or a deletion is one method of the store: the disk work
runs in one worker thread, and the store's memory (the index, the statistics, the
in-memory log records) follows it on the event loop as soon as that thread is
done, whether or not the caller still waits. Commits and deletions of one file
run one at a time.

A storage fault is an ``OSError`` for the one call it hits. When the data dir
itself is gone, every call that needs it fails until a folder is back at that
path; ``check`` then opens it again as at start-up (the server never creates it
again by itself: a missing data dir is usually a volume that went away, and an
empty folder in its place would split the data in two).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from edgenet.server.compute import DataError, SampleValidator, Stats, stats_of_file
from edgenet.server.datadir import Contents, folder_identity, read_data_dir
from edgenet.server.diskgate import DiskGate
from edgenet.server.durable import (
    TMP_PREFIX,
    delete_file,
    remove_quietly,
    store_file,
    temporary_name,
)
from edgenet.server.interfaces import (
    LogName,
    PendingUpload,
    ResumePoint,
    ResumeRefused,
    ResumeRequest,
    StorageStatus,
    StoredFile,
)
from edgenet.server.logs import FileRecord
from edgenet.server.partialdir import PartialArea, Sweep
from edgenet.server.partialwork import PartialUploads
from edgenet.server.partials import PartialLedger, ResumeLimits
from edgenet.server.recovery import Key

__all__ = ["TMP_PREFIX", "DataDirStore", "DataDirUpload"]

log = structlog.get_logger("edgenet.server")

#: Files smaller than this are scanned on the event loop; bigger ones in a thread.
INLINE_SCAN_BYTES = 256 * 1024
#: A step of disk work, or of applying its outcome to memory.
DiskWork = Callable[[], None]


class DataDirUpload:
    """One upload being received: validated as it streams into a temporary file."""

    def __init__(self, store: DataDirStore, device: str, file_id: int,
                 open_now: bool = True) -> None:
        self._store = store
        self.device = device
        self.file_id = file_id
        self._validator = SampleValidator()
        #: Why nothing will be stored: bad data, or a storage fault (kept for ``commit``).
        self._failed: DataError | OSError | None = None
        self.tmp = temporary_name(store.data_dir, device, file_id, "body")
        self._fh: BinaryIO | None = None
        #: From the start of ``commit`` the temporary file belongs to the commit's
        #: thread, and ``abort`` leaves it alone.
        self._committing = False
        if open_now:  # on the event loop (a resumable upload's fallback)
            try:
                store.usable()
                self._fh = self.tmp.open("xb")
                store.live_temporaries.add(self.tmp.name)
            except OSError as exc:
                self._failed = store.explain(exc)

    async def open(self) -> None:
        """Create the temporary file, in a worker thread: on the event loop, opening one
        per upload was 13 % of the loop's time with 20,000 devices logging in."""
        store = self._store
        try:
            store.usable()
        except OSError as exc:
            self._failed = store.explain(exc)
            return
        store.live_temporaries.add(self.tmp.name)  # before it exists: a sweep leaves it
        opening = asyncio.ensure_future(asyncio.to_thread(self.tmp.open, "xb"))
        try:
            self._fh = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._opened_for_nobody)
            raise
        except OSError as exc:
            store.live_temporaries.discard(self.tmp.name)
            self._failed = store.explain(exc)

    def _opened_for_nobody(self, opening: asyncio.Future[BinaryIO]) -> None:
        """The upload was cancelled while its file was being created: remove it."""
        if not opening.cancelled() and opening.exception() is None:
            opening.result().close()
            remove_quietly(self.tmp)
        self._store.live_temporaries.discard(self.tmp.name)

    def write(self, chunk: bytes) -> None:
        if self._failed is not None:
            return  # keep draining the body, store nothing
        try:
            self._validator.feed(chunk)
        except DataError as exc:
            self._fail(exc)
            return
        assert self._fh is not None
        try:
            self._fh.write(chunk)
        except OSError as exc:  # a full disk: drop what was written at once
            self._fail(exc)

    def _fail(self, why: DataError | OSError) -> None:
        self._failed = why
        self.abort()

    async def commit(self, now: float) -> StoredFile:
        try:
            if self._failed is not None:
                raise self._failed
            samples = self._validator.finish()
        except (DataError, OSError):
            self.abort()
            raise
        assert self._fh is not None
        self._committing = True
        record = FileRecord(self.device, now, self.file_id, samples)
        stored = StoredFile(self.device, self.file_id, self._validator.bytes, samples, now)
        store = self._store
        try:
            fh = self._fh
            await store.exclusive_disk_work(
                (self.device, self.file_id),
                lambda: (partial(self._store_file, fh, record),
                         partial(store.uploaded, stored, record)))
        except OSError as exc:
            raise store.explain(exc) from None
        finally:
            store.live_temporaries.discard(self.tmp.name)
        return stored

    def _store_file(self, fh: BinaryIO, record: FileRecord) -> None:
        store = self._store
        store.usable()
        store_file(fh, self.tmp, store.path_for(self.device, self.file_id), store.uploads,
                   record)

    def abort(self) -> None:
        if self._committing:
            return
        if self._fh is not None and not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # a full disk fails the flush; the descriptor is closed
                pass
        remove_quietly(self.tmp)
        self._store.live_temporaries.discard(self.tmp.name)


class DataDirStore(PartialUploads):
    """The data files of every device, and the upload and deletion logs.

    Made by ``open``; ``removed_temporaries`` and ``repairs`` say what opening it
    cleaned up."""

    def __init__(self, data_dir: Path, contents: Contents,
                 limits: ResumeLimits | None = None, sweep: Sweep | None = None) -> None:
        self.data_dir = data_dir
        self._take(contents)
        #: Temporary files of uploads streaming now (opening the dir again keeps them).
        self.live_temporaries: set[str] = set()
        self._gate = DiskGate()
        self._missing = False
        #: Partial uploads kept for a resume (see ``resumable``), and what the start-up
        #: sweep of their area found.
        self.partials = PartialLedger(limits or ResumeLimits())
        self.partial_area = PartialArea(data_dir)
        self.partial_sweep = sweep or Sweep()
        self.partials.load(self.partial_sweep.kept)
        #: The resumable upload of each file streaming now.
        self.live_uploads: dict[Key, Any] = {}
        self._tasks: dict[Key, set[asyncio.Task[None]]] = {}
        self.partial_digests: dict[str, tuple[int, Any]] = {}

    def _take(self, contents: Contents) -> None:
        self.uploads = contents.uploads
        self.deletions = contents.deletions
        #: Each stored file, with its SUM/MIN/MAX/count once computed (a file is
        #: immutable until replaced, and a replacement is a new entry).
        self._files = contents.files
        self._identity = contents.identity
        self.removed_temporaries = contents.removed_temporaries
        #: Log lines appended when opening, to agree with the files (see ``recovery``).
        self.repairs = contents.repairs

    @classmethod
    def open(cls, data_dir: Path, now: float, limits: ResumeLimits | None = None
             ) -> DataDirStore:
        """Open the data dir (blocking: run it in a thread on a running loop): create it,
        remove temporary files, read the logs, index the files, reconcile (``now`` stamps
        the deletion lines a reconcile adds), and sweep the partial uploads (expired and
        broken ones go)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        limits = limits or ResumeLimits()
        contents = read_data_dir(data_dir, now)
        return cls(data_dir, contents, limits, PartialArea(data_dir).sweep(now, limits.seconds))

    def path_for(self, device: str, file_id: int) -> Path:
        return self.data_dir / f"{device}-{file_id}.txt"

    def usable(self) -> None:
        """Raise OSError when the data dir is known to be missing."""
        if self._missing:
            raise _missing_error()

    def explain(self, exc: OSError) -> OSError:
        """``exc``, or a clearer one when it comes from a data dir that is gone."""
        if isinstance(exc, FileNotFoundError) and folder_identity(self.data_dir) is None:
            return _missing_error()
        return exc

    async def check(self, now: float) -> StorageStatus:
        self.expire_partials(now)
        identity = folder_identity(self.data_dir)
        if identity is None:
            self._missing = True
            return StorageStatus("data_dir_missing", f"the data dir {self.data_dir} is missing "
                                 "(or not a folder); file commands fail until it is back")
        if identity == self._identity and not self._missing:
            return StorageStatus()
        keep = frozenset(self.live_temporaries)
        try:
            contents = await self._gate.alone(
                partial(asyncio.to_thread, read_data_dir, self.data_dir, now, keep))
        except OSError as exc:
            self._missing = True
            return StorageStatus("data_dir_unreadable",
                                 f"the data dir {self.data_dir} cannot be read: "
                                 f"{exc.strerror or exc}")
        self._take(contents)
        self._missing = False
        return StorageStatus(reopened=True, removed_temporaries=contents.removed_temporaries,
                             repairs=tuple(contents.repairs))

    async def begin_upload(self, device: str, file_id: int,
                           resume: ResumeRequest | None = None) -> PendingUpload:
        if resume is None:
            upload = DataDirUpload(self, device, file_id, open_now=False)
            await upload.open()
            return upload
        from edgenet.server.resumable import open_resumable

        return await open_resumable(self, device, file_id, resume,
                                    lambda: DataDirUpload(self, device, file_id))

    async def resume_point(self, device: str, file_id: int, size: int, now: float
                           ) -> ResumePoint:
        self.usable()
        key = (device, file_id)
        await self.settle(key)
        cp = self.partials.get(key)
        if cp is not None and cp.offset <= size:
            return ResumePoint(cp.offset, cp.sha256)
        why = self.partials.refusal(key, size)
        if why is not None:
            raise ResumeRefused("resume_budget", why)
        return ResumePoint()

    async def get(self, device: str, file_id: int) -> StoredFile | None:
        self.usable()
        return self._files.get((device, file_id))

    async def files(self, device: str | None = None) -> list[StoredFile]:
        self.usable()
        return [f for f in self._files.values() if device is None or f.device == device]

    async def stats(self, device: str, file_id: int) -> Stats | None:
        self.usable()
        key = (device, file_id)
        stored = self._files.get(key)
        if stored is None:
            return None
        if stored.stats is not None:
            return stored.stats
        path = self.path_for(device, file_id)
        try:
            if stored.size <= INLINE_SCAN_BYTES:
                stats = stats_of_file(path)
            else:
                stats = await asyncio.to_thread(stats_of_file, path)
        except FileNotFoundError as exc:
            if folder_identity(self.data_dir) is None:
                raise _missing_error() from exc
            return None
        if self._files.get(key) is stored:  # not replaced or deleted meanwhile
            self._files[key] = replace(stored, stats=stats)
        return stats

    async def delete(self, device: str, file_id: int, now: float) -> StoredFile | None:
        self.usable()
        key = (device, file_id)
        found: list[StoredFile] = []

        def plan() -> tuple[DiskWork, DiskWork] | None:
            # Looked up once the file's gate is ours: a commit of it may just have ended.
            stored = self._files.get(key)
            if stored is None:
                return None
            found.append(stored)
            record = FileRecord(device, now, file_id, stored.samples)

            def deleted() -> None:
                self._files.pop(key, None)
                self.deletions.remember(record)

            return partial(self._delete_file, record), deleted

        try:
            await self.exclusive_disk_work(key, plan)
        except OSError as exc:
            raise self.explain(exc) from None
        return found[0] if found else None

    def _delete_file(self, record: FileRecord) -> None:
        self.usable()
        delete_file(self.path_for(record.device, record.file_id), self.deletions, record)

    def uploaded(self, stored: StoredFile, record: FileRecord) -> None:
        self.uploads.remember(record)
        self._files[(stored.device, stored.file_id)] = stored

    async def exclusive_disk_work(self, key: Key,
                                  plan: Callable[[], tuple[DiskWork, DiskWork] | None]) -> None:
        """Once no other disk work on ``key`` runs, ``plan()`` (on the loop) gives the
        disk work and what applies its outcome to memory (or None: nothing to do). The
        disk work runs in a worker thread; ``apply`` is a done-callback of the thread's
        future, added before anyone waits on it: it runs even if the caller is
        cancelled meanwhile (a shutdown), and before the caller resumes. Raises what
        the disk work raised (then nothing is applied)."""
        await self._gate.enter(key)
        try:
            planned = plan()
            if planned is None:
                self._gate.leave(key)
                return
            disk_work, apply = planned
            written = asyncio.get_running_loop().run_in_executor(None, disk_work)
        except BaseException:
            self._gate.leave(key)
            raise

        def settle(fut: asyncio.Future[None]) -> None:
            try:
                if not fut.cancelled() and fut.exception() is None:
                    apply()
            finally:
                self._gate.leave(key)

        written.add_done_callback(settle)
        await asyncio.shield(written)

    async def log_records(self, log: LogName, *, limit: int, before: int | None = None,
                          device: str | None = None, since: float | None = None
                          ) -> list[tuple[int, FileRecord]]:
        self.usable()
        records = (self.uploads if log == "uploads" else self.deletions).records
        total = len(records)
        if before is None or before > total:
            before = total
        # Positions count from the oldest record kept in memory; newest first means
        # walking from ``before - 1`` down.
        newest: Iterator[FileRecord] = itertools.islice(reversed(records), total - before, None)
        matching = ((before - 1 - i, r) for i, r in enumerate(newest)
                    if (device is None or r.device == device)
                    and (since is None or r.time >= since))
        return list(itertools.islice(matching, limit))


def _missing_error() -> OSError:
    return FileNotFoundError(errno.ENOENT, "the server's data dir is missing")
