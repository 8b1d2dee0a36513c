"""``bgio.h5.read``: a dataset (or a slab of it) read in the background, chunk by chunk.

h5py holds its lock for the whole of a call: ``dataset[...]`` of a gigabyte
of gzip frames holds it for seconds, and every h5py call the program makes
meanwhile, on any file, waits. Here each chunk is one short call: its
stored bytes are taken with ``read_direct_chunk`` and decoded outside the
lock (zlib releases the interpreter lock as it inflates; the byte shuffle
is a numpy transpose), then copied into place. A chunk never written reads
as the fill value. Filters bgio does not decode itself (the plugin codecs,
Fletcher-32, scale-offset, szip, lzf) and unchunked datasets are read
through h5py one chunk (or one slab of about a chunk's size) per call.

Pacing is the profile's, as for :func:`bgio.bgread`: the busy share, the
rate cap and the I/O priority of the reading thread.
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from .. import ioprio
from ..priority import PriorityLike, resolve_priority
from ..reads import BackgroundRead, ChunkTimer, pause_cancellably
from ..throttle import Throttle
from .filters import DEFLATE, SHUFFLE

__all__ = ["read"]

logger = logging.getLogger("bgio")

#: The filters decoded here; a dataset with any other is read through h5py.
DECODED = frozenset({DEFLATE, SHUFFLE})

Box = tuple[tuple[int, int], ...]  # (start, stop) per axis


def _selection(selection: object, shape: tuple[int, ...]) -> tuple[Box, tuple[int, ...]]:
    """The box ``selection`` picks, and the shape of the result (an int drops its axis).

    Raises
    ------
    TypeError, ValueError
        For a selection that is not slices (step 1) and ints within the shape.
    """
    if selection is None:
        items: tuple[object, ...] = ()
    elif isinstance(selection, tuple):
        items = selection
    else:
        items = (selection,)
    if any(item is Ellipsis for item in items):
        if sum(item is Ellipsis for item in items) > 1:
            raise ValueError("selection: an index can only have a single ellipsis ('...')")
        at = next(index for index, item in enumerate(items) if item is Ellipsis)
        fill = (slice(None),) * max(0, len(shape) - len(items) + 1)
        items = (*items[:at], *fill, *items[at + 1:])
    if len(items) > len(shape):
        raise ValueError(f"selection: {len(items)} indices for a dataset of {len(shape)} "
                         f"dimensions")
    box: list[tuple[int, int]] = []
    out_shape: list[int] = []
    for axis, size in enumerate(shape):
        item = items[axis] if axis < len(items) else slice(None)
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            if step != 1:
                raise ValueError(f"selection: axis {axis} has step {item.step}; bgio reads "
                                 f"slabs (step 1): read the slab and take every n-th after")
            stop = max(start, stop)
            box.append((start, stop))
            out_shape.append(stop - start)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item) + (size if int(item) < 0 else 0)
            if not 0 <= index < size:
                raise ValueError(f"selection: index {int(item)} is out of range for axis "
                                 f"{axis} of size {size}")
            box.append((index, index + 1))
        else:
            raise TypeError(f"selection: expected slices and ints (or None for all), got "
                            f"{type(item).__name__} for axis {axis}")
    return tuple(box), tuple(out_shape)


def read(
    dataset: h5py.Dataset,
    selection: object = None,
    *,
    into: np.ndarray | None = None,
    priority: PriorityLike = 4,
) -> BackgroundRead:
    """Read ``dataset[selection]`` in the background, a chunk per h5py call; return a
    handle at once.

    Parameters
    ----------
    dataset : h5py.Dataset
        An open dataset. Keep its file open until the read is done.
    selection : slice, int, tuple of those, or None
        What to read, as with ``dataset[selection]`` (slices of step 1; an
        int drops its axis); None for all of it.
    into : numpy.ndarray, optional
        Where to put it: C-contiguous, writable, of the dataset's dtype and
        the selection's shape. A new array by default.
    priority : int 1..10 or bgio.BackgroundIOPriority, default 4
        The pacing profile (busy share, ``max_rate``, I/O priority).

    Returns
    -------
    bgio.BackgroundRead
        Its ``result()`` is the array read, or, with ``into``, the number of
        bytes read into it; ``bytes_read`` counts the decoded bytes.

    Raises
    ------
    TypeError
        If ``dataset`` is not an h5py dataset, or ``selection`` or ``into`` is
        of the wrong kind.
    ValueError
        If the dataset is closed, the selection is out of range or strided,
        or ``into`` has the wrong shape or dtype, or is not writable and
        C-contiguous.

    Examples
    --------
    >>> import bgio.h5, h5py, numpy as np, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.h5")
    >>> with h5py.File(path, "w") as file:
    ...     _ = file.create_dataset("x", data=np.arange(24).reshape(6, 4), chunks=(2, 4),
    ...                             compression="gzip", shuffle=True)
    >>> with h5py.File(path, "r") as file:
    ...     bgio.h5.read(file["x"], np.s_[1:4]).result()
    array([[ 4,  5,  6,  7],
           [ 8,  9, 10, 11],
           [12, 13, 14, 15]])
    """
    if not isinstance(dataset, h5py.Dataset):
        raise TypeError(f"dataset: expected an h5py.Dataset, got {type(dataset).__qualname__}")
    if not dataset.id.valid:
        raise ValueError("dataset: the dataset (or its file) is closed")
    if dataset.dtype.hasobject or dataset.dtype.subdtype is not None:
        raise TypeError(f"dataset: {dataset.name} holds {dataset.dtype} items (variable "
                        f"length or subarrays); bgio.h5.read reads fixed-size items: read "
                        f"it with h5py")
    profile = resolve_priority(priority)
    box, out_shape = _selection(selection, dataset.shape)
    if into is None:
        target = np.empty(out_shape, dataset.dtype)
    else:
        if not isinstance(into, np.ndarray):
            raise TypeError(f"into: expected a numpy array, got {type(into).__qualname__}")
        if into.shape != out_shape or into.dtype != dataset.dtype:
            raise ValueError(f"into: expected shape {out_shape} and dtype {dataset.dtype}, "
                             f"got {into.shape} {into.dtype}")
        if not (into.flags.c_contiguous and into.flags.writeable):
            raise ValueError("into: the array must be C-contiguous and writable")
        target = into
    handle = BackgroundRead(int(target.nbytes))
    ioprio.load()  # here, not in the new thread (see bgio.ioprio.load)
    thread = threading.Thread(target=_run, args=(handle, dataset, box, target, into is None,
                                                 profile), name="bgio-h5-read", daemon=True)
    thread.start()
    return handle


def _pieces(dataset: h5py.Dataset, box: Box) -> Iterator[Box]:
    """The chunk boxes (clipped to the dataset) that meet ``box``, in storage order;
    an unchunked dataset's in slabs along the first axis of about a megabyte."""
    shape = dataset.shape
    chunks = dataset.chunks
    if chunks is None:
        row = max(1, math.prod(shape[1:]) * dataset.dtype.itemsize)
        step = max(1, (1 << 20) // row)
        chunks = (step, *shape[1:]) if shape else ()
    if any(start >= stop for start, stop in box):
        return
    ranges = [range(start // size * size, stop, size)
              for (start, stop), size in zip(box, chunks)]

    def walk(axis: int, prefix: tuple[tuple[int, int], ...]) -> Iterator[Box]:
        if axis == len(ranges):
            yield prefix
            return
        size = chunks[axis]
        for origin in ranges[axis]:
            yield from walk(axis + 1, (*prefix, (origin, min(origin + size, shape[axis]))))

    yield from walk(0, ())


class _Decoder:
    """Turns a chunk's stored bytes into its array, undoing the filters in reverse."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.steps: list[int] | None = []
        self.chunks = dataset.chunks
        self.dtype = dataset.dtype
        self.fill = dataset.fillvalue
        if self.chunks is None:
            self.steps = None
            return
        plist = dataset.id.get_create_plist()
        for index in range(plist.get_nfilters()):
            filter_id = int(plist.get_filter(index)[0])
            if filter_id not in DECODED:
                self.steps = None  # (read through h5py)
                return
            self.steps.append(filter_id)

    def place(self, raw: bytes, mask: int, into: np.ndarray, inner: tuple[slice, ...]) -> None:
        """Decode a chunk's stored bytes and put its part ``inner`` (slices of the chunk)
        in ``into``, undoing the filters in reverse; the byte shuffle is undone in the
        very copy into place (one pass over the chunk, not two)."""
        assert self.steps is not None and self.chunks is not None
        data: Any = raw
        shuffled = False
        for index in reversed(range(len(self.steps))):
            if mask & (1 << index):  # (this filter was skipped for this chunk)
                continue
            if shuffled:  # (a shuffle before another filter: undone now)
                data = self._unshuffled(data)
                shuffled = False
            if self.steps[index] == DEFLATE:
                data = zlib.decompress(data)
            else:
                shuffled = self.dtype.itemsize > 1
        if not shuffled:
            into[...] = np.frombuffer(data, self.dtype).reshape(self.chunks)[inner]
            return
        # Plane k holds byte k of every element: copied to byte k of each element, a
        # plane at a time (a copy whose inner loop runs over the itemsize is 6x slower).
        planes = np.frombuffer(data, np.uint8).reshape(self.dtype.itemsize, *self.chunks)
        places = into[..., np.newaxis].view(np.uint8)
        for byte in range(self.dtype.itemsize):
            places[..., byte] = planes[byte][inner]

    def _unshuffled(self, data: bytes) -> bytes:
        # (Bytes past the last whole element, as a shuffle of compressed bytes leaves,
        # were not shuffled.)
        itemsize = self.dtype.itemsize
        count = len(data) // itemsize
        raw = np.frombuffer(data, np.uint8)
        planes = raw[: count * itemsize].reshape(itemsize, count)
        elements = np.empty((count, itemsize), np.uint8)
        for byte in range(itemsize):
            elements[:, byte] = planes[byte]
        return elements.tobytes() + raw[count * itemsize :].tobytes()


def _run(handle: BackgroundRead, dataset: h5py.Dataset, box: Box, target: np.ndarray,
         give_array: bool, profile: Any) -> None:
    ioprio.adopt()
    if not handle.set_running_or_notify_cancel():
        return
    wake = threading.Event()
    handle.watch_cancel(wake.set)
    try:
        name = f"{dataset.file.filename}:{dataset.name}"
    except Exception:  # noqa: BLE001 - (a closed file: the read below says so)
        name = "dataset"
    try:
        stopped = _read_pieces(handle, dataset, box, target, profile, wake)
    except BaseException as exc:
        handle.watch_cancel(None)
        logger.error("background read of %s failed after %d bytes", name,
                     handle.bytes_written, exc_info=exc)
        handle.set_exception(exc)
        return
    handle.watch_cancel(None)
    if stopped:
        handle.set_stopped()
        return
    if give_array:
        handle.set_data(target)
    handle.set_result()


def _read_pieces(handle: BackgroundRead, dataset: h5py.Dataset, box: Box,
                 target: np.ndarray, profile: Any, wake: threading.Event) -> bool:
    """The read loop; True if a cancel stopped it."""
    throttle = Throttle(profile)
    ioprio.apply(profile.io_priority)
    decoder = _Decoder(dataset)
    # The target seen with every axis of the box (ints dropped theirs).
    full = target.reshape(tuple(stop - start for start, stop in box))
    timer = ChunkTimer(throttle, handle)
    done = 0
    for piece in _pieces(dataset, box):
        if handle.cancel_requested:
            return True
        pause = throttle.delay()
        if pause and pause_cancellably(wake, handle, throttle, pause):
            return True
        timer.start()
        inner = tuple(slice(max(a, s), min(b, e)) for (a, b), (s, e) in zip(piece, box))
        into = full[tuple(slice(part.start - s, part.stop - s)
                          for part, (s, _) in zip(inner, box))]
        if decoder.steps is None:
            dataset.read_direct(full, source_sel=inner, dest_sel=tuple(
                slice(part.start - s, part.stop - s) for part, (s, _) in zip(inner, box)))
        else:
            origin = tuple(a for a, _ in piece)
            info = dataset.id.get_chunk_info_by_coord(origin)
            if info.byte_offset is None:  # never written: the fill value
                into[...] = decoder.fill
            else:
                # (The mask read_direct_chunk returns is 0 whatever was stored, in h5py
                # 3.x over HDF5 2.0; the chunk's own record has the right one.)
                raw = dataset.id.read_direct_chunk(origin)[1]
                decoder.place(raw, int(info.filter_mask), into,
                              tuple(slice(part.start - a, part.stop - a)
                                    for part, (a, _) in zip(inner, piece)))
        got = int(into.nbytes)
        timer.end(got)
        done += got
        handle.bytes_written = done
        handle.report_progress()
    return False
