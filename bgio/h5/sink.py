"""The engine's sink for an HDF5 dataset: whole chunks stored direct, edges through h5py."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import h5py
import numpy as np

from ..errors import DiskFull
from ..sinks import Waiter
from ..space import SpaceWatch
from .drops import set_dropped
from .filters import FLETCHER32, ChunkPipeline, Encoding, fletcher32
from .gaps import Gaps
from .live import Announce, Keys

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

__all__ = [
    "MISSING_ATTRIBUTE",
    "MISSING_SUFFIX",
    "SMALL_MISSING",
    "Chunk",
    "DatasetSink",
    "RawForm",
    "Slab",
    "await_encoded",
    "check_missing_place",
    "create_missing",
    "encode_chunk",
    "missing_place",
    "raw_form",
    "set_finished",
    "set_missing",
    "store_chunk",
    "sync_file",
]

logger = logging.getLogger("bgio")

#: The attribute listing the frames never written, set on close when there are a few.
MISSING_ATTRIBUTE = "missing_frames"
#: The missing-slot ranges of a dataset (or group) ``name`` are the dataset
#: ``name + MISSING_SUFFIX`` beside it.
MISSING_SUFFIX = "_missing"
#: Up to this many slots the attribute is set too (as before the ranges dataset existed).
#: An attribute lives in its object's header, which HDF5 limits to 64 KiB: 5,000 to
#: 9,000 slots made ``close()`` fail ("object header message is too large").
SMALL_MISSING = 1024


def encode_chunk(pipeline: ChunkPipeline | None, rows: np.ndarray,
                 encoded: Encoding[bytes | memoryview] | None = None,
                 raw: RawForm | None = None) -> tuple[bytes | memoryview | None, int]:
    """The stored bytes of one whole chunk ``rows`` and their filter mask, for
    :func:`store_chunk`; None for bytes when h5py must filter the chunk itself.

    With a pipeline bgio can apply, the chunk is filtered here without
    h5py's lock (or was, on a pool: ``encoded``). With ``raw`` (see
    :func:`raw_form`) it is stored unfiltered but for its checksum, the other
    filters marked as skipped for it alone; every HDF5 reader honours that.
    A live file's chunks announced before they are complete are stored so:
    the same size each time, HDF5 rewrites them in place, where a compressed
    chunk of a new size would go to new space, and in SWMR mode the old
    space is never reused.

    Called before the dataset grows to take the chunk: a chunk that fails
    to encode leaves the dataset as it was, with no rows of fill values a
    reader would take for data.
    """
    if raw is not None:
        return raw.encode(rows), raw.mask
    if pipeline is not None:
        return (encoded.take() if encoded is not None else pipeline.encode(rows)), 0
    return None, 0


def store_chunk(dataset: h5py.Dataset, start: int, rows: np.ndarray, count: int,
                data: bytes | memoryview | None, filter_mask: int = 0) -> None:
    """Store one whole chunk whose first row is ``start`` (a chunk boundary on axis 0).

    ``rows`` has the dataset's chunk shape; its first ``count`` rows are
    data (the dataset's extent must already cover them: HDF5 refuses a
    chunk beyond it), the rest padding. ``data`` and ``filter_mask`` are
    what :func:`encode_chunk` made of it: stored direct, taking h5py's lock
    briefly; or, None, ``rows`` go through h5py, which filters this one
    chunk under its lock.
    """
    if data is None:
        dataset[start : start + count] = rows[:count]
    else:
        offsets = (start,) + (0,) * (rows.ndim - 1)
        dataset.id.write_direct_chunk(offsets, data, filter_mask=filter_mask)


class RawForm:
    """How a dataset's chunk is stored unfiltered: the filter mask, and its checksum.

    Every filter is marked skipped but fletcher32, which is applied (bgio
    computes it): the chunk keeps its checksum, and its size stays the same
    from one store to the next.
    """

    __slots__ = ("checksum", "mask")

    def __init__(self, mask: int, checksum: bool) -> None:
        self.mask = mask
        self.checksum = checksum

    def encode(self, rows: np.ndarray) -> bytes | memoryview:
        """The stored bytes of the whole chunk ``rows``."""
        data = memoryview(cast("Buffer", rows.reshape(-1).view(np.uint8)))
        return bytes(data) + fletcher32(data) if self.checksum else data


def raw_form(dataset: h5py.Dataset) -> RawForm:
    """The :class:`RawForm` of ``dataset``'s chunks (mask 0: it has no filter)."""
    plist = dataset.id.get_create_plist()
    mask, checksum = 0, False
    for index in range(plist.get_nfilters()):
        if int(plist.get_filter(index)[0]) == FLETCHER32:
            checksum = True
        else:
            mask |= 1 << index
    return RawForm(mask, checksum)


def await_encoded(encoded: Encoding[bytes | memoryview] | None, waiter: Waiter | None) -> None:
    """Wait for a chunk the pool is encoding, encoding the pool's queued chunks meanwhile
    (:meth:`~bgio.h5.filters.Encoding.wait_helping`).

    Only the time spent waiting is counted as the lane's waited time: the
    pool paces its own work, and pacing must not charge it a second time
    as the worker's busy time; the chunks the worker encodes itself are its
    busy time.
    """
    if encoded is None or encoded.done():
        return
    waited = encoded.wait_helping()
    if waiter is not None:
        waiter.waited += waited


def sync_file(file: h5py.File) -> None:
    """``file.flush()``, then ``fsync`` the file's descriptor: on disk, not just in the page cache.

    Only for drivers with one file descriptor (sec2, the default, and
    stdio); others are flushed only.
    """
    file.flush()
    if file.driver in ("sec2", "stdio"):
        os.fsync(file.id.get_vfd_handle())


def missing_place(node: h5py.Dataset | h5py.Group) -> tuple[h5py.Group, str]:
    """Where the missing-slot ranges of ``node`` go: the group, and the name in it
    (beside ``node``, not in a group whose contents a format may define)."""
    return node.parent, node.name.rsplit("/", 1)[-1] + MISSING_SUFFIX


def check_missing_place(node: h5py.Dataset | h5py.Group, label: str) -> None:
    """Refuse a ``node`` whose missing-slot ranges' place is taken (``label``: the argument
    that names it)."""
    group, name = missing_place(node)
    if name in group:
        raise ValueError(f"{label}: {group.name.rstrip('/')}/{name} exists already; it is "
                         f"where the slots never written would be recorded")


def create_missing(node: h5py.Dataset | h5py.Group) -> h5py.Dataset:
    """Create ``node``'s (empty) missing-slot ranges dataset: a live file's before SWMR
    mode, which creates no dataset; :func:`set_missing` fills it at close."""
    group, name = missing_place(node)
    return group.create_dataset(name, shape=(0, 2), maxshape=(None, 2), dtype=np.int64,
                                chunks=(1024, 2))


def _ranges(missing: list[int]) -> np.ndarray:
    """Sorted slot indices as ``(n, 2)`` ``[start, stop)`` runs."""
    slots = np.asarray(missing, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(slots) != 1) + 1
    starts = slots[np.concatenate(([0], breaks))]
    stops = slots[np.concatenate((breaks - 1, [len(slots) - 1]))] + 1
    return np.stack([starts, stops], axis=1)


def set_missing(node: h5py.Dataset | h5py.Group, missing: list[int],
                beside: h5py.Dataset | h5py.Group | None = None) -> None:
    """Record the slots never written (sorted) beside ``node``, in a form HDF5 holds at any count.

    The record is an int64 dataset of shape ``(n, 2)``, one ``[start,
    stop)`` range of slots per row: ``<name>_missing`` beside ``beside``
    (default ``node``) named ``<name>``: a FrameWriter's dataset, a
    RecordWriter's group. A
    plain h5py reader lists the slots with
    ``[i for start, stop in f["frames_missing"][:] for i in range(start, stop)]``.
    Up to :data:`SMALL_MISSING` slots the ``missing_frames`` attribute of
    ``node`` lists them too; some HDF5 versions cannot create attributes
    in SWMR mode, so there that is logged rather than raised (the
    ranges, the writer's ``missing`` and its warning have them all the same).
    A live file's ranges dataset exists from the start (:func:`create_missing`).
    """
    ranges = _ranges(missing)
    place = node if beside is None else beside
    group, name = missing_place(place)
    dataset = group[name] if name in group else create_missing(place)
    dataset.resize(len(ranges), axis=0)
    dataset[:] = ranges
    if len(missing) > SMALL_MISSING:
        return
    try:
        node.attrs[MISSING_ATTRIBUTE] = np.asarray(missing, dtype=np.int64)
    except Exception as exc:
        if not node.file.swmr_mode:
            raise
        logger.warning("could not record %s on %s in SWMR mode: %r", MISSING_ATTRIBUTE,
                       node.name, exc)


def set_finished(flag: h5py.Dataset) -> None:
    """Set a live file's finished flag, after everything else, and flush it."""
    flag[0] = 1
    flag.flush()


class Chunk:
    """One chunk's worth of frames on its way to the dataset (a block for the engine)."""

    __slots__ = ("count", "encoded", "frames", "index", "raw")

    def __init__(self, index: int, frames: np.ndarray, count: int,
                 encoded: Encoding[bytes | memoryview] | None = None, raw: bool = False) -> None:
        self.index = index  # position of the chunk along axis 0, in chunks
        self.frames = frames  # (chunk_frames, *frame_shape), padded past `count`
        self.count = count  # frames that are real data
        self.encoded = encoded  # filtering already under way on the pool, if any
        self.raw = raw  # stored unfiltered (see encode_chunk)

    def __len__(self) -> int:
        # The engine paces and counts in bytes: a chunk weighs its real frames.
        return self.count * int(self.frames[0].nbytes)


class Slab:
    """Frames that do not fill a whole chunk of their own: stored through h5py."""

    __slots__ = ("frames", "start")

    def __init__(self, start: int, frames: np.ndarray) -> None:
        self.start = start  # first frame's index along axis 0
        self.frames = frames

    def __len__(self) -> int:
        return int(self.frames.nbytes)


class DatasetSink:
    """Stores whole chunks: filtered by bgio and written direct, or through h5py when it must."""

    kind = None
    nonblocking = False
    write_many = None

    def __init__(self, dataset: h5py.Dataset, pipeline: ChunkPipeline | None,
                 own_file: h5py.File | None) -> None:
        self.dataset = dataset
        self.pipeline = pipeline
        self.chunk_frames = dataset.chunks[0] if dataset.chunks else 0  # 0: contiguous
        self.extent: int | None = None  # read in the worker, when the write's turn comes
        self.target: object = dataset
        # One queue per dataset, whichever h5py object names it.
        self.key: object = ("h5", dataset.file.id.fileno, dataset.name)
        self.name = f"{dataset.file.filename}:{dataset.name}"
        self.waiter: Waiter | None = None  # the lane's, given when the worker takes the sink
        self.missing: list[int] = []  # slots never written, recorded as an attribute on close
        self.dropped: tuple[int, list[tuple[int, int]]] | None = None  # (see drops)
        self.raw = raw_form(dataset)
        self.keys: Keys | None = None  # live files: the key dataset that announces frames
        self.finished: h5py.Dataset | None = None  # live files: the flag close() sets, if it does
        self._own_file = own_file
        #: Free space, checked before each store (set by the writer; None: not watched).
        self.space: SpaceWatch | None = None
        # Slots below the extent not stored (yet): the extent grows before a store, and a
        # store that fails (or never runs, after a failure) leaves its slots here. At close
        # the slots at the end are cut off and the others recorded as missing.
        self._unstored = Gaps()
        self._failed_store: DiskFull | None = None  # a store's ENOSPC: see _trim
        self._failed_in_hdf5 = False  # a store raised inside HDF5: the extent is left

    @property
    def frames_stored(self) -> int:
        """Frames stored in the dataset so far (slots below its extent that hold data)."""
        extent = self.extent or 0
        return extent - len(self._unstored) if extent else 0

    def write(self, chunk: Chunk | Slab | Announce) -> int:
        dataset = self.dataset
        if isinstance(chunk, Announce):
            # SWMR: the frames' data reaches the file before the keys that announce them.
            dataset.flush()
            assert self.keys is not None
            self.keys.mark(chunk.frames)
            return len(chunk)
        if self.extent is None:
            self.extent = dataset.shape[0]
        if isinstance(chunk, Slab):
            end = chunk.start + len(chunk.frames)
            self._make_room(chunk.frames.nbytes)
            self._grow(end)
            frames, first = chunk.frames, chunk.start

            def edge() -> None:
                dataset[first : first + len(frames)] = frames  # an edge: h5py filters it

            self._put(edge)
            self._stored(chunk.start, end)
            return len(chunk)
        start = chunk.index * self.chunk_frames
        await_encoded(chunk.encoded, self.waiter)
        data, mask = encode_chunk(self.pipeline, chunk.frames, chunk.encoded,
                                  self.raw if chunk.raw else None)
        self._make_room(chunk.frames.nbytes if data is None else len(data))
        self._grow(start + chunk.count)
        self._put(lambda: store_chunk(dataset, start, chunk.frames, chunk.count, data, mask))
        self._stored(start, start + chunk.count)
        return len(chunk)

    def _put(self, store: Callable[[], None]) -> None:
        """Run one store into HDF5: if it fails, HDF5 may be left unsure of the dataset
        (see :meth:`_trim`), and a full disk becomes :class:`bgio.DiskFull`."""
        try:
            store()
        except BaseException as exc:
            self._failed_in_hdf5 = True
            full = self._full(exc) if isinstance(exc, OSError) else None
            if full is None:
                raise
            raise full from exc

    def _make_room(self, nbytes: int) -> None:
        """Before a store of ``nbytes``: stop if it would leave less than ``min_free``."""
        if self.space is not None:
            self.space.check(nbytes, self.frames_stored)

    def _stored(self, start: int, end: int) -> None:
        unstored = self._unstored
        if unstored:
            for index in range(start, end):
                unstored.discard(index)

    def _full(self, error: OSError) -> DiskFull | None:
        """A store failed: the :class:`bgio.DiskFull` a full disk becomes (the dataset is
        then trimmed at close to what HDF5 kept), or None for other errors."""
        space = self.space
        full = None if space is None else space.failed(
            error, self.frames_stored, "the dataset is cut back to the frames HDF5 kept, "
            "which this error's stored counts once the file is closed")
        if full is not None:
            self._failed_store = full
        return full

    def _grow(self, end: int) -> None:
        assert self.extent is not None
        if end > self.extent:
            # HDF5's own call, as Dataset.resize makes it, without that method's
            # checks and shape reads: it runs once per chunk, on the worker's
            # critical path when chunks compress fast.
            dataset_id = self.dataset.id
            dataset_id.set_extent((end, *dataset_id.shape[1:]))
            self._unstored.add(self.extent, end)  # (until their store is done)
            self.extent = end

    def flush(self) -> None:
        """Chunks are stored as they are written; nothing waits in this process."""

    def sync(self) -> None:
        """Flush HDF5's buffers to the file, then the file to the disk."""
        sync_file(self.dataset.file)

    def _trim(self) -> None:
        """At close, when slots below the extent hold no data (their stores failed, or
        never ran after a failure).

        After a clean stop (the disk-space watch, a chunk that failed to
        encode, a cancel): those at the end are cut off, the others recorded
        as missing. After a store that failed inside HDF5 on a full disk:
        cut back to the frames stored, checking the chunk before (HDF5 may
        drop it when a dataset shrinks after a failed write; then that
        frame goes too, logged); nothing new is written to a full disk.
        After other failures inside HDF5 (a file size limit): left as they
        are, for :func:`bgio.h5.recover`.
        """
        extent = self.extent
        if extent is None:
            return
        unstored = self._unstored
        dataset_id = self.dataset.id
        kept = unstored.tail_start(extent)
        if self._failed_store is not None and self.chunk_frames:
            while kept > 0:
                first = (kept - 1) // self.chunk_frames * self.chunk_frames
                dataset_id.set_extent((kept, *dataset_id.shape[1:]))
                where = (first,) + (0,) * (len(dataset_id.shape) - 1)
                if dataset_id.get_chunk_info_by_coord(where).byte_offset is not None:
                    break
                kept = unstored.tail_start(first)
        elif self._failed_in_hdf5:
            return
        stored = self.frames_stored
        if kept != extent:
            dataset_id.set_extent((kept, *dataset_id.shape[1:]))
            unstored.truncate(kept)
            self.extent = kept
        if unstored:
            self.missing = sorted(set(self.missing).union(unstored.indices()))
        full = self._failed_store
        if full is not None:
            if self.frames_stored != stored:
                logger.warning("bgio: %s: HDF5 lost %d frame(s) stored before the disk "
                               "filled; the dataset holds %d", self.name,
                               stored - self.frames_stored, self.frames_stored)
            full.stored = self.frames_stored  # (the error's count: what the file holds)

    def close(self) -> None:
        try:
            if self._unstored:
                self._trim()
            records = self.missing or self.dropped is not None
            if records and self._failed_in_hdf5:
                # A write failed inside HDF5 (a full disk, a size limit): a new dataset
                # or attribute would fail too, half made, and HDF5 would raise again in
                # destructors. The file keeps what it has; the log says what is not in it.
                logger.warning("bgio: %s: not recorded in the file after its write failed: "
                               "%d missing slot(s), dropped frames %s", self.name,
                               len(self.missing),
                               None if self.dropped is None else self.dropped[0])
            else:
                if self.missing:
                    set_missing(self.dataset, self.missing)
                if self.dropped is not None:
                    set_dropped(self.dataset, *self.dropped)
            if self.finished is not None:
                self.dataset.flush()
                set_finished(self.finished)
            self.dataset.file.flush()
        finally:
            if self._own_file is not None:
                self._own_file.close()


