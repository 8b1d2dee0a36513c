"""A writer's progress callbacks: the totals of all its writes, as they are stored.

:class:`CountsTotals` gives :class:`bgio.Writer`, :class:`bgio.h5.FrameWriter`
and :class:`bgio.h5.RecordWriter` (both backends) their
``add_progress_callback``. A writer tells it of every write it accepts
(:meth:`CountsTotals._count_write`: the handle, its bytes and frames); the
bytes count as done once that handle is done, and the callbacks get a
:class:`~bgio.progress.WriteProgress` at most every ``interval`` seconds, and
a last one (``finished``) once the writer is closed. Nothing is counted, and
nothing costs, before the first callback is added.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable

from .handle import BackgroundWriteProcess
from .lag import LagGauge
from .progress import ProgressWatcher, WriteProgress, check_interval

__all__ = ["CountsTotals", "Totals"]

#: Seconds of stores over which a writer's rate is measured.
RATE_WINDOW = 1.0

_made_lock = threading.Lock()  # (a writer's Totals is made once: one lock for all)


class Totals:
    """The bytes (and frames) a writer accepted and stored since its first callback.

    Parameters
    ----------
    frames : bool
        Whether the writer counts frames (its records then give them).
    lag : LagGauge or None
        The writer's ``max_lag`` gauge, if it has one (its records then say
        how far it went unpaced).
    """

    def __init__(self, frames: bool, lag: LagGauge | None = None) -> None:
        self._lock = threading.RLock()  # (records are made and told under it)
        self._frames = frames
        self._lag = lag
        self._watchers: list[ProgressWatcher] = []
        self._accepted = 0
        self._stored = 0
        self._frames_accepted = 0
        self._frames_stored = 0
        self._error: BaseException | None = None
        self._dropped = 0
        self._unsettled = 0  # writes accepted whose handles have not been counted yet
        self._closed = False
        self._last: WriteProgress | None = None  # (the last record, once closed)
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, watcher: ProgressWatcher) -> None:
        """Call ``watcher`` from now on (at once with the last record if closed)."""
        with self._lock:
            last = self._last
            if last is None:
                self._watchers.append(watcher)
                return
        watcher.finish(last)

    def accept(self, handle: BackgroundWriteProcess, nbytes: int | None, frames: int) -> None:
        """A write of ``nbytes`` (``frames``) was accepted; it is stored once ``handle``
        is done (a handle several writes share counts for each). ``nbytes`` None: not
        known until then (an iterable's), counted as the bytes it wrote."""
        with self._lock:
            self._accepted += nbytes or 0
            self._frames_accepted += frames
            self._unsettled += 1
        handle.add_done_callback(functools.partial(self._done, nbytes, frames))

    def _done(self, nbytes: int | None, frames: int, handle: BackgroundWriteProcess) -> None:
        failure = None if handle.cancelled() else handle.exception()
        with self._lock:
            if nbytes is None:
                nbytes = handle.bytes_written
                self._accepted += nbytes
            if failure is None and not handle.cancelled():
                self._stored += nbytes
                self._frames_stored += frames
            elif self._error is None and failure is not None:
                self._error = failure
            self._unsettled -= 1
            self._tell()

    def dropped(self, frames: int) -> None:
        """``frames`` frames were lost before they reached the writer: tell the callbacks."""
        with self._lock:
            self._dropped += frames
            self._tell()

    def _tell(self) -> None:
        # (Lock held, so that no record follows the last one: the delivery keeps only
        # the newest record per callback, and a late one would replace the last.)
        if self._last is not None:
            return
        if self._closed and not self._unsettled:
            self._end()
            return
        for watcher in self._watchers:
            watcher.tick(self._record)

    def _record(self, finished: bool) -> WriteProgress:
        with self._lock:
            now = time.monotonic()
            samples = self._samples
            samples.append((now, self._stored))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
                samples.popleft()  # (keeps one sample at least a window old, if any)
            first_time, first_stored = samples[0]
            rate = ((self._stored - first_stored) / (now - first_time)
                    if now > first_time else None)
            lag = self._lag
            return WriteProgress(
                self._stored, self._accepted, rate, self._accepted - self._stored, None,
                finished,
                self._frames_stored if self._frames else None,
                self._frames_accepted if self._frames else None,
                self._error, self._dropped if self._frames else None,
                None if lag is None else lag.unpaced_bytes,
                None if lag is None else lag.active and not finished)

    def finish(self, error: BaseException | None) -> None:
        """The writer is closed (``error``: how its close failed): the last record, once
        the writes accepted are all counted (a handle is done before its done callbacks
        have run: the last of those gives it then)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._error is None:
                self._error = error
            if not self._unsettled:
                self._end()

    def _end(self) -> None:
        # (Lock held) the last record, to every callback, once.
        last = self._last = self._record(True)
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            watcher.finish(last)


class CountsTotals:
    """What a writer needs for progress callbacks on its totals (see the module)."""

    #: Whether the writer's records count frames.
    _counts_frames = False
    _totals: Totals | None = None
    #: The writer's ``max_lag`` gauge (:mod:`bgio.lag`), if it has one.
    _lag: LagGauge | None = None
    #: When the writer's close ended (time.monotonic()), once it has.
    _close_ended_at: float | None = None

    def add_progress_callback(self, fn: Callable[[WriteProgress], object],
                              interval: float = 0.1) -> None:
        """Call ``fn`` with a :class:`~bgio.progress.WriteProgress` of this writer's totals.

        The record counts the writes accepted from the first call of this
        method on: ``total`` is their bytes, ``done`` the bytes of those
        stored (their handles done), ``pending`` the rest, ``rate`` bytes
        per second stored over the last second; a frame or record writer's
        also gives ``frames_done`` and ``frames_total``, and ``error`` the
        first error among the writes. ``fn`` is called in a bgio thread at
        most every ``interval`` seconds as writes are stored, and once more
        (``finished``) when the writer is closed; a slow one holds no write
        up, one that raises is logged (see
        :meth:`bgio.BackgroundWriteProcess.add_progress_callback`).

        Parameters
        ----------
        fn : callable
            Takes one argument, the progress record.
        interval : float, default 0.1
            Seconds; 0 for a record after every store.

        Raises
        ------
        TypeError, ValueError
            If ``fn`` is not callable, or ``interval`` is not a number >= 0.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__qualname__}")
        watcher = ProgressWatcher(fn, check_interval(interval))
        with _made_lock:
            totals = self._totals
            if totals is None:
                totals = self._totals = Totals(self._counts_frames, self._lag)
        totals.add(watcher)

    def _count_write(self, handle: BackgroundWriteProcess, nbytes: int | None,
                     frames: int = 0) -> None:
        """(For the writer) a write was accepted: count it, if anyone listens."""
        totals = self._totals
        if totals is not None:
            totals.accept(handle, nbytes, frames)

    def _count_dropped(self, frames: int) -> None:
        """(For the writer) ``frames`` frames were lost before they reached it."""
        totals = self._totals
        if totals is not None:
            totals.dropped(frames)

    def _totals_closed(self, error: BaseException | None) -> None:
        """(For the close) the writer is closed: the callbacks' last record."""
        self._close_ended_at = time.monotonic()
        totals = self._totals
        if totals is not None:
            totals.finish(error)
