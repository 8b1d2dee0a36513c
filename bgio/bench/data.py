"""The buffers the benchmarks write: how they are made and how their size is read."""

from __future__ import annotations

import numpy as np

__all__ = ["MIB", "make_data", "nbytes"]

MIB = 1024 * 1024


def make_data(size_bytes: int, seed: int = 0) -> np.ndarray:
    """Return ``size_bytes`` of pseudo-random uint8 data, every page already resident.

    A random 1 MiB block is repeated: drawing hundreds of MiB of random
    numbers would cost seconds, and the page cache does not care about the
    byte values (nothing here compresses).

    Parameters
    ----------
    size_bytes : int
        Length of the array, >= 0.
    seed : int, default 0
        Seed of the random block.

    Returns
    -------
    numpy.ndarray
        A C-contiguous 1-D uint8 array.
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    block = np.random.default_rng(seed).integers(0, 256, min(size_bytes, MIB), dtype=np.uint8)
    # np.resize repeats the block into a new array, writing (so touching) every page:
    # the RSS baseline taken afterwards already includes the whole input.
    return np.resize(block, size_bytes) if size_bytes else block


def nbytes(data: object) -> int:
    """Size in bytes of a numpy array or any bytes-like object.

    Parameters
    ----------
    data : bytes-like or numpy array
        What a benchmark writes.

    Returns
    -------
    int
    """
    if isinstance(data, np.ndarray):
        # memoryview() of an array is its raw buffer too, but .nbytes needs no view.
        return int(data.nbytes)
    return memoryview(data).nbytes  # type: ignore[arg-type]
