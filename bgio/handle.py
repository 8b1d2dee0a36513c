"""The Future-like handle of one background write: state, progress, result, callbacks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from concurrent.futures import CancelledError, TimeoutError
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["BackgroundWriteProcess", "CancelledError", "TimeoutError"]

logger = logging.getLogger("bgio")

PENDING = "PENDING"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
CANCELLED = "CANCELLED"

_FINAL = (FINISHED, CANCELLED)

# One lock guards the state of every handle. It is held for a few
# instructions at a time, and sparing each handle a Condition of its own
# makes creating one several times cheaper; a handle gets a Condition on
# this lock only when somebody actually waits for it.
_lock = threading.Lock()


class WriteTiming:
    """When a write ran and how long it was busy: what ``rate`` and ``duty_cycle`` report.

    One per write, or one shared by a run of small writes made in one pass.
    ``rate_of(since, until)`` is the pacing window's rate over that span.
    """

    __slots__ = ("busy", "first_start", "last_end", "rate_of")

    def __init__(self, first_start: float, last_end: float, busy: float,
                 rate_of: Callable[[float, float], float | None]) -> None:
        self.first_start = first_start
        self.last_end = last_end
        self.busy = busy
        self.rate_of = rate_of


class BackgroundWriteProcess:
    """The handle of one background write, modelled on :class:`concurrent.futures.Future`.

    Returned by :func:`bgio.bgwrite`, :func:`bgio.bgwrite_chunk` and
    :meth:`bgio.Writer.write`; not meant to be created by users. It is safe
    to use from any thread. It is also awaitable (``await handle`` gives
    :meth:`result`), a context manager (leaving the block waits for the write
    and re-raises its error), and offers :meth:`join` and :meth:`is_alive`
    for code written against the older thread-based module.

    States: *pending* (queued, or waiting for the write it is chained
    after), *running* (writing), then *done*: finished with a result, failed
    with an exception, or cancelled.

    Progress attributes are updated by the worker after every chunk and may
    be read at any time without locking.

    Attributes
    ----------
    bytes_written : int
        Bytes (characters for text streams) written so far.
    total_bytes : int or None
        Bytes the write will take in all, or ``None`` when the data is a lazy
        iterable whose size is not known in advance.
    """

    # Slots keep creation cheap: a Writer may create tens of thousands of handles.
    # Slots for what every write sets; class-level defaults for what most
    # never change (they land in the instance dict when they do). Creating
    # a handle is part of every call, and a Writer may make tens of thousands.
    __slots__ = ("__dict__", "__weakref__", "_state", "bytes_written", "total_bytes")

    _exception: BaseException | None = None
    _callbacks: list[Callable[[BackgroundWriteProcess], object]] | None = None
    _cancel_requested = False
    _waiters: threading.Condition | None = None  # made when somebody waits
    _timing: WriteTiming | None = None  # set by the worker with the first chunk
    _interrupt: Callable[[], None] | None = None  # wakes the worker if it waits on the file

    def __init__(self, total_bytes: int | None = None) -> None:
        self._state = PENDING
        self.total_bytes = total_bytes
        self.bytes_written = 0

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            state = "failed" if self._exception is not None else "finished"
        return (
            f"<{type(self).__name__} at {id(self):#x} state={state.lower()} "
            f"bytes_written={self.bytes_written} total_bytes={self.total_bytes}>"
        )

    def _condition(self) -> threading.Condition:
        """This handle's condition over the shared lock (call with ``_lock`` held)."""
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = threading.Condition(_lock)
        return waiters

    def _notify_waiters(self) -> None:
        """Wake whoever waits on this handle (call with ``_lock`` held)."""
        if self._waiters is not None:
            self._waiters.notify_all()

    # -- state ---------------------------------------------------------------------------

    def done(self) -> bool:
        """Return True if the write has finished, failed or been cancelled."""
        return self._state in _FINAL

    def running(self) -> bool:
        """Return True while the worker is writing this data."""
        return self._state == RUNNING

    def cancelled(self) -> bool:
        """Return True if the write was cancelled (some bytes may have been written)."""
        return self._state == CANCELLED

    def cancel(self) -> bool:
        """Ask the write to stop.

        A pending write is cancelled at once and nothing of it is written. A
        running write stops before its next chunk (a pacing pause is cut
        short): what was written stays, :attr:`bytes_written` says how much,
        and the handle becomes cancelled when the worker has stopped, which
        :meth:`wait` waits for. If the worker had already written every
        byte, the write finishes normally instead; :meth:`cancelled` tells
        which happened. Later writes to the same destination as a cancelled
        write fail with :class:`bgio.ChainError`, so nothing is written after
        the gap.

        Returns
        -------
        bool
            False if the write had already finished or failed; True if it
            was cancelled or asked to stop.
        """
        with _lock:
            if self._state == FINISHED:
                return False
            if self._state == CANCELLED:
                return True
            if self._state == RUNNING:
                self._cancel_requested = True
                self._notify_waiters()
                if self._interrupt is not None:
                    self._interrupt()  # under the lock: the worker unhooks it under the lock too
                return True
            self._state = CANCELLED
            self._notify_waiters()
        self._invoke_callbacks()
        return True

    # -- waiting -------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the write is done; return True if it is, False on timeout."""
        with _lock:
            if self._state in _FINAL:
                return True
            return self._condition().wait_for(self.done, timeout)

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
        """
        with _lock:
            if self._state not in _FINAL and not self._condition().wait_for(self.done, timeout):
                raise TimeoutError(f"write not done after {timeout} s")
            if self._state == CANCELLED:
                raise CancelledError(f"write cancelled after {self.bytes_written} bytes")
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
        """
        with _lock:
            if self._state not in _FINAL and not self._condition().wait_for(self.done, timeout):
                raise TimeoutError(f"write not done after {timeout} s")
            if self._state == CANCELLED:
                raise CancelledError(f"write cancelled after {self.bytes_written} bytes")
            return self._exception

    def add_done_callback(self, fn: Callable[[BackgroundWriteProcess], object]) -> None:
        """Call ``fn(handle)`` once the write is done (at once if it already is).

        The callback runs in the worker thread (or in the caller's thread if
        the write is already done); an exception it raises is logged on the
        ``bgio`` logger and otherwise ignored, as
        :meth:`concurrent.futures.Future.add_done_callback` does.
        """
        with _lock:
            if self._state not in _FINAL:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
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

            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_: BackgroundWriteProcess) -> None:
                try:
                    loop.call_soon_threadsafe(_resolve, waiter)
                except RuntimeError:  # the loop was closed before the write ended
                    pass

            self.add_done_callback(wake)
            # Cancelling the awaiting task does not cancel the write (call cancel() for that).
            yield from asyncio.shield(waiter).__await__()
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

        None until the first chunk is written.
        """
        timing = self._timing
        if timing is None:
            return None
        return timing.rate_of(timing.first_start, timing.last_end)

    @property
    def duty_cycle(self) -> float | None:
        """Measured busy fraction (0..1): time spent writing over wall time since the first chunk.

        None until the first chunk is written.
        """
        timing = self._timing
        if timing is None:
            return None
        elapsed = timing.last_end - timing.first_start
        return 1.0 if elapsed <= 0 else min(1.0, timing.busy / elapsed)

    # -- for the worker (private) -------------------------------------------------------------

    def _start(self) -> bool:
        """Mark running; False if the write was cancelled while pending."""
        with _lock:
            if self._state != PENDING:
                return False
            self._state = RUNNING
            return True

    def _record(self, started: float, finished: float, waited: float,
                rate_of: Callable[[float, float], float | None]) -> None:
        timing = self._timing
        if timing is None:
            self._timing = WriteTiming(started, finished, finished - started - waited, rate_of)
        else:
            timing.busy += finished - started - waited
            timing.last_end = finished

    def _pause(self, seconds: float) -> bool:
        """Sleep for a pacing pause, cut short by cancel(); True if cancel was asked.

        Works whether the write is running or still pending.
        """
        deadline = time.perf_counter() + seconds
        with _lock:
            while not (self._cancel_requested or self._state == CANCELLED):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._condition().wait(remaining)
            return self._cancel_requested or self._state == CANCELLED

    def _wait_for(self, other: BackgroundWriteProcess) -> None:
        """Wait until ``other`` is done, or this pending write is cancelled."""
        other.add_done_callback(self._notify)
        with _lock:
            self._condition().wait_for(lambda: other.done() or self._state == CANCELLED)

    def _notify(self, _: BackgroundWriteProcess) -> None:
        with _lock:
            self._notify_waiters()

    def _finish(self, exception: BaseException | None, cancelled: bool = False) -> None:
        """Set the final state: an exception, cancelled (stopped early), or success.

        A successful write's result is its :attr:`bytes_written`.
        """
        with _lock:
            if self._state in _FINAL:
                return
            if exception is not None:
                self._exception = exception
                self._state = FINISHED
            elif cancelled:
                self._state = CANCELLED
            else:
                self._state = FINISHED
            self._notify_waiters()
            callbacks, self._callbacks = self._callbacks, None
        if callbacks is not None:
            for fn in callbacks:
                _call(fn, self)

    def _invoke_callbacks(self) -> None:
        with _lock:
            callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        for fn in callbacks:
            _call(fn, self)


def start_all(handles: list[BackgroundWriteProcess]) -> int:
    """Mark a run of pending handles running under one lock; return how many, from the first,
    were still pending (the worker stops at a cancelled one)."""
    with _lock:
        for count, handle in enumerate(handles):
            if handle._state != PENDING:
                return count
            handle._state = RUNNING
    return len(handles)


def set_interrupt(handles: list[BackgroundWriteProcess], interrupt: Callable[[], None] | None) -> None:
    """Hook up (or, with None, unhook) what cancel() calls to wake a worker stuck on its file."""
    with _lock:
        for handle in handles:
            handle._interrupt = interrupt


def finish_all(handles: list[BackgroundWriteProcess]) -> None:
    """Complete a run of successful writes under one lock."""
    with_callbacks = []
    with _lock:
        for handle in handles:
            if handle._state in _FINAL:
                continue
            handle._state = FINISHED
            if handle._waiters is not None:
                handle._waiters.notify_all()
            if handle._callbacks is not None:
                with_callbacks.append((handle, handle._callbacks))
                handle._callbacks = None
    for handle, callbacks in with_callbacks:
        for fn in callbacks:
            _call(fn, handle)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _call(fn: Callable[[BackgroundWriteProcess], object], handle: BackgroundWriteProcess) -> None:
    try:
        fn(handle)
    except BaseException:  # even SystemExit: a worker must go on settling the other handles
        logger.exception("exception calling callback for %r", handle)
