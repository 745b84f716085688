"""The disk side of UVF: the file operations a ``TransferSet`` asks for, carried out.

Everything here blocks (reads, writes, fsync, link), so the adapter runs it in worker
threads, never on the event loop. ``TransferFiles.run`` takes one ``fileops`` operation and
returns its result, or ``FileOpFailed`` for an OSError; operations of one transfer come one
at a time, so each transfer's file is used by one thread at a time.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import BinaryIO

from . import fileops as fo
from . import names, partials
from . import sidecar as sc


class NotRegularFile(OSError):
    """What was to be sent is a directory, a device, ..."""


class TransferFiles:
    """The open file of each transfer, by transfer id, in one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._open: dict[int, BinaryIO] = {}

    def adopt(self, transfer_id: int, file: BinaryIO) -> None:
        """An outgoing transfer's file, opened (and hashed) by the caller."""
        self._open[transfer_id] = file

    def run(self, op: fo.FileOp) -> fo.FileOpResult:
        try:
            return self._run(op)
        except OSError as exc:
            return fo.FileOpFailed(exc.strerror or str(exc), str(exc))

    def _run(self, op: fo.FileOp) -> fo.FileOpResult:
        tid = op.transfer_id
        if isinstance(op, fo.ReadRanges):
            fd = self._open[tid].fileno()
            return [os.pread(fd, length, offset) for offset, length in op.ranges]
        if isinstance(op, fo.WriteBlocks):
            fd = self._open[tid].fileno()
            for offset, data in op.blocks:
                write_at(fd, data, offset)
            return None
        if isinstance(op, fo.MeasureSpace):
            return free_bytes(self.data_dir)
        if isinstance(op, fo.CreateTemp):
            self._open[tid] = create_temp(self.data_dir / op.name)
            return None
        if isinstance(op, fo.ClaimPartial):
            claimed = partials.claim(
                self.data_dir, self.data_dir / names.temp_name(tid), sender=op.sender,
                filename=op.filename, sha256=op.sha256.hex(), size=op.size,
                chunk_size=op.chunk_size, max_age=op.max_age)
            if claimed.file is not None:
                self._open[tid] = claimed.file
            return fo.PartialClaim(claimed.held, claimed.digest, claimed.note)
        if isinstance(op, fo.ParkPartial):
            record = sc.PartialRecord(op.sender, op.filename, op.sha256.hex(), op.size,
                                      ((0, op.held),), time.time())
            temp = self.data_dir / names.temp_name(tid)
            try:
                parked = partials.park(self._open.pop(tid), temp, self.data_dir, record,
                                       budget=op.budget, max_age=op.max_age)
            except OSError:
                temp.unlink(missing_ok=True)  # not kept, so not left either
                raise
            return fo.PartialParked(parked.kept, parked.note, parked.removed)
        if isinstance(op, fo.SweepPartials):
            removed = partials.sweep(self.data_dir, max_age=op.max_age, budget=op.budget)
            return fo.PartialsSwept(tuple(removed))
        if isinstance(op, fo.SaveFile):
            file = self._open.pop(tid)
            temp = self.data_dir / names.temp_name(tid)
            return save_verified(file, temp, self.data_dir, op.name).name
        if tid in self._open:
            self._open.pop(tid).close()
        if op.remove_temp:
            try:
                (self.data_dir / names.temp_name(tid)).unlink()
            except FileNotFoundError:
                pass
        return None


def open_to_send(path: Path) -> tuple[BinaryIO, bytes, int]:
    """Open a regular file (not through a symbolic link as its last component: the caller
    checked where the path leads) and hash it: ``(file, sha256, size)``; raises OSError."""
    # O_NONBLOCK: a FIFO in place of the file must not hang the open (it is refused below);
    # it changes nothing for a regular file.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_BINARY", 0)
    file = open(os.open(path, flags), "rb")  # noqa: SIM115 - closed by the caller (or below)
    try:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        digest, size = sha256_of(file)
    except BaseException:
        file.close()
        raise
    return file, digest, size


def create_temp(path: Path) -> BinaryIO:
    """Create the temp file exclusively (mode 0600); raises OSError if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return open(fd, "wb", buffering=0)


def write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


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
    overwriting), drop the temp name and fsync the directory."""
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
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
    partials.fsync_dir(data_dir)
    return target


def remove_stale_parts(data_dir: Path, older_than: float) -> int:
    """Remove temp files of transfers that died with their process (kill -9, power cut):
    names ``names.is_temp_name`` accepts (never a received file), untouched for
    ``older_than`` seconds."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        candidates = [p for p in data_dir.iterdir() if names.is_temp_name(p.name)]
    except OSError:
        return 0
    for part in candidates:
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except OSError:
            continue
    return removed
