"""Reading a small text file a person gave us (a script, a config file), with a
one-line reason when it cannot be read."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class TextFileError(Exception):
    """The file is missing, too large, unreadable or not UTF-8; the message says which."""


def read_small_text(path: Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of ``path`` (``what`` names it in messages, e.g. "script")."""
    try:
        if path.stat().st_size > max_bytes:
            raise TextFileError(f"{what} {path} is larger than {max_bytes} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TextFileError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise TextFileError(f"cannot read {what} {path}: {reason.lower()}") from None


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path``, which must be a regular file (after symbolic links) of at
    most ``max_bytes``. Never blocks on a FIFO or a device: it is opened without
    waiting (``O_NONBLOCK``) and refused when it is not a regular file. Raises
    OSError, or ValueError naming what is wrong."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file ({_kind(mode)})")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise ValueError(f"{path} is larger than {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def read_secret_file(path: Path, what: str, max_bytes: int = 4096) -> str:
    """The first line of a file holding a secret (a password, a token), stripped;
    refused when group or others can read it, like ssh does for its keys."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TextFileError(f"{what} {path} not found") from None
    except OSError as exc:
        raise TextFileError(f"cannot read {what} {path}: {str(exc.strerror).lower()}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        raise TextFileError(f"refusing {what} {path}: group or others can read it "
                            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}")
    text = read_small_text(path, what, max_bytes)
    return text.splitlines()[0].strip() if text.strip() else ""
