"""The worker's side of a Zarr array: each store grows the array if it must, then writes
its frames (a whole chunk or shard, or at a flush the runs of a partly filled one)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sinks import Waiter

__all__ = ["ArraySink", "Runs"]


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

    The chunks are written first, through ``chunks`` (the same array
    opened with its metadata assumed at the largest length, so it writes
    past the stored length), and only then is the length in the array's
    metadata raised to the end of the frames stored: a reader never finds
    rows past them, and a store that fails leaves the length as it was.
    Tensorstore compresses in its own threads, outside the interpreter
    lock, and writes each chunk (or shard) object whole.
    """

    kind = None
    nonblocking = False
    write_many = None

    def __init__(self, array: Any, chunks: Any, name: str) -> None:
        self.array = array  # the array as its metadata says (reopened at each growth)
        self.chunks = chunks  # the same, assumed as long as can be: where stores go
        self.target: object = array
        self.key: object = ("zarr", name)
        self.name = name
        self.waiter: Waiter | None = None  # the lane's, given when the worker takes the sink
        self.extent = 0
        self._rest = list(array.shape[1:])

    def write(self, block: Runs) -> int:
        try:
            for first, frames in block.runs:
                self.chunks[first : first + len(frames)].write(frames).result()
            end = max(first + len(frames) for first, frames in block.runs)
            if end > self.extent:
                self.array = self.array.resize(exclusive_max=[end, *self._rest],
                                               resize_metadata_only=True).result()
                self.extent = end
        except ValueError as exc:  # tensorstore's way of saying an I/O failed
            raise OSError(f"{self.name}: {exc}") from exc
        return len(block)

    def flush(self) -> None:
        """Every store is written (and each object committed) when its write returns."""

    def sync(self) -> None:
        """Tensorstore's file store commits each object with ``fsync`` as it writes it."""

    def close(self) -> None:
        self.array = self.chunks = self.target = None  # (tensorstore has nothing to close)
