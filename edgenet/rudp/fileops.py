"""The file work a UVF endpoint asks of its adapter, and what comes back.

The sans-I/O ``TransferSet`` never touches the disk: it hands out these operations
(``file_ops``), at most one at a time per transfer and in order, and takes their results
(``file_op_done``). ``files.TransferFiles.run`` carries them out, in a worker thread.
Names are relative to the endpoint's data directory; the file of a transfer is known by the
transfer id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MeasureSpace:
    """Free bytes in the data directory (result: int, or None when unknown)."""

    transfer_id: int


@dataclass(frozen=True, slots=True)
class CreateTemp:
    """Create the temp file ``name`` exclusively, mode 0600 (result: None)."""

    transfer_id: int
    name: str


@dataclass(frozen=True, slots=True)
class WriteBlocks:
    """Write ``blocks`` (``(offset, bytes)``) to the temp file (result: None)."""

    transfer_id: int
    blocks: tuple[tuple[int, bytes], ...]

    @property
    def size(self) -> int:
        return sum(len(b) for _, b in self.blocks)


@dataclass(frozen=True, slots=True)
class SaveFile:
    """fsync the temp file, link it under the first free numbered variant of ``name``,
    drop the temp name, fsync the directory (result: the name it was saved under)."""

    transfer_id: int
    name: str


@dataclass(frozen=True, slots=True)
class ReadRanges:
    """Read ``ranges`` (``(offset, length)``) of the file being sent (result: the bytes of
    each range, in order)."""

    transfer_id: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Release:
    """The transfer is over: close its file; remove the temp file if ``remove_temp``
    (result: None). Always the last operation of a transfer."""

    transfer_id: int
    remove_temp: bool


@dataclass(frozen=True, slots=True)
class ClaimPartial:
    """Take over the partial an earlier transfer of this file from this sender left, as this
    transfer's temp file (``partials.claim``; result: ``PartialClaim``)."""

    transfer_id: int
    sender: str
    filename: str
    sha256: bytes
    size: int
    chunk_size: int
    max_age: float


@dataclass(frozen=True, slots=True)
class PartialClaim:
    """``held`` bytes of the file are in the temp file, their SHA-256 so far ``digest``; held 0:
    nothing to resume (``note``: why a partial that was there was not used, or "")."""

    held: int
    digest: hashlib._Hash | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class ParkPartial:
    """The transfer stopped: keep the first ``held`` bytes of its temp file for a resume
    (``partials.park``; result: ``PartialParked``). Like ``Release``, the last operation."""

    transfer_id: int
    sender: str
    filename: str
    sha256: bytes
    size: int
    held: int
    max_age: float
    budget: int


@dataclass(frozen=True, slots=True)
class PartialParked:
    kept: bool
    note: str = ""
    #: (name, reason) of older partials removed to stay within the budget.
    removed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SweepPartials:
    """Remove expired, damaged and orphaned partials, and those over the budget (result:
    ``PartialsSwept``). Belongs to no transfer (``transfer_id`` 0)."""

    max_age: float
    budget: int
    transfer_id: int = 0


@dataclass(frozen=True, slots=True)
class PartialsSwept:
    removed: tuple[tuple[str, str], ...]


FileOp = (
    MeasureSpace | CreateTemp | WriteBlocks | SaveFile | ReadRanges | Release | ClaimPartial
    | ParkPartial | SweepPartials
)


@dataclass(frozen=True, slots=True)
class FileOpFailed:
    """The result of an operation that raised OSError: ``reason`` is one line for a user
    (the OS's wording), ``detail`` the full text for the log."""

    reason: str
    detail: str


#: What ``file_op_done`` accepts: the operation's result, or the failure.
FileOpResult = (
    int | str | list[bytes] | None | FileOpFailed | PartialClaim | PartialParked | PartialsSwept
)
