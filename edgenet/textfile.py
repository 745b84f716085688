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
