"""The worker's side of a record group: each store writes its columns' chunks, then the
``nevents`` rows of the frames it settles (see :class:`bgio.h5.RecordWriter`)."""

from __future__ import annotations

import logging
import math

import h5py
import numpy as np

from ..errors import DiskFull
from ..sinks import Waiter
from ..space import SpaceWatch
from .drops import set_dropped
from .filters import ChunkPipeline, Encoding, pipeline_of
from .live import Announce, Keys
from .sink import (
    await_encoded,
    encode_chunk,
    raw_form,
    set_finished,
    set_missing,
    store_chunk,
    sync_file,
)

__all__ = ["LIVE_NEVENTS_CHUNK", "NEVENTS_CHUNK", "Column", "Piece", "RecordBlock",
           "RecordSink"]

logger = logging.getLogger("bgio")

#: Frames per chunk of the ``nevents`` dataset (128 KiB of int64).
NEVENTS_CHUNK = 16384
#: In a live file (8 KiB): each announcement stores the last chunk again, whole.
LIVE_NEVENTS_CHUNK = 1024


class Column:
    """One dataset of the group, as the writer knows it: layout, filters and name."""

    __slots__ = ("dataset", "dtype", "name", "pipeline", "raw", "row_bytes", "shape")

    def __init__(self, name: str, dataset: h5py.Dataset) -> None:
        self.name = name
        self.dataset = dataset
        self.shape: tuple[int, ...] = dataset.shape[1:]
        self.dtype = dataset.dtype
        self.row_bytes = math.prod(self.shape) * self.dtype.itemsize
        self.pipeline: ChunkPipeline | None = pipeline_of(dataset)
        self.raw = raw_form(dataset)


class Piece:
    """One column's chunk in a store: its rows, the first ``count`` of them data."""

    __slots__ = ("column", "count", "encoded", "index", "nbytes", "raw", "rows")

    def __init__(self, column: int, index: int, rows: np.ndarray, count: int,
                 encoded: Encoding[bytes | memoryview] | None, raw: bool, nbytes: int) -> None:
        self.column = column  # the column's position in the group's list
        self.index = index  # the chunk's position along axis 0, in chunks
        self.rows = rows  # one whole chunk; rows past `count` are padding
        self.count = count
        self.encoded = encoded  # filtering under way on the pool, or None
        self.raw = raw  # stored unfiltered (see bgio.h5.sink.encode_chunk)
        self.nbytes = nbytes  # the real rows' bytes: what pacing counts


class RecordBlock:
    """One store for the worker: chunks of some columns, then ``nevents`` rows."""

    __slots__ = ("nevents", "pieces")

    def __init__(self, pieces: list[Piece], nevents: list[int]) -> None:
        self.pieces = pieces
        self.nevents = nevents  # events of each frame this store settles, in frame order

    def __len__(self) -> int:
        # The engine paces and counts in bytes: the real rows, and the counts.
        return sum(piece.nbytes for piece in self.pieces) + len(self.nevents) * 8


class RecordSink:
    """The worker's side: stores every column's chunk, then the ``nevents`` that announce it."""

    kind = None
    nonblocking = False
    write_many = None

    def __init__(self, group: h5py.Group, columns: list[Column], nevents: h5py.Dataset | None,
                 own_file: h5py.File | None) -> None:
        self.group = group
        self.columns = columns
        self.nevents = nevents  # None: left out
        self.nevents_pipeline = pipeline_of(nevents) if nevents is not None else None
        self.nevents_raw = raw_form(nevents) if nevents is not None else None
        self.target: object = group
        self.key: object = ("h5", group.file.id.fileno, group.name)
        self.name = f"{group.file.filename}:{group.name}"
        self.waiter: Waiter | None = None  # the lane's, given when the worker takes the sink
        self.missing: list[int] = []  # frames never appended, recorded as an attribute on close
        self.dropped: tuple[int, list[tuple[int, int]]] | None = None  # (see drops)
        self.keys: Keys | None = None  # live files: the key dataset that announces frames
        self.finished: h5py.Dataset | None = None  # live files: the flag close() sets, if it does
        # Events stored per column (its extent along axis 0): with chunks of
        # different lengths the columns grow at their own pace.
        self._extents = [column.dataset.shape[0] for column in columns]
        self._frames = 0  # frames announced (nevents' extent)
        self._per_chunk = nevents.chunks[0] if nevents is not None else 1
        self._counts = np.zeros(self._per_chunk, np.int64)  # nevents' last chunk
        self._own_file = own_file
        #: Free space, checked before each store (set by the writer; None: not watched).
        self.space: SpaceWatch | None = None
        self._failed_store: DiskFull | None = None  # a store met a full disk in HDF5: _trim
        self._failed_dataset: str | None = None  # the dataset that store was into

    def write(self, block: RecordBlock | Announce) -> int:
        if isinstance(block, Announce):
            # SWMR: events and counts reach the file before the keys that announce them.
            self._flush_data()
            assert self.keys is not None
            self.keys.mark(block.frames)
            return len(block)
        encoded = []
        for piece in block.pieces:
            column = self.columns[piece.column]
            await_encoded(piece.encoded, self.waiter)
            encoded.append(encode_chunk(column.pipeline, piece.rows, piece.encoded,
                                        column.raw if piece.raw else None))
        space = self.space
        if space is not None:  # the whole store fits, or none of it is made
            space.check(sum(piece.rows.nbytes if data is None else len(data)
                            for piece, (data, _) in zip(block.pieces, encoded))
                        + 8 * len(block.nevents), self.stored)
        for piece, (data, mask) in zip(block.pieces, encoded):
            column = self.columns[piece.column]
            start = piece.index * len(piece.rows)
            end = start + piece.count
            if end > self._extents[piece.column]:
                column.dataset.resize(end, axis=0)
                self._extents[piece.column] = end
            self._store(column.dataset, start, piece.rows, piece.count, data, mask)
        if block.nevents and self.nevents is not None:
            self._announce(block.nevents)
        return len(block)

    @property
    def stored(self) -> int:
        """Frames stored (counted in ``nevents``), or without it events (in every column)."""
        return self._frames if self.nevents is not None else min(self._extents, default=0)

    def _store(self, dataset: h5py.Dataset, start: int, rows: np.ndarray, count: int,
               data: bytes | memoryview | None, mask: int) -> None:
        try:
            store_chunk(dataset, start, rows, count, data, mask)
        except OSError as exc:
            space = self.space
            full = None if space is None else space.failed(
                exc, self.stored, "the datasets are cut back to the frames stored")
            if full is None:
                raise
            self._failed_store = full
            self._failed_dataset = dataset.name
            raise full from exc

    def _announce(self, counts: list[int]) -> None:
        """Append the frames' event counts to ``nevents``: stored after the events they count."""
        dataset = self.nevents
        assert dataset is not None
        first, per_chunk = self._frames, self._per_chunk
        # Live files rewrite the last chunk at every store: unfiltered, in place.
        raw = self.nevents_raw if self.keys is not None else None
        position = 0
        while position < len(counts):
            into = (first + position) % per_chunk
            take = min(per_chunk - into, len(counts) - position)
            self._counts[into : into + take] = counts[position : position + take]
            chunk_start = first + position - into
            data, mask = encode_chunk(self.nevents_pipeline, self._counts, None, raw)
            if chunk_start + into + take > dataset.shape[0]:
                dataset.resize(chunk_start + into + take, axis=0)
            self._store(dataset, chunk_start, self._counts, into + take, data, mask)
            position += take
            if into + take == per_chunk:
                self._counts = np.zeros(per_chunk, np.int64)
        self._frames = first + len(counts)

    def _flush_data(self) -> None:
        for column in self.columns:
            column.dataset.flush()
        if self.nevents is not None:
            self.nevents.flush()

    def flush(self) -> None:
        """Chunks are stored as they are written; nothing waits in this process."""

    def sync(self) -> None:
        """Flush HDF5's buffers to the file, then the file to the disk."""
        sync_file(self.group.file)

    def _trim(self) -> None:
        """After a store met a full disk inside HDF5 (some columns grown, or stored, past
        the frames ``nevents`` counts): every column back to the events of the frames
        stored (but the one whose store failed, which HDF5 may not shrink safely), less
        a frame whose chunk HDF5 lost in the failure (logged)."""
        frames = self._frames
        nevents = self.nevents
        before = frames
        for _ in range(64):  # (a lost chunk costs a frame or a few: bounded all the same)
            if nevents is not None:
                end = int(np.sum(nevents[:frames], dtype=np.int64)) if frames else 0
            else:
                end = min(self._extents, default=0)
            datasets = [column.dataset for column in self.columns]
            if nevents is not None:
                datasets.append(nevents)
            lost = False
            for dataset in datasets:
                rows = frames if dataset is nevents else end
                if dataset.name == self._failed_dataset and dataset is not nevents:
                    # HDF5 may drop the chunk stored before a failed one when the dataset
                    # shrinks: left as it is (nevents says which rows are events).
                    continue
                if dataset.shape[0] != rows:
                    try:
                        dataset.resize(rows, axis=0)
                    except (OSError, RuntimeError) as exc:  # HDF5's index of it is broken
                        logger.warning("bgio: %s: %s could not be cut back to %d rows after "
                                       "the disk filled (%s); the rows past them are not "
                                       "events", self.name, dataset.name, rows, exc)
                        continue
                if rows and dataset.chunks is not None:
                    first = (rows - 1) // dataset.chunks[0] * dataset.chunks[0]
                    where = (first,) + (0,) * (dataset.ndim - 1)
                    if dataset.id.get_chunk_info_by_coord(where).byte_offset is None:
                        lost = True
            if not lost or frames == 0 or nevents is None:
                break
            frames -= 1
        self._frames = frames
        assert self._failed_store is not None
        self._failed_store.stored = self.stored  # (the error's count: what the file holds)
        if frames != before:
            logger.warning("bgio: %s: HDF5 lost the events of %d frame(s) stored before the "
                           "disk filled; the group holds %d frames", self.name,
                           before - frames, frames)

    def close(self) -> None:
        try:
            if self._failed_store is not None:
                self._trim()
            if self.missing:
                # The attribute on nevents (the group without it), the ranges beside the group.
                set_missing(self.nevents if self.nevents is not None else self.group,
                            self.missing, beside=self.group)
            if self.dropped is not None:
                set_dropped(self.group, *self.dropped)
            if self.finished is not None:
                self._flush_data()
                set_finished(self.finished)
            self.group.file.flush()
        finally:
            if self._own_file is not None:
                self._own_file.close()
