"""What FrameWriter and RecordWriter share: the target, stores handed to the engine,
live-file announcements, and closing."""

from __future__ import annotations

import numbers
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, overload

import h5py

from ..closing import ClosesOnExit, Finish
from ..engine import submit
from ..errors import FramesDropped
from ..handle import BackgroundWriteProcess, raise_root_error
from ..priority import BackgroundIOPriority
from ..source import Source
from ..space import SpaceWatch, check_min_free, check_room
from ..worker import Job
from .drops import DropCounter, check_frame_id
from .exit import track
from .filters import EncodingPool
from .live import (
    DEFAULT_LIVE_LIBVER,
    Announcer,
    Keys,
    Libver,
    check_libver,
    claim_finished,
    libver_bounds,
    open_live,
    release_finished,
    start_swmr,
)
from .stats import WriterStats

if TYPE_CHECKING:
    from .producers import ProducerService

__all__ = ["WATCHED_DRIVERS", "H5Writer", "check_on_missing", "check_space",
           "check_target_libver", "open_target", "watch_space"]

#: HDF5 file drivers that write one file on a disk, whose free space is watched.
WATCHED_DRIVERS = ("sec2", "stdio")


def check_on_missing(value: object) -> str:
    """The ``on_missing`` option, checked."""
    if value not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_missing must be 'warn', 'raise' or 'ignore', got {value!r}")
    return value


def check_target_libver(target: object, libver: object, swmr: bool) -> Libver | None:
    """A writer's ``target`` and ``libver``, checked in the caller (nothing opened yet).

    Returns the bounds to open a path with: ``libver``, or for a live file
    :data:`bgio.h5.live.DEFAULT_LIVE_LIBVER` when it is None (None for
    h5py's default otherwise).

    Raises
    ------
    TypeError
        If ``target`` is not a path, an ``h5py.File`` or an ``h5py.Group``, or
        ``libver`` is not a name nor a pair of names.
    ValueError
        A ``libver`` that is unknown or (``swmr``) that SWMR cannot work in, or
        one that differs from the bounds the open file ``target`` already has.
    """
    if not isinstance(target, (str, bytes, os.PathLike, h5py.File, h5py.Group)):
        raise TypeError(f"target must be a path, h5py.File or h5py.Group, got "
                        f"{type(target).__qualname__}")
    if libver is None:
        return DEFAULT_LIVE_LIBVER if swmr else None
    checked = check_libver(libver, swmr)
    if isinstance(target, (h5py.File, h5py.Group)):
        file = target.file
        if libver_bounds(checked) != tuple(file.id.get_access_plist().get_libver_bounds()):
            raise ValueError(f"libver: {file.filename!r} is open already, with libver "
                             f"{file.libver}, not {checked!r}; libver applies to a path the "
                             f"writer opens")
    return checked


def check_space(target: object, expected: int | None, min_free: object, compressed: bool,
                what: str) -> int:
    """At a writer's start, before anything is opened: ``min_free`` checked (returned as
    bytes), and the disk of ``target`` refused (:class:`bgio.DiskFull`) if it has less
    than that free, or too little for ``expected`` bytes (a warning if ``compressed``:
    see :func:`bgio.space.check_room`)."""
    if isinstance(target, (h5py.File, h5py.Group)):
        file = target.file
        if file.driver not in WATCHED_DRIVERS:
            return check_min_free(min_free)  # (not on a disk bgio can ask)
        where = file.filename
    else:
        where = os.path.abspath(os.fsdecode(target))  # type: ignore[arg-type]
        if not os.path.exists(where):
            where = os.path.dirname(where)  # (a new file: its folder's disk)
    minimum = check_min_free(min_free, where)  # (None: smaller on a small file system)
    check_room(where, expected, minimum, compressed, what)
    return minimum


def watch_space(file: h5py.File, min_free: int, what: str) -> SpaceWatch | None:
    """The free-space watch of a writer's stores into ``file`` (None for a file not on a
    disk bgio can ask: HDF5's in-memory and other drivers)."""
    if file.driver not in WATCHED_DRIVERS:
        return None
    # sec2 (the default) has a descriptor: its file system is asked even if the file is
    # moved meanwhile; stdio's handle is a FILE pointer, so its path is asked.
    fd = file.id.get_vfd_handle() if file.driver == "sec2" else None
    return SpaceWatch(file.filename, min_free, what, fd)


def open_target(target: str | bytes | os.PathLike[str] | h5py.Group, swmr: bool,
                libver: Libver | None = None) -> tuple[h5py.Group, h5py.File | None]:
    """The group to create datasets in, and the file to close with the writer (a path's,
    opened with ``libver``: see :func:`check_target_libver`)."""
    if isinstance(target, (h5py.File, h5py.Group)):
        return target, None
    if swmr:
        file = open_live(target, libver=libver or DEFAULT_LIVE_LIBVER)  # type: ignore[arg-type]
    else:
        file = h5py.File(target, "a", libver=libver)
    return file, file


class _Sink(Protocol):
    name: str
    keys: Keys | None
    finished: h5py.Dataset | None
    missing: list[int]
    dropped: tuple[int, list[tuple[int, int]]] | None


class H5Writer(ClosesOnExit):
    """The machinery of a background HDF5 writer; subclasses say what to store.

    A subclass calls :meth:`_start` at the end of its ``__init__`` and
    provides :meth:`_announce` (live files: store what is held, then queue
    the keys), :meth:`_store_rest` (closing: store everything left, set
    :attr:`missing`) and :meth:`_missing_message`.
    """

    _counts_frames = True  # (its progress records count frames too)

    _what = "data"  # for messages: "frames", "records"
    _sink: _Sink
    _profile: BackgroundIOPriority
    _pool: EncodingPool | None
    #: Answers this writer's producers in other processes (made by ``producer()``).
    _producers: ProducerService | None = None

    def _producer_service(self, kind: str, shared_frames: int | None = None,
                          ) -> ProducerService:
        """The service of :meth:`producer` (made at the first call; lock held)."""
        if self._closed:
            raise ValueError(f"producer() of a closed {type(self).__name__}")
        if self._producers is None:
            # (its sockets only for those who use it)
            from .producers import ProducerService

            frame_shape = getattr(self, "_frame_shape", None)
            self._producers = ProducerService(self, kind, frame_shape,
                                              getattr(self, "_dtype", None), shared_frames)
        return self._producers

    @property
    def _label(self) -> str:
        """What messages call this writer (its file and dataset or group)."""
        return str(self._sink.name)

    def _stop_producers(self) -> None:
        """Closing: producers can no longer connect; those waiting for a slot stop.

        The service is let go (it refers to this writer): once its connected
        producers have gone, it and its shared memory are freed without
        waiting for the cyclic garbage collector.
        """
        producers, self._producers = self._producers, None
        if producers is not None:
            producers.close()

    def _start(self, sink: _Sink, profile: BackgroundIOPriority, on_missing: str, swmr: bool,
               keys: h5py.Dataset | None, finished: h5py.Dataset | None,
               flush_interval: float | None, flush_every: int | None,
               lag: tuple[float | None, int | None] = (None, None)) -> None:
        self._sink = sink
        self._keep_up(*lag, f"bgio.h5.{type(self).__name__}({sink.name!r})")
        if self._lag is not None and self._pool is not None:
            self._pool.hurry_when(self._lag)  # its threads hurry with the worker
        self._profile = profile
        self._missing_policy = on_missing
        if not hasattr(self, "_drops"):  # (a writer made before on_drop: none counted)
            self._drops = DropCounter("ignore")
        self._opened_at = time.monotonic()
        self._peak_backlog: int | None = 0
        # Reentrant: a submit during interpreter exit runs the store in this
        # thread, and its done callback takes the lock again.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)  # signalled as room is freed
        self._last: BackgroundWriteProcess | None = None
        self._closed = False
        self.missing: list[int] = []  # after close(): slots never written
        self._swmr = swmr
        self._swmr_started = False
        self._finished = finished
        if keys is not None and finished is not None:
            sink.keys = Keys(keys)
            claim_finished(finished)
        self._announcer = Announcer(flush_interval, flush_every, self._tick)
        track(self)  # closed at exit if the program does not

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        frames = getattr(self, "frames_written", "?")
        return f"<bgio.h5.{type(self).__name__} {state} {self._sink.name!r} frames={frames}>"

    def _ensure_swmr(self, node: h5py.Group | h5py.Dataset) -> None:
        """Live files: switch ``node``'s file to SWMR mode at the first write, when every
        writer of the file exists (lock held). Remembered, and ``node.file`` only
        looked up then: any h5py call waits for h5py's lock, which the worker may hold."""
        if self._swmr and not self._swmr_started:
            start_swmr(node.file)
            self._swmr_started = True

    def _submit_block(self, block: object, handle: BackgroundWriteProcess | None = None,
                      on_done: Callable[[BackgroundWriteProcess], object] | None = None,
                      ) -> BackgroundWriteProcess:
        """Queue one block (a chunk, an announcement) as one store, in order (lock held).

        ``handle`` is the store's handle if one was given out already (its
        size is set here); ``on_done`` is registered before the store is
        queued, so it runs before any callback added to the handle later.
        """
        size = len(block)  # type: ignore[arg-type]
        if handle is None:
            handle = BackgroundWriteProcess(size)
        else:
            handle.total_bytes = size
        if on_done is not None:
            handle.add_done_callback(on_done)
        source = Source((block,), None, size, False, size)
        # One block per store, however large: chunk_size is the block's size.
        job = Job(handle, self._sink, source, self._profile,  # type: ignore[arg-type]
                  chunk_size=max(size, 1))
        if self._lag is not None:
            job.lag = self._lag
            job.accepted = time.perf_counter()
        self._last = submit(job)
        return handle

    def _announce(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _tick(self) -> None:
        """The announcer's timer: announce what waits, unless closed meanwhile."""
        with self._lock:
            if not self._closed:
                self._announce()

    def _store_rest(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _missing_message(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @overload
    def close(self, timeout: float | None = None, *, wait: Literal[True] = True) -> None: ...

    @overload
    def close(self, timeout: None = None, *, wait: Literal[False]) -> BackgroundWriteProcess: ...

    def close(self, timeout: float | None = None, *,
              wait: bool = True) -> BackgroundWriteProcess | None:
        """Store what is left, flush, and close the file if this writer opened it.

        Calling it again waits for the stores (after a ``TimeoutError``, or
        a ``close(wait=False)``) and does nothing else.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most (with ``wait=True``).
        wait : bool, keyword-only, default True
            False: return at once (no more writes are accepted), with a
            handle that ends once everything is stored and the file closed;
            its ``result()`` raises what ``close()`` would have (and is 0
            otherwise). A GUI thread need not wait for the backlog.

        Returns
        -------
        None, or with ``wait=False`` the close's handle.

        Raises
        ------
        TimeoutError
            If the stores are not done after ``timeout`` seconds.
        Exception
            The first error of the background stores (the file is closed all the same).
        ValueError
            With ``on_missing="raise"``, if slots were never written; if
            ``timeout`` is given with ``wait=False``.
        """
        return self._close(timeout, wait)

    def _begin_close(self) -> Finish:
        with self._lock:
            if self._closed:
                return self._again()  # (waits for the first close)
            self._closed = True
            self._room.notify_all()  # producers waiting for room get their ValueError
            self._stop_producers()
            self._announcer.close()
            self._store_rest()
            after = None
            if self._finished is not None:
                after = release_finished(self._finished, self._last)
                if after is not None:  # the last writer sharing the flag sets it
                    self._sink.finished = self._finished
            self._sink.missing = list(self.missing)
            self._sink.dropped = self._drops.record()
            closing = BackgroundWriteProcess(0)
            self._last = submit(Job(closing, self._sink,  # type: ignore[arg-type]
                                    Source((), None, 0, False, 0), self._profile, close=True,
                                    chain_after=after))
        return self._finish_close

    def _finish_close(self, timeout: float | None) -> None:
        last = self._last
        assert last is not None
        if not last.wait(timeout):
            raise TimeoutError(f"{self._what} not stored after {timeout} s")
        # The close may have found more slots without data (stores that failed, or did
        # not run after a failure): recorded in the file as missing, and so here.
        self.missing = list(self._sink.missing)
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # every chunk it filtered has been stored
        raise_root_error(last)
        self._report_missing()
        self._report_dropped()

    def stats(self) -> WriterStats:
        """A summary of the run so far: frames written and dropped, missing slots, bytes,
        time, peak backlog, time unpaced (see :class:`bgio.h5.stats.WriterStats`); final once closed."""
        ended = self._close_ended_at
        lag = self._lag
        return WriterStats(
            self.frames_written, self._drops.count, len(self.missing), self._data_bytes(),
            (time.monotonic() if ended is None else ended) - self._opened_at,
            self._peak_backlog, ended is not None,
            0 if lag is None else lag.unpaced_bytes, 0.0 if lag is None else lag.unpaced_seconds,
            0 if lag is None else lag.episodes)

    @property
    def frames_written(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _data_bytes(self) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _sample_backlog(self, pending: int) -> None:
        """``pending`` bytes are held for stores not yet done now (a peak taken at each
        append; a RecordWriter's outside its lock, where a racing append may leave it a
        little low)."""
        peak = self._peak_backlog
        if peak is not None and pending > peak:
            self._peak_backlog = pending

    @property
    def dropped_frames(self) -> int:
        """Frames lost before they reached this writer so far: gaps in the ``frame_id``
        given to ``append``, frames it refused (:class:`bgio.QueueFull`), and frames
        counted with :meth:`add_dropped`. Recorded in the file at close (see
        :mod:`bgio.h5.drops`)."""
        return self._drops.count

    def add_dropped(self, count: int, *, first_id: int | None = None) -> None:
        """Count ``count`` frames the producer lost before they came here (a camera's own
        overflow counter, say), as a gap in ``frame_id`` is counted.

        Parameters
        ----------
        count : int
            Frames lost (>= 0; 0 records in the file that none were).
        first_id : int or None, keyword-only
            The id of the first of them, if known (the file lists their ids).

        Raises
        ------
        TypeError, ValueError
            If ``count`` is not an int >= 0, or ``first_id`` not an int >= 0.
        """
        if isinstance(count, bool) or not isinstance(count, numbers.Integral):
            raise TypeError(f"count must be an int, got {type(count).__name__}")
        count = int(count)
        if count < 0:
            raise ValueError(f"count must be an int >= 0, got {count}")
        first = None if first_id is None else check_frame_id(first_id)
        with self._lock:
            self._drops.add(count, first)
        if count:
            self._count_dropped(count)

    def _note_dropped(self, lost: int) -> None:
        """(Lock held, after the counter counted them) ``lost`` frames were lost now."""
        if lost:
            self._count_dropped(lost)

    def _report_dropped(self) -> None:
        """At the end of a close: frames lost, as ``on_drop`` says."""
        drops = self._drops
        if not drops.count or drops.policy == "ignore":
            return
        message = f"{self._what}: {drops.describe()} (recorded in the file as dropped_frames)"
        if drops.policy == "raise":
            raise FramesDropped(message, drops.count)
        warnings.warn(message, RuntimeWarning, stacklevel=6)

    def _report_missing(self) -> None:
        """At the end of a close: slots never written, as ``on_missing`` says."""
        if self.missing and self._missing_policy != "ignore":
            message = self._missing_message()
            if self._missing_policy == "raise":
                raise ValueError(message)
            # (stacklevel: the caller of close, through _close, _Rest and the rest)
            warnings.warn(message, RuntimeWarning, stacklevel=6)
