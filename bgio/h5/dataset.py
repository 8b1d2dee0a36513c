"""``bgwrite(dataset, frames)``: append to (or write into) an existing h5py dataset in the background."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import h5py
import numpy as np

from ..engine import submit
from ..handle import BackgroundWriteProcess
from ..priority import BackgroundIOPriority
from ..source import Source
from ..worker import Job
from .filters import pipeline_of
from .layout import as_frames, check_count
from .sink import Chunk, DatasetSink, Slab

__all__ = ["write_dataset"]


def write_dataset(
    dataset: h5py.Dataset,
    data: object,
    profile: BackgroundIOPriority,
    *,
    offset: int | None = None,
    chain_after: BackgroundWriteProcess | None = None,
    fsync: bool = False,
    copy: bool = False,
) -> BackgroundWriteProcess:
    """Queue frames for ``dataset``: appended along axis 0, or written at ``offset``.

    Checked in the caller: the frame shape (``dataset.shape[1:]``), a dtype
    that would lose values, and whether the dataset can grow. Whole chunks
    go out filtered by bgio with ``write_direct_chunk`` when bgio can apply
    the dataset's filters; the frames at either edge that share a chunk
    with other data go through h5py, one chunk at a time.
    """
    if dataset.chunks is None and offset is None:
        raise ValueError("dataset: a contiguous dataset cannot grow; pass offset=")
    frames = as_frames(data, dataset.shape[1:], dataset.dtype, "data")
    if copy:
        frames = frames.copy()
    grows = dataset.maxshape[0] is None
    if offset is None and not grows:
        raise ValueError(f"dataset: cannot grow along axis 0 (maxshape {dataset.maxshape}); "
                         "pass offset= to write into it")
    if offset is not None:
        offset = check_count(offset, "offset", minimum=0)
        if not grows and offset + len(frames) > dataset.shape[0]:
            raise ValueError(f"offset: frames {offset}..{offset + len(frames) - 1} do not fit in "
                             f"{dataset.shape[0]} (the dataset cannot grow)")
    sink = DatasetSink(dataset, pipeline_of(dataset) if dataset.chunks else None, None)
    handle = BackgroundWriteProcess(frames.nbytes)
    # The blocks are cut in the worker, when this write's turn comes: an
    # append goes after whatever the writes before it stored.
    source = Source(_pieces(sink, frames, offset), None, frames.nbytes, False, 0)
    # (A sink of chunks and slabs, not of byte blocks, as the other HDF5 writers' sinks.)
    job = Job(handle, sink, source, profile,  # type: ignore[arg-type]
              chunk_size=sys.maxsize, chain_after=chain_after, fsync=fsync)
    return submit(job)


def _pieces(sink: DatasetSink, frames: np.ndarray, offset: int | None) -> Iterator[Chunk | Slab]:
    dataset = sink.dataset
    start = dataset.shape[0] if offset is None else offset
    if dataset.chunks is None:
        yield Slab(start, frames)
        return
    per_chunk = dataset.chunks[0]
    whole_chunks_only = dataset.chunks[1:] == dataset.shape[1:]
    end_of_data = max(dataset.shape[0], start + len(frames))
    position = 0
    while position < len(frames):
        index = start + position
        into = index % per_chunk
        take = min(per_chunk - into, len(frames) - position)
        piece = frames[position : position + take]
        # Direct only for a chunk this write fills alone: aligned, and full or
        # reaching past every frame stored (nothing else of it to keep).
        alone = into == 0 and (take == per_chunk or index + take >= end_of_data)
        if alone and whole_chunks_only and sink.pipeline is not None:
            if take < per_chunk:
                # The rest of the chunk reads as the fill value, as HDF5 would store it.
                padded = np.full((per_chunk, *frames.shape[1:]), _fill(dataset), frames.dtype)
                padded[:take] = piece
                piece = padded
            yield Chunk(index // per_chunk, np.ascontiguousarray(piece), take)
        else:
            yield Slab(index, piece)
        position += take


def _fill(dataset: h5py.Dataset) -> object:
    """The dataset's fill value (0 when it has none)."""
    fill = dataset.fillvalue
    return 0 if fill is None else fill
