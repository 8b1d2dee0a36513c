"""Measure bgio against plain synchronous writes: the one implementation behind ``bgio bench`` and benchmarks/."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, TypeVar

import numpy as np
import psutil

from .api import PriorityLike, Writer, bgwrite
from .priority import PRESETS, BackgroundIOPriority, resolve_priority
from .version import __version__

__all__ = [
    "MIB",
    "CallLatency",
    "Comparison",
    "LoopStats",
    "RateRun",
    "SmallWrites",
    "WriteRun",
    "call_latency",
    "compare_steps",
    "compare_writes",
    "duty_cycles",
    "environment",
    "idle_baseline",
    "loop_gaps",
    "make_data",
    "max_rate",
    "measure_bgio",
    "measure_sync",
    "median_of",
    "priority_label",
    "small_writes",
    "to_jsonable",
]

MIB = 1024 * 1024

#: Period of the main-thread loop that stands in for an interactive program.
TICK = 0.001
#: How often the loop samples the resident set size (in the loop itself, not a thread).
RSS_EVERY = 0.01
#: A write is given this long, plus its size at :data:`SLOWEST_RATE`, before it is
#: cancelled and reported as an error (a safety net: a stuck write must not hang a bench).
WRITE_TIMEOUT = 120.0
#: Bytes per second: the slowest destination the timeout allows for.
SLOWEST_RATE = 5e6

_T = TypeVar("_T")


# -- result records --------------------------------------------------------------------------


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


@dataclass
class Comparison:
    """Medians and raw runs of an interleaved comparison (see :func:`compare_writes`).

    Attributes
    ----------
    sync : WriteRun or None
        Median of the synchronous runs (None if they were not measured).
    bgio : dict of str to WriteRun
        Median per profile, keyed by label, in the order the profiles were given.
    idle : LoopStats or None
        Median of the idle-loop baselines (None if not measured).
    runs : dict of str to list of WriteRun
        Every measured run (not the warm-up), keyed by label.
    idle_runs : list of LoopStats
        Every idle baseline.
    """

    sync: WriteRun | None
    bgio: dict[str, WriteRun]
    idle: LoopStats | None
    runs: dict[str, list[WriteRun]] = field(default_factory=dict)
    idle_runs: list[LoopStats] = field(default_factory=list)


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


@dataclass
class SmallWrites:
    """Many small writes through one :class:`bgio.Writer` against a synchronous loop.

    Attributes
    ----------
    count, block_size : int
        Number of writes and bytes per write.
    priority : str
        Label of the Writer's profile.
    bgio_seconds : float
        Median time from the first ``Writer.write`` to the return of ``Writer.flush``.
    sync_seconds : float
        Median time of ``for b in blocks: f.write(b)`` plus ``f.flush()``.
    ratio : float
        ``bgio_seconds / sync_seconds``.
    bgio_runs, sync_runs : list of float
        Every measured time, in seconds.
    """

    count: int
    block_size: int
    priority: str
    bgio_seconds: float
    sync_seconds: float
    ratio: float
    bgio_runs: list[float] = field(default_factory=list)
    sync_runs: list[float] = field(default_factory=list)


@dataclass
class CallLatency:
    """How long ``bgwrite()`` blocks its caller for one kind of data.

    Attributes
    ----------
    kind : str
        The data's type name ("bytes", "ndarray", ...).
    size_bytes : int
        Size of the data.
    median_ms, min_ms, max_ms : float
        Over the measured calls, in milliseconds.
    runs_ms : list of float
        Every measured call.
    """

    kind: str
    size_bytes: int
    median_ms: float
    min_ms: float
    max_ms: float
    runs_ms: list[float] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------


def make_data(size_bytes: int, seed: int = 0) -> np.ndarray:
    """Return ``size_bytes`` of pseudo-random uint8 data, every page already resident.

    A random 1 MiB block is repeated: drawing hundreds of MiB of random
    numbers would cost seconds, and the page cache does not care about the
    byte values (nothing here compresses).

    Parameters
    ----------
    size_bytes : int
        Length of the array, >= 0.
    seed : int, default 0
        Seed of the random block.

    Returns
    -------
    numpy.ndarray
        A C-contiguous 1-D uint8 array.
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    block = np.random.default_rng(seed).integers(0, 256, min(size_bytes, MIB), dtype=np.uint8)
    # np.resize repeats the block into a new array, writing (so touching) every page:
    # the RSS baseline taken afterwards already includes the whole input.
    return np.resize(block, size_bytes) if size_bytes else block


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


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _nbytes(data: object) -> int:
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    return memoryview(data).nbytes  # type: ignore[arg-type]


def _timeout_for(size: int) -> float:
    return WRITE_TIMEOUT + size / SLOWEST_RATE


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


@contextmanager
def _scratch(directory: str | os.PathLike[str], name: str) -> Iterator[str]:
    """A file path in ``directory``, removed afterwards so repeated 512 MiB writes do not fill the disk."""
    path = os.path.join(os.fspath(directory), name)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@contextmanager
def _workdir(directory: str | os.PathLike[str] | None) -> Iterator[str]:
    """``directory`` itself, or a temporary directory removed afterwards when it is None."""
    if directory is not None:
        yield os.fspath(directory)
        return
    with tempfile.TemporaryDirectory(prefix="bgio-bench-") as temporary:
        yield temporary


def _settle() -> None:
    # Garbage from the previous measurement is collected here, outside every
    # timer and on both sides alike, rather than during the next loop.
    gc.collect()


def median_of(items: Sequence[_T]) -> _T:
    """Return a record whose numeric fields are the medians of ``items``' fields.

    Works on the flat dataclasses of this module. Fields that are None in
    every item stay None; non-numeric fields (labels, lists) are taken from
    the first item. Each field's median is taken on its own, so with an even
    number of items ``mib_s`` may differ slightly from ``size / seconds``.

    Parameters
    ----------
    items : sequence of dataclass instances of one type
        At least one.

    Returns
    -------
    The same dataclass type.
    """
    if not items:
        raise ValueError("median_of() needs at least one item")
    first = items[0]
    if len(items) == 1 or not is_dataclass(first):
        return first
    values: dict[str, Any] = {}
    for f in fields(first):  # type: ignore[arg-type]
        column = [getattr(item, f.name) for item in items]
        numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len([v for v in column if v is not None]):
            median = statistics.median(numbers)
            values[f.name] = type(numbers[0])(median) if isinstance(numbers[0], int) else median
        elif all(isinstance(v, bool) for v in column):
            values[f.name] = any(column)  # e.g. timed_out: report it if it happened once
        else:
            values[f.name] = column[0]
    return type(first)(**values)


def to_jsonable(obj: object) -> Any:
    """Turn results (dataclasses, dicts, lists of them) into plain JSON-ready values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# -- the main-thread loop --------------------------------------------------------------------


def _spin(
    until: Callable[[], bool] | None,
    duration: float | None,
    started: float,
    timeout: float | None,
) -> tuple[list[float], int, float, bool]:
    """Run the 1 ms sleep loop; return (gaps in s, peak RSS, end time, timed out)."""
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


def _loop_stats(
    gaps: Sequence[float], peak: int, baseline: int | None, seconds: float, timed_out: bool
) -> LoopStats:
    above = max(0, peak - baseline) / MIB if baseline is not None else 0.0
    return LoopStats(
        iterations=len(gaps),
        seconds=seconds,
        p50_ms=_percentile(gaps, 50) * 1e3,
        p99_ms=_percentile(gaps, 99) * 1e3,
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
    gaps, peak, ended, timed_out = _spin(condition, duration, started, timeout)
    return _loop_stats(gaps, peak, rss_baseline, ended - started, timed_out)


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
    _settle()
    return loop_gaps(duration, rss_baseline=_rss())


# -- one write ---------------------------------------------------------------------------------


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
    size = _nbytes(data)
    _settle()
    with open(path, "wb") as f:
        baseline = _rss()
        t0 = time.perf_counter()
        f.write(data)  # type: ignore[arg-type]
        f.flush()
        seconds = time.perf_counter() - t0
        # The main thread cannot sample anything while it is inside write(),
        # so this is the RSS right after it (the write itself copies nothing).
        rss_after = _rss()
    ms = seconds * 1e3
    return WriteRun(
        label="sync f.write",
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
    size = _nbytes(data)
    profile = resolve_priority(priority)
    if timeout is None:
        timeout = _timeout_for(size)
    _settle()
    with open(path, "wb") as f:
        baseline = _rss()
        t0 = time.perf_counter()
        handle = bgwrite(f, data, priority=priority)
        t1 = time.perf_counter()
        gaps, peak, t_end, timed_out = _spin(handle.done, None, t0, timeout)
        if timed_out:
            handle.cancel()
            handle.wait(10.0)
            raise TimeoutError(f"{priority_label(priority)}: write not done after {timeout:g} s")
        handle.result()
    loop = _loop_stats(gaps, peak, baseline, t_end - t0, timed_out)
    seconds = t_end - t0
    duty = handle.duty_cycle
    return WriteRun(
        label=label or priority_label(priority),
        size_bytes=size,
        seconds=seconds,
        mib_s=size / MIB / seconds,
        call_ms=(t1 - t0) * 1e3,
        requested_duty_pct=profile.bandwidth_pct,
        measured_duty_pct=None if duty is None else duty * 100.0,
        loop_p50_ms=loop.p50_ms,
        loop_p99_ms=loop.p99_ms,
        loop_max_ms=loop.max_ms,
        peak_rss_mib=loop.peak_rss_mib,
    )


# -- interleaved comparisons ---------------------------------------------------------------------


def compare_steps(
    n_profiles: int, repeat: int = 1, *, sync: bool = True, idle: bool = True, warmup: bool = True
) -> int:
    """Number of measurements :func:`compare_writes` makes (for a progress bar).

    Parameters
    ----------
    n_profiles : int
        Number of bgio profiles compared.
    repeat : int, default 1
        Rounds.
    sync, idle, warmup : bool
        As passed to :func:`compare_writes` (``idle`` means an idle duration was given).

    Returns
    -------
    int
    """
    warm = (int(sync) + int(n_profiles > 0)) if warmup else 0
    return warm + repeat * (n_profiles + int(sync) + int(idle))


def compare_writes(
    data: object,
    priorities: Sequence[PriorityLike] = (1, 4, 7, 10),
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    sync: bool = True,
    idle_seconds: float | None = 0.5,
    warmup: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> Comparison:
    """Write ``data`` synchronously and through bgio at each profile, interleaved, ``repeat`` times.

    Fairness: both sides open a fresh file outside the timer and write the
    same buffer; one warm-up run of each side comes first and is discarded
    (the first write of a process pays for page allocation and thread
    start-up); each round runs every arm (sync, each profile, the idle
    baseline), in the given order on even rounds and reversed on odd ones,
    so slow drift of the machine hits every arm alike; medians are reported.
    Every file is removed right after its measurement.

    Parameters
    ----------
    data : bytes-like or numpy array
        The buffer written by every run.
    priorities : sequence of int or BackgroundIOPriority
        The bgio profiles to compare (labels must differ).
    repeat : int, default 1
        Rounds; >= 1.
    directory : path-like or None
        Where the files are written (an existing directory); None uses a
        temporary directory, removed afterwards.
    sync : bool, default True
        Include the synchronous ``f.write`` arm.
    idle_seconds : float or None, default 0.5
        Duration of the idle-loop baseline arm; None leaves it out.
    warmup : bool, default True
        Run and discard one write of each side first.
    on_step : callable taking a str, or None
        Called with the arm's label after each measurement (progress bars).
        :func:`compare_steps` gives the number of calls.

    Returns
    -------
    Comparison
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    labels = [priority_label(p) for p in priorities]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two profiles have the same label: {labels}")

    with _workdir(directory) as where:
        return _compare(where, data, priorities, labels, repeat, sync, idle_seconds, warmup,
                        on_step or (lambda _label: None))


def _compare(
    directory: str,
    data: object,
    priorities: Sequence[PriorityLike],
    labels: Sequence[str],
    repeat: int,
    sync: bool,
    idle_seconds: float | None,
    warmup: bool,
    step: Callable[[str], None],
) -> Comparison:
    """The rounds of :func:`compare_writes`, in an existing ``directory``."""
    arms: list[tuple[str, Callable[[], WriteRun | LoopStats]]] = []

    def write_arm(priority: PriorityLike, label: str) -> Callable[[], WriteRun]:
        def run() -> WriteRun:
            with _scratch(directory, "bgio-bench.bin") as path:
                return measure_bgio(path, data, priority, label=label)

        return run

    def sync_arm() -> WriteRun:
        with _scratch(directory, "bgio-bench.bin") as path:
            return measure_sync(path, data)

    if sync:
        arms.append(("sync f.write", sync_arm))
    arms.extend((label, write_arm(p, label)) for p, label in zip(priorities, labels))
    if idle_seconds is not None:
        duration = idle_seconds
        arms.append(("idle loop", lambda: idle_baseline(duration)))

    if warmup:
        if sync:
            sync_arm()
            step("warm-up sync")
        if priorities:
            write_arm(priorities[0], labels[0])()
            step("warm-up bgio")

    runs: dict[str, list[WriteRun]] = {label: [] for label, _ in arms if label != "idle loop"}
    idle_runs: list[LoopStats] = []
    for round_ in range(repeat):
        order = arms if round_ % 2 == 0 else arms[::-1]
        for label, arm in order:
            result = arm()
            if isinstance(result, LoopStats):
                idle_runs.append(result)
            else:
                runs[label].append(result)
            step(label)

    return Comparison(
        sync=median_of(runs["sync f.write"]) if sync else None,
        bgio={label: median_of(runs[label]) for label in labels},
        idle=median_of(idle_runs) if idle_runs else None,
        runs=runs,
        idle_runs=idle_runs,
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
    return compare_writes(
        data, profiles, repeat, directory=directory, sync=False, idle_seconds=None,
        warmup=warmup, on_step=on_step,
    )


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
    result = compare_writes(
        data, [profile], repeat, directory=directory, sync=False, idle_seconds=None,
        warmup=warmup, on_step=on_step,
    )
    runs = result.runs[priority_label(profile)]
    rates = [run.rate for run in runs]
    return RateRun(
        target_rate=float(rate),
        achieved_rate=statistics.median(rates),
        size_bytes=_nbytes(data),
        seconds=statistics.median(run.seconds for run in runs),
        chunk_size=chunk_size,
        runs=runs,
    )


def small_writes(
    count: int = 10_000,
    block_size: int = 4096,
    priority: PriorityLike = 1,
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> SmallWrites:
    """Many small writes: one :class:`bgio.Writer` against a synchronous ``f.write`` loop.

    The bgio side times from the first ``w.write`` to the return of
    ``w.flush()`` (the Writer is made before, closed after the timer); the
    synchronous side times ``for b in blocks: f.write(b)`` plus
    ``f.flush()``. Both write the same list of ``bytes`` objects into a fresh
    file opened before the timer; the sides alternate, first one then the
    other, and medians are reported.

    Parameters
    ----------
    count : int, default 10000
        Number of writes.
    block_size : int, default 4096
        Bytes per write.
    priority : int or BackgroundIOPriority, default 1
        The Writer's profile.
    repeat : int, default 1
        Rounds.
    directory : path-like or None
        Where the files are written; None uses a temporary directory.
    warmup : bool, default True
        Run and discard one round first.
    on_step : callable or None
        Called after each timed side (``2 * repeat`` calls, plus 2 for the warm-up).

    Returns
    -------
    SmallWrites
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    source = make_data(count * block_size, seed=1)
    view = memoryview(source)
    blocks = [bytes(view[i : i + block_size]) for i in range(0, count * block_size, block_size)]
    del view, source
    with _workdir(directory) as where:
        bgio_runs, sync_runs = _small_rounds(
            where, blocks, priority, repeat, warmup, on_step or (lambda _label: None)
        )
    bgio_s = statistics.median(bgio_runs)
    sync_s = statistics.median(sync_runs)
    return SmallWrites(
        count=count,
        block_size=block_size,
        priority=priority_label(priority),
        bgio_seconds=bgio_s,
        sync_seconds=sync_s,
        ratio=bgio_s / sync_s,
        bgio_runs=bgio_runs,
        sync_runs=sync_runs,
    )


def _small_rounds(
    directory: str,
    blocks: Sequence[bytes],
    priority: PriorityLike,
    repeat: int,
    warmup: bool,
    step: Callable[[str], None],
) -> tuple[list[float], list[float]]:
    """Time both sides of :func:`small_writes`; return (bgio times, sync times)."""

    def run_sync() -> float:
        _settle()
        with _scratch(directory, "bgio-small.bin") as path, open(path, "wb") as f:
            t0 = time.perf_counter()
            for block in blocks:  # noqa: FURB122 - one write() per block is the scenario, not writelines
                f.write(block)
            f.flush()
            return time.perf_counter() - t0

    def run_bgio() -> float:
        _settle()
        with _scratch(directory, "bgio-small.bin") as path, open(path, "wb") as f:
            writer = Writer(f, priority=priority)
            t0 = time.perf_counter()
            for block in blocks:
                writer.write(block)
            writer.flush()
            seconds = time.perf_counter() - t0
            writer.close()
            return seconds

    if warmup:
        run_sync()
        step("warm-up sync")
        run_bgio()
        step("warm-up bgio")
    sync_runs: list[float] = []
    bgio_runs: list[float] = []
    for round_ in range(repeat):
        sides = [("sync", run_sync, sync_runs), ("bgio", run_bgio, bgio_runs)]
        for name, run, bucket in sides if round_ % 2 == 0 else sides[::-1]:
            bucket.append(run())
            step(f"small writes {name}")
    return bgio_runs, sync_runs


def call_latency(
    data: object,
    calls: int = 5,
    *,
    priority: PriorityLike = 1,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> CallLatency:
    """How long ``bgwrite(f, data)`` blocks the caller, alone.

    Each call gets a freshly opened file (opened before its timer), so each
    pays for starting a worker thread, the worst case; the write is waited
    for before the next call.

    Parameters
    ----------
    data : bytes-like or numpy array
        What to pass to ``bgwrite`` (its size should not matter: nothing is copied).
    calls : int, default 5
        Timed calls; the median is reported.
    priority : int or BackgroundIOPriority, default 1
        Passed to ``bgwrite``.
    directory : path-like or None
        None writes to /dev/null, which keeps the disk out of it (and is the
        hardest case for the caller: the worker's system calls are too short
        to hand the GIL back). Otherwise each call writes a fresh file in
        ``directory``, removed after the call.
    warmup : bool, default True
        Make and discard one call first.
    on_step : callable or None
        Called after each timed call.

    Returns
    -------
    CallLatency
    """
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    step = on_step or (lambda _label: None)
    size = _nbytes(data)

    def timed(path: str) -> float:
        with open(path, "wb") as f:
            t0 = time.perf_counter()
            handle = bgwrite(f, data, priority=priority)
            seconds = time.perf_counter() - t0
            handle.result(_timeout_for(size))
        return seconds * 1e3

    def one() -> float:
        _settle()
        if directory is None:
            return timed(os.devnull)
        with _scratch(directory, "bgio-call.bin") as path:
            return timed(path)

    if warmup:
        one()
    runs = []
    for _ in range(calls):
        runs.append(one())
        step(f"call latency {type(data).__name__}")
    return CallLatency(
        kind=type(data).__name__,
        size_bytes=size,
        median_ms=statistics.median(runs),
        min_ms=min(runs),
        max_ms=max(runs),
        runs_ms=runs,
    )


# -- context -------------------------------------------------------------------------------------


def _filesystem(directory: str | os.PathLike[str]) -> str | None:
    """File system type of the mount holding ``directory`` (ext4, tmpfs, ...), if known."""
    target = os.path.realpath(os.fspath(directory))
    best: tuple[int, str] | None = None
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:
        return None
    for part in partitions:
        mount = part.mountpoint.rstrip("/") or "/"
        inside = target == mount or target.startswith(mount if mount == "/" else mount + "/")
        if inside and (best is None or len(mount) > best[0]):
            best = (len(mount), part.fstype)
    return best[1] if best else None


def environment(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Versions and machine facts to store beside the figures.

    Parameters
    ----------
    directory : path-like or None
        The measurement directory, to record its file system type.

    Returns
    -------
    dict
        ``python``, ``numpy``, ``bgio``, ``platform``, ``machine``,
        ``cpu_count``, ``memory_total_bytes``, ``switch_interval_s`` and,
        with a directory, ``directory`` and ``filesystem``.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "bgio": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        # The GIL switch interval governs how long a writer thread waits for
        # the GIL beside a busy main thread; record it with the figures.
        "switch_interval_s": sys.getswitchinterval(),
    }
    if directory is not None:
        info["directory"] = os.fspath(directory)
        info["filesystem"] = _filesystem(directory)
    return info
