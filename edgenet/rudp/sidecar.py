"""The record kept next to a partial UVF file, so that a later offer of the same file resumes.

When an incoming transfer stops before the end (the sender went silent, was superseded by its
own restart, cancelled, or this endpoint closed), the receiver keeps what it wrote as
``.uvf-<key>.partial`` and this record as ``.uvf-<key>.resume`` (JSON, at most
``MAX_SIDECAR_BYTES``): the sender's name, the file name, the SHA-256 and size of the whole
file, the byte ranges held and when it was kept. ``key`` is derived from the sender's name and
the file name, so one sender's one file has at most one partial. Neither name holds a ``_``,
and every saved name does (``<sender>_<file>``), so no received file is ever taken for one.

Pure: ``decode`` checks everything a record edited on disk could get wrong and raises
``SidecarError`` with one line; the disk work is ``partials.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

SIDECAR_VERSION = 1
MAX_SIDECAR_BYTES = 4096
#: Byte ranges a record may list (the receiver writes in order, so it keeps one today).
MAX_RANGES = 64
_PARTIAL = re.compile(r"\.uvf-[0-9a-f]{32}\.partial")
_SIDECAR = re.compile(r"\.uvf-[0-9a-f]{32}\.resume")
_SIDECAR_NEW = re.compile(r"\.uvf-[0-9a-f]{32}\.resume-new")


class SidecarError(ValueError):
    """A record that cannot be trusted; ``str(exc)`` is one line for the log."""


@dataclass(frozen=True)
class PartialRecord:
    sender: str
    filename: str
    sha256: str  # hex
    size: int
    #: Half-open byte ranges of the file held in the partial, ascending and disjoint.
    ranges: tuple[tuple[int, int], ...]
    #: Unix time the partial was kept (its expiry counts from here).
    kept_at: float

    @property
    def prefix(self) -> int:
        """Bytes held from the start of the file (what a resume can use)."""
        return self.ranges[0][1] if self.ranges and self.ranges[0][0] == 0 else 0


def partial_key(sender: str, filename: str) -> str:
    raw = f"{sender}\0{filename}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:32]


def partial_name(key: str) -> str:
    return f".uvf-{key}.partial"


def sidecar_name(key: str) -> str:
    return f".uvf-{key}.resume"


def sidecar_new_name(key: str) -> str:
    """Where a record is written before it is renamed into place."""
    return f".uvf-{key}.resume-new"


def key_of(name: str) -> str | None:
    """The key of a partial's, a record's or a record being written's name, else None."""
    for pattern in (_PARTIAL, _SIDECAR, _SIDECAR_NEW):
        if pattern.fullmatch(name):
            return name[5:37]
    return None


def coalesce(ranges: list[tuple[int, int]], cap: int = MAX_RANGES) -> tuple[tuple[int, int], ...]:
    """Sorted, with overlapping and touching ranges merged; the lowest ``cap`` kept."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged[:cap])


def encode(record: PartialRecord) -> bytes:
    return json.dumps({
        "version": SIDECAR_VERSION,
        "sender": record.sender,
        "file": record.filename,
        "sha256": record.sha256,
        "size": record.size,
        "ranges": [list(r) for r in record.ranges],
        "kept_at": record.kept_at,
    }, ensure_ascii=True).encode("ascii") + b"\n"


def decode(raw: bytes) -> PartialRecord:
    """Raises SidecarError for anything that is not a record this version wrote."""
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"the record is over {MAX_SIDECAR_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SidecarError("the record is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != SIDECAR_VERSION:
        raise SidecarError("the record is not a version-1 record")
    sender, filename, digest = doc.get("sender"), doc.get("file"), doc.get("sha256")
    size, ranges, kept_at = doc.get("size"), doc.get("ranges"), doc.get("kept_at")
    if not (isinstance(sender, str) and isinstance(filename, str) and sender and filename):
        raise SidecarError("the record's sender or file name is missing")
    if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise SidecarError("the record's SHA-256 is not 64 hex digits")
    if not (type(size) is int and 0 < size < 2**63):
        raise SidecarError("the record's size is not a positive whole number")
    if not (isinstance(kept_at, (int, float)) and type(kept_at) is not bool
            and math.isfinite(kept_at) and kept_at >= 0):
        raise SidecarError("the record's time is not a number")
    if not (isinstance(ranges, list) and 0 < len(ranges) <= MAX_RANGES):
        raise SidecarError(f"the record lists no ranges or more than {MAX_RANGES}")
    held: list[tuple[int, int]] = []
    previous = -1
    for item in ranges:
        if not (isinstance(item, list) and len(item) == 2
                and all(type(v) is int for v in item)):
            raise SidecarError("a range of the record is not two whole numbers")
        start, end = item
        if not previous < start < end <= size:  # ascending, disjoint, inside the file
            raise SidecarError(f"the record's range {start}-{end} does not fit a file of "
                               f"{size} bytes in order")
        held.append((start, end))
        previous = end
    return PartialRecord(sender, filename, digest, size, tuple(held), float(kept_at))
