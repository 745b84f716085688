"""The file bytes a UVF sender holds, as a sans-I/O buffer of aligned blocks.

The sender never reads the file itself: this buffer says which byte ranges it wants read
(``wanted``) and takes what the adapter read (``supply``). It holds every block from the one
with the lowest unacknowledged chunk up to a read-ahead past the next new chunk, so a chunk
that must be resent is always in memory; blocks wholly acknowledged are dropped
(``release_below``).

Bound: at most ``max_blocks`` blocks (held or being read) at once. When the unacknowledged
span reaches it, read-ahead stops and new chunks wait: the buffer then limits the data in
flight, as a TCP send buffer does. The default (8 MiB) is the receiver's default window, so
on a healthy path the window, not the buffer, is the limit.
"""

from __future__ import annotations

#: Bytes per block (rounded down to whole chunks).
BLOCK_BYTES = 256 * 1024
#: Blocks asked for ahead of the one holding the next new chunk.
READ_AHEAD_BLOCKS = 3
#: Bytes held (or being read) at most per outgoing transfer.
BUFFER_BYTES = 8 * 2**20


class SendBuffer:
    def __init__(
        self,
        size: int,
        chunk: int,
        *,
        block_bytes: int = BLOCK_BYTES,
        read_ahead: int = READ_AHEAD_BLOCKS,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self._size = size
        self._chunk = chunk
        self._per = max(1, block_bytes // chunk)  # chunks per block
        self._block_bytes = self._per * chunk
        self._blocks_total = (size + self._block_bytes - 1) // self._block_bytes
        self._ahead = max(0, read_ahead)
        self.max_blocks = max(self._ahead + 2, buffer_bytes // self._block_bytes)
        self._held: dict[int, memoryview] = {}
        self._low = 0  # lowest block still needed
        self._next = 0  # next block to ask for

    @property
    def held_bytes(self) -> int:
        return sum(len(b) for b in self._held.values())

    def chunk(self, index: int) -> memoryview | None:
        """The bytes of chunk ``index``, or None while its block is not read yet."""
        block = self._held.get(index // self._per)
        if block is None:
            return None
        start = (index % self._per) * self._chunk
        return block[start : start + self._chunk]

    def wanted(self, next_new: int) -> list[tuple[int, int]]:
        """Byte ranges ``(offset, length)`` to read now (each asked for once), ending a
        read-ahead past chunk ``next_new`` and never past ``max_blocks`` held."""
        top = min(
            next_new // self._per + self._ahead,
            self._low + self.max_blocks - 1,
            self._blocks_total - 1,
        )
        if top < self._next:
            return []
        first, self._next = self._next, top + 1
        offset = first * self._block_bytes
        return [(offset, min((top + 1) * self._block_bytes, self._size) - offset)]

    def supply(self, offset: int, data: bytes) -> bool:
        """Bytes read at ``offset``: whole blocks, as ``wanted`` asked. False (nothing kept)
        when they are not, i.e. the file is shorter than it was (it changed)."""
        end = offset + len(data)
        if (
            not data
            or offset % self._block_bytes
            or (end % self._block_bytes and end != self._size)
        ):
            return False
        view = memoryview(data)
        first = offset // self._block_bytes
        for k in range(first, first + (len(data) + self._block_bytes - 1) // self._block_bytes):
            if k >= self._low:
                start = (k - first) * self._block_bytes
                self._held[k] = view[start : start + self._block_bytes]
        return True

    def release_below(self, cumulative: int) -> None:
        """Every chunk below ``cumulative`` is acknowledged: drop the blocks they fill."""
        low = cumulative // self._per
        while self._low < low:
            self._held.pop(self._low, None)
            self._low += 1
        # Chunks the receiver held from an earlier transfer are never read.
        self._next = max(self._next, self._low)

    def blocked(self, next_new: int) -> bool:
        """True when chunk ``next_new`` waits for a block not yet read."""
        return next_new // self._per not in self._held
