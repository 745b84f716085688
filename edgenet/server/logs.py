"""The server's three text logs.

* ``upload-log.txt`` and ``deletion-log.txt``: ``name; dd Month yyyy hh:mm:ss; fileID; dataAmount``,
  appended one whole line per write, kept in memory too (bounded) so readers
  never re-read the file.
* ``edge-device-log.txt``: ``seq; dd Month yyyy hh:mm:ss; name; ip; udp_port``, the active
  devices, rewritten whole (temporary file, then rename) on every change.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from edgenet.numbers import parse_ascii_int

UPLOAD_LOG = "upload-log.txt"
DELETION_LOG = "deletion-log.txt"
DEVICE_LOG = "edge-device-log.txt"
TIME_FORMAT = "%d %B %Y %H:%M:%S"
#: Records of each append-only log kept in memory for readers (the file keeps all).
MAX_RECORDS_IN_MEMORY = 100_000

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def format_timestamp(t: float) -> str:
    """``30 September 2022 10:31:13`` in local time, English month names whatever the locale."""
    tm = time.localtime(t)
    return f"{tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year} " \
           f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"


def parse_timestamp(text: str) -> float:
    day, month, year, hms = text.split(" ")
    hh, mm, ss = hms.split(":")
    n = parse_ascii_int
    tm = (n(year, 1, 9999, "year"), _MONTHS.index(month) + 1, n(day, 1, 31, "day"),
          n(hh, 0, 23, "hour"), n(mm, 0, 59, "minute"), n(ss, 0, 61, "second"), 0, 0, -1)
    return time.mktime(tm)


@dataclass(frozen=True)
class FileRecord:
    """One line of the upload or deletion log."""

    device: str
    time: float
    file_id: int
    samples: int

    def line(self) -> str:
        return f"{self.device}; {format_timestamp(self.time)}; {self.file_id}; {self.samples}\n"

    @classmethod
    def parse(cls, line: str) -> FileRecord:
        device, ts, file_id, samples = line.rstrip("\n").split("; ")
        return cls(device, parse_timestamp(ts), parse_ascii_int(file_id, what="fileID"),
                   parse_ascii_int(samples, what="dataAmount"))


class FileLog:
    """An append-only log of FileRecords (uploads or deletions)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Appends from worker threads one at a time, so that a failed one can be cut off
        #: again without cutting another's line.
        self._append_lock = threading.Lock()
        self.records: deque[FileRecord] = deque(maxlen=MAX_RECORDS_IN_MEMORY)
        #: The last record of each (device, fileID), for start-up reconciliation.
        self.last: dict[tuple[str, int], FileRecord] = {}
        self.skipped_lines = 0
        #: Bytes of an unterminated last line cut off at start-up (a torn write).
        self.torn_bytes = _cut_torn_tail(path)
        if path.exists():
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        self.remember(FileRecord.parse(line))
                    except (ValueError, IndexError):
                        # A hand edit: keep the file, skip the line.
                        self.skipped_lines += 1

    def append(self, record: FileRecord) -> None:
        self.write_line(record)
        self.remember(record)

    def remember(self, record: FileRecord) -> None:
        """Keep a record that ``write_line`` wrote (on the event loop)."""
        self.records.append(record)
        self.last[(record.device, record.file_id)] = record

    def write_line(self, record: FileRecord, fsync: bool = True) -> None:
        """Append the record's line to the file in one write (blocking). All or nothing:
        a write that fails or falls short (a full disk) or an fsync that fails is cut
        off again, so the file ends as it was, and OSError is raised."""
        data = record.line().encode("utf-8")
        with self._append_lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = os.write(fd, data)  # one write per line: lines never interleave
                    if written != len(data):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    if fsync:
                        os.fsync(fd)
                except OSError:
                    _cut_back(fd, size)
                    raise
            finally:
                os.close(fd)


def _cut_back(fd: int, size: int) -> None:
    """Best effort: truncate a log to ``size`` after a failed append (what is left, if
    this fails too, is a torn last line, which the next start-up cuts off)."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass


def _cut_torn_tail(path: Path) -> int:
    """Truncate a log after its last newline. Lines are appended in one write each, so
    an unterminated tail can only be a write torn by a crash (or power loss); cutting it
    keeps every line parseable and the next append on a line of its own."""
    try:
        fh = path.open("rb+")
    except FileNotFoundError:
        return 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            block = fh.read(end - start)
            if end == size and block.endswith(b"\n"):
                return 0
            nl = block.rfind(b"\n")
            if nl >= 0:
                end = start + nl + 1
                break
            end = start
        if end == size:
            return 0
        fh.truncate(end)
        fh.flush()
        os.fsync(fh.fileno())
        return size - end


def parse_device_line(line: str) -> tuple[int, float, str, str, int]:
    seq, ts, name, ip, port = line.rstrip("\n").split("; ")
    return (parse_ascii_int(seq, what="seq"), parse_timestamp(ts), name, ip,
            parse_ascii_int(port, 0, 65535, "udp_port"))


def write_atomically(path: Path, text: str, fsync: bool = False) -> None:
    """Replace ``path`` whole: readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk fails the write or the close: leave no temporary file behind.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
