"""The file work a UVF endpoint asks of its adapter, and what comes back.

The sans-I/O ``TransferSet`` never touches the disk: it hands out these operations
(``file_ops``), at most one at a time per transfer and in order, and takes their results
(``file_op_done``). ``files.TransferFiles.run`` carries them out, in a worker thread.
Names are relative to the endpoint's data directory; the file of a transfer is known by the
transfer id.
"""

from __future__ import annotations

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


FileOp = MeasureSpace | CreateTemp | WriteBlocks | SaveFile | ReadRanges | Release


@dataclass(frozen=True, slots=True)
class FileOpFailed:
    """The result of an operation that raised OSError: ``reason`` is one line for a user
    (the OS's wording), ``detail`` the full text for the log."""

    reason: str
    detail: str


#: What ``file_op_done`` accepts: the operation's result, or the failure.
FileOpResult = int | str | list[bytes] | None | FileOpFailed
