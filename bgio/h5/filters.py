"""HDF5 filter pipelines bgio reproduces byte for byte: shuffle and deflate (gzip), in any order."""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np

from ..priority import BackgroundIOPriority

__all__ = ["DEFLATE", "MAX_POOL", "SHUFFLE", "SUPPORTED", "ChunkPipeline", "encoding_pool",
           "pipeline_of"]

#: HDF5's filter ids (H5Z_FILTER_DEFLATE, H5Z_FILTER_SHUFFLE).
DEFLATE = 1
SHUFFLE = 2
#: The filters bgio applies itself; a dataset with any other takes h5py's own path.
SUPPORTED = frozenset({DEFLATE, SHUFFLE})
#: Most threads compressing chunks ahead of the worker.
MAX_POOL = 4


@dataclass(frozen=True)
class ChunkPipeline:
    """The filters of a chunked dataset, in HDF5's order, as bgio applies them.

    Attributes
    ----------
    steps : tuple of (filter id, client data)
        What HDF5 would apply to each chunk on writing, first to last.
    itemsize : int
        Bytes per element of the dataset's dtype.
    """

    steps: tuple[tuple[int, tuple[int, ...]], ...]
    itemsize: int

    @property
    def compresses(self) -> bool:
        """True if a chunk is deflated (its stored size then varies)."""
        return any(step == DEFLATE for step, _ in self.steps)

    def encode(self, chunk: np.ndarray) -> bytes | memoryview:
        """Filter one whole chunk as HDF5 would, for ``write_direct_chunk``.

        Runs without h5py's lock: numpy's byte shuffle and zlib (which
        releases the GIL) do the work, so several chunks can be encoded in
        parallel while other threads use h5py.

        Parameters
        ----------
        chunk : numpy.ndarray
            Exactly one chunk (the dataset's chunk shape and dtype), C-contiguous.

        Returns
        -------
        bytes or memoryview
            The stored form of the chunk; a view of ``chunk`` itself when
            there is no filter to apply.
        """
        if not chunk.flags.c_contiguous:
            raise ValueError("chunk: must be C-contiguous")
        data: bytes | memoryview = memoryview(chunk.reshape(-1).view(np.uint8))
        for step, options in self.steps:
            if step == SHUFFLE:
                data = _shuffle(data, self.itemsize)
            else:
                data = zlib.compress(data, options[0] if options else 6)
        return data  # with no filter, the chunk's own memory: stored without a copy


def _shuffle(data: bytes | memoryview, itemsize: int) -> bytes | memoryview:
    # Byte k of every element, then byte k + 1, ...: HDF5's shuffle filter.
    if itemsize <= 1:
        return data
    grid = np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize)
    # copyto into a new array releases the GIL while it transposes (tobytes()
    # would hold it, a millisecond per MiB, stalling the program's threads).
    shuffled = np.empty((itemsize, len(grid)), dtype=np.uint8)
    np.copyto(shuffled, grid.T)
    return memoryview(shuffled.reshape(-1))


def pipeline_of(dataset: h5py.Dataset) -> ChunkPipeline | None:
    """The pipeline bgio can apply for ``dataset``, or None if it must leave filtering to HDF5.

    None for contiguous (unchunked) datasets and for any filter outside
    :data:`SUPPORTED` (lzf, szip, fletcher32, scale-offset, plugins).
    """
    if dataset.chunks is None:
        return None
    plist = dataset.id.get_create_plist()
    steps = []
    for index in range(plist.get_nfilters()):
        filter_id, _flags, options = plist.get_filter(index)[:3]
        if filter_id not in SUPPORTED:
            return None
        steps.append((int(filter_id), tuple(int(value) for value in options)))
    return ChunkPipeline(tuple(steps), dataset.dtype.itemsize)


def encoding_pool(profile: BackgroundIOPriority) -> ThreadPoolExecutor | None:
    """Threads that compress chunks ahead of the worker, as ``profile`` allows, or None.

    At full bandwidth (``bandwidth_pct`` 100, preset 1) there is no pacing
    to respect, so one thread per core (at most :data:`MAX_POOL`) compresses
    chunks in parallel (zlib releases the GIL) while the worker stores them
    in order. Under a duty cycle the worker compresses each chunk itself,
    inside the busy time that pacing governs, so a gentle preset takes a
    share of one core and no more. A single core gains nothing from a pool.
    """
    cores = os.cpu_count() or 1
    if profile.bandwidth_pct < 100 or cores < 2:
        return None
    return ThreadPoolExecutor(min(MAX_POOL, cores), thread_name_prefix="bgio-h5-filter")
