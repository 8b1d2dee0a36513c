"""The handle of one background write: a :class:`concurrent.futures.Future` with progress.

The handle does no I/O, no sleeping and no waiting for other writes: the
worker (:mod:`bgio.worker`) drives it through a few transition methods, as an
executor drives a Future — :meth:`~BackgroundWriteProcess.set_running_or_notify_cancel`,
:meth:`~BackgroundWriteProcess.set_result`, :meth:`~BackgroundWriteProcess.set_exception`,
:meth:`~BackgroundWriteProcess.set_stopped` — and tells it how far it got
(:attr:`~BackgroundWriteProcess.bytes_written`, :meth:`~BackgroundWriteProcess.set_timing`).
:meth:`~BackgroundWriteProcess.watch_cancel` lets the worker be woken when
a cancel is asked while it waits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator
from concurrent.futures import CancelledError, Future, TimeoutError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import ChainError
from .progress import ProgressWatcher, WriteProgress, check_interval
from .timeouts import check_timeout

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = [
    "BackgroundWriteProcess",
    "CancelledError",
    "GroupState",
    "GroupedWrite",
    "TimeoutError",
    "WriteTiming",
    "all_of",
    "cancels_so_far",
    "failure_of",
    "finish_all",
    "finish_group",
    "raise_root_error",
    "start_all",
    "start_group",
]

logger = logging.getLogger("bgio")

_CANCELLED = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)

# One lock guards the state of every handle. It is held for a few
# instructions at a time, and sparing each handle a Condition of its own
# makes creating one several times cheaper (a Writer may make a million);
# a handle gets a Condition on this lock only when somebody waits for it.
# Reentrant: concurrent.futures.wait() acquires the condition of every
# future it is given, one after the other, in one thread.
_lock = threading.RLock()

# How many cancels were ever asked (under _lock): a worker that saw none
# since a run began need not look for one in each of its writes.
_cancels = 0


def cancels_so_far() -> int:
    """How many times :meth:`BackgroundWriteProcess.cancel` has asked a write to stop."""
    return _cancels


def _after_fork_in_child() -> None:
    # Another thread may have held the lock when the process forked; the
    # child's copy would stay locked for ever.
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WriteTiming:
    """When a write ran, how long it was busy, and its latest rate: what ``rate`` and
    ``duty_cycle`` report.

    One per write, or one shared by a run of small writes made in one pass.
    ``first_start`` is negative until the first chunk is written.
    The worker updates it after every chunk; readers in other threads see
    plain numbers (never a structure being changed), and a finished write
    keeps its last figures.
    """

    __slots__ = ("busy", "first_start", "last_end", "rate")

    def __init__(self, first_start: float, last_end: float, busy: float,
                 rate: float | None) -> None:
        self.first_start = first_start
        self.last_end = last_end
        self.busy = busy
        self.rate = rate


class BackgroundWriteProcess(Future):  # type: ignore[type-arg]
    """The handle of one background write: a :class:`concurrent.futures.Future`.

    Returned by :func:`bgio.bgwrite`, :func:`bgio.bgwrite_chunk` and
    :meth:`bgio.Writer.write`; not meant to be created by users. Being a
    Future, it works with :func:`concurrent.futures.wait`,
    :func:`~concurrent.futures.as_completed` and :func:`asyncio.wrap_future`;
    it is also awaitable (``await handle`` gives :meth:`result`; cancelling
    the awaiting task, as :func:`asyncio.wait_for` does on timeout, cancels
    the write), a context manager (leaving the block waits for the write and
    re-raises its error), and offers :meth:`join` and :meth:`is_alive` for
    code written against the older thread-based module.

    States: *pending* (queued, or waiting for the write it is chained
    after), *running* (writing), then *done*: finished with a result, failed
    with an exception, or cancelled. Unlike a plain Future, a *running*
    write can be cancelled too: see :meth:`cancel`.

    Progress attributes are updated by the worker after every chunk and may
    be read from any thread at any time.

    Attributes
    ----------
    bytes_written : int
        Bytes (characters for text streams) written so far. After a failure,
        what reached the destination.
    total_bytes : int or None
        Bytes the write will take in all, or ``None`` when the data is a lazy
        iterable whose size is not known in advance.
    bytes_on_disk : int or None
        Of :attr:`bytes_written` (which are in the page cache), the bytes
        the kernel has reported written to the device, for a regular file
        written with a profile's ``writeback_window`` (see
        :mod:`bgio.writeback`): it trails :attr:`bytes_written` by at most
        two windows, and equals it once an ``fsync`` (``fsync=True``) is
        done. None where bgio cannot tell: no window (preset 1, pipes,
        sockets, tmpfs, file objects bgio does not write through their
        descriptor, HDF5), a Writer's writes, and before the first window
        of the write reached the device.
    unpaced_bytes : int
        Of :attr:`bytes_written`, the bytes written with pacing suspended
        because the writer was behind its ``max_lag`` (see
        :class:`bgio.Writer`); 0 for a write that was paced throughout.
    """

    _what = "write"  # (in messages; a read's handle says "read")
    # Set by the worker where it knows (see bytes_on_disk).
    bytes_on_disk: int | None = None
    unpaced_bytes: int = 0  # set by the worker (see the attribute)
    # Set only when used: most writes are never cancelled, timed or waited for.
    _cancel_requested = False
    _on_cancel: Callable[[], None] | None = None
    _timing: WriteTiming | None = None
    _waited_on: threading.Condition | None = None
    _watchers: list[ProgressWatcher] | None = None  # progress callbacks (see report_progress)

    def __init__(self, total_bytes: int | None = None) -> None:
        # Future.__init__ is not called: it gives each future a Condition
        # (and an RLock) of its own, the most costly part of a small write.
        # The same fields, with the shared lock (see _condition).
        # The lists of waiters and callbacks are made when first needed:
        # every object made per write costs the garbage collector later.
        self._state = PENDING
        self.total_bytes = total_bytes
        self.bytes_written = 0

    _result: int | None = None
    _exception: BaseException | None = None
    _waiter_list: list[Any] | None = None
    _callbacks: list[Callable[[BackgroundWriteProcess], object]] | None = None

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        """The waiters of concurrent.futures.wait() and as_completed(), which append to
        and remove from this list (made when first asked for)."""
        waiters = self._waiter_list
        if waiters is None:
            with _lock:
                waiters = self._waiter_list
                if waiters is None:
                    waiters = self._waiter_list = []
        return waiters

    @property
    def _done_callbacks(self) -> list[Callable[[BackgroundWriteProcess], object]]:
        """The callbacks still to run (Future's name for them; bgio keeps ``_callbacks``)."""
        return self._callbacks or []

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """This handle's Condition over the shared lock, made when first asked for
        (by a waiter here, or by concurrent.futures.wait and as_completed)."""
        condition = self._waited_on
        if condition is None:
            with _lock:
                condition = self._waited_on
                if condition is None:
                    condition = self._waited_on = threading.Condition(_lock)
        return condition

    def _notify(self, state: str) -> None:
        # (with _lock held) wake whoever waits in result(), wait() or
        # concurrent.futures.wait(); their list and condition exist only if they do.
        waiters = self._waiter_list
        if waiters:
            for waiter in waiters:
                if state == FINISHED:
                    if self._exception is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                else:
                    waiter.add_cancelled(self)
        condition = self._waited_on
        if condition is not None:
            condition.notify_all()

    def done(self) -> bool:
        """Return True if the write has finished, failed or been cancelled."""
        return self._state in _DONE

    def running(self) -> bool:
        """Return True while the worker is writing this data."""
        return self._state == RUNNING

    def cancelled(self) -> bool:
        """Return True if the write was cancelled (some bytes may have been written)."""
        return self._state in _CANCELLED

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            state = "failed" if self._exception is not None else "finished"
        elif state in _CANCELLED:
            state = "cancelled"
        return (
            f"<{type(self).__name__} at {id(self):#x} state={state.lower()} "
            f"bytes_written={self.bytes_written} total_bytes={self.total_bytes}>"
        )

    # -- state ---------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Ask the write to stop.

        A pending write is cancelled at once and nothing of it is written. A
        running write stops before its next chunk (a pacing pause or a wait
        for a full destination is cut short): what was written stays,
        :attr:`bytes_written` says how much, and the handle becomes cancelled
        when the worker has stopped, which :meth:`wait` waits for. If the
        worker had already written every byte, the write finishes normally
        instead; :meth:`cancelled` tells which happened. Later writes to the
        same destination as a cancelled write fail with
        :class:`bgio.ChainError`, so nothing is written after the gap.

        This differs from :meth:`concurrent.futures.Future.cancel`, which
        refuses to cancel a running future.

        Returns
        -------
        bool
            False if the write had already finished or failed; True if it
            was cancelled or asked to stop.
        """
        global _cancels
        with _lock:
            state = self._state
            if state == FINISHED:
                return False
            if state in _CANCELLED:
                return True
            self._cancel_requested = True
            _cancels += 1
            if self._on_cancel is not None:
                # Under the lock: the worker unhooks it under the lock too, so
                # it is never called once the worker has moved on.
                self._on_cancel()
            self._note_cancel(state)
            if state == RUNNING:
                return True
            # Pending: done now. Waiters of concurrent.futures.wait() are told
            # at once (a plain Future tells them only when an executor calls
            # set_running_or_notify_cancel, which may be much later here).
            self._state = CANCELLED_AND_NOTIFIED
            self._notify(CANCELLED_AND_NOTIFIED)
        self._invoke_callbacks()
        return True

    def _note_cancel(self, state: str) -> None:
        """(with the lock held) What a subclass must do as a cancel is asked in ``state``."""

    # -- waiting -------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the write is done; return True if it is, False on timeout.

        Raises
        ------
        ValueError, TypeError
            If ``timeout`` is negative, NaN, beyond what the platform can
            wait (``math.inf`` means no limit), or not a number.
        """
        limit = check_timeout(timeout)
        if self._state in _DONE:
            return True
        with _lock:
            return self._condition.wait_for(self.done, limit)

    def result(self, timeout: float | None = None) -> int:
        """Wait for the write and return the number of bytes written.

        Raises
        ------
        concurrent.futures.CancelledError
            If the write was cancelled.
        TimeoutError
            If it is not done after ``timeout`` seconds
            (:class:`concurrent.futures.TimeoutError`).
        Exception
            Whatever ended the write (an ``OSError`` from the file, a
            :class:`bgio.ChainError`, ...), re-raised as it was.
        ValueError, TypeError
            If ``timeout`` is not a valid timeout (see :meth:`wait`).
        """
        self._wait_done(timeout)
        if self._exception is not None:
            raise self._exception
        return self.bytes_written

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the write and return its exception, or None if it succeeded.

        Raises
        ------
        concurrent.futures.CancelledError
            If the write was cancelled.
        TimeoutError
            If it is not done after ``timeout`` seconds.
        ValueError, TypeError
            If ``timeout`` is not a valid timeout (see :meth:`wait`).
        """
        self._wait_done(timeout)
        return self._exception

    def _wait_done(self, timeout: float | None) -> None:
        limit = check_timeout(timeout)
        with _lock:
            if self._state not in _DONE and not self._condition.wait_for(self.done, limit):
                raise TimeoutError(f"{self._what} not done after {timeout} s")
            if self._state in _CANCELLED:
                raise CancelledError(f"{self._what} cancelled after {self.bytes_written} bytes")

    def add_done_callback(self, fn: Callable[[BackgroundWriteProcess], object]) -> None:
        """Call ``fn(handle)`` once the write is done (at once if it already is).

        The callback runs in the worker thread (or in the caller's thread if
        the write is already done); an exception it raises is logged on the
        ``bgio`` logger and otherwise ignored, as
        :meth:`concurrent.futures.Future.add_done_callback` does.
        """
        with _lock:
            if self._state not in _DONE:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        _call(fn, self)

    def add_progress_callback(self, fn: Callable[[WriteProgress], object],
                              interval: float = 0.1) -> None:
        """Call ``fn`` with a :class:`~bgio.progress.WriteProgress` as the write goes on.

        ``fn`` is called at most every ``interval`` seconds while bytes are
        written, and once more when the write is done (``finished`` True),
        in a bgio thread (not the worker: a slow ``fn`` holds no write up;
        it is given the latest record when it is ready for one). One that
        raises is logged on the ``bgio`` logger. Added to a write that is
        done already, ``fn`` is given its last record at once.
        The last record may come after the done callbacks have run (they
        run in the thread that completes the write): wait for the record
        with ``finished`` set, not for them, to see the last one.

        Parameters
        ----------
        fn : callable
            Takes one argument, the progress record.
        interval : float, default 0.1
            Seconds; 0 for a record after every chunk.

        Raises
        ------
        TypeError, ValueError
            If ``fn`` is not callable, or ``interval`` is not a number >= 0.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__qualname__}")
        watcher = ProgressWatcher(fn, check_interval(interval))
        with _lock:
            if self._state not in _DONE:
                if self._watchers is None:
                    self._watchers = [watcher]
                else:
                    self._watchers.append(watcher)
                return
        watcher.finish(self._progress_record(True))

    def report_progress(self) -> None:
        """(For the worker) bytes were credited to this write: tell its progress callbacks."""
        watchers = self._watchers
        if watchers:
            for watcher in watchers:
                watcher.tick(self._progress_record)

    def _progress_record(self, finished: bool) -> WriteProgress:
        done, total = self.bytes_written, self.total_bytes
        return WriteProgress(done, total, self.rate, None if total is None else total - done,
                             self.bytes_on_disk, finished,
                             error=self._exception if finished else None,
                             unpaced_bytes=self.unpaced_bytes)

    def _invoke_callbacks(self) -> None:
        # Called after a transition, outside the lock. Once run, the
        # callbacks are dropped: they often hold the writer that made them.
        watchers = self._watchers
        if watchers:
            self._watchers = None
            last = self._progress_record(True)
            for watcher in watchers:
                watcher.finish(last)
        callbacks = self._callbacks
        if callbacks:
            self._callbacks = None
            for fn in callbacks:
                _call(fn, self)

    # -- thread-style and other protocols ---------------------------------------------------

    def join(self, timeout: float | None = None) -> None:
        """Wait like :meth:`threading.Thread.join`: return when done or after ``timeout``."""
        self.wait(timeout)

    def is_alive(self) -> bool:
        """Return True until the write is done, like :meth:`threading.Thread.is_alive`."""
        return not self.done()

    def __await__(self) -> Generator[Any, None, int]:
        if not self.done():
            import asyncio  # here: most programs never await a handle, and it takes 50 ms

            # wrap_future cancels the write if the awaiting task is cancelled.
            yield from asyncio.wrap_future(self).__await__()
        return self.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wait()
        if exc_type is None and not self.cancelled() and self._exception is not None:
            raise self._exception

    # -- progress ------------------------------------------------------------------------

    @property
    def progress(self) -> float | None:
        """Fraction written, 0..1, or None when :attr:`total_bytes` is unknown."""
        total = self.total_bytes
        if total is None:
            return None
        if total == 0:
            return 1.0 if self._state == FINISHED else 0.0
        return self.bytes_written / total

    @property
    def rate(self) -> float | None:
        """Bytes per second over the last few chunks (the profile's smoothing window).

        None until the first chunk is written; a finished write keeps its last rate.
        """
        timing = self._timing
        return None if timing is None else timing.rate

    @property
    def duty_cycle(self) -> float | None:
        """Measured busy fraction (0..1): time spent writing over wall time since the first chunk.

        Time spent waiting for a slow reader, for the CPU or for the
        interpreter lock is not counted as busy. None until the first chunk
        is written.
        """
        timing = self._timing
        if timing is None or timing.first_start < 0:
            return None
        elapsed = timing.last_end - timing.first_start
        return 1.0 if elapsed <= 0 else min(1.0, timing.busy / elapsed)

    # -- the worker's side -----------------------------------------------------------------

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called (for the worker: stop before the next chunk)."""
        return self._cancel_requested

    def set_running_or_notify_cancel(self) -> bool:
        """Mark the write running; False if it was cancelled while pending (for the worker).

        Raises
        ------
        RuntimeError
            If the write is running or done already.
        """
        with _lock:
            if self._state == PENDING:
                self._state = RUNNING
                return True
            if self._state in _CANCELLED:
                return False
        raise RuntimeError(f"write in unexpected state: {self!r}")

    def set_result(self, result: int | None = None) -> None:
        """Complete the write successfully (for the worker); the result is :attr:`bytes_written`.

        A write cancelled before it started stays cancelled.
        """
        with _lock:
            if self._state in _DONE:
                return
            self._result = self.bytes_written if result is None else result
            self._state = FINISHED
            self._notify(FINISHED)
        self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        """Fail the write with ``exception`` (for the worker); a write already done stays so."""
        assert exception is not None
        with _lock:
            if self._state in _DONE:
                return
            self._exception = exception
            self._state = FINISHED
            self._notify(FINISHED)
        self._invoke_callbacks()

    def set_stopped(self) -> None:
        """Mark a running write cancelled: it stopped at a cancel (for the worker)."""
        with _lock:
            if self._state in _DONE:
                return
            self._state = CANCELLED_AND_NOTIFIED
            self._notify(CANCELLED_AND_NOTIFIED)
        self._invoke_callbacks()

    def watch_cancel(self, wake: Callable[[], None] | None) -> bool:
        """Have :meth:`cancel` call ``wake()`` (None: stop) while the worker waits; return
        True if a cancel was asked already (then there is nothing to wait for)."""
        with _lock:
            self._on_cancel = wake
            return self._cancel_requested or self._state in _CANCELLED

    def set_timing(self, timing: WriteTiming) -> None:
        """Attach the record the worker updates after every chunk (for ``rate`` and
        ``duty_cycle``)."""
        self._timing = timing

    @property
    def timing(self) -> WriteTiming | None:
        """The worker's timing record of this write, None until its first chunk."""
        return self._timing


def running_handle(total_bytes: int | None = None) -> BackgroundWriteProcess:
    """A new handle already *running*: for writes accepted at once that cannot be
    cancelled (a step less than :meth:`~BackgroundWriteProcess.set_running_or_notify_cancel`
    on a path where microseconds count)."""
    handle = BackgroundWriteProcess(total_bytes)
    handle._state = RUNNING  # (no one else can see it yet: no lock)
    return handle


def failure_of(handle: BackgroundWriteProcess) -> BaseException | None:
    """What a done write failed with: its exception, a ``CancelledError`` if it was
    cancelled, or None if it succeeded (or is not done)."""
    state = handle._state
    if state in _CANCELLED:
        return CancelledError(f"cancelled after {handle.bytes_written} bytes")
    if state == FINISHED:
        return handle._exception
    return None


def raise_root_error(handle: BackgroundWriteProcess) -> None:
    """Raise what ended a done write: the error that started a run of failures, not
    the ChainErrors after it (a CancelledError if the start was a cancel)."""
    error = failure_of(handle)
    if isinstance(error, ChainError) and error.root_cause is not None:
        error = error.root_cause
    if error is not None:
        raise error


def start_all(handles: list[BackgroundWriteProcess], timing: WriteTiming | None = None) -> int:
    """Mark a run of pending writes running under one lock (for the worker), attaching
    their shared ``timing``; return how many, from the first, were still pending (it
    stops at one cancelled while queued)."""
    with _lock:
        for count, handle in enumerate(handles):
            if handle._state != PENDING:
                return count
            if type(handle) is BackgroundWriteProcess:
                handle._state = RUNNING
            else:  # a subclass may do more as it starts (the compat handle does)
                handle.set_running_or_notify_cancel()
            handle._timing = timing
    return len(handles)


def finish_all(handles: list[BackgroundWriteProcess]) -> None:
    """Complete a run of successful writes under one lock (for the worker)."""
    with_callbacks: list[BackgroundWriteProcess] = []
    with _lock:
        for handle in handles:
            if handle._state in _DONE:
                continue
            handle._result = handle.bytes_written
            handle._state = FINISHED
            _tell_finished(handle, with_callbacks)
    for handle in with_callbacks:
        handle._invoke_callbacks()


def _tell_finished(handle: BackgroundWriteProcess,
                   with_callbacks: list[BackgroundWriteProcess]) -> None:
    # (with _lock held) wake a finished handle's waiters, if any, and note
    # it for its callbacks, which are run once the lock is released.
    if handle._waiter_list or handle._waited_on is not None:
        handle._notify(FINISHED)
    if handle._callbacks or handle._watchers:
        with_callbacks.append(handle)


def _call(fn: Callable[[BackgroundWriteProcess], object], handle: BackgroundWriteProcess) -> None:
    try:
        fn(handle)
    except BaseException:  # even SystemExit: a worker must go on settling the other handles
        logger.exception("exception calling callback for %r", handle)


# -- a Writer's group of small writes: one state for many handles ----------------------------


class GroupState:
    """What the writes of a Writer's group share (:mod:`bgio.group`): they are pending,
    running and done together, so the worker moves them on in one step, not one per
    write, and keeps no reference to their handles (a handle the caller dropped is
    freed at once).

    A write cancelled while the group is queued says so itself, and the group
    is written up to it (``first_cancel``); one cancelled while the group is
    being written is noted in ``cancel_offsets``, and the worker, woken by
    ``on_cancel``, stops the group's piece at it if its bytes have not gone
    out yet (see :class:`bgio.group.GroupOwners`).

    Each handle derives its own outcome from its place in the group: the
    writes before ``stop_offset`` succeeded (or failed with ``flush_error``,
    the error of the flush that carried them); the one at ``stop_offset``
    failed with ``error`` (or was cancelled while queued: it says so
    itself); those after it failed with a :class:`~bgio.errors.ChainError`
    (``chain_message``, caused by ``chain_root``).
    """

    __slots__ = ("bytes_written", "cancel_offsets", "chain_message", "chain_root", "error",
                 "first_cancel", "flush_error", "on_cancel", "state", "stop_offset", "timing",
                 "watched")

    def __init__(self) -> None:
        self.state = PENDING
        self.bytes_written = 0
        self.timing: WriteTiming | None = None
        # Handles with waiters or callbacks, to tell when done (None once done).
        self.watched: list[GroupedWrite] | None = []
        self.first_cancel: int | None = None  # offset of the first write cancelled while queued
        self.cancel_offsets: set[int] = set()  # those cancelled while the group runs
        self.on_cancel: Callable[[], None] | None = None
        self.stop_offset: int | None = None
        self.error: BaseException | None = None
        self.flush_error: BaseException | None = None
        self.chain_message = ""
        self.chain_root: BaseException | None = None

    def watch_cancel(self, wake: Callable[[], None] | None) -> None:
        """Have a cancel of one of the running group's writes call ``wake()`` (None: stop)."""
        with _lock:
            self.on_cancel = wake

    def cancel_asked(self, offset: int) -> bool:
        """Whether the write at ``offset`` was asked to stop while the group runs."""
        return offset in self.cancel_offsets

    def stop(self, offset: int, error: BaseException | None, chain_message: str,
             chain_root: BaseException) -> None:
        """Record where the group stopped (for the worker, before :func:`finish_group`)."""
        self.stop_offset = offset
        self.error = error
        self.chain_message = chain_message
        self.chain_root = chain_root


class GroupedWrite(BackgroundWriteProcess):
    """The handle of a write in a group: its state, progress and outcome are derived
    from the group's (:class:`GroupState`) and its place in it. Behaves as any handle;
    the group's bytes go out in one piece, and a cancel of a write of a group being
    written stops that piece where the write begins, if its bytes have not gone out."""

    _own_state: str | None = None
    _own_exception: BaseException | None = None
    _watching = False

    def __init__(self, group: GroupState, offset: int, size: int) -> None:
        # BackgroundWriteProcess.__init__ is not called: its fields are derived.
        self._group = group
        self._offset = offset  # where this write's bytes begin in the group's
        self.total_bytes = size

    def _place(self) -> int:
        """-1, 0 or 1: before, at or after the place the group stopped."""
        stop = self._group.stop_offset
        if stop is None or self._offset < stop:
            return -1
        return 0 if self._offset == stop else 1

    @property
    def _state(self) -> str:
        own = self._own_state
        if own is not None:
            return own
        group = self._group
        state = group.state
        if state == FINISHED and group.error is None and self._offset == group.stop_offset:
            return CANCELLED_AND_NOTIFIED  # the group stopped at its cancel
        return state

    @_state.setter
    def _state(self, state: str) -> None:
        self._own_state = state

    @property
    def _exception(self) -> BaseException | None:
        if self._own_exception is not None or self._own_state is not None:
            return self._own_exception
        group = self._group
        if group.state != FINISHED:
            return None
        place = self._place()
        if place < 0:
            return group.flush_error
        if place == 0:
            return group.error
        # Made on demand, one each: an exception object is not shared between handles.
        error = ChainError(group.chain_message, None, group.chain_root)
        error.__cause__ = group.chain_root
        self._own_exception = error
        return error

    @_exception.setter
    def _exception(self, error: BaseException | None) -> None:
        self._own_exception = error

    @property
    def bytes_written(self) -> int:
        group = self._group
        total: int = self.total_bytes  # type: ignore[assignment]
        if group.state == FINISHED and self._own_state is None and self._place() < 0:
            return total
        return min(max(group.bytes_written - self._offset, 0), total)

    @bytes_written.setter
    def bytes_written(self, count: int) -> None:
        raise AttributeError("a grouped write's bytes are counted by its group")

    @property
    def _timing(self) -> WriteTiming | None:
        return self._group.timing

    @_timing.setter
    def _timing(self, timing: WriteTiming | None) -> None:
        self._group.timing = timing

    def _note_cancel(self, state: str) -> None:
        # The group's bytes go out in one piece. Running: the worker stops the
        # piece where this write begins if its bytes have not gone out yet
        # (else it finishes normally); queued: the group is written up to it.
        group = self._group
        if state == RUNNING:
            group.cancel_offsets.add(self._offset)
            if group.on_cancel is not None:  # the worker waits for the destination
                group.on_cancel()
        elif group.first_cancel is None or self._offset < group.first_cancel:
            group.first_cancel = self._offset

    def _watch(self) -> None:
        # (with _lock held) be told when the group is done.
        if not self._watching:
            watched = self._group.watched
            if watched is not None:
                watched.append(self)
            self._watching = True

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        with _lock:
            self._watch()
        return super()._waiters

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        with _lock:
            self._watch()
        return super()._condition

    def add_done_callback(self, fn: Callable[[BackgroundWriteProcess], object]) -> None:
        with _lock:
            self._watch()
        super().add_done_callback(fn)

    def add_progress_callback(self, fn: Callable[[WriteProgress], object],
                              interval: float = 0.1) -> None:
        with _lock:
            self._watch()
        super().add_progress_callback(fn, interval)


def start_group(group: GroupState, timing: WriteTiming) -> int | None:
    """Mark a group running (for the worker): from now on its writes cannot be
    cancelled. Return the offset of the first one cancelled while queued, or None."""
    with _lock:
        group.timing = timing
        group.state = RUNNING
        return group.first_cancel


def finish_group(group: GroupState, flush_error: BaseException | None = None) -> None:
    """Complete a group (for the worker), with the error of the flush that carried
    its bytes, if it failed; tell its waiters and run its callbacks."""
    with_callbacks: list[BackgroundWriteProcess] = []
    with _lock:
        if group.state == FINISHED:
            return
        group.flush_error = flush_error
        group.state = FINISHED
        watched, group.watched = group.watched, None
        for member in watched or ():
            if member._own_state is None:
                _tell_finished(member, with_callbacks)
    for handle in with_callbacks:
        handle._invoke_callbacks()


def all_of(handles: list[BackgroundWriteProcess], total: int | None = None,
           ) -> BackgroundWriteProcess:
    """A handle done once every one of ``handles`` is (failed with the first failure),
    of ``total`` bytes (None: the sum of theirs)."""
    if total is None:
        total = sum(handle.total_bytes or 0 for handle in handles)
    combined = running_handle(total)
    left = [len(handles)]
    lock = threading.Lock()

    def one_done(done: BackgroundWriteProcess) -> None:
        error = done.exception() if not done.cancelled() else None
        with lock:  # (one outcome, whichever callbacks race)
            left[0] -= 1
            if combined.done():
                return
            if error is not None:
                combined.set_exception(error)
            elif done.cancelled():
                combined.set_exception(CancelledError())
            elif left[0] == 0:
                combined.bytes_written = combined.total_bytes or 0  # (what result() gives)
                combined.set_result()

    for handle in handles:
        handle.add_done_callback(one_done)
    return combined
