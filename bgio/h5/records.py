"""``RecordWriter``: per-frame events stored in frame order, whatever order the frames come in.

A group holds one dataset per feature (axis 0: events), an ``index``
dataset (the frame of each event) and an ``nevents`` dataset (events per
frame). The events of frame ``f`` are rows ``offset[f]`` to
``offset[f] + nevents[f]`` of every feature dataset, where ``offset`` is the
running sum of ``nevents``.

Frames are put in order in the caller's threads (frames that come early
wait, by reference, for the missing ones), their events copied into the
open chunk of every column, and whole chunks go to the worker, which
filters them outside h5py's lock and stores them, the ``nevents`` rows that
announce the frames last.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..handle import BackgroundWriteProcess, finish_all, raise_root_error
from ..priority import resolve_priority, validate_chunk_size
from ..room import wait_for_room
from ..timeouts import check_timeout
from .base import H5Writer, check_on_missing, open_target
from .filters import encoding_pool
from .layout import (
    CHUNK_BYTES,
    check_count,
    check_dtype,
    check_lossless,
    check_shape,
    from_values,
)
from .live import (
    DEFAULT_FLUSH_INTERVAL,
    Announce,
    check_finished,
    check_flush_options,
    check_live,
    create_finished,
    create_keys,
)
from .record_sink import NEVENTS_CHUNK, Column, RecordBlock, RecordSink

if TYPE_CHECKING:
    from ..api import PriorityLike

__all__ = ["NEVENTS_CHUNK", "RecordWriter", "default_chunk_events"]

#: Bytes of the ``index`` dataset per event (int64).
_INDEX_BYTES = 8


def default_chunk_events(row_bytes: list[int]) -> int:
    """Events per chunk for columns whose rows (one event) take ``row_bytes`` each.

    Every column of a group shares one chunk length, so their chunks fill in
    step: about 1 MiB (:data:`bgio.h5.layout.CHUNK_BYTES`) for the widest.

    Examples
    --------
    >>> default_chunk_events([4, 4, 8])
    131072
    >>> default_chunk_events([4 * 64 * 64])
    64
    """
    return max(1, CHUNK_BYTES // max(row_bytes, default=1))


class _OpenChunk:
    """The chunk being filled (one buffer per column), and the frames it will announce."""

    __slots__ = ("fill", "frames", "index", "raw", "rows")

    def __init__(self, index: int, columns: list[Column], length: int) -> None:
        self.index = index
        self.rows = [np.zeros((length, *column.shape), column.dtype) for column in columns]
        self.fill = 0  # rows filled so far
        self.raw = False  # announced before complete (live files): stored unfiltered
        # Frames whose last event is in this chunk (or which have none), not
        # yet announced: (events, handle) in frame order.
        self.frames: list[tuple[int, BackgroundWriteProcess]] = []


class RecordWriter(H5Writer):
    """Store per-frame events (records) in frame order, from frames that arrive in any order.

    Each frame has any number of events (zero included); each event has a
    value for every feature. The group gets one dataset per feature, of
    shape ``(events, *feature_shape)``; an ``index`` dataset (int64, the
    frame of each event); and an ``nevents`` dataset (int64, events per
    frame). The events of frame ``f`` are rows ``offset[f]`` to
    ``offset[f] + nevents[f]`` of every feature dataset, where ``offset`` is
    the running sum of ``nevents`` (``numpy.cumsum``, shifted by one).

    Several threads may call :meth:`append` at once, for frames in any
    order. A frame that comes before the frames ahead of it waits for them
    (by reference: leave its arrays unchanged until its handle is done);
    then its events are copied into the open chunks, which the worker
    stores, filtered outside h5py's lock, when they are full, at
    :meth:`flush` and at :meth:`close`. Memory is bounded: frames that wait
    for a missing one, and chunks not yet stored, take at most
    ``max_pending_bytes``; a producer beyond that blocks (or raises
    :class:`bgio.QueueFull`). The missing frame itself is always let in.

    Parameters
    ----------
    target : path or h5py.File or h5py.Group
        Where the group is created. A path is opened (``"a"``) and closed
        by :meth:`close`.
    group : str
        The group's name in ``target``: created if missing; none of the
        datasets may exist in it yet.
    features : mapping of str to (shape, dtype)
        Each feature's per-event shape (``()`` for a scalar, an int for a
        vector) and dtype, stored exactly.
    compression, compression_opts, shuffle : keyword-only
        As for ``h5py.Group.create_dataset``, for every dataset of the group.
    chunk_events : int or None, keyword-only
        Events per chunk, the same for every feature; None chooses about
        1 MiB for the widest (see :func:`default_chunk_events`).
    priority : int 1..10 or bgio.BackgroundIOPriority, keyword-only, default 4
        Pacing of the filtering and storing.
    max_pending_bytes : int or None, keyword-only, default 64 MiB
        Bound on the bytes of events accepted and not yet stored; None for
        no bound.
    index_name, nevents_name : str, keyword-only
        Names of the ``index`` and ``nevents`` datasets.
    on_missing : {"warn", "raise", "ignore"}, keyword-only
        What :meth:`close` does about frames below the last one appended
        that never came: they are stored with no events, listed in
        :attr:`missing` and in the ``missing_frames`` attribute of
        ``nevents``; "warn" also warns, "raise" raises ``ValueError``
        (after closing).
    swmr, flush_interval, flush_every : keyword-only
        Write a live file, as for :class:`bgio.h5.FrameWriter`: a frame is
        announced once its events and its ``nevents`` row are stored.
    keys : str, keyword-only, default "keys"
        With ``swmr``: the key dataset's name, in the group (one key per frame).
    finished : str, keyword-only, default "finished"
        With ``swmr``: the finished flag's name, beside the group.

    Attributes
    ----------
    missing : list of int
        After :meth:`close`: the frames below the last one appended that
        never came (also the ``missing_frames`` attribute of ``nevents``).

    Examples
    --------
    >>> import bgio.h5, numpy as np, tempfile, os, h5py
    >>> path = os.path.join(tempfile.mkdtemp(), "events.h5")
    >>> features = {"area": ((), "f4"), "centroid": ((2,), "f4")}
    >>> with bgio.h5.RecordWriter(path, "events", features) as w:
    ...     _ = w.append(1, {"area": [5.0], "centroid": [[3, 4]]})  # early: waits for 0
    ...     _ = w.append(0, {"area": [1.0, 2.0], "centroid": [[0, 1], [1, 2]]})
    ...     _ = w.append(2, {})  # no events
    >>> with h5py.File(path) as f:
    ...     f["events/nevents"][:].tolist(), f["events/index"][:].tolist(), f["events/area"][:].tolist()
    ([2, 1, 0], [0, 0, 1], [1.0, 2.0, 5.0])
    """

    _what = "records"

    def __init__(
        self,
        target: str | os.PathLike[str] | h5py.File | h5py.Group,
        group: str,
        features: Mapping[str, tuple[object, object]],
        *,
        compression: str | int | None = None,
        compression_opts: object = None,
        shuffle: bool = False,
        chunk_events: int | None = None,
        priority: PriorityLike = 4,
        max_pending_bytes: int | None = 64 * 1024 * 1024,
        index_name: str = "index",
        nevents_name: str = "nevents",
        on_missing: str = "warn",
        swmr: bool = False,
        flush_interval: float | None = DEFAULT_FLUSH_INTERVAL,
        flush_every: int | None = None,
        keys: str = "keys",
        finished: str = "finished",
    ) -> None:
        on_missing = check_on_missing(on_missing)
        if not isinstance(group, str) or not group:
            raise TypeError(f"group must be a non-empty str, got {group!r}")
        for label, value in (("index_name", index_name), ("nevents_name", nevents_name),
                             ("keys", keys), ("finished", finished)):
            if not isinstance(value, str) or not value or "/" in value:
                raise ValueError(f"{label} must be a dataset name, got {value!r}")
        if len({index_name, nevents_name, keys}) < 3:
            raise ValueError(f"index_name, nevents_name and keys must differ, got "
                             f"{index_name!r}, {nevents_name!r} and {keys!r}")
        if not isinstance(swmr, bool):
            raise TypeError(f"swmr must be True or False, got {swmr!r}")
        if swmr:
            flush_interval, flush_every = check_flush_options(flush_interval, flush_every)
        layouts = _check_features(features, (index_name, nevents_name, keys))
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        if chunk_events is None:
            chunk_events = default_chunk_events(
                [math.prod(shape) * dtype.itemsize for shape, dtype in layouts.values()]
                + [_INDEX_BYTES])
        else:
            chunk_events = check_count(chunk_events, "chunk_events")
        profile = resolve_priority(priority)
        parent, own_file = open_target(target, swmr)
        options = {"compression": compression, "compression_opts": compression_opts,
                   "shuffle": shuffle}
        key_dataset = finished_flag = None
        try:
            if swmr:
                check_live(parent)
            existing = parent.get(group)
            if existing is not None:
                names = (*layouts, index_name, nevents_name, *((keys,) if swmr else ()))
                taken = [name for name in names if name in existing]
                if taken:
                    raise ValueError(f"group: {existing.name!r} already has {taken}")
            if swmr:
                folder = posixpath.dirname(group)
                check_finished(parent.get(folder) if folder else parent, finished)
            where = parent.require_group(group)
            columns = [
                Column(name, where.create_dataset(
                    name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                    chunks=(chunk_events, *shape), **options))
                for name, (shape, dtype) in layouts.items()
            ]
            columns.append(Column(index_name, where.create_dataset(
                index_name, shape=(0,), maxshape=(None,), dtype=np.int64,
                chunks=(chunk_events,), **options)))
            nevents = where.create_dataset(
                nevents_name, shape=(0,), maxshape=(None,), dtype=np.int64,
                chunks=(NEVENTS_CHUNK,), **options)
            if swmr:
                key_dataset = create_keys(where, keys)
                finished_flag = create_finished(where.parent, finished)
        except BaseException:
            if own_file is not None:
                own_file.close()
            raise
        self._group = where
        self._columns = columns
        self._features = layouts
        self._chunk_events = chunk_events
        self._row_bytes = sum(column.row_bytes for column in columns)
        sink = RecordSink(where, columns, nevents, own_file)
        self._announced = 0  # live: frames below this have their keys set (or queued)
        self._pool = encoding_pool(profile)
        self._bound = max_pending_bytes
        self._next = 0  # the next frame to put in order
        self._held: dict[int, tuple[dict[str, np.ndarray], int, int, BackgroundWriteProcess]] = {}
        self._held_bytes = 0
        self._queued_bytes = 0  # in stores not yet done
        self._events = 0  # events put in order
        self._open = _OpenChunk(0, columns, chunk_events)
        self._start(sink, profile, on_missing, swmr, key_dataset, finished_flag, flush_interval,
                    flush_every)

    @property
    def group(self) -> h5py.Group:
        """The group being written (set attributes on it, or on its datasets, as usual)."""
        return self._group

    @property
    def frames_written(self) -> int:
        """Frames put in order so far (not counting those waiting for a missing one)."""
        return self._next

    @property
    def events_written(self) -> int:
        """Events of the frames put in order so far."""
        return self._events

    @property
    def pending_bytes(self) -> int:
        """Bytes of events accepted and not yet stored (waiting frames and queued chunks)."""
        return self._held_bytes + self._queued_bytes

    def append(self, frame_index: int, events: Mapping[str, object], *, block: bool = True,
               timeout: float | None = None) -> BackgroundWriteProcess:
        """Accept the events of frame ``frame_index``; return a handle at once.

        Parameters
        ----------
        frame_index : int
            The frame's number, from 0; each frame is appended once.
        events : mapping of str to array-like
            For every feature, an array of shape ``(n, *feature_shape)``, the
            same ``n >= 0`` for all; an empty mapping means no events.
        block : bool, keyword-only, default True
            With no room under ``max_pending_bytes``: wait (True) or raise
            :class:`bgio.QueueFull` at once (False). A producer that must
            itself provide the missing frame should not block forever.
        timeout : float or None, keyword-only
            Seconds to wait for room at most; then :class:`bgio.QueueFull`.

        Returns
        -------
        bgio.BackgroundWriteProcess
            Done when the frame's events and its ``nevents`` row are in the
            file; it raises the error of the store if that failed. Events
            accepted are stored: cancelling the handle does not take them back.

        Raises
        ------
        TypeError
            A non-integer index, a non-mapping, or a dtype that would lose values.
        ValueError
            A negative or repeated index, missing or unknown features, shapes
            or event counts that do not match, or the writer is closed.
        bgio.QueueFull
            No room (``block=False``, or after ``timeout``); nothing was accepted.
        """
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)):
            raise TypeError(f"frame_index must be an int, got {type(frame_index).__name__}")
        frame_index = int(frame_index)
        if frame_index < 0:
            raise ValueError(f"frame_index must be >= 0, got {frame_index}")
        timeout = check_timeout(timeout)
        arrays, count = self._check_events(events)
        size = count * self._row_bytes
        handle = _frame_handle(size)
        with self._lock:
            self._check_open(frame_index)
            if not self._has_room(frame_index, size):
                wait_for_room(self._room,
                              lambda: self._closed or self._has_room(frame_index, size), block,
                              timeout, lambda: self.pending_bytes, self._bound,
                              f"frame {frame_index} ({size} bytes)")
                self._check_open(frame_index)  # closed, or appended by another thread meanwhile
            self._ensure_swmr(self._group)
            if frame_index != self._next:
                self._held[frame_index] = (arrays, count, size, handle)
                self._held_bytes += size
                return handle
            before = self._next
            self._put(arrays, count, handle)
            self._release_held()
            # The next frame changed: a producer waiting with it may go in now.
            self._room.notify_all()
            if self._swmr and self._announcer.accepted(self._next - before):
                self._announce()
        return handle

    def _announce(self) -> None:
        """Live files: store the open chunks as they stand, then set the keys of the
        frames put in order since the last time (lock held)."""
        self._announcer.announced()
        if self._next == self._announced:
            return
        if self._open.fill or self._open.frames:
            self._store_open(copy=True)
        self._submit_announce()

    def _submit_announce(self) -> None:
        self._submit_block(Announce(range(self._announced, self._next)))
        self._announced = self._next

    def _check_open(self, frame_index: int) -> None:
        if self._closed:
            raise ValueError("append to a closed RecordWriter")
        if frame_index < self._next or frame_index in self._held:
            raise ValueError(f"frame_index: frame {frame_index} was already appended")

    def _has_room(self, frame_index: int, size: int) -> bool:
        bound = self._bound
        if bound is None:
            return True
        if frame_index == self._next:
            # The frame the others wait for: only stores still queued hold it back.
            return self._queued_bytes == 0 or self._queued_bytes + size <= bound
        pending = self._held_bytes + self._queued_bytes
        return pending == 0 or pending + size <= bound

    def _check_events(self, events: object) -> tuple[dict[str, np.ndarray], int]:
        if not isinstance(events, Mapping):
            raise TypeError(f"events must be a mapping of feature name to array, got "
                            f"{type(events).__name__}")
        if not events:
            return {}, 0
        unknown = [name for name in events if name not in self._features]
        missing = [name for name in self._features if name not in events]
        if unknown or missing:
            raise ValueError(f"events: missing features {missing}, unknown features {unknown}")
        arrays: dict[str, np.ndarray] = {}
        count = None
        for name, (shape, dtype) in self._features.items():
            label = f"events[{name!r}]"
            value = events[name]
            if isinstance(value, np.ndarray):
                array = value
                check_lossless(array.dtype, dtype, label)
            else:
                array = from_values(value, dtype, label)
            if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
                raise ValueError(f"{label}: expected shape (n, *{shape}), got {array.shape}")
            if count is None:
                count = len(array)
            elif len(array) != count:
                first = next(iter(arrays))
                raise ValueError(f"events: every feature needs the same number of events; "
                                 f"{first!r} has {count}, {name!r} has {len(array)}")
            arrays[name] = array
        assert count is not None
        return arrays, count

    def _put(self, arrays: dict[str, np.ndarray], count: int, handle: BackgroundWriteProcess) -> None:
        """Copy frame ``self._next``'s events into the open chunks, storing each one filled."""
        frame = self._next
        length = self._chunk_events
        done = 0
        while done < count:
            chunk = self._open
            take = min(length - chunk.fill, count - done)
            into = slice(chunk.fill, chunk.fill + take)
            *feature_rows, index_rows = chunk.rows
            for column, rows in zip(self._columns, feature_rows, strict=False):
                rows[into] = arrays[column.name][done : done + take]
            index_rows[into] = frame
            chunk.fill += take
            done += take
            if chunk.fill == length and done < count:
                self._store_open()  # the frame goes on in the next chunk
        self._open.frames.append((count, handle))
        if self._open.fill == length:
            self._store_open()
        self._next = frame + 1
        self._events += count

    def _release_held(self) -> None:
        """Put the frames that waited for the one just put, as far as they run in order."""
        held = self._held
        freed = False
        while self._next in held:
            arrays, count, size, handle = held.pop(self._next)
            self._held_bytes -= size
            self._put(arrays, count, handle)
            freed = True
        if freed:
            self._room.notify_all()

    def _store_open(self, copy: bool = False) -> None:
        """Queue the open chunk's rows and the frames it announces.

        A full chunk is done with and a new one opened. A partial one goes
        on filling and is stored again when full: what is queued now is a
        copy of it (``copy``), unless nothing will be added (closing).
        """
        chunk = self._open
        if chunk.fill == self._chunk_events:
            rows = chunk.rows
            self._open = _OpenChunk(chunk.index + 1, self._columns, self._chunk_events)
        elif copy:
            rows = [array.copy() for array in chunk.rows]
        else:
            rows = chunk.rows
        announced, chunk.frames = chunk.frames, []
        if copy and self._swmr:
            # Announced before it is complete: unfiltered from now on, so each
            # store rewrites it in place (SWMR never reuses file space).
            chunk.raw = True
        encoded: list[Future[bytes] | None] = [None] * len(rows)
        if self._pool is not None and chunk.fill and not chunk.raw:
            encoded = [self._pool.submit(column.pipeline.encode, array)
                       if column.pipeline is not None and column.pipeline.compresses else None
                       for column, array in zip(self._columns, rows, strict=True)]
        block = RecordBlock(chunk.index, rows, chunk.fill, [count for count, _ in announced],
                            self._row_bytes, encoded, chunk.raw)
        size = len(block)
        self._queued_bytes += size
        handles = [handle for _, handle in announced]
        self._submit_block(block, on_done=lambda done: self._stored(done, size, handles))

    def _stored(self, store: BackgroundWriteProcess, size: int,
                handles: list[BackgroundWriteProcess]) -> None:
        """A store is done: free its room and settle the frames it announced."""
        with self._lock:
            self._queued_bytes -= size
            self._room.notify_all()
        error = store.exception() if not store.cancelled() else None
        if error is None:
            for handle in handles:
                handle.bytes_written = handle.total_bytes or 0
            finish_all(handles)
        else:
            for handle in handles:
                handle.set_exception(error)

    def flush(self, timeout: float | None = None) -> None:
        """Store every frame put in order so far (a partial chunk too) and flush the file.

        Frames waiting for a missing one stay waiting.

        Raises
        ------
        TimeoutError
            If the stores are not done after ``timeout`` seconds.
        Exception
            The first error of the background stores.
        """
        check_timeout(timeout)
        with self._lock:
            if self._swmr and not self._closed:
                self._announce()  # stores the open chunks too
            elif not self._closed and (self._open.fill or self._open.frames):
                self._store_open(copy=True)
            last = self._last
        if last is not None:
            if not last.wait(timeout):
                raise TimeoutError(f"records not stored after {timeout} s")
            raise_root_error(last)
        self._group.file.flush()

    def _store_rest(self) -> None:
        """Closing: frames that never came get no events; everything held is stored."""
        end = max(self._held, default=-1) + 1
        while self._next < end:
            if self._next not in self._held:
                self.missing.append(self._next)
                self._put({}, 0, _frame_handle(0))
            self._release_held()
        if self._open.fill or self._open.frames:
            self._store_open()
        if self._swmr and self._next > self._announced:
            self._submit_announce()

    def _missing_message(self) -> str:
        return (f"{len(self.missing)} frame(s) of {self._next} never appended "
                f"(first: {self.missing[:10]}); stored with no events")


def _frame_handle(size: int) -> BackgroundWriteProcess:
    """A frame's handle: running from the start, as accepted events are stored whatever
    happens to the handle (it is settled by the store that announces the frame)."""
    handle = BackgroundWriteProcess(size)
    handle.set_running_or_notify_cancel()
    return handle


def _check_features(features: object,
                    reserved: tuple[str, str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``features`` as {name: (shape, dtype)}, checked in the caller."""
    if not isinstance(features, Mapping) or not features:
        raise TypeError(f"features must be a non-empty mapping of name to (shape, dtype), "
                        f"got {features!r}")
    layouts = {}
    for name, spec in features.items():
        if not isinstance(name, str) or not name or "/" in name or name == ".":
            raise ValueError(f"features: {name!r} is not a dataset name")
        if name in reserved:
            raise ValueError(f"features: {name!r} is the name of the index, nevents or keys dataset")
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise TypeError(f"features[{name!r}] must be a (shape, dtype) tuple, got {spec!r}")
        shape, dtype = spec
        layouts[name] = (check_shape(shape, f"features[{name!r}] shape"),
                         check_dtype(dtype, f"features[{name!r}] dtype"))
    return layouts
