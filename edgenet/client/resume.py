"""The device's side of a resumable upload (protocol version 3), as plain decisions.

Before it uploads, the device asks the server where the file may resume
(``upload_offset``: the server holds the first ``offset`` bytes, whose SHA-256 it
gives). The device hashes its own first ``offset`` bytes: if they match, only the rest
is sent; if the file changed (or is shorter), it starts over from 0. The SHA-256 of
the whole file goes with the upload, and the server stores nothing else.
``hash_file`` is the one blocking step (run it in a thread); the rest is pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """The SHA-256 of a file's first ``prefix_len`` bytes and of the whole of it."""

    size: int
    prefix_len: int
    prefix_sha256: str
    sha256: str


def hash_file(path: Path, prefix_len: int) -> FileDigest:
    """One pass over ``path``: the hash of its first ``prefix_len`` bytes and of all."""
    digest = hashlib.sha256()
    size, left = 0, prefix_len
    with open(path, "rb") as fh:
        while left:
            block = fh.read(min(READ_BLOCK, left))
            if not block:
                break
            digest.update(block)
            size += len(block)
            left -= len(block)
        prefix = digest.hexdigest() if left == 0 else ""
        while block := fh.read(READ_BLOCK):
            digest.update(block)
            size += len(block)
    return FileDigest(size, prefix_len, prefix, digest.hexdigest())


def resume_offset(server_offset: int, server_sha256: str, local: FileDigest) -> int:
    """Where to send from: the server's offset when this file starts with exactly what
    the server holds, else 0 (the file changed, or is shorter now)."""
    if (server_offset <= 0 or server_offset > local.size
            or local.prefix_len != server_offset or local.prefix_sha256 != server_sha256):
        return 0
    return server_offset


def resumed_percent(offset: int, size: int) -> int:
    """How far into the file the upload resumed, in whole percent (rounded down)."""
    return offset * 100 // size if size else 0
