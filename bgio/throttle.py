"""Pacing maths: how long to wait before the next chunk, as a pure function of the past.

Nothing here sleeps or touches a file. The worker asks :meth:`Throttle.delay`
how long to wait before a chunk, waits (interruptibly), writes, and reports
the write with :meth:`Throttle.record`. Tests drive it with a fake clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from itertools import islice

from .priority import BackgroundIOPriority

__all__ = ["IDLE_SLACK", "Throttle"]

#: Seconds a chunk may start after it could have and still count as written
#: back to back (its lateness is made up under ``max_rate``); beyond that the
#: destination sat idle.
IDLE_SLACK = 0.02


class Throttle:
    """Duty-cycle pacing over a window of chunks, plus an optional token bucket.

    Duty cycle: with ``p = bandwidth_pct``, the worker may be busy writing
    ``p`` % of the wall time. Over the last ``N = num_chunks_rate_smoothing``
    chunks, with ``B`` the time they spent writing and ``W`` the wall time
    since the first of them started, the next chunk may start once
    ``W >= B * 100 / p``. Overhead and oversleeping count as idle time, so
    the busy fraction converges on ``p / 100`` rather than drifting.

    Absolute rate: with ``max_rate`` set, a chunk of ``n`` bytes lets the
    next one start ``n / max_rate`` after its own due start. A chunk that
    starts late although it started as soon as it could (the write before
    it stalled in the OS, a pause overslept) keeps its due start, so the
    lost time is made up by the chunks after it, up to ``N`` chunks' worth:
    the rate averages ``max_rate``. Time with nothing to write (a chunk that
    starts more than :data:`IDLE_SLACK` after it could have) earns no
    credit, so a burst after idling never exceeds one chunk.

    A pause shorter than ``min_pause`` is not asked for (waking up costs
    more than it gives); the chunks that owe it are kept in the window until
    together they owe at least ``min_pause``, so the duty cycle holds on
    fast devices too.

    Parameters
    ----------
    profile : BackgroundIOPriority
        The pacing profile. :attr:`profile` may be replaced between chunks
        (a destination's writes can have different priorities); history is kept.
    clock : callable returning float seconds, default :func:`time.perf_counter`
        A monotonic clock; tests pass a fake one.
    min_pause : float, default 0
        Seconds; the shortest pause worth taking.

    Examples
    --------
    >>> from bgio import BackgroundIOPriority
    >>> now = [0.0]
    >>> t = Throttle(BackgroundIOPriority(0, 1024, 25), clock=lambda: now[0])
    >>> t.delay()                # nothing written yet
    0.0
    >>> t.record(1024, 0.0, 1.0) # one second busy writing
    >>> now[0] = 1.0
    >>> t.delay()                # busy 25 %: idle three seconds
    3.0
    """

    __slots__ = ("_clock", "_last_end", "_min_pause", "_next_rate_start", "_window",
                 "_window_busy", "profile")

    #: Chunks kept at most while short pauses add up (bounds memory on a very fast device).
    MAX_RETAINED = 4096

    def __init__(
        self,
        profile: BackgroundIOPriority,
        clock: Callable[[], float] = time.perf_counter,
        min_pause: float = 0.0,
    ) -> None:
        self.profile = profile
        self._clock = clock
        self._min_pause = min_pause
        # (start, busy seconds, bytes, end) of recent chunks, oldest first: the
        # last N, and more while the pauses they owe are too short to take.
        self._window: deque[tuple[float, float, int, float]] = deque()
        self._window_busy = 0.0  # busy time of every chunk in the window
        self._next_rate_start = float("-inf")  # when the next chunk is due (max_rate)
        self._last_end = float("-inf")  # when the last chunk's write ended

    def delay(self) -> float:
        """Seconds to wait before writing the next chunk (0, or at least ``min_pause``)."""
        profile = self.profile
        pct = profile.bandwidth_pct
        max_rate = profile.max_rate
        if pct >= 100 and max_rate is None:
            return 0.0
        now = self._clock()
        wait = 0.0
        window = self._window
        if pct < 100 and window:
            size = profile.num_chunks_rate_smoothing
            if len(window) <= size:
                wait = window[0][0] + self._window_busy * 100.0 / pct - now
            else:
                busy = start = 0.0
                for start, chunk_busy, _, _ in islice(reversed(window), size):  # newest N only
                    busy += chunk_busy
                wait = start + busy * 100.0 / pct - now
                if wait < self._min_pause:
                    # Pauses too short to take add up over the chunks kept
                    # since the last pause, so the duty cycle still holds.
                    wait = window[0][0] + self._window_busy * 100.0 / pct - now
            if wait >= self._min_pause or wait <= 0:
                self._trim(size)  # nothing owed beyond the last N chunks
        if max_rate is not None:
            wait = max(wait, self._next_rate_start - now)
        return wait if wait >= self._min_pause and wait > 0 else 0.0

    def record(self, nbytes: int, started: float, finished: float, waited: float = 0.0) -> None:
        """Account for a chunk of ``nbytes`` written between two clock readings.

        ``waited`` is the part of that time spent waiting for the destination
        to drain (back-pressure): it is not busy time.
        """
        busy = finished - started - waited
        self._window.append((started, busy, nbytes, finished))
        self._window_busy += busy
        profile = self.profile
        if profile.bandwidth_pct >= 100:
            self._trim(profile.num_chunks_rate_smoothing)
        else:
            self._trim(self.MAX_RETAINED)
        max_rate = profile.max_rate
        if max_rate is not None:
            due = self._next_rate_start
            could_start = max(due, self._last_end)
            if started - could_start > IDLE_SLACK:
                due = started  # it waited for data: idle time earns nothing
            else:
                # Late only because of the write before it or an oversleep:
                # keep the schedule, owing at most N chunks' worth.
                owed = profile.num_chunks_rate_smoothing * nbytes / max_rate
                due = max(due, started - owed)
            self._next_rate_start = due + nbytes / max_rate
        self._last_end = finished

    def _trim(self, size: int) -> None:
        window = self._window
        while len(window) > size:
            self._window_busy -= window.popleft()[1]

    def rate(self, since: float = float("-inf"), until: float = float("inf")) -> float | None:
        """Bytes per second over the smoothing window's chunks started in ``[since, until]``.

        Returns ``None`` when no such chunk has been recorded.
        """
        chunks = [chunk for chunk in self._window if since <= chunk[0] <= until]
        if not chunks:
            return None
        elapsed = chunks[-1][3] - chunks[0][0]
        if elapsed <= 0:
            return None
        return sum(chunk[2] for chunk in chunks) / elapsed
