"""File handling for UVF transfers: reading chunks, hashing, and saving a verified file.

No asyncio: the endpoint runs the slow parts (hashing, fsync) in worker threads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from . import names


def create_temp(path: Path) -> BinaryIO:
    """Create the temp file exclusively (mode 0600); raises OSError if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return open(fd, "wb", buffering=0)


class FileReader:
    """``ChunkReader`` over an open file (positional reads; the file position is unused)."""

    def __init__(self, file: BinaryIO) -> None:
        self._fd = file.fileno()
        self._file = file

    def read(self, offset: int, size: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self._fd, size, offset)
        self._file.seek(offset)
        return self._file.read(size)


def sha256_of(file: BinaryIO) -> tuple[bytes, int]:
    digest = hashlib.sha256()
    size = 0
    file.seek(0)
    while block := file.read(1 << 20):
        digest.update(block)
        size += len(block)
    return digest.digest(), size


def save_verified(file: BinaryIO, temp: Path, data_dir: Path, base_name: str) -> Path:
    """fsync the temp file, then link it under the first free numbered name (never
    overwriting), drop the temp name and fsync the directory. Runs in a worker thread."""
    file.flush()
    os.fsync(file.fileno())
    file.close()
    for candidate in names.numbered_names(base_name):
        target = data_dir / candidate
        try:
            os.link(temp, target)
        except FileExistsError:
            continue
        except OSError:
            # No hard links on this file system: check-then-rename (a tiny race, documented).
            if target.exists():
                continue
            os.replace(temp, target)
        else:
            os.unlink(temp)
        break
    else:
        raise OSError(f"every numbered variant of {base_name!r} is taken")
    if hasattr(os, "O_DIRECTORY"):
        try:
            fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    return target
