"""File-name rules for UVF: what a sender may offer and what a receiver will save.

The receiver saves ``<sender>_<filename>`` in its data directory and nowhere else. Both parts
must be a single, plain path component: not empty, not ``.`` or ``..``, no ``/`` or ``\\``, no
control characters, no Windows drive prefix, and the final name at most 255 bytes of UTF-8.
A name that breaks a rule is refused, never repaired. An existing file is never overwritten:
the receiver tries ``name (1).ext``, ``name (2).ext``, ... up to ``MAX_SUFFIX``. Temp names
(``temp_name``) can never be saved names: see ``is_temp_name``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

MAX_NAME_BYTES = 255
MAX_SUFFIX = 9999
_DRIVE = re.compile(r"^[A-Za-z]:")


class NameRefused(ValueError):
    """A name that breaks the rules; ``str(exc)`` is one line for a user."""

    code = "bad_name"


def check_component(name: str, what: str = "file name") -> str:
    """Return ``name`` if it is one safe path component, else raise NameRefused."""
    if not name:
        raise NameRefused(f"{what} is empty")
    if name in (".", ".."):
        raise NameRefused(f"{what} {name!r} is not a file name")
    if "/" in name or "\\" in name:
        raise NameRefused(f"{what} {name!r} holds a path separator")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name):
        raise NameRefused(f"{what} {name!r} holds a control character")
    if _DRIVE.match(name):
        raise NameRefused(f"{what} {name!r} looks like an absolute Windows path")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NameRefused(f"{what} {name!r} is not valid Unicode") from exc
    if len(encoded) > MAX_NAME_BYTES:
        raise NameRefused(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return name


def saved_name(sender_name: str, filename: str) -> str:
    """The name a receiver saves under, e.g. ``alpha_video.mp4``; raises NameRefused."""
    check_component(sender_name, "sender name")
    check_component(filename, "file name")
    return check_component(f"{sender_name}_{filename}", "saved name")


def numbered_names(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext`` ... ``stem (MAX_SUFFIX).ext`` that fit in 255 bytes."""
    yield name
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    for n in range(1, MAX_SUFFIX + 1):
        candidate = f"{stem} ({n}){ext}"
        if len(candidate.encode("utf-8")) > MAX_NAME_BYTES:
            return
        yield candidate


def temp_name(transfer_id: int) -> str:
    """Where an incoming transfer is written until verified (hidden, in the same folder)."""
    return f".uvf-{transfer_id:016x}.part"


#: Exactly what ``temp_name`` makes. A saved name always holds the ``_`` between sender and
#: file name, which this never does, so no saved name (numbered or not) can match it.
_TEMP_NAME = re.compile(r"\.uvf-[0-9a-f]{16}\.part")


def is_temp_name(name: str) -> bool:
    """True for names ``temp_name`` makes, and only those."""
    return _TEMP_NAME.fullmatch(name) is not None
