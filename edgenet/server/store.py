"""The embedded ``FileStore``: ``<device>-<fileID>.txt`` in the data dir, and its logs.

Uploads go to a temporary file in the same folder, are fsynced, then renamed
into place, and only then logged and acknowledged: a crash never leaves half a
file under a final name. Opening a store (``DataDirStore.open``, once, at
start-up) removes leftover temporary files and reconciles the logs with the
files a crash left (see ``recovery``). A commit or a deletion is one method of
the store: the disk work runs in one worker thread, and the store's memory (the
index, the statistics, the in-memory log records) follows it on the event loop
as soon as that thread is done, whether or not the caller still waits.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from edgenet.server.compute import DataError, SampleValidator, Stats, stats_of_file
from edgenet.server.interfaces import LogName, StoredFile
from edgenet.server.logs import DELETION_LOG, UPLOAD_LOG, FileLog, FileRecord
from edgenet.server.recovery import FoundFile, Key, reconcile

TMP_PREFIX = ".upload-"
#: Files smaller than this are scanned on the event loop; bigger ones in a thread.
INLINE_SCAN_BYTES = 256 * 1024
_STORED = re.compile(r"^(?P<device>.+)-(?P<file_id>0|[1-9][0-9]*)\.txt$")


class DataDirUpload:
    """One upload being received: validated as it streams into a temporary file."""

    def __init__(self, store: DataDirStore, device: str, file_id: int) -> None:
        self._store = store
        self.device = device
        self.file_id = file_id
        self._validator = SampleValidator()
        self._error: DataError | None = None
        self.tmp = store.data_dir / f"{TMP_PREFIX}{device}-{file_id}-{os.urandom(4).hex()}.tmp"
        self._fh = self.tmp.open("wb")
        #: From the start of ``commit`` the temporary file belongs to the commit's
        #: thread, and ``abort`` leaves it alone.
        self._committing = False

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            return  # keep draining the body, store nothing
        try:
            self._validator.feed(chunk)
        except DataError as exc:
            self._error = exc
            self.abort()
            return
        self._fh.write(chunk)

    async def commit(self, now: float) -> StoredFile:
        try:
            if self._error is not None:
                raise self._error
            samples = self._validator.finish()
        except DataError:
            self.abort()
            raise
        self._committing = True
        record = FileRecord(self.device, now, self.file_id, samples)
        stored = StoredFile(self.device, self.file_id, self._validator.bytes, samples, now)
        return await self._store._run_then_apply(
            partial(self._write_through, record), partial(self._store._uploaded, stored, record),
            stored)

    def _write_through(self, record: FileRecord) -> None:
        """Fsync, rename into place, fsync the folder, append the log line (blocking)."""
        store = self._store
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.tmp, store.path_for(self.device, self.file_id))
        except BaseException:
            self._fh.close()
            self.tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(store.data_dir)
        store.uploads.write_line(record)

    def abort(self) -> None:
        if self._committing:
            return
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)


class DataDirStore:
    """The data files of every device, and the upload and deletion logs.

    Made by ``open``; ``removed_temporaries`` and ``repairs`` say what opening it
    cleaned up."""

    def __init__(self, data_dir: Path, uploads: FileLog, deletions: FileLog,
                 files: dict[Key, StoredFile]) -> None:
        self.data_dir = data_dir
        self.uploads = uploads
        self.deletions = deletions
        #: Each stored file, with its SUM/MIN/MAX/count once computed (a file is
        #: immutable until replaced, and a replacement is a new entry).
        self._files = files
        self.removed_temporaries = 0
        #: Log lines appended when opening, to agree with the files (see ``recovery``).
        self.repairs: list[dict[str, Any]] = []

    @classmethod
    def open(cls, data_dir: Path, now: float) -> DataDirStore:
        """Open the data dir (blocking: run it in a thread on a running loop): create it,
        remove temporary files, read the logs, index the files, reconcile (``now`` stamps
        the deletion lines a reconcile adds)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        removed = 0
        for path in data_dir.glob(f"{TMP_PREFIX}*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
        uploads = FileLog(data_dir / UPLOAD_LOG)
        deletions = FileLog(data_dir / DELETION_LOG)
        found: dict[Key, tuple[FoundFile, int]] = {}
        for path in data_dir.iterdir():
            m = _STORED.match(path.name)
            if not m or not path.is_file():
                continue
            st = path.stat()
            found[(m["device"], int(m["file_id"]))] = (
                FoundFile(_count_lines(path), st.st_mtime), st.st_size)
        repairs = reconcile({k: f for k, (f, _) in found.items()}, uploads, deletions, now)
        for name, log in ((UPLOAD_LOG, uploads), (DELETION_LOG, deletions)):
            if log.torn_bytes:
                repairs.append({"log": name, "reason": "torn last line cut off",
                                "bytes": log.torn_bytes})
        files = {}
        for key, (on_disk, size) in found.items():
            # After reconcile, the last upload line of every stored file is its upload.
            line = uploads.last.get(key)
            files[key] = StoredFile(key[0], key[1], size, on_disk.samples,
                                    line.time if line is not None else on_disk.mtime)
        store = cls(data_dir, uploads, deletions, files)
        store.removed_temporaries = removed
        store.repairs = repairs
        return store

    def path_for(self, device: str, file_id: int) -> Path:
        return self.data_dir / f"{device}-{file_id}.txt"

    async def begin_upload(self, device: str, file_id: int) -> DataDirUpload:
        return DataDirUpload(self, device, file_id)

    async def get(self, device: str, file_id: int) -> StoredFile | None:
        return self._files.get((device, file_id))

    async def files(self, device: str | None = None) -> list[StoredFile]:
        return [f for f in self._files.values() if device is None or f.device == device]

    async def stats(self, device: str, file_id: int) -> Stats | None:
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
        except FileNotFoundError:
            return None
        if self._files.get(key) is stored:  # not replaced or deleted meanwhile
            self._files[key] = replace(stored, stats=stats)
        return stats

    async def delete(self, device: str, file_id: int, now: float) -> StoredFile | None:
        key = (device, file_id)
        stored = self._files.pop(key, None)
        if stored is None:
            return None
        record = FileRecord(device, now, file_id, stored.samples)
        return await self._run_then_apply(partial(self._unlink_and_log, record),
                                          partial(self.deletions.remember, record), stored)

    def _unlink_and_log(self, record: FileRecord) -> None:
        self.path_for(record.device, record.file_id).unlink(missing_ok=True)
        _fsync_dir(self.data_dir)
        self.deletions.write_line(record)

    def _uploaded(self, stored: StoredFile, record: FileRecord) -> None:
        self.uploads.remember(record)
        self._files[(stored.device, stored.file_id)] = stored

    async def _run_then_apply(self, disk_work: Callable[[], None], apply: Callable[[], None],
                              result: StoredFile) -> StoredFile:
        """Run ``disk_work`` in a worker thread, then ``apply`` its outcome to memory on
        the loop. ``apply`` is a done-callback of the thread's future, added before
        anyone waits on it: it runs even if the caller is cancelled meanwhile (a
        shutdown), and before the caller resumes. Raises what the disk work raised."""
        written = asyncio.get_running_loop().run_in_executor(None, disk_work)

        def settle(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                apply()

        written.add_done_callback(settle)
        await asyncio.shield(written)
        return result

    async def log_records(self, log: LogName, *, limit: int, before: int | None = None,
                          device: str | None = None, since: float | None = None
                          ) -> list[tuple[int, FileRecord]]:
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


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (0 if last == b"\n" else 1)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
