"""``FrameWriter``: frames appended to a growing HDF5 dataset in the background, chunk by chunk."""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import h5py
import numpy as np

from ..copying import copy_frames
from ..errors import QueueFull
from ..handle import BackgroundWriteProcess, raise_root_error
from ..lag import check_max_lag
from ..pool import claim
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
from .filters import encoding_pool, pipeline_of
from .gaps import Gaps
from .layout import (
    as_frames,
    check_copy,
    check_count,
    check_dtype,
    check_extent,
    check_shape,
    default_chunks,
)
from .live import (
    DEFAULT_FLUSH_INTERVAL,
    Announce,
    Announcer,
    check_finished,
    check_flush_options,
    check_live,
    check_live_names,
    create_finished,
    create_keys,
)
from .sink import Chunk, DatasetSink, check_missing_place, create_missing

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

    from ..api import PriorityLike
    from .producers import FrameProducer

__all__ = ["FrameWriter"]


#: Snapshot buffers a FrameWriter keeps for reuse once their stores are done.
SPARE_SNAPSHOTS = 8


class _OpenChunk:
    """A chunk being filled, frame by frame, in any order."""

    __slots__ = ("filled", "frames", "handle", "raw")

    def __init__(self, per_chunk: int, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.frames = np.zeros((per_chunk, *frame_shape), dtype)
        self.filled: set[int] = set()
        self.handle = BackgroundWriteProcess(self.frames.nbytes)
        self.raw = False  # announced before complete (live files): stored unfiltered


class FrameWriter(H5Writer):
    """Append frames to an HDF5 dataset from a background thread, chunk by chunk.

    The dataset has shape ``(n, *frame_shape)`` and grows along axis 0. With
    gzip (deflate) and shuffle, no filter, or (their codec packages
    installed, the ``codecs`` extra) hdf5plugin's Zstd, LZ4, Blosc and
    Bitshuffle, bgio filters each chunk itself and stores it with
    ``write_direct_chunk``, so h5py's process-wide lock is held about a
    millisecond per chunk and the rest of the program can go on calling
    h5py; other filters go through h5py one chunk at a time.

    Frames smaller than a chunk are gathered into the current chunk (copied
    into it) and stored when it is full, at :meth:`flush` and at
    :meth:`close`. A 2-D frame of 256 KiB or more is a chunk of its own: by
    default (``copy=True``) it is copied at the call, so a producer may
    refill its buffer at once; with ``copy=False`` it is written from the
    caller's array, and the array must stay unchanged until its handle is
    done (or the frames stored are whatever the array holds by then).

    Parameters
    ----------
    target : path or h5py.File or h5py.Group
        Where the dataset is created. A path is opened (``"a"``) and closed
        by :meth:`close`.
    name : str
        The dataset's name in ``target``; it must not exist.
    frame_shape : tuple of int
        Shape of one frame.
    dtype : numpy dtype
        Stored exactly; frames that would lose values in it are refused.
    compression, compression_opts, shuffle
        As for ``h5py.Group.create_dataset``: a name ("gzip"), a filter id
        with its options (``32015, (3,)``), or an hdf5plugin filter object
        (``hdf5plugin.Zstd(clevel=3)``).
    chunk_frames : int or None
        Frames per chunk; None chooses (see :func:`bgio.h5.layout.default_chunks`).
    priority : int 1..10 or bgio.BackgroundIOPriority
        Pacing of the background work (filtering and storing, not the
        handing of bytes to HDF5's cache). Chunks are compressed ahead on a
        pool of one thread per core but one, and by the worker while the
        chunk it stores next is not ready; each thread is busy at most the
        profile's ``bandwidth_pct`` of the time (all of it at preset 1; see
        :func:`bgio.h5.filters.encoding_pool`).
    max_pending_bytes : int or None, keyword-only
        Bound on the bytes held for frames not yet stored (chunks being
        filled and chunks queued); a call that would exceed it waits for
        room (or raises :class:`bgio.QueueFull`, see :meth:`append`).
        None, the default, means no bound.
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
    expected_frames : int or None, keyword-only
        Frames the run is expected to store: with it the writer refuses to
        start (:class:`bgio.DiskFull`) when the disk has less free than
        their bytes plus ``min_free``, or, with compression (the frames may
        still fit), warns.
    min_free : int or None, keyword-only
        Bytes to leave free on the disk (None: 64 MiB, or a twentieth of a
        smaller file system: :func:`bgio.space.default_min_free`): the
        writer refuses to start with less free, and a store that would leave less is not made: the
        writer stops with :class:`bgio.DiskFull` (its ``stored`` says how
        many frames the file holds), later stores fail with
        :class:`bgio.ChainError`, and the file is left valid (HDF5 itself
        does not survive a full disk; see :mod:`bgio.space`), the slots
        below its length whose stores never ran listed in :attr:`missing`.
    copy : bool, keyword-only, default True
        The default of :meth:`append`'s and :meth:`write_at`'s ``copy``:
        store the frames as they are at the call (True), or take the
        caller's arrays by reference (False; see above).
    on_missing : {"warn", "raise", "ignore"}, keyword-only
        What :meth:`close` does about slots below the last frame that were
        never written (:meth:`write_at`): they are listed in
        :attr:`missing` and recorded in the file (see
        :func:`bgio.h5.sink.set_missing`) in every case; "warn" also warns,
        "raise" raises ``ValueError`` (after closing).
    on_drop : {"warn", "raise", "ignore"}, keyword-only
        What the writer does about frames lost before they reached it (gaps
        in the ``frame_id`` given to ``append``, frames refused by
        back-pressure, :meth:`add_dropped`): they are counted in
        :attr:`dropped_frames` and recorded in the file (see
        :mod:`bgio.h5.drops`) in every case; "warn" also warns at
        :meth:`close`; "raise" makes the next ``append`` and :meth:`close`
        (after closing) raise :class:`bgio.FramesDropped`.
    swmr : bool, keyword-only, default False
        Write a live file that other processes read while it is written
        (HDF5's SWMR mode; see the "Live files" page of the manual): a key
        dataset and a finished flag are created beside the dataset, the
        file switches to SWMR mode at the first append, and complete
        frames are announced as below.
    libver : str or (str, str) or None, keyword-only
        The format version bounds of a file the writer opens (a path
        ``target``), as for :class:`h5py.File`. None: with ``swmr``,
        ``("v110", "v110")``, HDF5 1.10's format, the oldest SWMR works in,
        which every HDF5 from 1.10 on reads (see :func:`bgio.h5.open_live`);
        without, h5py's default. A live file needs a low bound of "v110"
        or newer. For an open ``target`` it must match the file's bounds.
    backend : {"thread", "process"} or None, keyword-only
        ``"process"``: the file is opened, compressed into and written by
        bgio's writer process only, so the program's own h5py calls never
        wait for bgio's (``target`` must be a path; see
        :ref:`process-backend`). None: threads, or for a path what
        :func:`bgio.set_default_backend` set.
    flush_interval : float or None, keyword-only, default 0.25
        With ``swmr``: seconds between announcements of the frames accepted
        meanwhile (they are stored, flushed, then their keys set), so
        readers see a frame about this soon. None: by count only.
    flush_every : int or None, keyword-only
        With ``swmr``: also announce every this many frames.
    keys : str or None, keyword-only
        With ``swmr``: the key dataset's name, beside the dataset; None
        means ``<name>_keys``.
    finished : str, keyword-only, default "finished"
        With ``swmr``: the finished flag's name, beside the dataset; shared
        with the other writers of the file that name it, and set when the
        last of them closes.

    Attributes
    ----------
    missing : list of int
        After :meth:`close`: the slots below the last frame that were never
        written (in the file: the ``<name>_missing`` dataset of ``[start,
        stop)`` ranges beside the dataset; see :func:`bgio.h5.sink.set_missing`).

    Examples
    --------
    >>> import bgio.h5, numpy as np, tempfile, os, h5py
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.h5")
    >>> with bgio.h5.FrameWriter(path, "frames", (4, 4), "uint16", compression="gzip") as w:
    ...     for i in range(3):
    ...         _ = w.append(np.full((4, 4), i, dtype="uint16"))
    >>> with h5py.File(path) as f:
    ...     f["frames"].shape, int(f["frames"][2, 0, 0])
    ((3, 4, 4), 2)
    """

    _what = "frames"
    _sink: DatasetSink

    def __new__(cls, *args: object, backend: str | None = None, **options: object) -> Self:
        # FrameWriter(..., backend="process") is the writer process's kind (same
        # methods); Python then runs that class's __init__ with the same arguments.
        target = args[0] if args else options.get("target")
        if cls is FrameWriter and check_backend(backend, target) == "process":
            from ..process.h5 import ProcessFrameWriter  # loaded by those who use it

            return object.__new__(ProcessFrameWriter)  # type: ignore[return-value]
        return object.__new__(cls)

    def __init__(
        self,
        target: str | os.PathLike[str] | h5py.File | h5py.Group,
        name: str,
        frame_shape: tuple[int, ...],
        dtype: np.dtype | str,
        *,
        compression: object = None,
        compression_opts: object = None,
        shuffle: bool = False,
        chunk_frames: int | None = None,
        priority: PriorityLike = 4,
        max_pending_bytes: int | None = None,
        copy: bool = True,
        on_missing: str = "warn",
        on_drop: str = "warn",
        swmr: bool = False,
        flush_interval: float | None = DEFAULT_FLUSH_INTERVAL,
        flush_every: int | None = None,
        keys: str | None = None,
        finished: str = "finished",
        libver: str | tuple[str, str] | None = None,
        backend: str | None = None,
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        expected_frames: int | None = None,
        min_free: int | None = None,
    ) -> None:
        lag = check_max_lag(max_lag, max_lag_bytes)
        on_missing = check_on_missing(on_missing)
        self._drops = DropCounter(check_on_drop(on_drop))
        self._copy = check_copy(copy)
        # Snapshot buffers whose stores are done, for the next snapshots: a
        # fresh 2 MiB array costs a millisecond of page faults, a warm one a tenth.
        self._spares: list[np.ndarray] = []
        # The frame accepted last (index, its array as stored), for latest(); and the
        # snapshot that array lies in, kept out of the spares while it is the latest.
        self._latest: tuple[int, np.ndarray] | None = None
        self._latest_snapshot: np.ndarray | None = None
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        if not isinstance(swmr, bool):
            raise TypeError(f"swmr must be True or False, got {swmr!r}")
        if swmr:
            flush_interval, flush_every = check_flush_options(flush_interval, flush_every)
            check_live_names(keys=keys, finished=finished)
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("name must not be empty")
        libver = check_target_libver(target, libver, swmr)
        profile = resolve_priority(priority)
        self._dtype = check_dtype(dtype)
        self._frame_shape = check_shape(frame_shape, "frame_shape")
        chunks = default_chunks(self._frame_shape, self._dtype)
        if swmr and chunk_frames is None:
            # Live: a chunk per frame, so an announcement never stores a chunk
            # before it is complete (see _write_partial).
            chunks = (1, *self._frame_shape)
        if chunk_frames is not None:
            chunks = (check_count(chunk_frames, "chunk_frames"), *self._frame_shape)
        frame_bytes = math.prod(self._frame_shape) * self._dtype.itemsize
        expected = (None if expected_frames is None
                    else check_count(expected_frames, "expected_frames") * frame_bytes)
        min_free = check_space(target, expected, min_free, compression is not None,
                               f"FrameWriter {name!r}")
        group, own_file = open_target(target, swmr, libver)
        key_dataset = finished_flag = None
        created: list[str] = []  # removed again if the rest fails
        try:
            if name in group:
                raise ValueError(f"name: {name!r} already exists in {group.name!r}")
            if swmr:
                check_live(group)
                # Everything checked before anything is created.
                folder, base = posixpath.split(name)
                keys = keys or f"{base}_keys"
                if keys in (base, finished):
                    raise ValueError(f"keys: {keys!r} is the name of the frames or the flag")
                beside = group.get(folder) if folder else group
                if beside is not None and keys in beside:
                    raise ValueError(f"keys: {keys!r} already exists in {beside.name!r}")
                check_finished(beside, finished)
            dataset = group.create_dataset(
                name, shape=(0, *self._frame_shape), maxshape=(None, *self._frame_shape),
                dtype=self._dtype, chunks=chunks, compression=compression,
                compression_opts=compression_opts, shuffle=shuffle,
            )
            created.append(dataset.name)
            check_missing_place(dataset, "name")
            if swmr:
                created.append(create_missing(dataset).name)  # SWMR creates no dataset
                key_dataset = create_keys(dataset.parent, cast(str, keys))  # (named above)
                created.append(key_dataset.name)
                finished_flag = create_finished(dataset.parent, finished)
        except BaseException:
            for made in created:
                del group.file[made]
            if own_file is not None:
                own_file.close()
            raise
        self._dataset = dataset
        sink = DatasetSink(dataset, pipeline_of(dataset), own_file)
        sink.space = watch_space(dataset.file, min_free, "frames")
        self._unannounced: list[int] = []  # live: frames accepted, keys not yet set
        self._announcer = Announcer(flush_interval, flush_every, self._tick)
        self._chunk_frames = chunks[0]
        self._bound = max_pending_bytes
        self._pending = 0  # bytes of chunks being filled, and of stores not yet done
        self._frame_elements = math.prod(self._frame_shape)
        self._chunk_bytes = self._chunk_frames * math.prod(self._frame_shape) * self._dtype.itemsize
        self._next = 0  # where append() goes: after the highest frame written
        self._count = 0  # frames accepted
        self._holes = Gaps()  # slots below _next not written (yet)
        self._open: dict[int, _OpenChunk] = {}  # chunks being filled, by chunk index
        self._pool = encoding_pool(profile, lead=True)
        self._start(sink, profile, on_missing, swmr, key_dataset, finished_flag, flush_interval,
                    flush_every, lag)

    @property
    def dataset(self) -> h5py.Dataset:
        """The dataset being written."""
        return self._dataset

    @property
    def frames_written(self) -> int:
        """Frames accepted by :meth:`append` and :meth:`write_at` so far."""
        return self._count

    def _data_bytes(self) -> int:
        return self.frames_written * math.prod(self._frame_shape) * self._dtype.itemsize

    @property
    def extent(self) -> int:
        """Frames the dataset holds once closed: one after the highest frame written."""
        return self._next

    def latest(self) -> tuple[int, np.ndarray] | None:
        """The frame accepted last (by :meth:`append` or :meth:`write_at`), for a live view.

        Returns ``(index, frame)``, or None before the first. ``frame`` is a
        read-only copy, made now, of the frame as the writer has it (not read
        back from the file): its own copy with ``copy=True``; with
        ``copy=False`` your array as it is now (a :class:`bgio.FramePool`
        frame goes back to its pool once stored, and may be filled again).
        """
        with self._lock:
            latest = self._latest
            if latest is None:
                return None
            index, frame = latest[0], latest[1].copy()  # (under the lock: see _recycling)
        frame.flags.writeable = False
        return index, frame

    def _backlog_bytes(self) -> int:
        # (Chunks being filled count whole in _pending until stored, but are not queued.)
        return max(0, self._pending - len(self._open) * self._chunk_bytes)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for frames not yet stored: chunks being filled, and chunks queued."""
        return self._pending

    def append(self, frames: object, *, block: bool = True, timeout: float | None = None,
               copy: bool | None = None, frame_id: int | None = None) -> BackgroundWriteProcess:
        """Queue one frame (``frame_shape``) or a stack of frames after the highest written.

        Parameters
        ----------
        frames : array-like
            One frame, or a stack ``(n, *frame_shape)``.
        block : bool, keyword-only, default True
            With no room under ``max_pending_bytes``: wait (True) or raise
            :class:`bgio.QueueFull` at once (False).
        timeout : float or None, keyword-only
            Seconds to wait for room at most; then :class:`bgio.QueueFull`.
        copy : bool or None, keyword-only
            Store the frames as they are now (True: a frame that is a chunk
            of its own is copied, counted in ``max_pending_bytes``), or take
            the array by reference (False: leave it unchanged until the
            handle is done). None: the writer's ``copy``. Frames gathered
            into a chunk are copied into it either way.
        frame_id : int or None, keyword-only
            The producer's own number of the (first) frame, a camera's frame
            counter: ids must increase from one append to the next, and the
            ids skipped are counted as frames lost (:attr:`dropped_frames`,
            see ``on_drop``). A stack of n frames takes n ids.

        Returns
        -------
        bgio.BackgroundWriteProcess
            The handle of the store of the chunk that holds the last of
            these frames: done once that chunk is stored whole (when all its
            frames have come, or at :meth:`close`).

        Raises
        ------
        ValueError
            Wrong frame shape, frames beyond what an HDF5 dataset can hold,
            a ``frame_id`` not after the last, or the writer is closed.
        TypeError
            A dtype that would lose values in the dataset's.
        bgio.QueueFull
            No room (``block=False``, or after ``timeout``); nothing was
            accepted (the frames count as dropped).
        bgio.FramesDropped
            With ``on_drop="raise"``, once frames were lost; nothing was accepted.
        """
        timeout = check_timeout(timeout)
        copy = self._copy if copy is None else check_copy(copy)
        stack = as_frames(frames, self._frame_shape, self._dtype)
        count = len(stack)
        with self._lock:
            drops = self._drops
            first_id = drops.check(frame_id, count)
            check_extent(self._next, count, self._frame_elements, "frames")
            if self._bound is not None:
                try:
                    self._wait_for_room(lambda: self._next, stack, block, timeout)
                except QueueFull:
                    self._note_dropped(drops.refused(first_id, count))
                    raise
                # (The wait let other appends in: their ids may have passed this one.)
                first_id = drops.check(frame_id, count)
            handle = self._accept(self._next, frames, stack, copy)
            self._note_dropped(drops.arrived(first_id, count))
            self._sample_backlog(self._pending)
            return handle

    def producer(self, *, shared_frames: int | None = None) -> FrameProducer:
        """A picklable stand-in for this writer, for producers in other processes.

        Hand it to worker processes (``multiprocessing``, a process pool):
        their :meth:`~bgio.h5.producers.FrameProducer.write_at` and
        :meth:`~bgio.h5.producers.FrameProducer.append` become this writer's,
        with its checks, back-pressure and errors; the frames travel through
        shared memory (see :mod:`bgio.h5.producers`).

        Parameters
        ----------
        shared_frames : int or None, keyword-only
            How many frames of shared memory the producers share (taken at
            the first call; None: 64 MiB of them, 4 to 1,024). Each frame is
            busy from the producer's copy until its store is done, so this
            bounds what the producers have in flight.

        Raises
        ------
        ValueError
            If the writer is closed, or ``shared_frames`` < 1 or more frames
            than fit in this machine's memory.
        """
        if shared_frames is not None:
            shared_frames = check_count(shared_frames, "shared_frames")
        with self._lock:
            service = self._producer_service("frames", shared_frames)
            return service.producer(self._label)  # type: ignore[return-value]

    def write_at(self, index: int, frames: object, *, block: bool = True,
                 timeout: float | None = None, copy: bool | None = None,
                 ) -> BackgroundWriteProcess:
        """Put frames at ``index`` (and after), for frames that arrive out of order.

        Several producer threads may call it at once. A chunk is stored once
        all its frames have come (or at :meth:`flush` / :meth:`close`); slots
        never written are reported by :meth:`close` (see ``on_missing``).
        ``block``, ``timeout`` and ``copy`` are as for :meth:`append`; a frame that
        goes into a chunk already being filled needs no room, so the frames
        others wait for are always let in.

        Raises
        ------
        ValueError
            A negative index, or one (with the frames after it) beyond what an
            HDF5 dataset can hold (2**63 - 1 elements: see
            :data:`bgio.h5.layout.MAX_ELEMENTS`), wrong frame shape, or the
            writer is closed.
        TypeError
            A dtype that would lose values, or a non-integer index.
        bgio.QueueFull
            No room (``block=False``, or after ``timeout``); nothing was accepted.
        """
        index = check_count(index, "index", minimum=0)
        timeout = check_timeout(timeout)
        copy = self._copy if copy is None else check_copy(copy)
        stack = as_frames(frames, self._frame_shape, self._dtype)
        check_extent(index, len(stack), self._frame_elements, "index")
        with self._lock:
            if self._bound is not None:
                self._wait_for_room(lambda: index, stack, block, timeout)
            return self._accept(index, frames, stack, copy)

    def _accept(self, index: int, frames: object, stack: np.ndarray, copy: bool,
                ) -> BackgroundWriteProcess:
        """Place ``stack`` at ``index`` (lock held). Frames of a :class:`bgio.FramePool`
        go back to it once not needed: at once if copied (into a snapshot or the chunks
        being filled), else when their store is done."""
        give_back = claim(stack)
        snapshot = self._snapshot(frames, stack, copy)
        try:
            handle = self._place(index, snapshot)
        except BaseException:
            if give_back is not None:
                give_back()
            raise
        if give_back is not None:
            if snapshot is stack and self._chunk_frames == 1:
                handle.add_done_callback(lambda _: give_back())
            else:
                give_back()
        self._count_write(handle, int(stack.nbytes), len(stack))
        return self._recycling(snapshot, stack, handle)

    def _snapshot(self, frames: object, stack: np.ndarray, copy: bool) -> np.ndarray:
        """``stack``, copied if it is stored by reference (a chunk per frame) and may be
        the caller's memory; frames gathered into chunks are copied there anyway."""
        if not copy or self._chunk_frames != 1:
            return stack
        if isinstance(frames, np.ndarray) and not np.may_share_memory(stack, frames):
            return stack  # as_frames made it (a cast, a strided view): a copy already
        if isinstance(frames, (list, tuple, int, float)):
            return stack  # made from Python values: nobody else has it
        if len(stack) != 1:
            return stack.copy()
        try:
            buffer = self._spares.pop()
        except IndexError:
            buffer = np.empty_like(stack)
        copy_frames(buffer, stack)
        return buffer

    def _recycling(self, snapshot: np.ndarray, stack: np.ndarray,
                   handle: BackgroundWriteProcess) -> BackgroundWriteProcess:
        """Give a one-frame snapshot back to the spares once its store is done (nothing
        reads it after: the chunk was encoded and stored from it)."""
        if snapshot is not stack and len(snapshot) == 1:
            spares = self._spares

            def recycle(_: BackgroundWriteProcess) -> None:
                if len(spares) >= SPARE_SNAPSHOTS:
                    return
                with self._lock:
                    latest = self._latest
                    if snapshot is self._latest_snapshot and latest is not None:
                        # Still the latest: latest() goes on from a copy of its own.
                        self._latest = (latest[0], latest[1].copy())
                        self._latest_snapshot = None
                spares.append(snapshot)

            handle.add_done_callback(recycle)
        return handle

    def _cost(self, index: int, stack: np.ndarray) -> int:
        """Bytes that placing ``stack`` at ``index`` would add to :attr:`pending_bytes`."""
        per_chunk = self._chunk_frames
        if per_chunk == 1:
            return int(stack.nbytes)
        first, last = index // per_chunk, (index + len(stack) - 1) // per_chunk
        new = sum(1 for chunk in range(first, last + 1) if chunk not in self._open)
        return new * self._chunk_bytes

    def _wait_for_room(self, where: Callable[[], int], stack: np.ndarray, block: bool,
                       timeout: float | None) -> None:
        """Wait (lock held) until ``stack`` fits under ``max_pending_bytes``, or raise QueueFull."""
        bound = self._bound
        assert bound is not None

        def has_room() -> bool:
            if self._closed:
                return True  # _place raises the ValueError
            cost = self._cost(where(), stack)
            return cost == 0 or self._pending == 0 or self._pending + cost <= bound

        wait_for_room(self._room, has_room, block, timeout, lambda: self._pending, bound,
                      f"{len(stack)} frame(s)")

    def _place(self, index: int, stack: np.ndarray) -> BackgroundWriteProcess:
        if self._closed:
            raise ValueError("write to a closed FrameWriter")
        for slot in range(index, min(index + len(stack), self._next)):
            if slot not in self._holes:
                # Its chunk may be stored already; writing it again would
                # store a chunk of this frame and fill over its neighbours.
                raise ValueError(f"index: frame {slot} was already written")
        self._ensure_swmr(self._dataset)
        handle = None
        for offset in range(len(stack)):
            handle = self._put(index + offset, stack, offset)
        if self._swmr:
            self._unannounced.extend(range(index, index + len(stack)))
            if self._announcer.accepted(len(stack)):
                self._announce()
        return handle if handle is not None else self._idle_handle()

    def _announce(self) -> None:
        """Live files: store what the open chunks hold, then set the keys of every frame
        accepted since the last time (lock held). The worker flushes the data first."""
        self._announcer.announced()
        if not self._unannounced:
            return
        self._write_partial()
        frames = sorted(set(self._unannounced))
        self._unannounced.clear()
        self._submit_block(Announce(frames))

    def _put(self, index: int, stack: np.ndarray, offset: int) -> BackgroundWriteProcess:
        if index >= self._next:
            self._holes.add(self._next, index)  # skipped slots, for now
            self._next = index + 1
        else:
            self._holes.discard(index)  # checked by _place: a slot never written
        self._count += 1
        per_chunk = self._chunk_frames
        if per_chunk == 1:
            # A chunk per frame: the caller's frame goes as it is (no copy).
            self._latest, self._latest_snapshot = (index, stack[offset]), stack
            return self._submit(index, stack[offset : offset + 1], 1)
        chunk_index, position = divmod(index, per_chunk)
        chunk = self._open.get(chunk_index)
        if chunk is None:
            chunk = self._open[chunk_index] = _OpenChunk(per_chunk, self._frame_shape, self._dtype)
            held = chunk.frames.nbytes
            self._pending += held  # until stored
            # Registered first, so the room is free before the callbacks of
            # whoever got this handle from append() run.
            chunk.handle.add_done_callback(lambda _: self._stored(held))
        copy_frames(chunk.frames[position], stack[offset])
        chunk.filled.add(position)
        self._latest, self._latest_snapshot = (index, chunk.frames[position]), None
        if len(chunk.filled) == per_chunk:
            del self._open[chunk_index]
            self._submit(chunk_index * per_chunk, chunk.frames, per_chunk, chunk.handle,
                         counted=True, raw=chunk.raw)
        return chunk.handle

    def _submit(self, first_frame: int, frames: np.ndarray, count: int,
                handle: BackgroundWriteProcess | None = None,
                counted: bool = False, raw: bool = False) -> BackgroundWriteProcess:
        """Queue one chunk's store; its bytes count as pending until it is done
        (``counted``: they already do, since the chunk was opened)."""
        encoded = None
        pipeline = self._sink.pipeline
        if self._pool is not None and pipeline is not None and pipeline.compresses and not raw:
            encoded = self._pool.submit(pipeline.encode, frames)
        chunk = Chunk(first_frame // self._chunk_frames, frames, count, encoded, raw)
        held = 0
        if not counted:
            held = frames.nbytes
            self._pending += held

        def on_done(_: BackgroundWriteProcess) -> None:
            if encoded is not None:
                encoded.drop()  # a store cancelled, or failed before it took the chunk
            if held:
                self._stored(held)

        try:
            return self._submit_block(chunk, handle, on_done)
        except BaseException:
            if encoded is not None:
                encoded.drop()  # never queued: the pool must not wait for it
            raise

    def _stored(self, size: int) -> None:
        with self._lock:
            self._pending -= size
            self._room.notify_all()

    def _idle_handle(self) -> BackgroundWriteProcess:
        handle = BackgroundWriteProcess(0)
        handle.set_result()
        return handle

    def _write_partial(self, final: bool = False) -> None:
        """Queue the chunks being filled as they stand (zeros where frames have not come).

        They go on filling and are stored again when full, so a copy is
        queued, with a handle of its own; when closing (``final``), the
        chunks themselves go, and with them the handles their frames got.

        In a live file such a chunk is stored unfiltered, now and from then
        on (see :func:`bgio.h5.sink.encode_chunk`): SWMR never reuses file
        space, and each compressed re-store would leave the last one behind.
        """
        for chunk_index, chunk in sorted(self._open.items()):
            count = max(chunk.filled) + 1  # up to the last frame that came
            start = chunk_index * self._chunk_frames
            if self._swmr and not final:
                chunk.raw = True
            if final:
                self._submit(start, chunk.frames, count, chunk.handle, counted=True, raw=chunk.raw)
            else:
                self._submit(start, chunk.frames.copy(), count, raw=chunk.raw)
        if final:
            self._open.clear()

    def flush(self, timeout: float | None = None) -> None:
        """Store every frame appended so far (a partial chunk too) and flush the file.

        Raises
        ------
        TimeoutError
            If the writes are not done after ``timeout`` seconds.
        Exception
            The first error of the background writes.
        """
        check_timeout(timeout)
        with self._lock:
            if self._swmr and not self._closed:
                self._announce()  # stores the partial chunks too
            else:
                self._write_partial()
            last = self._last
        if last is not None:
            if not last.wait(timeout):
                raise TimeoutError(f"frames not stored after {timeout} s")
            raise_root_error(last)
        self._dataset.file.flush()

    def _store_rest(self) -> None:
        """Closing: store the chunks being filled, announce what waits, list the gaps."""
        self._write_partial(final=True)
        if self._unannounced:
            self._submit_block(Announce(sorted(set(self._unannounced))))
            self._unannounced.clear()
        self.missing = self._holes.indices()

    def _missing_message(self) -> str:
        return (f"{len(self.missing)} frame(s) of {self._next} never written "
                f"(first: {self.missing[:10]}); they read as the fill value")

