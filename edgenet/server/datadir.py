"""Reading a data dir when a store opens it: temporary files removed, the logs read,
the stored files indexed, and the logs reconciled with them (``recovery``).
Blocking: run it in a worker thread on a running loop."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgenet.server.durable import TMP_PREFIX, TMP_SUFFIX
from edgenet.server.interfaces import StoredFile
from edgenet.server.logs import DELETION_LOG, UPLOAD_LOG, FileLog
from edgenet.server.recovery import FoundFile, Key, reconcile

STORED_NAME = re.compile(r"^(?P<device>.+)-(?P<file_id>0|[1-9][0-9]*)\.txt$")


@dataclass
class Contents:
    """What opening a data dir found (blocking work, done in a thread)."""

    uploads: FileLog
    deletions: FileLog
    files: dict[Key, StoredFile]
    identity: tuple[int, int]
    removed_temporaries: int
    repairs: list[dict[str, Any]]


def read_data_dir(data_dir: Path, now: float, keep: frozenset[str] = frozenset()
                   ) -> Contents:
    """Remove temporary files (but those named in ``keep``), read the logs, index the
    files, reconcile (``now`` stamps the deletion lines a reconcile adds)."""
    identity = folder_identity(data_dir)
    if identity is None:
        raise FileNotFoundError(errno.ENOENT, f"the data dir {data_dir} is missing")
    removed = 0
    for path in data_dir.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    uploads = FileLog(data_dir / UPLOAD_LOG)
    deletions = FileLog(data_dir / DELETION_LOG)
    found: dict[Key, tuple[FoundFile, int]] = {}
    for path in data_dir.iterdir():
        m = STORED_NAME.match(path.name)
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
    return Contents(uploads, deletions, files, identity, removed, repairs)


def folder_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder, or None when there is none at ``path``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _count_lines(path: Path) -> int:
    n = 0
    last = b"\n"
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (0 if last == b"\n" else 1)
