"""Real storage faults for tests: a small tmpfs as a data dir, filled up on purpose.

Mounting needs root (CI runs as root); elsewhere the tests that use it skip. The
mount point is a fresh temporary folder of its own and is unmounted and removed
on the way out, also when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(size: str = "8m") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk is a real tmpfs here, and mounting one needs root")
    point = Path(tempfile.mkdtemp(prefix="edgenet-test-tmpfs-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(point)], check=True, capture_output=True, timeout=30)
        try:
            yield point
        finally:
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True,
                           timeout=30)
    finally:
        point.rmdir()


def fill(folder: Path, leave: int = 0, name: str = "filler") -> Path:
    """Write a file in ``folder`` until only ``leave`` bytes are free (0: none at all)."""
    path = folder / name
    block = b"\0" * (1 << 20)
    with path.open("ab", buffering=0) as fh:
        for _ in range(100_000):
            free = _free(folder) - leave
            if free <= 0:
                break
            try:
                if not fh.write(block[: min(len(block), free)]):
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave == 0:  # the last pages too, one small write at a time
        with path.open("ab", buffering=0) as fh:
            for _ in range(10_000):
                try:
                    fh.write(b"\0" * 512)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return path


def _free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize
