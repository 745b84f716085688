"""A set of non-negative integers kept as sorted, disjoint, half-open ranges (for SACK).

The receiver records which chunks above its cumulative point have arrived; the sender records
which chunks the peer has acknowledged, and ``add`` tells it exactly which chunks are new so an
ACK that repeats old ranges costs nothing. Both keep at most ``max_ranges`` ranges.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

#: Default bound on the number of disjoint ranges (the window bounds it in practice).
DEFAULT_MAX_RANGES = 65536


class RangeSetFull(Exception):
    """Adding would exceed the range bound."""


class RangeSet:
    __slots__ = ("_ends", "_max_ranges", "_starts")

    def __init__(self, max_ranges: int = DEFAULT_MAX_RANGES) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._max_ranges = max_ranges

    def __len__(self) -> int:
        """Number of disjoint ranges (not of integers)."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def count(self) -> int:
        """Number of integers in the set."""
        return sum(e - s for s, e in zip(self._starts, self._ends))

    def first(self) -> tuple[int, int] | None:
        return (self._starts[0], self._ends[0]) if self._starts else None

    def add(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add ``[start, end)``; return the sub-ranges that were not already present."""
        if end <= start:
            return []
        starts, ends = self._starts, self._ends
        # Ranges that overlap or touch [start, end) are merged into one.
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi and len(starts) >= self._max_ranges:
            raise RangeSetFull(f"more than {self._max_ranges} ranges")
        new: list[tuple[int, int]] = []
        cursor = start
        for i in range(lo, hi):
            if starts[i] > cursor:
                new.append((cursor, min(starts[i], end)))
            cursor = max(cursor, ends[i])
        if cursor < end:
            new.append((cursor, end))
        if lo < hi:
            start = min(start, starts[lo])
            end = max(end, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [end]
        return new

    def remove_below(self, value: int) -> None:
        """Forget every integer < value."""
        starts, ends = self._starts, self._ends
        i = bisect_right(ends, value)
        del starts[:i], ends[:i]
        if starts and starts[0] < value:
            starts[0] = value

    def pop_prefix(self, value: int) -> int:
        """If ``value`` starts a range, remove that range and return its end; else ``value``."""
        if self._starts and self._starts[0] == value:
            end = self._ends[0]
            del self._starts[0], self._ends[0]
            return end
        return value
