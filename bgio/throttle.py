"""Pacing maths: when the next chunk is due, as a pure function of the past.

Nothing here sleeps or touches a file. The worker asks :meth:`Throttle.delay`
how long to wait before a chunk, waits (interruptibly), writes, and reports
the write with :meth:`Throttle.record`. Tests drive it with a fake clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .priority import BackgroundIOPriority

__all__ = ["IDLE_SLACK", "MAX_CREDIT", "Throttle"]

#: Seconds a chunk may start after it could have, with no pause asked for,
#: and still count as written back to back; beyond that the worker had
#: nothing to write, and idle time earns no credit.
IDLE_SLACK = 0.02

#: Seconds of lateness caused by waiting for a CPU (other processes) made
#: up at most, unless a smoothing window's pauses come to more: a thread
#: that shares a CPU with another process gets less of it for tenths of a
#: second at a time (until the scheduler moves one of them), and makes that
#: up when it gets more. Other lateness is made up to :data:`IDLE_SLACK`.
#: Making up ``c`` seconds at ``p`` % takes ``c * p / (100 - p)`` seconds of
#: chunks back to back.
MAX_CREDIT = 0.1

#: Wake-up latencies remembered (pause oversleeps, probes): their median is
#: the latency estimate, robust to the odd long stall.
_LATENCY_SAMPLES = 9


class Throttle:
    """Deadline pacing: a busy fraction and an optional absolute rate.

    Busy fraction: with ``p = bandwidth_pct``, a chunk that kept the worker
    busy ``b`` seconds pays for ``b * 100 / p`` seconds of wall time, counted
    from when the chunk was *due*, not from when it started. A chunk that
    starts late (a pause overslept, the CPU taken by other processes, the
    interpreter lock held by a busy thread) keeps its due time, so the
    pauses after it are shorter and the lateness is made up, by shortening
    or skipping pauses (chunks are never made larger). The credit is the
    largest of a smoothing window's pauses, :data:`IDLE_SLACK`, and the
    time spent waiting for a CPU since the schedule was last kept, at most
    :data:`MAX_CREDIT`. A chunk that starts late with no pause asked for,
    more than :data:`IDLE_SLACK` after the one before ended and not for want
    of a CPU, found the worker idle (nothing to write): that earns no credit.

    Busy time is what the chunk's write cost, less waiting that is not
    writing (see :meth:`busy_of`): back-pressure from a slow reader, time
    runnable but waiting for a CPU, and the wake-up latency that every call
    releasing the interpreter lock pays when another thread runs Python
    (measured from the pauses' oversleep).

    Absolute rate: with ``max_rate`` set, a chunk of ``n`` bytes lets the
    next one start ``n / max_rate`` after its own due start, owing at most
    ``num_chunks_rate_smoothing`` chunks' worth: the rate averages
    ``max_rate``. The later of the two due times wins.

    A pause shorter than ``min_pause`` is not asked for (waking up costs
    more than it gives): the time owed stays owed, and a later pause is
    longer.

    Parameters
    ----------
    profile : BackgroundIOPriority
        The pacing profile. :attr:`profile` may be replaced between chunks
        (a destination's writes can have different priorities); the
        schedule is kept.
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
    >>> t.record(1024, 0.0, 1.0, busy=1.0)  # one second busy writing
    >>> now[0] = 1.0
    >>> t.delay()                # busy 25 %: idle three seconds
    3.0
    """

    __slots__ = ("_clock", "_contended", "_due", "_last_end", "_latencies", "_min_pause", "_paused",
                 "_rate_due", "_recent", "profile")

    def __init__(
        self,
        profile: BackgroundIOPriority,
        clock: Callable[[], float] = time.perf_counter,
        min_pause: float = 0.0,
    ) -> None:
        self.profile = profile
        self._clock = clock
        self._min_pause = min_pause
        self._due = float("-inf")  # when the next chunk may start (busy fraction)
        self._rate_due = float("-inf")  # when the next chunk may start (max_rate)
        self._last_end = float("-inf")  # when the last chunk's write ended
        self._paused = False  # whether a pause was asked for before the coming chunk
        self._contended = 0.0  # CPU waits since the schedule was last kept (<= MAX_CREDIT)
        # (start, end, bytes) of the last N chunks, for the reported rate.
        self._recent: deque[tuple[float, float, int]] = deque()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)

    def delay(self) -> float:
        """Seconds to wait before writing the next chunk (0, or at least ``min_pause``)."""
        wait = max(self._due, self._rate_due) - self._clock()
        if wait >= self._min_pause and wait > 0:
            self._paused = True
            return wait
        return 0.0

    def forget_pause(self) -> None:
        """The pause :meth:`delay` asked for was not followed by a chunk (the work went
        elsewhere meanwhile): the next chunk's start is judged as if none had been asked."""
        self._paused = False

    def record(self, nbytes: int, started: float, finished: float, busy: float,
               cpu_wait: float = 0.0, hurried: bool = False) -> None:
        """Account for a chunk of ``nbytes`` written between two clock readings.

        ``busy`` is the part of ``finished - started`` spent writing (see
        :meth:`busy_of`); ``cpu_wait`` the seconds the worker spent
        runnable but waiting for a CPU since the chunk before ended (before
        this one and during it): lateness it caused is made up to
        :data:`MAX_CREDIT`, and a gap it explains is not idle time.

        ``hurried``: the chunk was written without the pause :meth:`delay`
        would have asked for (a writer behind its ``max_lag``, see
        :mod:`bgio.lag`). The schedule then restarts from this chunk, as if
        it were unpaced: what it owed is forgiven, so the paced chunks after
        it are paced from now on, and do not pay for the hurry.
        """
        profile = self.profile
        if hurried:
            self._paused = False
            self._contended = 0.0
            self._due = started + busy
            if profile.max_rate is not None:
                self._rate_due = started + nbytes / profile.max_rate
            self._remember(started, finished, nbytes)
            return
        # Earliest the chunk could have started; later than that with no
        # pause asked for, and not for want of a CPU, is idle time (nothing
        # was queued).
        could_start = max(self._due, self._rate_due, self._last_end)
        idle = not self._paused and started - could_start - cpu_wait > IDLE_SLACK
        self._paused = False
        pct = profile.bandwidth_pct
        if idle or started <= self._due:
            self._contended = 0.0  # on schedule (or idle): no lateness owed to other processes
        self._contended = min(self._contended + cpu_wait, MAX_CREDIT)
        if pct < 100:
            period = busy * 100.0 / pct
            # Credit for starting late: the pauses of a smoothing window, at
            # least IDLE_SLACK, and what waiting for a CPU has cost since the
            # schedule was last kept, up to MAX_CREDIT. One pause is often
            # shorter than one wake-up from a sleep (40 us for a 0.16 ms
            # chunk at 80 %, against ~0.13 ms), a CPU taken by other
            # processes costs whole time slices (~3 ms), and a thread that
            # shares a CPU with one of them falls behind for tenths of a
            # second: lateness up to that is made up.
            credit = max(profile.num_chunks_rate_smoothing * (period - busy), IDLE_SLACK,
                         self._contended)
            due = started if idle else max(self._due, started - credit)
            self._due = due + period
        else:
            # Unpaced, but the schedule is kept: a chunk at a lower
            # percentage after this one inherits no credit.
            self._due = started + busy
        max_rate = profile.max_rate
        if max_rate is not None:
            interval = nbytes / max_rate
            if idle:
                due = started
            else:
                owed = profile.num_chunks_rate_smoothing * interval
                due = max(self._rate_due, started - owed)
            self._rate_due = due + interval
        self._remember(started, finished, nbytes)

    def _remember(self, started: float, finished: float, nbytes: int) -> None:
        recent = self._recent
        recent.append((started, finished, nbytes))
        while len(recent) > self.profile.num_chunks_rate_smoothing:
            recent.popleft()
        self._last_end = finished

    def note_wake(self, requested: float, actual: float) -> None:
        """Record a wait that lasted ``actual`` seconds for ``requested``: its excess is the
        latency of getting the CPU and the interpreter lock back."""
        self._latencies.append(max(0.0, actual - requested))

    @property
    def latency(self) -> float:
        """The current estimate of the wake-up latency, seconds (0 until measured)."""
        samples = self._latencies
        if not samples:
            return 0.0
        ordered = sorted(samples)
        return ordered[len(ordered) // 2]

    def busy_of(self, wall: float, cpu: float, waited: float = 0.0,
                queued: float = 0.0) -> float:
        """The busy part of a write that took ``wall`` seconds, ``cpu`` of them on the CPU.

        ``waited`` (back-pressure from a slow reader) is not busy, nor is
        ``queued`` (runnable, but waiting for a CPU taken by other
        processes). Of the rest, time off the CPU is busy (the device at
        work) except for one wake-up latency (:attr:`latency`), which every
        return from a call that released the interpreter lock pays when
        another thread is running Python.
        """
        work = max(0.0, wall - waited - queued)
        off_cpu = max(0.0, work - cpu)
        return work - min(off_cpu, self.latency)

    def rate(self, since: float = float("-inf")) -> float | None:
        """Bytes per second over the smoothing window's chunks that started at or after ``since``.

        Returns ``None`` when no such chunk has been recorded.
        """
        first = end = None
        total = 0
        for start, finished, nbytes in self._recent:
            if start >= since:
                if first is None:
                    first = start
                end = finished
                total += nbytes
        if first is None or end is None or end <= first:
            return None
        return total / (end - first)
