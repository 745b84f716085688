"""The blocking disk steps of storing and deleting a data file, in an order that
makes a failure change nothing and a crash leave the old state or the new one.

**Storing** ``<device>-<fileID>.txt`` from its temporary file (which holds the
whole body):

1. fsync the temporary file and close it;
2. if a version is stored already, hard-link it under a temporary name (its
   *keep* link), so that it can be put back;
3. rename the temporary file over the final name, fsync the folder;
4. append the upload line (one write, fsynced; a failed or short write is cut
   off again: ``FileLog.write_line``);
5. remove the keep link.

A failure in 1-4 undoes what was done: the keep link is renamed back over the
final name (for a new fileID the new file is removed), the folder fsynced, the
temporary file removed, and the error raised: the old version stays, unlogged
work is gone, nothing half-written is left.

**Deleting**: rename the file to a temporary name (gone from its final name, its
data kept), fsync the folder, append the deletion line, remove the temporary
file. A failure renames it back.

**A crash** (kill -9, power loss) at any point leaves one of: the old state (a
temporary file or keep link beside it, removed at start-up); or the new state
with its log line missing (after the rename, before the line), which start-up
reconciliation appends (``recovery``): the file system wins, and the new state
is logged once. A rename is atomic, so the undo itself cannot leave a mixture.
Nothing was acknowledged in either case.

Every name used here starts with ``TMP_PREFIX`` and ends in ``.tmp``, so start-up
removes all of them (a stored file always ends in ``.txt``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from edgenet.server.logs import FileLog, FileRecord

TMP_PREFIX = ".upload-"
TMP_SUFFIX = ".tmp"
#: Errors of ``os.link`` on file systems without hard links: copy instead.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV}


def temporary_name(folder: Path, device: str, file_id: int, role: str) -> Path:
    """A fresh temporary name in ``folder`` for the file of (device, fileID)."""
    return folder / f"{TMP_PREFIX}{device}-{file_id}-{os.urandom(4).hex()}.{role}{TMP_SUFFIX}"


class StorageUndoFailed(OSError):
    """A step failed and undoing it failed too: the final name may hold the new version
    without its log line (start-up reconciliation logs it). Carries the first error."""


def store_file(fh: BinaryIO, tmp: Path, final: Path, log: FileLog, record: FileRecord) -> None:
    """Steps 1-5 above for a temporary file open in ``fh`` (closed here in any case)."""
    folder = final.parent
    keep: Path | None = None
    renamed = False
    try:
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()  # closes the descriptor even when the flush fails
        # The file's time is the log line's, so that the file and its line agree.
        os.utime(tmp, (record.time, record.time))
        keep = _keep_old_version(final, temporary_name(folder, record.device,
                                                       record.file_id, "keep"))
        os.replace(tmp, final)
        renamed = True
        fsync_dir(folder)
        log.write_line(record)
    except OSError as exc:
        _undo_store(exc, tmp, final, keep, renamed)
        raise
    except BaseException:
        _undo_store(None, tmp, final, keep, renamed)
        raise
    if keep is not None:
        remove_quietly(keep)


def _keep_old_version(final: Path, keep: Path) -> Path | None:
    """A second name for the stored version, if there is one (step 2)."""
    try:
        os.link(final, keep)
    except FileNotFoundError:
        return None  # a new fileID
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        try:
            shutil.copy2(final, keep)
        except FileNotFoundError:
            return None
        with keep.open("rb+") as fh:
            os.fsync(fh.fileno())
    return keep


def _undo_store(exc: OSError | None, tmp: Path, final: Path, keep: Path | None,
                renamed: bool) -> None:
    try:
        if renamed:
            if keep is not None:
                os.replace(keep, final)
            else:
                final.unlink(missing_ok=True)
            fsync_dir(final.parent)
        elif keep is not None:
            keep.unlink(missing_ok=True)
    except OSError as undo:
        raise StorageUndoFailed(undo.errno, f"{exc or 'cancelled'}; undoing it failed too: "
                                            f"{undo.strerror or undo}") from exc
    finally:
        remove_quietly(tmp)


def delete_file(final: Path, log: FileLog, record: FileRecord) -> None:
    """Delete ``final`` and log it, or (OSError) change nothing. A file already gone by
    other hands is logged as deleted (it is gone), unless its folder is gone too."""
    folder = final.parent
    aside: Path | None = temporary_name(folder, record.device, record.file_id, "delete")
    assert aside is not None
    try:
        os.rename(final, aside)
    except FileNotFoundError:
        if not folder.is_dir():
            raise
        aside = None
    try:
        fsync_dir(folder)
        log.write_line(record)
    except BaseException as exc:
        if aside is not None:
            try:
                os.rename(aside, final)
                fsync_dir(folder)
            except OSError as undo:
                raise StorageUndoFailed(undo.errno, f"{exc}; putting the file back failed "
                                                    f"too: {undo.strerror or undo}") from exc
        raise
    if aside is not None:
        remove_quietly(aside)


def remove_quietly(path: Path) -> None:
    """Remove a temporary file if it is there; a failure leaves it for start-up."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort where a folder cannot be
    opened or fsynced, as on some file systems)."""
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
