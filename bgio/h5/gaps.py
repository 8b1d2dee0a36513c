"""Slots of a dataset not written yet, kept as ranges."""

from __future__ import annotations

import bisect

__all__ = ["Gaps"]


class Gaps:
    """Frame slots below the end not written (yet), as sorted ``[start, stop)`` ranges.

    Ranges, not a set of indices: a ``write_at`` far ahead (or a mistyped
    index) costs one range, not memory for every slot it skips.
    """

    __slots__ = ("_starts", "_stops")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def add(self, start: int, stop: int) -> None:
        """Slots ``start..stop-1``, past every range so far, are skipped."""
        if start >= stop:
            return
        if self._stops and self._stops[-1] == start:
            self._stops[-1] = stop
        else:
            self._starts.append(start)
            self._stops.append(stop)

    def _find(self, index: int) -> int:
        """Position of the range holding ``index``, or -1."""
        position = bisect.bisect_right(self._starts, index) - 1
        if position >= 0 and index < self._stops[position]:
            return position
        return -1

    def __contains__(self, index: int) -> bool:
        return self._find(index) >= 0

    def discard(self, index: int) -> None:
        """Slot ``index`` has been written."""
        position = self._find(index)
        if position < 0:
            return
        start, stop = self._starts[position], self._stops[position]
        if start == index and stop == index + 1:
            del self._starts[position], self._stops[position]
        elif start == index:
            self._starts[position] = index + 1
        elif stop == index + 1:
            self._stops[position] = index
        else:  # split in two
            self._stops[position] = index
            self._starts.insert(position + 1, index + 1)
            self._stops.insert(position + 1, stop)

    def tail_start(self, end: int) -> int:
        """Where the slots not written that run up to ``end`` begin (``end`` if slot
        ``end - 1`` is written)."""
        if self._stops and self._stops[-1] >= end:
            return min(self._starts[-1], end)
        return end

    def truncate(self, end: int) -> None:
        """Forget the slots from ``end`` on."""
        while self._starts and self._starts[-1] >= end:
            del self._starts[-1], self._stops[-1]
        if self._stops and self._stops[-1] > end:
            self._stops[-1] = end

    def __len__(self) -> int:
        return sum(stop - start for start, stop in zip(self._starts, self._stops, strict=True))

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges, as ``(start, stop)``."""
        return list(zip(self._starts, self._stops, strict=True))

    def indices(self) -> list[int]:
        return [index for start, stop in zip(self._starts, self._stops, strict=True)
                for index in range(start, stop)]
