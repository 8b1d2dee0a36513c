"""Copying frames in the caller's thread without handing the interpreter lock away.

numpy releases the interpreter lock for a copy of more than a few hundred
elements. While another thread runs Python (a busy GUI, an acquisition
loop), the thread that released it waits up to the switch interval (5 ms)
to get it back: a 128 KiB frame copied in 10 µs then costs its caller
milliseconds, for every frame (measured: 500 frames of 256 x 256 uint16,
10 ms idle, 834 ms beside a spinning thread with ``np.copyto``; 13 ms
copied as here). :func:`copy_frames` copies contiguous memory with the lock
held, a piece of at most :data:`PIECE_BYTES` at a time, so a long copy is
still interrupted at a switch interval like any Python code.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PIECE_BYTES", "copy_frames"]

#: Bytes copied at once with the lock held (a fraction of a millisecond).
PIECE_BYTES = 1 << 20


def copy_frames(into: np.ndarray, frames: np.ndarray) -> None:
    """Copy ``frames`` into ``into`` (same shape): with the lock held where both are
    C-contiguous of one dtype, else by ``np.copyto`` (a cast or a strided view)."""
    if (into.dtype != frames.dtype or into.shape != frames.shape
            or not into.flags.c_contiguous or not frames.flags.c_contiguous):
        np.copyto(into, frames)
        return
    # (As bytes: any dtype, either byte order, has a buffer of "B" through a view.)
    target = into.reshape(-1).view(np.uint8).data
    source = frames.reshape(-1).view(np.uint8).data
    size = len(source)
    for start in range(0, size, PIECE_BYTES):
        end = min(size, start + PIECE_BYTES)
        target[start:end] = source[start:end]  # (a memcpy; the lock is not released)
