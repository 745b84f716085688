"""Reading a small text file a person gave us (a script, a config file), with a
one-line reason when it cannot be read."""

from __future__ import annotations

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


def read_secret_file(path: Path, what: str, max_bytes: int = 4096) -> str:
    """The first line of a file holding a secret (a password, a token), stripped;
    refused when group or others can read it, like ssh does for its keys."""
    import stat

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
