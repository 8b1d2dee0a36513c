"""Keeping up: a writer's ``max_lag``, and when its backlog suspends pacing.

A paced writer whose producer is faster than its profile falls behind
without end. With ``max_lag`` (seconds) or ``max_lag_bytes`` set, the writer
gives each of its jobs a :class:`LagGauge` and the time it was accepted;
before each chunk the worker asks :meth:`LagGauge.behind`, and while the
backlog is too old or too large it writes without pausing (the profile's
chunk size and I/O priority stay; only the pauses go), telling the throttle
so that no debt is carried into the paced writing that resumes once the
backlog is back under the bound (:meth:`bgio.throttle.Throttle.record`,
``hurried``).

The gauge is written by the one worker thread that serves the writer's
destination at a time and read from any thread: its counts are plain
attributes, and a reader may see one chunk's update late.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KeepsUp", "LagGauge", "LagStatus", "check_max_lag", "refuse_in_process_writer",
           "reported"]

logger = logging.getLogger("bgio")


@dataclass(frozen=True, slots=True)
class LagStatus:
    """A writer's ``max_lag`` and what it did so far (``writer.lag``).

    Attributes
    ----------
    max_lag : float or None
        Seconds: pacing is suspended while data accepted longer ago than
        this is not yet written.
    max_lag_bytes : int or None
        Pacing is suspended while more than this is queued behind the data
        being written (bytes handed to the worker and not yet stored; a
        chunk an HDF5 writer is still filling is not queued).
    behind : bool
        Whether pacing is suspended now: an episode began, and the writer
        has not caught up yet (it has once nothing, or with only
        ``max_lag_bytes`` no more than that, is queued behind what it
        wrote).
    episodes : int
        How many times pacing was suspended.
    unpaced_seconds : float
        Seconds spent writing with pacing suspended, all episodes together.
    unpaced_bytes : int
        Bytes written with pacing suspended (an HDF5 writer's stores: a live
        file's announcements and partly filled chunks stored again count
        too).
    """

    max_lag: float | None
    max_lag_bytes: int | None
    behind: bool
    episodes: int
    unpaced_seconds: float
    unpaced_bytes: int


def check_max_lag(max_lag: object, max_lag_bytes: object) -> tuple[float | None, int | None]:
    """``max_lag`` as seconds (finite, > 0) and ``max_lag_bytes`` as an int >= 1, or None.

    Raises
    ------
    TypeError, ValueError
        Naming the argument that is not a number, or out of range.
    """
    seconds: float | None = None
    if max_lag is not None:
        if isinstance(max_lag, bool) or not isinstance(max_lag, numbers.Real):
            raise TypeError(f"max_lag must be a number of seconds or None, got "
                            f"{type(max_lag).__qualname__}")
        try:
            seconds = float(max_lag)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"max_lag must be finite and > 0 seconds, got {max_lag!r}")
    size: int | None = None
    if max_lag_bytes is not None:
        if isinstance(max_lag_bytes, bool) or not isinstance(max_lag_bytes, numbers.Integral):
            raise TypeError(f"max_lag_bytes must be an int or None, got "
                            f"{type(max_lag_bytes).__qualname__}")
        size = int(max_lag_bytes)
        if size < 1:
            raise ValueError(f"max_lag_bytes must be >= 1, got {max_lag_bytes!r}")
    return seconds, size


def refuse_in_process_writer(max_lag: object, max_lag_bytes: object) -> None:
    """A :class:`bgio.Writer` with ``backend="process"``: ``ValueError`` if a ``max_lag``
    is given (checked first). Its data reach the writer process as streams, after the
    writes ahead of them have taken the shared ring: the writer process knows neither
    when a write was made nor how large it is, so it cannot measure the lag."""
    check_max_lag(max_lag, max_lag_bytes)
    for name, value in (("max_lag", max_lag), ("max_lag_bytes", max_lag_bytes)):
        if value is not None:
            raise ValueError(f"{name}: a bgio.Writer with backend='process' has no max_lag "
                             f"(bound its backlog with max_pending_bytes); the process "
                             f"backend's HDF5 writers have one")


def reported(bounds: tuple[float | None, int | None] | None,
             status: LagStatus | None) -> LagStatus | None:
    """A ``backend="process"`` writer's ``lag``: the writer process's last report
    (``status``) of its ``max_lag`` ``bounds``, all zero before the first (None without
    a ``max_lag``)."""
    if bounds is None or bounds == (None, None):
        return None
    if status is not None:
        return status
    return LagStatus(bounds[0], bounds[1], False, 0, 0.0, 0)


class LagGauge:
    """Whether a writer's backlog is over its ``max_lag``, and the episodes it was.

    Parameters
    ----------
    max_seconds, max_bytes : float or None, int or None
        The bounds (checked by :func:`check_max_lag`); at least one is set.
    queued : callable returning int
        The writer's bytes queued for the worker and not yet stored (a
        chunk being filled is not queued; the store in hand is, until done).
    name : str
        What the log calls the writer.
    """

    __slots__ = ("_active", "_lock", "_queued", "_since", "_unpaced", "_until", "episodes",
                 "max_bytes", "max_seconds", "name", "observer", "unpaced_bytes")

    def __init__(self, max_seconds: float | None, max_bytes: int | None,
                 queued: Callable[[], int], name: str) -> None:
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._queued = queued
        self.name = name
        # (Written by the worker, read by any thread: a status is taken under the lock,
        # so that it never sees an episode half begun or half ended.)
        self._lock = threading.Lock()
        self.episodes = 0
        self.unpaced_bytes = 0
        self._active = False
        self._since = 0.0  # when the current episode began
        self._until = 0.0  # when its last unpaced chunk ended
        self._unpaced = 0.0  # seconds of the episodes that ended
        #: Called with a status as each episode begins and ends (in the worker's thread).
        self.observer: Callable[[LagStatus], object] | None = None

    def behind(self, accepted: float, now: float, in_hand: int) -> bool:
        """(The worker, before a chunk of a run of ``in_hand`` bytes accepted at
        ``accepted``) whether to write it unpaced: the run is older than ``max_seconds``,
        or more than ``max_bytes`` are queued behind it. Times are
        :func:`time.perf_counter` readings."""
        limit, bound = self.max_seconds, self.max_bytes
        age = now - accepted
        over = limit is not None and age > limit
        behind_it = 0
        if not over and bound is not None:
            behind_it = self._queued() - in_hand
            over = behind_it > bound
        if over and not self._active:
            with self._lock:
                self._since = self._until = now
                self._active = True
                self.episodes += 1
            logger.info("bgio: %s is behind (the data in hand queued %.3f s ago, %d bytes "
                        "queued behind it): pacing suspended until it catches up", self.name,
                        age, max(behind_it, self._queued() - in_hand))
            self._tell()
        elif not over and self._active:
            self._end()
        return over

    def wrote(self, nbytes: int, finished: float) -> None:
        """(The worker) a chunk of ``nbytes`` was written unpaced, ending at ``finished``."""
        with self._lock:
            self.unpaced_bytes += nbytes
            self._until = finished

    def settle(self, in_hand: int) -> None:
        """(The worker, at the end of a run of ``in_hand`` bytes written unpaced) end the
        episode if nothing is queued behind the run, or, with only ``max_lag_bytes``, no
        more than that: the writer has caught up (an idle writer is not behind)."""
        if not self._active:
            return
        behind_it = self._queued() - in_hand
        if behind_it <= 0 or (self.max_seconds is None and self.max_bytes is not None
                              and behind_it <= self.max_bytes):
            self._end()

    def stop(self) -> None:
        """End the episode under way, if any: the run stopped (an error, a cancel) or the
        writer is closed; nothing waits that it could be behind with."""
        if self._active:
            self._end()

    def _end(self) -> None:
        with self._lock:
            took = self._until - self._since
            self._unpaced += took
            self._active = False
        logger.info("bgio: %s caught up after %.3f s unpaced; pacing resumed", self.name, took)
        self._tell()

    def _tell(self) -> None:
        observer = self.observer
        if observer is not None:
            try:
                observer(self.status())
            except Exception:  # (the worker goes on whatever the observer does)
                logger.exception("bgio: a max_lag observer raised")

    @property
    def active(self) -> bool:
        """Whether pacing is suspended now (an episode began and has not ended)."""
        return self._active

    @property
    def unpaced_seconds(self) -> float:
        """Seconds written with pacing suspended so far."""
        with self._lock:
            return self._unpaced + (self._until - self._since if self._active else 0.0)

    def status(self) -> LagStatus:
        """A snapshot of the bounds and the counts."""
        with self._lock:
            active = self._active
            seconds = self._unpaced + (self._until - self._since if active else 0.0)
            return LagStatus(self.max_seconds, self.max_bytes, active, self.episodes, seconds,
                             self.unpaced_bytes)


class KeepsUp:
    """A writer's ``max_lag``: its gauge (where it has one) and the ``lag`` property."""

    _lag: LagGauge | None = None

    def _keep_up(self, max_lag: float | None, max_lag_bytes: int | None, name: str) -> None:
        """Make the gauge of a writer given a ``max_lag`` (checked: :func:`check_max_lag`);
        it reads the writer's :meth:`_backlog_bytes`. The jobs that carry the gauge do not
        keep the writer alive: a writer let go is freed without the cyclic collector."""
        if max_lag is None and max_lag_bytes is None:
            return
        writer = weakref.ref(self)

        def queued() -> int:
            alive = writer()
            return 0 if alive is None else alive._backlog_bytes()

        self._lag = LagGauge(max_lag, max_lag_bytes, queued, name)

    def _backlog_bytes(self) -> int:
        """Bytes queued for the worker and not yet stored (each writer with a
        ``max_lag`` says)."""
        raise NotImplementedError

    def report_lag(self, observer: Callable[[LagStatus], object]) -> bool:
        """Call ``observer`` with a :class:`LagStatus` as each episode of pacing suspended
        begins and ends (in the worker's thread; the writer process reports its writers'
        episodes so). Returns False, and does nothing, for a writer without a
        ``max_lag`` here (one with ``backend="process"`` has it in the writer
        process)."""
        gauge = self._lag
        if gauge is None:
            return False
        gauge.observer = observer
        return True

    def _lag_closed(self) -> None:
        """(For the close) the writer is closed: it is not behind any more."""
        gauge = self._lag
        if gauge is not None:
            gauge.stop()

    @property
    def lag(self) -> LagStatus | None:
        """The writer's ``max_lag``, and how often and how long its pacing was suspended
        (see :class:`bgio.lag.LagStatus`); None for a writer without one."""
        gauge = self._lag
        return None if gauge is None else gauge.status()
