"""Start-up reconciliation of the stored files with the upload and deletion logs.

The store's order of work is: an upload is written to a temporary file,
fsynced, renamed to ``<name>-<fileID>.txt``, the directory fsynced, *then* its
line appended to ``upload-log.txt`` (fsynced), then acknowledged. A delete
unlinks the file, fsyncs the directory, *then* appends to ``deletion-log.txt``.
A crash (kill -9, power loss) between the rename (or unlink) and the log line
leaves the files and the logs disagreeing. At start-up the file system wins
(the data on disk is complete: it was fsynced before the rename) and the
missing line is appended, so afterwards, for every (device, fileID), the file
exists exactly when the later of its last upload line and its last deletion
line is an upload (ties go to what the file system shows):

* a stored file whose last upload line is missing, older than its last
  deletion line, or for a different number of samples gets an upload line
  (time: the file's modification time, never before that deletion line);
* an upload line with no file and no later deletion line gets a deletion
  line (time: now).

The device was never acknowledged in either case, so it may retry; an
acknowledged upload or delete is always already logged. Each repair is
reported (a ``log_repaired`` event at start-up).

"Later" is judged without trusting one reading of a local time: the logs keep
``dd Month yyyy hh:mm:ss`` in local time, for people, and a time in the hour
that repeats when daylight saving time ends stands for two instants an hour
apart. Each line's time is taken as the range of instants its text can stand
for (``local_readings``), and a line is repaired only when *no* reading makes
the logs agree with the files: an upload at 02:05 CET after a deletion at
02:55 CEST is not mistaken for one before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgenet.server.logs import DELETION_LOG, UPLOAD_LOG, FileLog, FileRecord, format_timestamp

Key = tuple[str, int]
#: Offsets by which a local clock moves at a time-zone change (DST, and the 30-minute
#: zones), in seconds.
_SHIFTS = (3600.0, 1800.0, 7200.0)


def local_readings(t: float) -> tuple[float, float]:
    """The earliest and latest instant that ``t``'s local-time text stands for (equal
    but in a repeated hour, whose text stands for two instants)."""
    text = format_timestamp(t)
    low = high = t
    for shift in _SHIFTS:
        if format_timestamp(t - shift) == text:
            low = min(low, t - shift)
        if format_timestamp(t + shift) == text:
            high = max(high, t + shift)
    return low, high


def may_follow(later: FileRecord, earlier: FileRecord) -> bool:
    """Whether some reading of the two lines' local times puts ``later`` at or after
    ``earlier``."""
    return local_readings(later.time)[1] >= local_readings(earlier.time)[0]


@dataclass(frozen=True)
class FoundFile:
    """A stored file as the data dir shows it at start-up."""

    samples: int
    mtime: float


def reconcile(found: Mapping[Key, FoundFile], uploads: FileLog, deletions: FileLog,
              now: float) -> list[dict[str, Any]]:
    """Append the log lines a crash left out; returns one dict per repair."""
    repairs: list[dict[str, Any]] = []
    for key, on_disk in sorted(found.items()):
        up = uploads.last.get(key)
        gone = deletions.last.get(key)
        if up is not None and (gone is None or may_follow(up, gone)) \
                and up.samples == on_disk.samples:
            continue
        when = on_disk.mtime if gone is None else max(on_disk.mtime,
                                                      local_readings(gone.time)[1])
        uploads.append(FileRecord(key[0], when, key[1], on_disk.samples))
        repairs.append({"log": UPLOAD_LOG, "device": key[0], "file_id": key[1],
                        "samples": on_disk.samples,
                        "reason": "stored file without its upload line"})
    for key, up in sorted(uploads.last.items()):
        if key in found:
            continue
        gone = deletions.last.get(key)
        if gone is not None and may_follow(gone, up):
            continue
        deletions.append(FileRecord(key[0], max(now, up.time), key[1], up.samples))
        repairs.append({"log": DELETION_LOG, "device": key[0], "file_id": key[1],
                        "samples": up.samples,
                        "reason": "logged upload whose file is gone, without a deletion line"})
    return repairs
