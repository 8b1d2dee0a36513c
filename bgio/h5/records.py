"""``RecordWriter``: per-frame events stored in frame order, whatever order the frames come in.

A group holds one dataset per feature (axis 0: events) and, unless left
out or put elsewhere, an ``index`` dataset (the frame of each event) and
an ``nevents`` dataset (events per frame). The events of frame ``f`` are
rows ``offset[f]`` to ``offset[f] + nevents[f]`` of every feature dataset,
where ``offset`` is the running sum of ``nevents``.

Frames are put in order in the caller's threads (frames that come early
wait, by reference, for the missing ones), their events copied into the
open chunk of every column (each column has its own chunk length), and
whole chunks go to the worker, which filters them outside h5py's lock and
stores them; the ``nevents`` rows of frames go with the store after which
every column holds all their events.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import QueueFull
from ..handle import BackgroundWriteProcess, finish_all, raise_root_error
from ..lag import check_max_lag
from ..priority import resolve_priority, validate_chunk_size
from ..process import check_backend
from ..room import wait_for_room
from ..timeouts import check_timeout
from .base import (
    H5Writer,
    check_on_missing,
    check_space,
    check_target_libver,
    open_target,
    watch_space,
)
from .drops import DropCounter, check_on_drop
from .filters import Encoding, encoding_pool
from .layout import (
    check_count,
    check_frame_index,
    check_lossless,
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
from .record_layout import (
    check_bookkeeping_path,
    check_creation_options,
    check_dataset_options,
    check_features,
    chunk_length,
    default_chunk_events,
    merged_options,
    resolve,
)
from .record_sink import (
    LIVE_NEVENTS_CHUNK,
    NEVENTS_CHUNK,
    Column,
    Piece,
    RecordBlock,
    RecordSink,
)
from .sink import check_missing_place, create_missing

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

    from ..api import PriorityLike
    from .producers import RecordProducer

__all__ = ["NEVENTS_CHUNK", "RecordWriter", "default_chunk_events"]


class _OpenChunk:
    """One column's chunk being filled."""

    __slots__ = ("fill", "index", "raw", "rows")

    def __init__(self, index: int, column: Column, length: int) -> None:
        self.index = index  # the chunk's position along axis 0, in chunks
        self.rows = np.zeros((length, *column.shape), column.dtype)
        self.fill = 0  # rows filled so far
        self.raw = False  # announced before complete (live files): stored unfiltered


class RecordWriter(H5Writer):
    """Store per-frame events (records) in frame order, from frames that arrive in any order.

    Each frame has any number of events (zero included); each event has a
    value for every feature. The group gets one dataset per feature, of
    shape ``(events, *feature_shape)``, and two bookkeeping datasets: an
    ``index`` dataset (int64, the frame of each event) and an ``nevents``
    dataset (int64, events per frame). The events of frame ``f`` are rows
    ``offset[f]`` to ``offset[f] + nevents[f]`` of every feature dataset,
    where ``offset`` is the running sum of ``nevents`` (``numpy.cumsum``,
    shifted by one). Either bookkeeping dataset can be renamed, put in
    another group, or left out (``None``), for formats that define the
    group's contents themselves (an ``.rtdc`` file's ``events`` group holds
    features only).

    Several threads may call :meth:`append` at once, for frames in any
    order. A frame that comes before the frames ahead of it waits for them
    (as a copy of its arrays; with ``copy=False`` by reference: leave them
    unchanged until its handle is done); then its events are copied into the open chunks, which
    the worker stores, filtered outside h5py's lock, when they are full, at
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
        datasets may exist yet.
    features : mapping of str to (shape, dtype)
        Each feature's per-event shape (``()`` for a scalar, an int for a
        vector) and dtype, stored exactly (unless ``scaleoffset`` is given
        for a float feature: HDF5's scale-offset filter keeps that many
        decimal digits).
    dataset_options : mapping of str to mapping, keyword-only
        Per feature, keywords of ``h5py.Group.create_dataset`` for its
        dataset: ``compression`` (a name, a filter id, or an hdf5plugin
        filter object), ``compression_opts``, ``shuffle``, ``fletcher32``,
        ``scaleoffset``, ``fillvalue``, ``track_times``, and ``chunks``
        (events per chunk, or a chunk shape of whole events). An hdf5plugin
        filter object can stand for the whole mapping
        (``{"image": hdf5plugin.Zstd(clevel=5)}``). They override the
        defaults below keyword by keyword, except that a feature's own
        ``compression`` drops the default ``compression_opts``. Any other
        keyword, or a feature not in ``features``, is refused here.
    compression, compression_opts, shuffle, fletcher32 : keyword-only
        Defaults for every dataset of the group (the bookkeeping ones
        included), as for ``h5py.Group.create_dataset``.
    chunk_events : int or None, keyword-only
        Events per chunk of every feature (and of ``index``) that does not
        set its own ``chunks``; None (the default) sizes each dataset's
        chunks on its own, about 1 MiB (see :func:`default_chunk_events`).
        With chunks of different lengths a frame's handle is done once the
        last column's chunk holding its events is stored.
    priority : int 1..10 or bgio.BackgroundIOPriority, keyword-only, default 4
        Pacing of the filtering and storing.
    max_pending_bytes : int or None, keyword-only, default 64 MiB
        Bound on the bytes of events accepted and not yet stored (frames
        waiting for a missing one, and queued stores); None for no bound.
        The chunks being filled, one per dataset (a chunk's bytes each,
        about 1 MiB by default), are held beside it whatever the bound.
    max_lag : float or None, keyword-only
        Seconds. While a chunk queued longer ago than this is not yet
        stored, pacing is suspended (filtering and storing go back to back)
        until the writer catches up; then pacing resumes. So a paced writer
        whose producer is faster than its profile falls behind by about
        this much at most, as long as the disk keeps up at full speed. None,
        the default: paced throughout. See :attr:`lag` and the "GUI
        programs" page of the manual.
    max_lag_bytes : int or None, keyword-only
        The same, in bytes: pacing is suspended while more than this is
        queued behind the store in hand (chunks handed to the worker and not
        yet stored). Either or both may be set.
    expected_bytes : int or None, keyword-only
        Bytes of events the run is expected to store (before compression):
        with it the writer refuses to start (:class:`bgio.DiskFull`) when
        the disk has less free than that plus ``min_free``, or, with
        compression (they may still fit), warns.
    min_free : int or None, keyword-only
        Bytes to leave free on the disk (None: 64 MiB, or a twentieth of a
        smaller file system: :func:`bgio.space.default_min_free`): the
        writer refuses to start with less free, and a store that would
        leave less is not made: the writer stops with
        :class:`bgio.DiskFull` (its ``stored`` says how many frames' events
        the file holds, counted by ``nevents``; events without it), later
        stores fail with :class:`bgio.ChainError`, and the file is left
        valid (see :mod:`bgio.space`).
    index_name, nevents_name : str or None, keyword-only
        Where the ``index`` and ``nevents`` datasets go: a name in the
        group (``"index"``, ``"nevents"`` by default), a path below it
        (``"bookkeeping/nevents"``), an absolute path (``"/bgio/nevents"``),
        or None to leave it out. Readers find frames' events by
        ``nevents`` (or, without it, by ``index``); with both left out the
        file holds the events in frame order with no frame boundaries.
        A follower (:func:`bgio.h5.follow_records`) must be told the names
        used.
    copy : bool, keyword-only, default True
        The default of :meth:`append`'s ``copy``: a frame that must wait
        for one before it is kept as a copy of its arrays (True), or by
        reference (False: leave them unchanged until its handle is done).
    on_missing : {"warn", "raise", "ignore"}, keyword-only
        What :meth:`close` does about frames below the last one appended
        that never came: they are stored with no events, listed in
        :attr:`missing` and recorded as ``[start, stop)`` ranges in the
        dataset ``<group>_missing`` beside the group (see
        :func:`bgio.h5.sink.set_missing`); up to 1,024 of them also in the
        ``missing_frames`` attribute of ``nevents`` (of the group without it);
        "warn" also warns, "raise" raises ``ValueError`` (after closing).
    on_drop : {"warn", "raise", "ignore"}, keyword-only
        As for :class:`bgio.h5.FrameWriter`: frames lost (gaps in
        ``append``'s ``frame_id``, frames refused by back-pressure,
        :meth:`add_dropped`) are counted and recorded on the group; "warn"
        warns at :meth:`close`, "raise" fails the next ``append`` and the close.
    swmr, flush_interval, flush_every : keyword-only
        Write a live file, as for :class:`bgio.h5.FrameWriter`: a frame is
        announced once its events and its ``nevents`` row are stored. A
        live group needs ``nevents`` or ``index`` (followers find frames'
        events by them).
    keys : str, keyword-only, default "keys"
        With ``swmr``: where the key dataset goes (one key per frame), as
        for ``index_name``.
    finished : str, keyword-only, default "finished"
        With ``swmr``: the finished flag's name, beside the group.
    libver : str or (str, str) or None, keyword-only
        The format version bounds of a file the writer opens, as for
        :class:`bgio.h5.FrameWriter` (live files: ``("v110", "v110")`` by
        default, read by every HDF5 from 1.10 on).
    backend : {"thread", "process"} or None, keyword-only
        As for :class:`bgio.h5.FrameWriter`: ``"process"`` keeps the file in
        bgio's writer process (``target`` a path).

    Attributes
    ----------
    missing : list of int
        After :meth:`close`: the frames below the last one appended that
        never came (also recorded in the file: see ``on_missing``).

    Raises
    ------
    TypeError
        Bad arguments, among them a ``dataset_options`` keyword that is not
        taken (the message names the feature and the keyword).
    ValueError
        Names that clash or exist already, unknown features in
        ``dataset_options``, chunks that do not hold whole events; and
        whatever h5py refuses (an unknown filter) before any dataset is left
        behind.

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

    def __new__(cls, *args: object, backend: str | None = None, **options: object) -> Self:
        # RecordWriter(..., backend="process") is the writer process's kind (same
        # methods); Python then runs that class's __init__ with the same arguments.
        target = args[0] if args else options.get("target")
        if cls is RecordWriter and check_backend(backend, target) == "process":
            from ..process.h5 import ProcessRecordWriter  # loaded by those who use it

            return object.__new__(ProcessRecordWriter)  # type: ignore[return-value]
        return object.__new__(cls)

    def __init__(
        self,
        target: str | os.PathLike[str] | h5py.File | h5py.Group,
        group: str,
        features: Mapping[str, tuple[object, object]],
        *,
        dataset_options: Mapping[str, Mapping[str, object]] | None = None,
        compression: object = None,
        compression_opts: object = None,
        shuffle: bool = False,
        fletcher32: bool = False,
        chunk_events: int | None = None,
        priority: PriorityLike = 4,
        max_pending_bytes: int | None = 64 * 1024 * 1024,
        index_name: str | None = "index",
        nevents_name: str | None = "nevents",
        copy: bool = True,
        on_missing: str = "warn",
        on_drop: str = "warn",
        swmr: bool = False,
        flush_interval: float | None = DEFAULT_FLUSH_INTERVAL,
        flush_every: int | None = None,
        keys: str = "keys",
        finished: str = "finished",
        libver: str | tuple[str, str] | None = None,
        backend: str | None = None,
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        expected_bytes: int | None = None,
        min_free: int | None = None,
    ) -> None:
        lag = check_max_lag(max_lag, max_lag_bytes)
        on_missing = check_on_missing(on_missing)
        self._drops = DropCounter(check_on_drop(on_drop))
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be True or False, got {copy!r}")
        self._copy = copy
        if not isinstance(group, str) or not group:
            raise TypeError(f"group must be a non-empty str, got {group!r}")
        index_name = check_bookkeeping_path("index_name", index_name)
        nevents_name = check_bookkeeping_path("nevents_name", nevents_name)
        keys = check_bookkeeping_path("keys", keys, optional=False)  # type: ignore[assignment]
        if not isinstance(finished, str) or not finished or "/" in finished:
            raise ValueError(f"finished must be a dataset name, got {finished!r}")
        if not isinstance(swmr, bool):
            raise TypeError(f"swmr must be True or False, got {swmr!r}")
        if swmr:
            flush_interval, flush_every = check_flush_options(flush_interval, flush_every)
            if index_name is None and nevents_name is None:
                raise ValueError("index_name and nevents_name cannot both be None with swmr: "
                                 "followers find each frame's events by one of them")
        for label, flag in (("shuffle", shuffle), ("fletcher32", fletcher32)):
            if not isinstance(flag, bool):
                raise TypeError(f"{label} must be True or False, got {flag!r}")
        layouts = check_features(features)
        check_creation_options({keyword: value for keyword, value in
                                (("compression", compression),
                                 ("compression_opts", compression_opts)) if value is not None},
                               np.dtype(np.int64), "")
        own_options = check_dataset_options(dataset_options, layouts)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        if chunk_events is not None:
            chunk_events = check_count(chunk_events, "chunk_events")
        defaults: dict[str, object] = {"compression": compression,
                                       "compression_opts": compression_opts,
                                       "shuffle": shuffle, "fletcher32": fletcher32}
        lengths = {name: chunk_length(name, shape, math.prod(shape) * dtype.itemsize,
                                      own_options.get(name, {}), chunk_events, swmr)
                   for name, (shape, dtype) in layouts.items()}
        libver = check_target_libver(target, libver, swmr)
        profile = resolve_priority(priority)
        if expected_bytes is not None:
            expected_bytes = check_count(expected_bytes, "expected_bytes")
        compressed = compression is not None or any(
            options.get("compression") is not None for options in own_options.values())
        min_free = check_space(target, expected_bytes, min_free, compressed,
                               f"RecordWriter {group!r}")
        parent, own_file = open_target(target, swmr, libver)
        key_dataset = finished_flag = None
        created: list[str] = []  # removed again if the rest fails
        new_groups: list[str] = []  # likewise
        try:
            if swmr:
                check_live(parent)
            group_path = resolve(parent.name, group)
            bookkeeping = {label: name for label, name in
                           (("index_name", index_name), ("nevents_name", nevents_name),
                            ("keys", keys if swmr else None)) if name is not None}
            finished_path = resolve(posixpath.dirname(group_path), finished) if swmr else None
            new_groups = _check_places(parent.file, group_path, list(layouts), bookkeeping,
                                       finished_path)
            if swmr:
                folder = posixpath.dirname(group)
                check_finished(parent.get(folder) if folder else parent, finished)
            where = parent.require_group(group)

            def create(name: str, shape: tuple[int, ...], dtype: object, length: int,
                       options: Mapping[str, object]) -> h5py.Dataset:
                dataset = where.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape),
                                               dtype=dtype, chunks=(length, *shape), **options)
                created.append(dataset.name)
                return dataset

            columns = [
                Column(name, create(name, shape, dtype, lengths[name],
                                    merged_options(defaults, own_options.get(name, {}))))
                for name, (shape, dtype) in layouts.items()
            ]
            if index_name is not None:
                length = chunk_events or default_chunk_events(np.dtype(np.int64).itemsize, swmr)
                # Fill -1, never a frame: rows a failed store leaves are no frame's events.
                columns.append(Column(index_name, create(index_name, (), np.int64, length,
                                                         {**merged_options(defaults, {}),
                                                          "fillvalue": -1})))
            nevents = None
            if nevents_name is not None:
                nevents = create(nevents_name, (), np.int64,
                                 LIVE_NEVENTS_CHUNK if swmr else NEVENTS_CHUNK,
                                 merged_options(defaults, {}))
            # Beside the group, not in it: followers and formats (.rtdc) take
            # the group's datasets for features.
            check_missing_place(where, "group")
            if swmr:
                # SWMR mode creates no dataset: the missing frames' one is made now.
                created.append(create_missing(where).name)
                key_dataset = create_keys(where, keys)
                created.append(key_dataset.name)
                finished_flag = create_finished(where.parent, finished)
        except BaseException:
            for made in reversed(created):
                del parent.file[made]
            for made in new_groups:  # deepest first; made by this writer, now empty again
                if made in parent.file and not len(parent.file[made]):
                    del parent.file[made]
            if own_file is not None:
                own_file.close()
            raise
        self._group = where
        self._columns = columns
        self._with_index = index_name is not None  # the last column is the index
        self._features = layouts
        self._row_bytes = sum(column.row_bytes for column in columns)
        sink = RecordSink(where, columns, nevents, own_file)
        sink.space = watch_space(where.file, min_free,
                                 "frames" if nevents is not None else "events")
        self._announced = 0  # live: frames below this have their keys set (or queued)
        self._pool = encoding_pool(profile)
        self._bound = max_pending_bytes
        self._next = 0  # the next frame to put in order
        self._held: dict[int, tuple[dict[str, np.ndarray], int, int, BackgroundWriteProcess]] = {}
        self._held_bytes = 0
        self._queued_bytes = 0  # in stores not yet done
        self._events = 0  # events put in order
        self._lengths = [column.dataset.chunks[0] for column in columns]
        self._open = [_OpenChunk(0, column, length)
                      for column, length in zip(columns, self._lengths, strict=True)]
        self._queued = [0] * len(columns)  # per column: rows in stores queued so far
        # Frames put in order whose events are not all queued in every column
        # yet, or whose nevents row is not: (end event, events, handle).
        self._unsettled: deque[tuple[int, int, BackgroundWriteProcess]] = deque()
        self._start(sink, profile, on_missing, swmr, key_dataset, finished_flag, flush_interval,
                    flush_every, lag)

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

    def _data_bytes(self) -> int:
        event_bytes = sum(math.prod(shape) * np.dtype(dtype).itemsize
                          for shape, dtype in self._features.values())
        return self.events_written * event_bytes

    def _backlog_bytes(self) -> int:
        return self._queued_bytes  # (the stores queued; events held for a frame are not)

    @property
    def pending_bytes(self) -> int:
        """Bytes of events accepted and not yet stored (waiting frames and queued chunks)."""
        return self._held_bytes + self._queued_bytes

    def append(self, frame_index: int, events: Mapping[str, object], *, block: bool = True,
               timeout: float | None = None, copy: bool | None = None,
               frame_id: int | None = None) -> BackgroundWriteProcess:
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
        copy : bool or None, keyword-only
            If the frame must wait for one before it: keep a copy of its
            arrays (True; the copy counts in ``max_pending_bytes``), or the
            arrays themselves (False: leave them unchanged until the handle
            is done). None: the writer's ``copy``. A frame put in order at
            once is copied into the open chunks either way.
        frame_id : int or None, keyword-only
            The producer's own counter for this frame (a camera's trigger
            count), increasing from one call to the next: the ids skipped
            are counted as frames lost (:attr:`dropped_frames`, see
            ``on_drop``).

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
            A negative or repeated index, one HDF5 cannot hold (``nevents``
            would outgrow 2**63 - 1 rows), missing or unknown features, shapes
            or event counts that do not match, a ``frame_id`` not after the
            last, or the writer is closed.
        bgio.QueueFull
            No room (``block=False``, or after ``timeout``); nothing was
            accepted (the frame counts as dropped).
        bgio.FramesDropped
            With ``on_drop="raise"``, once frames were lost; nothing was accepted.
        """
        frame_index = check_frame_index(frame_index)
        if copy is None:
            copy = self._copy
        elif not isinstance(copy, bool):
            raise TypeError(f"copy must be True or False, got {copy!r}")
        timeout = check_timeout(timeout)
        arrays, count = self._check_events(events)
        size = count * self._row_bytes
        handle = _frame_handle(size)
        with self._lock:
            drops = self._drops
            first_id = drops.check(frame_id, 1)
            self._check_open(frame_index)
            if not self._has_room(frame_index, size):
                try:
                    wait_for_room(self._room,
                                  lambda: self._closed or self._has_room(frame_index, size),
                                  block, timeout, lambda: self.pending_bytes, self._bound,
                                  f"frame {frame_index} ({size} bytes)")
                except QueueFull:
                    self._note_dropped(drops.refused(first_id, 1))
                    raise
                self._check_open(frame_index)  # closed, or appended by another thread meanwhile
                first_id = drops.check(frame_id, 1)  # (their ids may have passed this one)
            self._note_dropped(drops.arrived(first_id, 1))
            self._ensure_swmr(self._group)
            if frame_index != self._next:
                if copy:
                    # Kept until the frames before it come: the caller may
                    # refill its arrays meanwhile (a copy of what is not one).
                    arrays = {name: array if isinstance(events[name], (list, tuple))
                              else array.copy() for name, array in arrays.items()}
                self._held[frame_index] = (arrays, count, size, handle)
                self._held_bytes += size
                self._count_events(handle, arrays)
                self._sample_backlog(self._held_bytes + self._queued_bytes)
                return handle
            before = self._next
            self._put(arrays, count, handle)
            self._release_held()
            # The next frame changed: a producer waiting with it may go in now.
            self._room.notify_all()
            if self._swmr and self._announcer.accepted(self._next - before):
                self._announce()
        self._count_events(handle, arrays)
        self._sample_backlog(self._held_bytes + self._queued_bytes)
        return handle

    def _count_events(self, handle: BackgroundWriteProcess, arrays: Mapping[str, np.ndarray],
                      ) -> None:
        # (The bytes of the events as given, as the writer process counts them.)
        if self._totals is not None:
            self._count_write(handle, sum(int(array.nbytes) for array in arrays.values()), 1)

    def _announce(self) -> None:
        """Live files: store the open chunks as they stand, then set the keys of the
        frames put in order since the last time (lock held)."""
        self._announcer.announced()
        if self._next == self._announced:
            return
        self._store_all(copy=True)
        self._submit_announce()

    def _submit_announce(self) -> None:
        self._submit_block(Announce(range(self._announced, self._next)))
        self._announced = self._next

    def producer(self) -> RecordProducer:
        """A picklable stand-in for this writer, for producers in other processes.

        Hand it to worker processes (``multiprocessing``, a process pool):
        each one's :meth:`~bgio.h5.producers.RecordProducer.append` of a
        frame's events becomes this writer's :meth:`append`, with its checks,
        back-pressure and errors (see :mod:`bgio.h5.producers`), so workers
        may append the frames they have in any order.

        Raises
        ------
        ValueError
            If the writer is closed.
        """
        with self._lock:
            service = self._producer_service("records")
            return service.producer(self._label)  # type: ignore[return-value]

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
        filled: list[Piece] = []
        for position, column in enumerate(self._columns if count else ()):
            source = None if self._is_index(position) else arrays[column.name]
            length = self._lengths[position]
            done = 0
            while done < count:
                chunk = self._open[position]
                take = min(length - chunk.fill, count - done)
                into = slice(chunk.fill, chunk.fill + take)
                if source is None:
                    chunk.rows[into] = frame
                else:
                    chunk.rows[into] = source[done : done + take]
                chunk.fill += take
                done += take
                if chunk.fill == length:
                    filled.append(self._piece(position))
        self._next = frame + 1
        self._events += count
        self._unsettled.append((self._events, count, handle))
        if filled:
            self._queue_store(filled)

    def _is_index(self, position: int) -> bool:
        return self._with_index and position == len(self._columns) - 1

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

    def _piece(self, position: int, copy: bool = False) -> Piece:
        """Column ``position``'s open chunk, as a piece of the next store.

        A full chunk is done with and a new one opened. A partial one goes
        on filling and is stored again when full: what is stored now is a
        copy of it (``copy``), unless nothing will be added (closing).
        """
        column, length = self._columns[position], self._lengths[position]
        chunk = self._open[position]
        if chunk.fill == length:
            rows = chunk.rows
            self._open[position] = _OpenChunk(chunk.index + 1, column, length)
        elif copy:
            rows = chunk.rows.copy()
        else:
            rows = chunk.rows
        if copy and self._swmr:
            # Announced before it is complete: unfiltered from now on, so each
            # store rewrites it in place (SWMR never reuses file space).
            chunk.raw = True
        self._queued[position] = chunk.index * length + chunk.fill
        encoded: Encoding[bytes | memoryview] | None = None
        pipeline = column.pipeline
        if self._pool is not None and not chunk.raw and pipeline is not None \
                and pipeline.compresses:
            encoded = self._pool.submit(pipeline.encode, rows)
        return Piece(position, chunk.index, rows, chunk.fill, encoded, chunk.raw,
                     chunk.fill * column.row_bytes)

    def _store_all(self, copy: bool) -> None:
        """Store every column's open chunk as it stands, and settle every frame put (lock held)."""
        pieces = [self._piece(position, copy) for position, chunk in enumerate(self._open)
                  if self._queued[position] < chunk.index * self._lengths[position] + chunk.fill]
        if pieces or self._unsettled:
            self._queue_store(pieces)

    def _queue_store(self, pieces: list[Piece]) -> None:
        """Queue ``pieces``, and the ``nevents`` rows of the frames whose events every
        column holds once they are stored: those frames are settled by this store."""
        covered = min(self._queued)
        settled: list[tuple[int, int, BackgroundWriteProcess]] = []
        while self._unsettled and self._unsettled[0][0] <= covered:
            settled.append(self._unsettled.popleft())
        block = RecordBlock(pieces, [count for _, count, _ in settled])
        size = len(block)
        self._queued_bytes += size
        handles = [handle for _, _, handle in settled]
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
            elif not self._closed:
                self._store_all(copy=True)
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
        self._store_all(copy=False)
        if self._swmr and self._next > self._announced:
            self._submit_announce()

    def _missing_message(self) -> str:
        return (f"{len(self.missing)} frame(s) of {self._next} never appended "
                f"(first: {self.missing[:10]}); stored with no events")


def _check_places(file: h5py.File, group_path: str, features: list[str],
                  bookkeeping: dict[str, str], finished_path: str | None) -> list[str]:
    """Refuse datasets that would clash with each other or with what the file holds;
    return the groups creating them will make, deepest first."""
    places = {resolve(group_path, name): name for name in features}
    if finished_path is not None:
        places[finished_path] = "finished"
    for label, name in bookkeeping.items():
        path = resolve(group_path, name)
        if path in places:
            clash = places[path]
            if clash in features:
                raise ValueError(f"features: {clash!r} is the name of the index, nevents or "
                                 f"keys dataset")
            if path == finished_path:
                raise ValueError(f"{label}: {name!r} is the place of the finished flag "
                                 f"({path!r})")
            raise ValueError(f"index_name, nevents_name and keys must differ, got "
                             f"{ {k: v for k, v in bookkeeping.items()} }")
        places[path] = name
    existing = file[group_path] if group_path in file else None  # noqa: SIM401 (see below)
    if existing is not None and not isinstance(existing, h5py.Group):
        raise ValueError(f"group: {group_path!r} exists and is not a group")
    inside = [name for path, name in places.items()
              if posixpath.dirname(path) == group_path and path in file]
    if inside:
        raise ValueError(f"group: {group_path!r} already has {inside}")
    labels = {resolve(group_path, name): label for label, name in bookkeeping.items()}
    new_groups: set[str] = set()
    for path, label in labels.items():
        if path in file:
            raise ValueError(f"{label}: {path!r} already exists")
    for path in [group_path, *labels]:
        folder = posixpath.dirname(path) if path != group_path else path
        while folder != "/":
            label = labels.get(path, "group")
            if folder in places:
                raise ValueError(f"{label}: {path!r} would go through the dataset {folder!r}")
            # Asked with `in` first: get() of a path that is not there goes through
            # HDF5's error stack, whose message h5py sometimes fails to decode.
            item = file[folder] if folder in file else None  # noqa: SIM401
            if item is not None and not isinstance(item, h5py.Group):
                raise ValueError(f"{label}: {path!r} would go through {folder!r}, which "
                                 f"is not a group")
            if item is None:
                new_groups.add(folder)
            folder = posixpath.dirname(folder)
    return sorted(new_groups, key=lambda folder: -folder.count("/"))


def _frame_handle(size: int) -> BackgroundWriteProcess:
    """A frame's handle: running from the start, as accepted events are stored whatever
    happens to the handle (it is settled by the store that announces the frame)."""
    handle = BackgroundWriteProcess(size)
    handle.set_running_or_notify_cancel()
    return handle
