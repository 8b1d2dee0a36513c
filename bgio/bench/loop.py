"""The 1 ms sleep loop that stands in for an interactive main thread: its gaps and peak RSS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from .data import MIB
from .prepare import settle
from .stats import percentile

__all__ = [
    "RSS_EVERY", "TICK", "LoopStats", "idle_baseline", "loop_gaps", "loop_stats", "rss", "spin",
]

#: Period of the main-thread loop that stands in for an interactive program.
TICK = 0.001
#: How often the loop samples the resident set size (in the loop itself, not a thread).
RSS_EVERY = 0.01


@dataclass
class LoopStats:
    """Wall duration of each iteration of the 1 ms sleep loop, and peak RSS during it.

    Attributes
    ----------
    iterations : int
        Number of iterations (gaps) recorded.
    seconds : float
        Wall time the loop ran.
    p50_ms, p99_ms, max_ms : float
        Median, 99th percentile and largest iteration, in milliseconds. An
        undisturbed iteration is a little over 1 ms (the sleep plus its
        wake-up latency).
    peak_rss_mib : float
        Peak resident set size seen by the loop, in MiB above ``rss_baseline``
        (0 when no baseline was given), never negative.
    timed_out : bool
        True if the loop stopped on its timeout rather than on its condition.
    """

    iterations: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    peak_rss_mib: float
    timed_out: bool = False


def rss() -> int:
    """Resident set size of this process, in bytes."""
    return int(psutil.Process().memory_info().rss)


def spin(
    until: Callable[[], bool] | None,
    duration: float | None,
    started: float,
    timeout: float | None,
) -> tuple[list[float], int, float, bool]:
    """Run the 1 ms sleep loop; return (gaps in s, peak RSS, end time, timed out).

    Parameters
    ----------
    until : callable returning bool, or None
        Stop once it returns True; checked after every iteration.
    duration : float or None
        Stop ``duration`` seconds after ``started``.
    started : float
        ``time.perf_counter()`` value the first gap is counted from.
    timeout : float or None
        Stop ``timeout`` seconds after ``started`` and report it as timed out.

    Returns
    -------
    tuple of (list of float, int, float, bool)
    """
    # Local names: attribute look-ups inside the loop would add to every gap.
    clock = time.perf_counter
    sleep = time.sleep
    memory_info = psutil.Process().memory_info
    deadline = started + duration if duration is not None else None
    give_up = started + timeout if timeout is not None else None
    gaps: list[float] = []
    peak = memory_info().rss
    next_rss = clock() + RSS_EVERY
    previous = started
    timed_out = False
    while True:
        sleep(TICK)
        now = clock()
        gaps.append(now - previous)
        previous = now
        # RSS is sampled in this very loop (a sampling thread would itself
        # compete for the GIL and disturb what is measured); it costs tens of
        # microseconds once per ~10 iterations, the same in every scenario.
        if now >= next_rss:
            peak = max(peak, memory_info().rss)
            next_rss = now + RSS_EVERY
        if until is not None and until():
            break
        if deadline is not None and now >= deadline:
            break
        if give_up is not None and now >= give_up:
            timed_out = True
            break
    ended = clock()
    # One last sample: memory freed at the very end of a write would be missed otherwise.
    peak = max(peak, memory_info().rss)
    return gaps, peak, ended, timed_out


def loop_stats(
    gaps: Sequence[float], peak: int, baseline: int | None, seconds: float, timed_out: bool
) -> LoopStats:
    """Summarise what :func:`spin` returned; ``peak`` is reported above ``baseline`` (None: 0)."""
    above = max(0, peak - baseline) / MIB if baseline is not None else 0.0
    return LoopStats(
        iterations=len(gaps),
        seconds=seconds,
        p50_ms=percentile(gaps, 50) * 1e3,
        p99_ms=percentile(gaps, 99) * 1e3,
        max_ms=max(gaps, default=0.0) * 1e3,
        peak_rss_mib=above,
        timed_out=timed_out,
    )


def loop_gaps(
    duration: float | None = None,
    *,
    until: threading.Event | Callable[[], bool] | None = None,
    rss_baseline: int | None = None,
    timeout: float | None = None,
) -> LoopStats:
    """Run a ``time.sleep(0.001)`` loop in the calling thread and report its iteration times.

    The loop stands in for an interactive program's main thread: anything
    that holds the GIL or blocks the thread shows as a long iteration. It
    also samples the peak RSS every ~10 ms, in the loop itself.

    Parameters
    ----------
    duration : float or None
        Seconds to run.
    until : threading.Event or callable returning bool, or None
        Stop once it is set (returns True); checked after every iteration.
    rss_baseline : int or None
        Bytes of RSS to subtract from the peak; None reports 0.
    timeout : float or None
        Stop after this many seconds even if ``until`` is not satisfied
        (``timed_out`` is then True).

    Returns
    -------
    LoopStats

    Raises
    ------
    ValueError
        If neither ``duration`` nor ``until`` is given.
    """
    if duration is None and until is None:
        raise ValueError("loop_gaps() needs a duration or an until condition")
    condition = until.is_set if isinstance(until, threading.Event) else until
    started = time.perf_counter()
    gaps, peak, ended, timed_out = spin(condition, duration, started, timeout)
    return loop_stats(gaps, peak, rss_baseline, ended - started, timed_out)


def idle_baseline(duration: float = 0.5) -> LoopStats:
    """The 1 ms loop with nothing else going on: what the machine's noise alone gives.

    Parameters
    ----------
    duration : float, default 0.5
        Seconds to run.

    Returns
    -------
    LoopStats
    """
    settle()
    return loop_gaps(duration, rss_baseline=rss())
