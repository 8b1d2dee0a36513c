"""One write of a whole buffer into a fresh file, synchronous or through bgio, and its record."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..api import PriorityLike, bgwrite
from ..priority import PRESETS, BackgroundIOPriority, resolve_priority
from .data import MIB, nbytes
from .loop import loop_stats, rss, spin
from .prepare import fresh_file

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

    from ..protocols import Data

__all__ = [
    "SLOWEST_RATE",
    "SYNC_LABEL",
    "THREAD_LABEL",
    "WRITE_TIMEOUT",
    "WriteRun",
    "measure_bgio",
    "measure_nonblock",
    "measure_sync",
    "measure_thread",
    "nonblock_available",
    "priority_label",
    "timeout_for",
]

#: A write is given this long, plus its size at :data:`SLOWEST_RATE`, before it is
#: cancelled and reported as an error (a safety net: a stuck write must not hang a bench).
WRITE_TIMEOUT = 120.0
#: Bytes per second: the slowest destination the timeout allows for.
SLOWEST_RATE = 5e6
#: Label of every synchronous run (and of the synchronous arm of a comparison).
SYNC_LABEL = "sync f.write"
#: Label of the plain-thread baseline: ``f.write`` in a ``threading.Thread`` of its own.
THREAD_LABEL = "f.write in a thread"


@dataclass
class WriteRun:
    """One write of a whole buffer into a fresh file, synchronous or through bgio.

    Attributes
    ----------
    label : str
        "sync f.write" or "bgio p4", "bgio 50% 1 MiB", ...
    size_bytes : int
        Bytes written.
    seconds : float
        From just before the call to the moment the data was all handed to
        the operating system (the file opened before, closed after, both
        outside the timer).
    mib_s : float
        Throughput, ``size_bytes / seconds`` in MiB/s.
    call_ms : float
        How long the call blocked the caller: the whole write for the
        synchronous side, ``bgwrite()`` alone for bgio.
    requested_duty_pct : float or None
        The profile's ``bandwidth_pct`` (None for the synchronous side).
    measured_duty_pct : float or None
        The handle's measured ``duty_cycle`` in percent (None for sync).
    loop_p50_ms, loop_p99_ms, loop_max_ms : float or None
        The main thread's loop iterations during the write. For the
        synchronous side the main thread is blocked for the whole write, so
        its only gap is the write itself: p99 and max are the write duration
        and p50 is None.
    peak_rss_mib : float
        Peak RSS above the baseline taken after the data was allocated. For
        the synchronous side it can only be sampled after the write.
    """

    label: str
    size_bytes: int
    seconds: float
    mib_s: float
    call_ms: float
    requested_duty_pct: float | None
    measured_duty_pct: float | None
    loop_p50_ms: float | None
    loop_p99_ms: float
    loop_max_ms: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        """Throughput in bytes per second."""
        return self.size_bytes / self.seconds


def timeout_for(size: int) -> float:
    """Seconds a write of ``size`` bytes may take before it is given up.

    :data:`WRITE_TIMEOUT` plus the time ``size`` bytes take at :data:`SLOWEST_RATE`.
    """
    return WRITE_TIMEOUT + size / SLOWEST_RATE


def priority_label(priority: PriorityLike) -> str:
    """Name a preset number or a profile for tables: "bgio p4", "bgio 50% 1 MiB", ...

    Parameters
    ----------
    priority : int or BackgroundIOPriority
        A preset number or a profile.

    Returns
    -------
    str
    """
    if isinstance(priority, BackgroundIOPriority):
        for number, preset in PRESETS.items():
            if preset == priority:
                return f"bgio p{number}"
        chunk = priority.default_chunk_size
        size = f"{chunk / MIB:g} MiB" if chunk >= MIB else f"{chunk / 1024:g} KiB"
        label = f"bgio {priority.bandwidth_pct:g}% {size}"
        if priority.max_rate is not None:
            label += f" max {priority.max_rate / 1e6:g} MB/s"
        return label
    return f"bgio p{priority}"


def measure_sync(path: str | os.PathLike[str], data: object) -> WriteRun:
    """Time one synchronous ``f.write(data)`` plus ``f.flush()`` into a fresh file at ``path``.

    The file is opened before the timer starts and closed after it stops,
    exactly as in :func:`measure_bgio`. The caller removes the file.

    Parameters
    ----------
    path : path-like
        File to create (truncated if it exists).
    data : bytes-like or numpy array
        The whole buffer, written in one call.

    Returns
    -------
    WriteRun
    """
    size = nbytes(data)
    with fresh_file(path) as f:
        baseline = rss()
        t0 = time.perf_counter()
        f.write(cast("Buffer", data))  # (bytes-like or a numpy array)
        f.flush()
        seconds = time.perf_counter() - t0
        # The main thread cannot sample anything while it is inside write(),
        # so this is the RSS right after it (the write itself copies nothing).
        rss_after = rss()
    ms = seconds * 1e3
    return WriteRun(
        label=SYNC_LABEL,
        size_bytes=size,
        seconds=seconds,
        mib_s=size / MIB / seconds,
        call_ms=ms,
        requested_duty_pct=None,
        measured_duty_pct=None,
        loop_p50_ms=None,
        loop_p99_ms=ms,
        loop_max_ms=ms,
        peak_rss_mib=max(0, rss_after - baseline) / MIB,
    )


def measure_thread(path: str | os.PathLike[str], data: object) -> WriteRun:
    """Time ``f.write(data)`` in a plain thread while the main thread runs the 1 ms loop.

    What programs do without bgio when they must not block: no pacing, no
    order across writes, errors lost unless collected by hand. Measured like
    :func:`measure_bgio`: the file opened before the timer, the loop until
    the thread is done.
    """
    size = nbytes(data)
    with fresh_file(path) as f:
        done = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            try:
                f.write(cast("Buffer", data))
                f.flush()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
            finally:
                done.set()

        baseline = rss()
        t0 = time.perf_counter()
        thread = threading.Thread(target=write, name="bench-plain-thread")
        thread.start()
        t1 = time.perf_counter()
        gaps, peak, t_end, _ = spin(done.is_set, None, t0, None)
        thread.join()
        if errors:
            raise errors[0]
    return _looped(THREAD_LABEL, size, t0, t1, t_end, gaps, peak, baseline, None, None)


def nonblock_available() -> bool:
    """Whether the older ``nonblock`` package can be imported (for its comparison rows)."""
    import importlib.util

    return importlib.util.find_spec("nonblock") is not None


def measure_nonblock(path: str | os.PathLike[str], data: object, preset: int,
                     timeout: float | None = None) -> WriteRun:
    """Time the older ``nonblock.bgwrite`` at ``ioPrio=preset``, measured like :func:`measure_bgio`.

    Its handle is a thread; the loop runs until it has ended.
    """
    from nonblock import bgwrite as nonblock_bgwrite

    size = nbytes(data)
    if timeout is None:
        timeout = timeout_for(size)
    with fresh_file(path) as f:
        baseline = rss()
        t0 = time.perf_counter()
        handle = nonblock_bgwrite(f, data, ioPrio=preset)
        t1 = time.perf_counter()
        gaps, peak, t_end, timed_out = spin(lambda: not handle.is_alive(), None, t0, timeout)
        if timed_out:
            raise TimeoutError(f"nonblock p{preset}: write not done after {timeout:g} s")
    return _looped(f"nonblock p{preset}", size, t0, t1, t_end, gaps, peak, baseline,
                   PRESETS[preset].bandwidth_pct, None)


def measure_bgio(
    path: str | os.PathLike[str],
    data: object,
    priority: PriorityLike = 4,
    *,
    label: str | None = None,
    timeout: float | None = None,
) -> WriteRun:
    """Time one ``bgio.bgwrite`` of ``data`` into a fresh file while the main thread runs the 1 ms loop.

    The file is opened before the timer. Then: ``t0``, the ``bgwrite`` call
    (timed alone as the call latency), the sleep loop until ``h.done()``,
    ``t_end``. The loop's first gap starts at ``t0``, so the call itself
    counts as a main-thread gap too. ``t_end`` is when the loop sees the
    write done, up to one loop period (~1.1 ms) after it ended: what a
    polling application pays to learn it, and under 1 % of a 256 MiB write.

    Parameters
    ----------
    path : path-like
        File to create (truncated if it exists). The caller removes it.
    data : bytes-like or numpy array
        The buffer to write.
    priority : int 1..10 or BackgroundIOPriority, default 4
        Passed to ``bgwrite``.
    label : str or None
        Row label; default from :func:`priority_label`.
    timeout : float or None
        Seconds after which the write is cancelled and ``TimeoutError``
        raised; None allows 120 s plus the size at 5 MB/s.

    Returns
    -------
    WriteRun

    Raises
    ------
    TimeoutError
        If the write did not end within ``timeout``.
    Exception
        Whatever error the write ended with (re-raised from ``h.result()``).
    """
    size = nbytes(data)
    profile = resolve_priority(priority)
    if timeout is None:
        timeout = timeout_for(size)
    with fresh_file(path) as f:
        baseline = rss()
        t0 = time.perf_counter()
        handle = bgwrite(f, cast("Data", data), priority=priority)
        t1 = time.perf_counter()
        gaps, peak, t_end, timed_out = spin(handle.done, None, t0, timeout)
        if timed_out:
            handle.cancel()
            handle.wait(10.0)
            raise TimeoutError(f"{priority_label(priority)}: write not done after {timeout:g} s")
        handle.result()
    duty = handle.duty_cycle
    return _looped(label or priority_label(priority), size, t0, t1, t_end, gaps, peak, baseline,
                   profile.bandwidth_pct, None if duty is None else duty * 100.0)


def _looped(label: str, size: int, t0: float, t1: float, t_end: float, gaps: list[float],
            peak: int, baseline: int, requested: float | None,
            measured: float | None) -> WriteRun:
    """The record of a write measured beside the main loop: started at ``t0``, the call
    returned at ``t1``, the loop saw it done at ``t_end``."""
    loop = loop_stats(gaps, peak, baseline, t_end - t0, False)
    seconds = t_end - t0
    return WriteRun(
        label=label,
        size_bytes=size,
        seconds=seconds,
        mib_s=size / MIB / seconds,
        call_ms=(t1 - t0) * 1e3,
        requested_duty_pct=requested,
        measured_duty_pct=measured,
        loop_p50_ms=loop.p50_ms,
        loop_p99_ms=loop.p99_ms,
        loop_max_ms=loop.max_ms,
        peak_rss_mib=loop.peak_rss_mib,
    )
