"""Progress callbacks: a record of how far a write got, delivered off the worker's thread.

A handle's :meth:`~bgio.BackgroundWriteProcess.add_progress_callback`
registers a :class:`ProgressWatcher`. The worker (or, for the writer
process, the thread that reads its reports) tells the watcher after each
chunk; the watcher makes a :class:`WriteProgress` at most every
``interval`` seconds, and once more at the end, and hands it to the one
delivery thread of this process, which calls the function. So a slow
callback never holds a write up: while it runs, newer records replace the
ones it has not been given yet (it gets the latest, and always the last),
and one that raises is logged and called again next time.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressWatcher", "WriteProgress", "check_interval"]

logger = logging.getLogger("bgio")


@dataclass(frozen=True, slots=True)
class WriteProgress:
    """How far a write got, as a progress callback is given it.

    Attributes
    ----------
    done : int
        Bytes written (to the destination, or its page cache).
    total : int or None
        Bytes to write, if known (None for an iterable of unknown length).
    rate : float or None
        Bytes per second over the profile's smoothing window, once measured.
    pending : int or None
        Bytes accepted and not yet written (``total - done``), if known.
    on_disk : int or None
        Of ``done``, the bytes on the device, where bgio knows it (see
        :attr:`bgio.BackgroundWriteProcess.bytes_on_disk`).
    finished : bool
        True for the last call, made once the write is done (whatever its
        outcome: the handle says which), or for a writer's, once it is
        closed.
    frames_done, frames_total : int or None
        For a :class:`bgio.h5.FrameWriter` or :class:`bgio.h5.RecordWriter`:
        the frames stored and the frames accepted (None elsewhere).
    error : BaseException or None
        The error that ended the write (a handle's last record); for a
        writer, the first error among its writes (or its close's).
    dropped_frames : int or None
        For an HDF5 writer: frames lost before they reached it (see
        :attr:`bgio.h5.FrameWriter.dropped_frames`), from the first
        callback on.
    unpaced_bytes : int or None
        Bytes written with pacing suspended because the writer was behind
        its ``max_lag``: of this write (a handle's record), or of the
        writer's whole run (a writer's, None when it has no ``max_lag``).
    behind : bool or None
        For a writer with a ``max_lag``: whether its pacing is suspended now
        (None elsewhere).
    """

    done: int
    total: int | None
    rate: float | None
    pending: int | None
    on_disk: int | None
    finished: bool
    frames_done: int | None = None
    frames_total: int | None = None
    error: BaseException | None = None
    dropped_frames: int | None = None
    unpaced_bytes: int | None = None
    behind: bool | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` (1.0 for an empty write), or None if the total is unknown."""
        if self.total is None:
            return None
        return 1.0 if self.total == 0 else self.done / self.total


def check_interval(interval: object) -> float:
    """``interval`` as seconds (finite, >= 0); ``TypeError``/``ValueError`` naming it."""
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real):
        raise TypeError(f"interval must be a number of seconds, got {type(interval).__qualname__}")
    seconds = float(interval)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"interval must be finite and >= 0, got {interval!r}")
    return seconds


class ProgressWatcher:
    """One progress callback of one handle: when to make a record, and its delivery.

    Parameters
    ----------
    fn : callable taking a WriteProgress
        Called in bgio's delivery thread.
    interval : float
        Seconds between records at most one of which is made.
    """

    __slots__ = ("_last", "fn", "interval")

    def __init__(self, fn: Callable[[WriteProgress], object], interval: float) -> None:
        self.fn = fn
        self.interval = interval
        self._last = -math.inf

    def tick(self, make: Callable[[bool], WriteProgress]) -> None:
        """Bytes were written: deliver a record if ``interval`` has passed since the last."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            _deliver(self, make(False))

    def finish(self, record: WriteProgress) -> None:
        """The write is done: deliver its last record."""
        _deliver(self, record)


# -- the delivery thread -------------------------------------------------------------------

#: Seconds the delivery thread stays with nothing to deliver before it ends.
LINGER = 1.0

_changed = threading.Condition(threading.Lock())
#: Records not yet delivered, the latest per watcher (dicts keep their order: oldest first).
_waiting: dict[ProgressWatcher, WriteProgress] = {}
_thread: threading.Thread | None = None


def _deliver(watcher: ProgressWatcher, record: WriteProgress) -> None:
    global _thread
    inline = False
    with _changed:
        _waiting.pop(watcher, None)  # (a newer one: to the back of the line)
        _waiting[watcher] = record
        if _thread is None or not _thread.is_alive():  # (none yet, or the idle one ended)
            thread = threading.Thread(target=_run, name="bgio-progress", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had (at exit): called here instead
                del _waiting[watcher]
                inline = True
            else:
                _thread = thread
        _changed.notify()
    if inline:
        _call(watcher, record)


def _run() -> None:
    global _thread
    while True:
        with _changed:
            if not _waiting and not _changed.wait_for(lambda: bool(_waiting), LINGER):
                # Nothing to deliver for a while: end (the next record starts another),
                # as the engine's idle workers do.
                if _thread is threading.current_thread():
                    _thread = None
                return
            watcher = next(iter(_waiting))
            record = _waiting.pop(watcher)
        _call(watcher, record)
        del watcher, record  # (while it waits, this thread keeps no callback alive)


def _after_fork_in_child() -> None:
    # The parent's records are the parent's to deliver, and its lock may have been held
    # by one of its threads at the fork.
    global _changed, _thread
    _changed = threading.Condition(threading.Lock())
    _waiting.clear()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _call(watcher: ProgressWatcher, record: WriteProgress) -> None:
    try:
        watcher.fn(record)
    except BaseException:  # (even SystemExit: a callback must not end the deliveries)
        logger.exception("bgio: a progress callback raised (it will be called again)")
