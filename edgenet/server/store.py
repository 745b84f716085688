"""Stored data files: ``<device>-<fileID>.txt`` in the data dir, and their logs.

Uploads go to a temporary file in the same folder, are fsynced, then renamed
into place, and only then logged and acknowledged: a crash never leaves half a
file under a final name. Leftover temporary files are removed at start-up, and
the logs are reconciled with the files a crash left (see ``recovery``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenet.server.compute import DataError, SampleValidator, Stats, stats_of_file
from edgenet.server.logs import DELETION_LOG, UPLOAD_LOG, FileLog, FileRecord
from edgenet.server.recovery import reconcile

TMP_PREFIX = ".upload-"
_STORED = re.compile(r"^(?P<device>.+)-(?P<file_id>0|[1-9][0-9]*)\.txt$")


@dataclass
class StoredFile:
    device: str
    file_id: int
    size: int
    samples: int
    uploaded_at: float
    #: SUM/MIN/MAX/count, computed once on first use (the file is immutable until replaced).
    stats: Stats | None = None


class UploadInProgress:
    """One upload being received: validated as it streams into a temporary file."""

    def __init__(self, store: FileStore, device: str, file_id: int) -> None:
        self.store = store
        self.device = device
        self.file_id = file_id
        self.validator = SampleValidator()
        self.error: DataError | None = None
        self.tmp = store.data_dir / f"{TMP_PREFIX}{device}-{file_id}-{os.urandom(4).hex()}.tmp"
        self._fh = self.tmp.open("wb")
        #: Set (on the event loop) before ``commit`` runs in its thread: from then on the
        #: commit owns the temporary file and ``abort`` leaves it alone.
        self.committing = False

    def write(self, chunk: bytes) -> None:
        if self.error is not None:
            return  # keep draining the body, store nothing
        try:
            self.validator.feed(chunk)
        except DataError as exc:
            self.error = exc
            self.abort()
            return
        self._fh.write(chunk)

    def finish_validation(self) -> int:
        """Raises DataError when the content is not one integer per line."""
        if self.error is not None:
            raise self.error
        try:
            return self.validator.finish()
        except DataError:
            self.abort()
            raise

    def commit(self, record: FileRecord) -> None:
        """Fsync the temporary file, rename it into place, append the log line.

        Blocking: run it in a worker thread. Memory is updated afterwards, on the
        event loop, by ``FileStore.index_upload``.
        """
        self.committing = True
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.replace(self.tmp, self.store.path_for(self.device, self.file_id))
        except BaseException:
            self._fh.close()
            self.tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.store.data_dir)
        self.store.uploads.write_line(record)

    def abort(self) -> None:
        if self.committing:
            return
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)


class FileStore:
    """The data files of every device, and the upload and deletion logs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.removed_temporaries = self._clean_temporaries()
        self.uploads = FileLog(data_dir / UPLOAD_LOG)
        self.deletions = FileLog(data_dir / DELETION_LOG)
        self._files: dict[tuple[str, int], StoredFile] = {}
        uploaded_at = {(r.device, r.file_id): r.time for r in self.uploads.records}
        for path in data_dir.iterdir():
            m = _STORED.match(path.name)
            if not m or not path.is_file():
                continue
            key = (m["device"], int(m["file_id"]))
            st = path.stat()
            self._files[key] = StoredFile(key[0], key[1], st.st_size, _count_lines(path),
                                          uploaded_at.get(key, st.st_mtime))
        #: Log lines appended at start-up to agree with the files (see ``recovery``).
        self.repairs: list[dict[str, Any]] = reconcile(self, time.time())
        for name, log in (("upload-log.txt", self.uploads), ("deletion-log.txt", self.deletions)):
            if log.torn_bytes:
                self.repairs.append({"log": name, "reason": "torn last line cut off",
                                     "bytes": log.torn_bytes})

    def stored_items(self) -> Iterator[tuple[tuple[str, int], StoredFile]]:
        return iter(list(self._files.items()))

    def _clean_temporaries(self) -> int:
        n = 0
        for path in self.data_dir.glob(f"{TMP_PREFIX}*.tmp"):
            path.unlink(missing_ok=True)
            n += 1
        return n

    def path_for(self, device: str, file_id: int) -> Path:
        return self.data_dir / f"{device}-{file_id}.txt"

    def begin_upload(self, device: str, file_id: int) -> UploadInProgress:
        return UploadInProgress(self, device, file_id)

    def index_upload(self, up: UploadInProgress, record: FileRecord) -> StoredFile:
        """Record a committed upload in memory (on the event loop)."""
        self.uploads.remember(record)
        stored = StoredFile(up.device, up.file_id, up.validator.bytes, record.samples, record.time)
        self._files[(up.device, up.file_id)] = stored
        return stored

    def get(self, device: str, file_id: int) -> StoredFile | None:
        return self._files.get((device, file_id))

    def files(self, device: str | None = None) -> list[StoredFile]:
        return [f for f in self._files.values() if device is None or f.device == device]

    @staticmethod
    def scan(path: Path) -> Stats:
        """SUM/MIN/MAX/count of a stored file (blocking for a large file)."""
        return stats_of_file(path)

    def take(self, device: str, file_id: int) -> StoredFile | None:
        """Forget a stored file in memory (on the event loop); see ``remove_file``."""
        return self._files.pop((device, file_id), None)

    def remove_file(self, record: FileRecord) -> None:
        """Unlink a file taken with ``take`` and log the deletion (blocking)."""
        self.path_for(record.device, record.file_id).unlink(missing_ok=True)
        _fsync_dir(self.data_dir)
        self.deletions.write_line(record)


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
