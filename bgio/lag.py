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
import weakref
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KeepsUp", "LagGauge", "LagStatus", "check_max_lag", "refuse_in_process"]

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
        Pacing is suspended while the writer's ``pending_bytes`` exceed this.
    behind : bool
        Whether pacing is suspended now (the last chunk was written unpaced,
        and data are still pending).
    episodes : int
        How many times pacing was suspended.
    unpaced_seconds : float
        Seconds spent writing with pacing suspended, all episodes together.
    unpaced_bytes : int
        Bytes written with pacing suspended.
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
        seconds = float(max_lag)
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


def refuse_in_process(max_lag: object, max_lag_bytes: object) -> None:
    """A writer with ``backend="process"``: ``ValueError`` if a ``max_lag`` is given (its
    pacing is applied in the writer process, which does not measure the lag yet)."""
    check_max_lag(max_lag, max_lag_bytes)
    for name, value in (("max_lag", max_lag), ("max_lag_bytes", max_lag_bytes)):
        if value is not None:
            raise ValueError(f"{name} applies to backend='thread' writers only; with "
                             f"backend='process', bound the backlog with max_pending_bytes")


class LagGauge:
    """Whether a writer's backlog is over its ``max_lag``, and the episodes it was.

    Parameters
    ----------
    max_seconds, max_bytes : float or None, int or None
        The bounds (checked by :func:`check_max_lag`); at least one is set.
    pending : callable returning int
        The writer's bytes accepted and not yet stored (its ``pending_bytes``).
    name : str
        What the log calls the writer.
    """

    __slots__ = (
        "_active",
        "_pending",
        "_since",
        "_unpaced",
        "_until",
        "episodes",
        "max_bytes",
        "max_seconds",
        "name",
        "unpaced_bytes",
    )

    def __init__(self, max_seconds: float | None, max_bytes: int | None,
                 pending: Callable[[], int], name: str) -> None:
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self._pending = pending
        self.name = name
        self.episodes = 0
        self.unpaced_bytes = 0
        self._active = False
        self._since = 0.0  # when the current episode began
        self._until = 0.0  # when its last unpaced chunk ended
        self._unpaced = 0.0  # seconds of the episodes that ended

    def behind(self, accepted: float, now: float) -> bool:
        """(The worker, before a chunk of data accepted at ``accepted``) whether to write
        it unpaced. Both times are :func:`time.perf_counter` readings."""
        limit, bound = self.max_seconds, self.max_bytes
        age = now - accepted
        over = limit is not None and age > limit
        if not over and bound is not None:
            over = self._pending() > bound
        if over:
            if not self._active:
                self._active = True
                self._since = self._until = now
                self.episodes += 1
                logger.info("bgio: %s is behind (%d bytes pending, the oldest queued %.3f s "
                            "ago): pacing suspended until it catches up", self.name,
                            self._pending(), age)
        elif self._active:
            self._active = False
            self._unpaced += self._until - self._since
            logger.info("bgio: %s caught up after %.3f s unpaced; pacing resumed", self.name,
                        self._until - self._since)
        return over

    def wrote(self, nbytes: int, finished: float) -> None:
        """(The worker) a chunk of ``nbytes`` was written unpaced, ending at ``finished``."""
        self.unpaced_bytes += nbytes
        self._until = finished

    @property
    def active(self) -> bool:
        """Whether pacing is suspended now: the last chunk went unpaced, and data wait."""
        return self._active and self._pending() > 0

    @property
    def unpaced_seconds(self) -> float:
        """Seconds written with pacing suspended so far."""
        current = self._until - self._since if self._active else 0.0
        return self._unpaced + current

    def status(self) -> LagStatus:
        """A snapshot of the bounds and the counts."""
        return LagStatus(self.max_seconds, self.max_bytes, self.active, self.episodes,
                         self.unpaced_seconds, self.unpaced_bytes)


class KeepsUp:
    """A writer's ``max_lag``: its gauge (where it has one) and the ``lag`` property."""

    _lag: LagGauge | None = None

    def _keep_up(self, max_lag: float | None, max_lag_bytes: int | None, name: str) -> None:
        """Make the gauge of a writer given a ``max_lag`` (checked: :func:`check_max_lag`);
        it reads the writer's ``pending_bytes``. The jobs that carry the gauge do not keep
        the writer alive: a writer let go is freed without the cyclic collector."""
        if max_lag is None and max_lag_bytes is None:
            return
        writer = weakref.ref(self)

        def pending() -> int:
            alive = writer()
            return 0 if alive is None else int(getattr(alive, "pending_bytes", 0))

        self._lag = LagGauge(max_lag, max_lag_bytes, pending, name)

    @property
    def lag(self) -> LagStatus | None:
        """The writer's ``max_lag``, and how often and how long its pacing was suspended
        (see :class:`bgio.lag.LagStatus`); None for a writer without one."""
        gauge = self._lag
        return None if gauge is None else gauge.status()
