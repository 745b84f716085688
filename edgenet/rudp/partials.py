"""The partial files a UVF receiver keeps for a resume, on disk: claim, park, sweep.

Blocking (reads, renames, fsync), so the endpoint runs these in its file threads; the
decisions about *when* are the sans-I/O ``TransferSet``'s. Layout and record: ``sidecar.py``.

* ``park``: a stopped transfer's temp file is fsynced, cut to the bytes known written,
  renamed to ``.uvf-<key>.partial`` and its record written next to it (a temp name, fsync,
  rename, fsync of the directory). Partials over the budget go, oldest first; a partial alone
  over the budget is not kept.
* ``claim``: a new offer of the same sender's same file (same SHA-256 and size) takes the
  partial over: renamed to the new transfer's temp name (atomic: two offers cannot both take
  it), its prefix hashed, the record removed. Anything that does not add up (a record that
  does not parse or does not match its name, another SHA-256 or size, an expired partial, a
  partial file shorter than its record says) removes both and says why in one line; the offer
  then starts over.
* ``sweep``: at start-up and on a timer, expired and damaged partials, records without a
  partial and partials without a record (left by a crash between the two writes, untouched for
  ``ORPHAN_AGE``) go, and the budget is enforced again (it may have been lowered).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import sidecar as sc

#: A partial or a record being written that has no record (or partial) this long is a leftover.
ORPHAN_AGE = 120.0
#: A record kept "in the future" by more than this (a clock set back, an edit) is not trusted.
CLOCK_SLACK = 300.0
READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Claim:
    """What ``claim`` found: ``file`` open at the new temp name holding ``held`` bytes whose
    SHA-256 so far is ``digest``; or no file (``held`` 0), with ``note`` saying why a partial
    that was there could not be used ("" when there was none)."""

    file: BinaryIO | None
    held: int
    digest: hashlib._Hash | None
    note: str = ""


@dataclass(frozen=True)
class Parked:
    kept: bool
    note: str = ""
    #: (name, reason) of partials removed to make room.
    removed: tuple[tuple[str, str], ...] = ()


def _remove(data_dir: Path, key: str) -> None:
    for name in (sc.partial_name(key), sc.sidecar_name(key), sc.sidecar_new_name(key)):
        try:
            (data_dir / name).unlink()
        except FileNotFoundError:
            pass


def _read_record(data_dir: Path, key: str) -> sc.PartialRecord:
    """Raises FileNotFoundError (no record), SidecarError (damaged), OSError."""
    path = data_dir / sc.sidecar_name(key)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    with open(os.open(path, flags), "rb") as fh:
        raw = fh.read(sc.MAX_SIDECAR_BYTES + 1)
    record = sc.decode(raw)
    if sc.partial_key(record.sender, record.filename) != key:
        raise sc.SidecarError("the record names another sender or file than its file name says")
    return record


def _expired(record: sc.PartialRecord, max_age: float, now: float) -> bool:
    return now - record.kept_at >= max_age or record.kept_at > now + CLOCK_SLACK


def claim(data_dir: Path, temp: Path, *, sender: str, filename: str, sha256: str, size: int,
          chunk_size: int, max_age: float, now: float | None = None) -> Claim:
    now = time.time() if now is None else now
    key = sc.partial_key(sender, filename)
    partial = data_dir / sc.partial_name(key)
    try:
        record = _read_record(data_dir, key)
    except FileNotFoundError:
        return Claim(None, 0, None)
    except (sc.SidecarError, OSError) as exc:
        _remove(data_dir, key)
        return Claim(None, 0, None, f"the record of the partial file is damaged ({exc}); "
                                    "starting over")
    why = ""
    if record.sha256 != sha256 or record.size != size:
        why = "the file changed since the partial was kept; starting over"
    elif _expired(record, max_age, now):
        why = "the partial file expired; starting over"
    held = record.prefix
    if held != size:
        held -= held % chunk_size  # whole chunks of this transfer
    if not why and held <= 0:
        why = "the partial holds no whole chunk; starting over"
    if not why:
        try:
            on_disk = os.stat(partial, follow_symlinks=False).st_size
        except FileNotFoundError:
            on_disk = -1
        if on_disk < record.prefix:
            why = (f"the partial file is shorter on disk ({max(on_disk, 0)} bytes) than its "
                   f"record says ({record.prefix}); starting over")
    if why:
        _remove(data_dir, key)
        return Claim(None, 0, None, why)
    try:
        os.rename(partial, temp)  # the claim: only one offer can take it
    except FileNotFoundError:
        return Claim(None, 0, None, "the partial file went away; starting over")
    try:
        (data_dir / sc.sidecar_name(key)).unlink()
    except FileNotFoundError:
        pass
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    file = open(os.open(temp, flags), "r+b", buffering=0)  # noqa: SIM115 - the caller's now
    try:
        os.ftruncate(file.fileno(), held)
        digest = hashlib.sha256()
        left = held
        while left:
            block = os.pread(file.fileno(), min(READ_BLOCK, left), held - left)
            if not block:
                raise OSError("the partial file got shorter while it was read")
            digest.update(block)
            left -= len(block)
    except BaseException:
        file.close()
        temp.unlink(missing_ok=True)
        raise
    return Claim(file, held, digest)


def fsync_dir(data_dir: Path) -> None:
    """Make a rename in ``data_dir`` durable (best effort: not every system can)."""
    if hasattr(os, "O_DIRECTORY"):
        try:
            fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def park(file: BinaryIO, temp: Path, data_dir: Path, record: sc.PartialRecord, *,
         budget: int, max_age: float) -> Parked:
    """Keep ``temp`` (open as ``file``) as the partial of ``record``; False if not kept."""
    held = record.prefix
    try:
        os.ftruncate(file.fileno(), held)
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()
    key = sc.partial_key(record.sender, record.filename)
    if held > budget:
        temp.unlink(missing_ok=True)
        return Parked(False, f"{held} bytes are over the budget for partial files ({budget})")
    _remove(data_dir, key)  # an older partial of the same file gives way to this one
    removed = sweep(data_dir, max_age=max_age, budget=budget - held, now=record.kept_at)
    os.replace(temp, data_dir / sc.partial_name(key))
    new = data_dir / sc.sidecar_new_name(key)
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        os.write(fd, sc.encode(record))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(new, data_dir / sc.sidecar_name(key))
    fsync_dir(data_dir)
    return Parked(True, "", tuple(removed))


def sweep(data_dir: Path, *, max_age: float, budget: int,
          now: float | None = None) -> list[tuple[str, str]]:
    """Remove what no resume may use; returns ``(partial name, reason)`` of each removed."""
    now = time.time() if now is None else now
    removed: list[tuple[str, str]] = []
    try:
        names = [p.name for p in data_dir.iterdir()]
    except OSError:
        return removed
    keys: dict[str, set[str]] = {}
    for name in names:
        key = sc.key_of(name)
        if key is not None:
            keys.setdefault(key, set()).add(name)
    kept: list[tuple[float, int, str]] = []  # (kept at, bytes, key)
    for key, present in keys.items():
        partial = sc.partial_name(key)
        reason = ""
        if sc.sidecar_name(key) not in present:
            if _untouched(data_dir / partial, now) and _untouched(
                    data_dir / sc.sidecar_new_name(key), now):
                reason = "no record of the partial file"
        else:
            try:
                record = _read_record(data_dir, key)
                size = os.stat(data_dir / partial, follow_symlinks=False).st_size
            except FileNotFoundError:
                reason = "the partial file of the record is missing"
            except (sc.SidecarError, OSError) as exc:
                reason = f"the record is damaged ({exc})"
            else:
                if _expired(record, max_age, now):
                    reason = "expired"
                else:
                    kept.append((record.kept_at, size, key))
        if reason:
            _remove(data_dir, key)
            removed.append((partial, reason))
    used = sum(size for _, size, _ in kept)
    for _, size, key in sorted(kept):  # oldest first
        if used <= budget:
            break
        _remove(data_dir, key)
        removed.append((sc.partial_name(key), "over the budget for partial files"))
        used -= size
    return removed


def _untouched(path: Path, now: float) -> bool:
    """True when ``path`` is missing or has not changed for ``ORPHAN_AGE``."""
    try:
        return os.stat(path, follow_symlinks=False).st_mtime < now - ORPHAN_AGE
    except FileNotFoundError:
        return True
    except OSError:
        return False
