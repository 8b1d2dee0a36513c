"""How well bgio keeps to a pace it is given: requested duty cycles and a ``max_rate`` cap,
on an idle machine and under load (:mod:`bgio.bench.load`)."""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..api import PriorityLike, bgwrite
from ..priority import PRESETS, BackgroundIOPriority
from .compare import Comparison, compare_writes
from .data import MIB, make_data, nbytes
from .load import CONDITIONS, Condition, loaded, others_cpu, wait_for_quiet, wait_under
from .prepare import scratch, settle
from .schedule import progress
from .writes import WriteRun, priority_label

__all__ = [
    "RATE_WINDOW", "RING_BYTES", "LoadedPacing", "PacingCell", "PacingRun", "RateRun", "Spread",
    "TimedFile", "duty_cycles", "max_rate", "pacing_run", "pacing_steps", "pacing_under_load",
    "ring_file", "window_rates",
]


@dataclass
class RateRun:
    """A write capped by ``max_rate``: the requested and the achieved rate.

    Attributes
    ----------
    target_rate : float
        The profile's ``max_rate``, bytes per second.
    achieved_rate : float
        ``size_bytes / seconds``, median over the runs.
    size_bytes : int
        Bytes written per run.
    seconds : float
        Median wall time of one write.
    chunk_size : int
        The chunk size used.
    runs : list of WriteRun
        Every run.
    """

    target_rate: float
    achieved_rate: float
    size_bytes: int
    seconds: float
    chunk_size: int
    runs: list[WriteRun] = field(default_factory=list)

    @property
    def error_pct(self) -> float:
        """Deviation of the achieved rate from the target, in percent."""
        return 100.0 * (self.achieved_rate / self.target_rate - 1.0)


def _profiles_only(
    data: object,
    profiles: Sequence[PriorityLike],
    repeat: int,
    directory: str | os.PathLike[str] | None,
    warmup: bool,
    on_step: Callable[[str], None] | None,
) -> Comparison:
    """:func:`compare_writes` of ``profiles`` alone: no synchronous arm, no idle baseline.

    What is measured here is bgio against its own settings, so neither
    reference arm would add a figure, only time.
    """
    return compare_writes(
        data, profiles, repeat, directory=directory, sync=False, idle_seconds=None,
        warmup=warmup, on_step=on_step,
    )


def duty_cycles(
    data: object,
    percents: Sequence[float] = (20, 50, 80),
    chunk_size: int = MIB,
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Comparison:
    """Measured duty cycle of writes at custom ``bandwidth_pct`` profiles.

    Each profile is ``BackgroundIOPriority(0.001, chunk_size, pct)``; the
    profiles are interleaved as in :func:`compare_writes` (without the
    synchronous arm or the idle baseline).

    Parameters
    ----------
    data : bytes-like or numpy array
        The buffer written by every run.
    percents : sequence of float, default (20, 50, 80)
        Requested ``bandwidth_pct`` values.
    chunk_size : int, default 1 MiB
        ``default_chunk_size`` of the profiles.
    repeat : int, default 1
        Rounds (medians reported).
    directory : path-like or None
        Where the files are written; None uses a temporary directory.
    warmup : bool, default False
        Discard one write first (the process is usually warm already).
    on_step : callable or None
        Progress callback, as in :func:`compare_writes`.

    Returns
    -------
    Comparison
        ``bgio`` holds the median run per profile, in the order of
        ``percents``; each run's ``requested_duty_pct`` and
        ``measured_duty_pct`` are the figures. ``sync`` and ``idle`` are None.
    """
    profiles = [BackgroundIOPriority(0.001, chunk_size, pct) for pct in percents]
    return _profiles_only(data, profiles, repeat, directory, warmup, on_step)


def max_rate(
    data: object,
    rate: float = 50e6,
    chunk_size: int = MIB,
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> RateRun:
    """Achieved rate of a write capped at ``rate`` bytes per second.

    The profile is preset 1 (no duty-cycle pacing) with ``max_rate=rate``
    and ``default_chunk_size=chunk_size``. The token bucket spaces the
    starts of ``n`` chunks ``n - 1`` intervals apart, so the achieved rate
    is about ``rate * n / (n - 1)``: write a hundred chunks or more (for
    example 100 MB in 1 MiB chunks, 2 s at 50 MB/s) for a figure within 1 %.

    Parameters
    ----------
    data : bytes-like or numpy array
        The buffer; pick its size for the duration wanted (``size / rate``).
    rate : float, default 50e6
        ``max_rate`` in bytes per second.
    chunk_size : int, default 1 MiB
        Chunk size of the profile.
    repeat : int, default 1
        Runs (medians reported).
    directory : path-like or None
        Where the file is written; None uses a temporary directory.
    warmup : bool, default False
        Discard one write first.
    on_step : callable or None
        Progress callback, as in :func:`compare_writes`.

    Returns
    -------
    RateRun
    """
    profile = PRESETS[1].replace(max_rate=rate, default_chunk_size=chunk_size)
    result = _profiles_only(data, [profile], repeat, directory, warmup, on_step)
    runs = result.runs[priority_label(profile)]
    rates = [run.rate for run in runs]
    return RateRun(
        target_rate=float(rate),
        achieved_rate=statistics.median(rates),
        size_bytes=nbytes(data),
        seconds=statistics.median(run.seconds for run in runs),
        chunk_size=chunk_size,
        runs=runs,
    )


# -- pacing under load -----------------------------------------------------------------------
#
# What bgio believes (the handle's duty_cycle) beside what happened, measured
# from outside bgio's throttle by the destination itself: a file object
# whose write() times the system call with the thread's CPU clock.

#: The rate windows' length, seconds.
RATE_WINDOW = 1.0
#: Bytes of the buffer the sources cycle through: larger than any CPU cache,
#: so every chunk's copy comes from memory as a real program's would.
_SOURCE_BYTES = 16 * MIB
#: Bytes of the file region the writes cycle through (see :class:`TimedFile`).
RING_BYTES = 256 * MIB


class TimedFile:
    """A binary file object that writes into a fixed region of a file and times every write.

    Each ``write`` is one ``os.pwrite`` at the next offset, wrapping to 0
    at the region's end, so a write of any length fills no more memory
    than the region (a tmpfs file grows in RAM) and, once the region has
    been written once (see :func:`ring_file`), every write copies into
    pages that exist already instead of paying for page allocation, which
    costs 3-5x and varies from run to run (PEERS.md, "This machine").

    Around the system call it reads ``time.perf_counter`` and
    ``time.thread_time``: the wall time of the write (which includes waiting
    for a CPU and, after the call, for the GIL) and the CPU time the
    writing thread spent in it. Not an ``io`` class, so bgio writes through
    its ``write`` method like any custom file object.

    Parameters
    ----------
    fd : int
        An open file descriptor, at least ``region`` bytes long.
    region : int
        Bytes of the region, a multiple of every chunk size written (a write
        that would cross its end is cut there: a partial write, which bgio
        resumes).
    run_queue : bool, default False
        Also read the writing thread's run-queue delay (time runnable but
        waiting for a CPU, from Linux's ``/proc/thread-self/schedstat``)
        around each write: evidence of CPU contention, at ~3 µs a write.
        Not beside a main thread running Python: each read releases the GIL,
        and getting it back costs a switch interval (5 ms) there.
    """

    mode = "wb"
    closed = False

    def __init__(self, fd: int, region: int, run_queue: bool = False) -> None:
        if region <= 0:
            raise ValueError(f"region must be positive, got {region}")
        self._fd = fd
        self._region = region
        self._offset = 0
        self._run_queue = run_queue
        self._schedstat = -1  # opened by the first write, in the writing thread
        # (wall start, wall end, thread CPU at start, at end, bytes, run-queue delay) per write.
        self._records: list[tuple[float, float, float, float, int, float]] = []

    def write(self, data: object) -> int:
        """Write ``data`` (bytes-like) at the next offset; return the count written."""
        offset = self._offset
        view = memoryview(data)  # type: ignore[arg-type]
        room = self._region - offset
        if view.nbytes > room:
            view = view[:room]
        if self._run_queue:
            return self._write_traced(view, offset)
        started = time.perf_counter()
        cpu = time.thread_time()
        n = os.pwrite(self._fd, view, offset)
        cpu_end = time.thread_time()
        self._records.append((started, time.perf_counter(), cpu, cpu_end, n, math.nan))
        self._offset = (offset + n) % self._region
        return n

    def _write_traced(self, view: memoryview, offset: int) -> int:
        if self._schedstat < 0:
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        stat = self._schedstat
        waited = int(os.pread(stat, 128, 0).split()[1])
        started = time.perf_counter()
        cpu = time.thread_time()
        n = os.pwrite(self._fd, view, offset)
        cpu_end = time.thread_time()
        ended = time.perf_counter()
        waited = int(os.pread(stat, 128, 0).split()[1]) - waited
        self._records.append((started, ended, cpu, cpu_end, n, waited * 1e-9))
        self._offset = (offset + n) % self._region
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Close the run-queue reader; the file's descriptor belongs to the caller."""
        if self._schedstat >= 0:
            os.close(self._schedstat)
            self._schedstat = -1

    def records(self) -> np.ndarray:
        """Every write so far: an ``(n, 6)`` float array of wall start, wall end (both
        ``time.perf_counter`` seconds), the thread's CPU clock at start and at end
        (``time.thread_time``), bytes, and run-queue delay in seconds (NaN untraced)."""
        return np.asarray(self._records, dtype=float).reshape(-1, 6)


@contextlib.contextmanager
def ring_file(directory: str | os.PathLike[str], size: int = RING_BYTES) -> Iterator[int]:
    """A file of ``size`` bytes in ``directory``, written once so its pages exist; yields its fd.

    The file is closed and removed when the block ends.
    """
    with scratch(directory, "bgio-pacing-ring.bin") as path:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = make_data(min(size, MIB))
            for offset in range(0, size, len(block)):
                os.pwrite(fd, block.data[: size - offset], offset)
            yield fd
        finally:
            os.close(fd)


def _cycled(buffer: memoryview, chunk_size: int, until: float | None,
            total: int | None) -> Iterator[memoryview]:
    """Chunks cycled from ``buffer`` until the clock passes ``until`` or ``total`` bytes.

    A lazy source of any length: one buffer serves a write of several GiB,
    and a fixed duration gives every condition the same number of seconds
    although their speeds differ twentyfold.
    """
    clock = time.perf_counter
    size = len(buffer) - len(buffer) % chunk_size
    offset = 0
    left = total
    while (until is None or clock() < until) and (left is None or left > 0):
        n = chunk_size if left is None else min(chunk_size, left)
        yield buffer[offset : offset + n]
        offset = (offset + n) % size
        if left is not None:
            left -= n


@dataclass
class Spread:
    """Median and range of one figure over repeated runs.

    Attributes
    ----------
    median, low, high : float
    """

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (at least one)."""
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class PacingRun:
    """One paced write beside a load, as bgio saw it and as its destination saw it.

    The *truth* is the writing thread's CPU time inside the write system
    calls over the wall time of the write: on tmpfs (``/dev/shm``, the
    default) a write is a copy into memory done by the CPU, so its CPU time
    is exactly the time spent writing, and waiting for a CPU (other
    processes) or for the GIL (a busy main thread) is not in it. On a real
    disk a buffered write may also sleep in the kernel waiting for
    write-back; that is busy time the CPU clock misses, so there the truth
    is a lower bound and ``write_wall_pct`` an upper one.

    Attributes
    ----------
    condition : str
        The load (:data:`bgio.bench.load.CONDITIONS`).
    bandwidth_pct : float
        The profile's ``bandwidth_pct``.
    max_rate : float or None
        The profile's ``max_rate``, bytes per second.
    seconds : float
        From the start of the first write call to the end of the last.
    size_bytes, chunks : int
        Bytes and write calls.
    duty_pct : float or None
        The handle's ``duty_cycle``, in percent: what bgio believes.
    truth_pct : float
        CPU time inside the write calls over ``seconds``, in percent.
    thread_pct : float
        All the writing thread's CPU time over ``seconds``, in percent: the
        truth plus the thread's own work between and around the calls
        (bgio's loop, this file object's bookkeeping).
    write_wall_pct : float
        Wall time inside the write calls over ``seconds``, in percent:
        includes the waits for a CPU and for the GIL after each call.
    run_queue_pct : float or None
        Time inside the write calls spent runnable but waiting for a CPU,
        over ``seconds``, in percent (None unless traced: ``run_queue``).
    write_ms, write_cpu_ms, gap_ms : float
        Medians per chunk: wall time of a write call, its CPU time, and the
        time from the end of one call to the start of the next (the pause,
        its wake-up and the loop's own work).
    gap_p90_ms : float
        90th percentile of the gap.
    rate_low, rate_high : float or None
        Lowest and highest rate over any :data:`RATE_WINDOW` of the write,
        bytes per second (see :func:`window_rates`); None if shorter.
    others_cores : float or None
        Cores kept busy by processes outside the benchmark during the run,
        on average (:func:`bgio.bench.load.others_cpu`); None if not read.
    """

    condition: str
    bandwidth_pct: float
    max_rate: float | None
    seconds: float
    size_bytes: int
    chunks: int
    duty_pct: float | None
    truth_pct: float
    thread_pct: float
    write_wall_pct: float
    run_queue_pct: float | None
    write_ms: float
    write_cpu_ms: float
    gap_ms: float
    gap_p90_ms: float
    rate_low: float | None = None
    rate_high: float | None = None
    others_cores: float | None = None

    @property
    def worst_window_pct(self) -> float | None:
        """The window rate furthest from ``max_rate``, as a deviation in percent (signed)."""
        if self.max_rate is None or self.rate_low is None or self.rate_high is None:
            return None
        low = 100.0 * (self.rate_low / self.max_rate - 1.0)
        high = 100.0 * (self.rate_high / self.max_rate - 1.0)
        return high if abs(high) >= abs(low) else low


def window_rates(ends: np.ndarray, sizes: np.ndarray,
                 window: float = RATE_WINDOW) -> tuple[float, float] | None:
    """Lowest and highest bytes per second over every ``window``-second span of a write.

    The bytes a write has completed by time ``t`` are counted at each
    write's end and interpolated linearly between ends, so a window's
    figure does not jump by a whole chunk (2 % of 50 MB/s in 1 MiB chunks)
    as its edges cross a chunk; it is exact for windows from one write's
    end to another's. Every span from the first end to the last is tried
    (the extremes of a piecewise-linear difference lie where an edge meets
    an end).

    Parameters
    ----------
    ends : numpy.ndarray
        Wall time each write ended, seconds, ascending.
    sizes : numpy.ndarray
        Bytes of each write.
    window : float
        Seconds.

    Returns
    -------
    (float, float) or None
        ``(lowest, highest)`` rate in bytes per second; None if the write
        lasted less than one window.
    """
    if len(ends) < 2 or ends[-1] - ends[0] < window:
        return None
    done = np.cumsum(sizes)
    starts = np.concatenate([ends, ends - window])
    starts = starts[(starts >= ends[0]) & (starts + window <= ends[-1])]
    rates = (np.interp(starts + window, ends, done) - np.interp(starts, ends, done)) / window
    return float(rates.min()), float(rates.max())


def _summarise(condition: str, profile: BackgroundIOPriority, records: np.ndarray,
               duty: float | None) -> PacingRun:
    """The :class:`PacingRun` of a write whose destination recorded ``records``."""
    starts, ends, cpu_starts, cpu_ends, sizes, queued = records.T
    seconds = float(ends[-1] - starts[0])
    walls = ends - starts
    cpu = cpu_ends - cpu_starts
    gaps = starts[1:] - ends[:-1] if len(starts) > 1 else np.zeros(1)
    rates = window_rates(ends, sizes) if profile.max_rate is not None else None
    return PacingRun(
        condition=condition,
        bandwidth_pct=profile.bandwidth_pct,
        max_rate=profile.max_rate,
        seconds=seconds,
        size_bytes=int(sizes.sum()),
        chunks=len(sizes),
        duty_pct=None if duty is None else 100.0 * duty,
        truth_pct=100.0 * float(cpu.sum()) / seconds,
        thread_pct=100.0 * float(cpu_ends[-1] - cpu_starts[0]) / seconds,
        write_wall_pct=100.0 * float(walls.sum()) / seconds,
        run_queue_pct=None if np.isnan(queued).any() else 100.0 * float(queued.sum()) / seconds,
        write_ms=1e3 * float(np.median(walls)),
        write_cpu_ms=1e3 * float(np.median(cpu)),
        gap_ms=1e3 * float(np.median(gaps)),
        gap_p90_ms=1e3 * float(np.percentile(gaps, 90)),
        rate_low=None if rates is None else rates[0],
        rate_high=None if rates is None else rates[1],
    )


def pacing_run(
    fd: int,
    profile: BackgroundIOPriority,
    condition: Condition,
    *,
    seconds: float | None = None,
    size: int | None = None,
    region: int = RING_BYTES,
    source: memoryview | None = None,
    run_queue: bool = False,
) -> tuple[PacingRun, np.ndarray]:
    """Write for ``seconds`` (or ``size`` bytes) through bgio at ``profile``, under ``condition``.

    The machine must already be in ``condition`` (:func:`bgio.bench.load.loaded`);
    this waits for the write as that condition's main thread does
    (:func:`bgio.bench.load.wait_under`).

    Parameters
    ----------
    fd : int
        The ring file (:func:`ring_file`), ``region`` bytes long.
    profile : BackgroundIOPriority
        The pacing profile.
    condition : {"idle", "cpu", "python"}
        The load.
    seconds : float or None
        Write chunks until this many seconds have passed (a lazy source).
    size : int or None
        Or write this many bytes. Exactly one of the two.
    region : int
        Bytes of the ring the writes cycle through.
    source : memoryview or None
        Bytes the chunks are cut from, cycled; None makes 16 MiB.
    run_queue : bool, default False
        Trace the run-queue delay of every write (:class:`TimedFile`).

    Returns
    -------
    (PacingRun, numpy.ndarray)
        The summary and every write's record (see :meth:`TimedFile.records`).

    Raises
    ------
    ValueError
        If not exactly one of ``seconds`` and ``size`` is given.
    TimeoutError
        If the write is not over a minute after it should have been.
    """
    if (seconds is None) == (size is None):
        raise ValueError("pacing_run() needs exactly one of seconds and size")
    if source is None:
        source = make_data(_SOURCE_BYTES).data
    expected = seconds if seconds is not None else size / (profile.max_rate or 5e6)  # type: ignore[operator]
    timeout = 60.0 + 2.0 * expected
    file = TimedFile(fd, region, run_queue)
    settle()
    until = None if seconds is None else time.perf_counter() + seconds
    handle = bgwrite(file, _cycled(source, profile.default_chunk_size, until, size),
                     priority=profile)
    try:
        wait_under(condition, handle.done, handle.wait, timeout)
    except BaseException:
        handle.cancel()
        handle.wait(10.0)
        raise
    finally:
        file.close()
    handle.result()
    records = file.records()
    return _summarise(condition, profile, records, handle.duty_cycle), records


@dataclass
class PacingCell:
    """The repeats of one measurement: a condition and a profile.

    Attributes
    ----------
    condition : str
        The load.
    bandwidth_pct : float
        The profile's ``bandwidth_pct`` (100: the ceiling, or a rate run).
    max_rate : float or None
        The profile's ``max_rate`` (a rate run), bytes per second.
    duty_pct, truth_pct : Spread
        The handle's duty cycle and the true busy fraction (see
        :class:`PacingRun`), in percent, over the runs.
    worst_window_pct : Spread or None
        For a rate run: each run's worst window deviation from ``max_rate``
        (signed, percent; :attr:`PacingRun.worst_window_pct`) over the runs.
    runs : list of PacingRun
    """

    condition: str
    bandwidth_pct: float
    max_rate: float | None
    duty_pct: Spread
    truth_pct: Spread
    worst_window_pct: Spread | None
    runs: list[PacingRun] = field(default_factory=list)


@dataclass
class LoadedPacing:
    """Duty cycles and a rate cap measured in each load condition (:func:`pacing_under_load`).

    Attributes
    ----------
    duty : list of PacingCell
        One per condition and ``bandwidth_pct`` (100 included: the ceiling).
    rate : list of PacingCell
        One per condition: the ``max_rate`` runs.
    chunk_size : int
    duty_seconds, rate_bytes : float, int
        How long each duty-cycle write lasted and how much each rate run wrote.
    repeat : int
    """

    duty: list[PacingCell]
    rate: list[PacingCell]
    chunk_size: int
    duty_seconds: float
    rate_bytes: int
    repeat: int

    def cell(self, condition: str, pct: float) -> PacingCell:
        """The duty-cycle cell of ``condition`` at ``bandwidth_pct=pct``.

        Raises
        ------
        KeyError
            If that cell was not measured.
        """
        for cell in self.duty:
            if cell.condition == condition and cell.bandwidth_pct == pct:
                return cell
        raise KeyError((condition, pct))

    def ceiling(self, condition: str) -> float:
        """Median true busy fraction at ``bandwidth_pct=100`` in ``condition``, percent."""
        return self.cell(condition, 100.0).truth_pct.median


def _cell(runs: list[PacingRun]) -> PacingCell:
    first = runs[0]
    duties = [run.duty_pct for run in runs if run.duty_pct is not None]
    windows = [w for w in (run.worst_window_pct for run in runs) if w is not None]
    return PacingCell(
        condition=first.condition,
        bandwidth_pct=first.bandwidth_pct,
        max_rate=first.max_rate,
        duty_pct=Spread.of(duties) if duties else Spread(math.nan, math.nan, math.nan),
        truth_pct=Spread.of([run.truth_pct for run in runs]),
        worst_window_pct=Spread.of(windows) if windows else None,
        runs=runs,
    )


def pacing_steps(conditions: Sequence[str], percents: Sequence[float], repeat: int,
                 rate: bool = True) -> int:
    """How many times :func:`pacing_under_load` calls ``on_step`` (for a progress bar)."""
    per_condition = len(percents) + 1 + (1 if rate else 0)
    return len(conditions) * (1 + per_condition * repeat)


def pacing_under_load(
    percents: Sequence[float] = (20, 50, 80),
    conditions: Sequence[Condition] = CONDITIONS,
    repeat: int = 5,
    *,
    seconds: float = 1.5,
    chunk_size: int = MIB,
    rate: float | None = 50e6,
    rate_seconds: float = 4.0,
    directory: str | os.PathLike[str] = "/dev/shm",
    quiet: float | None = 0.2,
    quiet_timeout: float = 3.0,
    on_step: Callable[[str], None] | None = None,
) -> LoadedPacing:
    """Busy fraction and rate cap of paced writes on an idle machine and under load.

    Every condition gets the profiles ``BackgroundIOPriority(0.001,
    chunk_size, pct)`` for each of ``percents`` and for 100 (the ceiling:
    the busiest the writer can be in that condition), each write lasting
    ``seconds``; and, if ``rate`` is given, preset 1 with ``max_rate=rate``
    writing ``rate * rate_seconds`` bytes. The cells are interleaved: each
    round visits every condition (alternating the order) and, inside it,
    every profile (alternating too), so no cell's repeats run back to back
    and slow drift of the machine hits all alike. Each condition is entered
    afresh every round (its spinning processes started and stopped), after
    one discarded warm-up write per condition.

    Parameters
    ----------
    percents : sequence of float, default (20, 50, 80)
        Requested ``bandwidth_pct`` values (100 is added).
    conditions : sequence of {"idle", "cpu", "python"}
        The loads (:mod:`bgio.bench.load`).
    repeat : int, default 5
        Rounds.
    seconds : float, default 1.5
        Duration of each duty-cycle write.
    chunk_size : int, default 1 MiB
    rate : float or None, default 50e6
        ``max_rate`` of the rate runs, bytes per second; None skips them.
    rate_seconds : float, default 4
        Their length at the cap.
    directory : path-like, default "/dev/shm"
        Where the ring file (:func:`ring_file`) lives; tmpfs takes the
        disk out of what is measured.
    quiet : float or None, default 0.2
        Before each write, wait until processes outside the benchmark use
        less than this many cores (:func:`bgio.bench.load.wait_for_quiet`);
        None starts at once. Each run records what they used during it.
    quiet_timeout : float, default 3
        Seconds to wait for quiet at most before each write.
    on_step : callable or None
        Called with a label after every write.

    Returns
    -------
    LoadedPacing
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    step = progress(on_step)
    profiles = [BackgroundIOPriority(0.001, chunk_size, pct) for pct in (*percents, 100)]
    rate_bytes = 0
    if rate is not None:
        rate_bytes = int(rate * rate_seconds)
        profiles.append(PRESETS[1].replace(max_rate=rate, default_chunk_size=chunk_size))
    # The ring holds whole chunks, so no write is ever cut at its end.
    region = max(chunk_size, RING_BYTES - RING_BYTES % chunk_size)
    source = make_data(_SOURCE_BYTES).data
    runs: dict[tuple[str, int], list[PacingRun]] = {}
    with ring_file(directory, region) as fd:

        def measure(condition: Condition, procs: list[subprocess.Popen[str]], index: int,
                    warm: bool = False) -> None:
            profile = profiles[index]
            if quiet is not None:
                wait_for_quiet(procs, quiet, quiet_timeout)
            before = others_cpu(procs), time.perf_counter()
            if profile.max_rate is not None:
                run, _ = pacing_run(fd, profile, condition, size=rate_bytes, region=region,
                                    source=source)
            else:
                run, _ = pacing_run(fd, profile, condition, seconds=0.2 if warm else seconds,
                                    region=region, source=source)
            run.others_cores = (others_cpu(procs) - before[0]) / (time.perf_counter() - before[1])
            label = f"{condition} {priority_label(profile)}"
            if warm:
                step(f"warm-up {label}")
            else:
                runs.setdefault((condition, index), []).append(run)
                step(label)

        for condition in conditions:
            with loaded(condition) as procs:
                measure(condition, procs, len(percents), warm=True)
        order = list(range(len(profiles)))
        for round_ in range(repeat):
            for condition in (conditions if round_ % 2 == 0 else conditions[::-1]):
                with loaded(condition) as procs:
                    for index in (order if round_ % 2 == 0 else order[::-1]):
                        measure(condition, procs, index)
    cells = {key: _cell(value) for key, value in runs.items()}
    duty = [cells[(c, i)] for c in conditions for i in range(len(percents) + 1)]
    rated = [cells[(c, len(percents) + 1)] for c in conditions] if rate is not None else []
    return LoadedPacing(duty=duty, rate=rated, chunk_size=chunk_size, duty_seconds=seconds,
                        rate_bytes=rate_bytes, repeat=repeat)
