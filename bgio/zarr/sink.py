"""The worker's side of a Zarr array: each store grows the array if it must, then writes
its frames (a whole chunk or shard, or at a flush the runs of a partly filled one)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..sinks import Waiter

__all__ = ["ArraySink", "Runs"]

logger = logging.getLogger("bgio")


class Runs:
    """One store for the worker: runs of consecutive frames, ``(first index, frames)``."""

    __slots__ = ("runs",)

    def __init__(self, runs: list[tuple[int, np.ndarray]]) -> None:
        self.runs = runs

    def __len__(self) -> int:
        # The engine paces and counts in bytes: the frames' (before compression).
        return sum(int(frames.nbytes) for _, frames in self.runs)


class ArraySink:
    """Writes :class:`Runs` into a tensorstore array that grows along axis 0.

    The array's length is the end of the last frame stored: it is grown
    (its metadata rewritten) before a store past it, so a reader never
    finds rows that were never written past the end. Tensorstore
    compresses in its own threads, outside the interpreter lock, and
    writes each chunk (or shard) object whole, so a reader sees a chunk
    whole or not at all.
    """

    kind = None
    nonblocking = False
    write_many = None

    def __init__(self, array: Any, name: str) -> None:
        self.array = array  # a tensorstore.TensorStore, reopened at each resize
        self.target: object = array
        self.key: object = ("zarr", name)
        self.name = name
        self.waiter: Waiter | None = None  # the lane's, given when the worker takes the sink
        self.extent = 0
        self._rest = list(array.shape[1:])

    def write(self, block: Runs) -> int:
        end = max(first + len(frames) for first, frames in block.runs)
        before = self.extent
        if end > before:
            self.array = self.array.resize(exclusive_max=[end, *self._rest]).result()
            self.extent = end
        try:
            for first, frames in block.runs:
                self.array[first : first + len(frames)].write(frames).result()
        except BaseException:
            if self.extent != before:
                # The store failed: no rows of fill values past what was stored before.
                try:
                    self.array = self.array.resize(
                        exclusive_max=[before, *self._rest]).result()
                    self.extent = before
                except Exception:  # (the store's own error is the one raised)
                    logger.warning("bgio: %s: its length could not be set back to %d "
                                   "frames after a failed store", self.name, before,
                                   exc_info=True)
            raise
        return len(block)

    def flush(self) -> None:
        """Every store is written (and each object committed) when its write returns."""

    def sync(self) -> None:
        """Tensorstore's file store commits each object with ``fsync`` as it writes it."""

    def close(self) -> None:
        self.array = self.target = None  # (tensorstore has nothing to close)
