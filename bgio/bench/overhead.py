"""What bgio costs per call: many small writes through a Writer, how long bgwrite() blocks."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..api import PriorityLike, bgwrite
from ..writer import Writer
from .data import make_data, nbytes
from .prepare import fresh_file, scratch, workdir
from .schedule import interleave, progress, warm_up
from .writes import priority_label, timeout_for

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

    from ..protocols import Data

__all__ = ["CallLatency", "SmallWrites", "call_latency", "small_writes"]


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
    view = memoryview(cast("Buffer", source))
    blocks = [bytes(view[i : i + block_size]) for i in range(0, count * block_size, block_size)]
    # The blocks are copies: dropping the source keeps RSS at what the writes need.
    del view, source
    with workdir(directory) as where:
        bgio_runs, sync_runs = _small_rounds(
            where, blocks, priority, repeat, warmup, progress(on_step)
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
        with scratch(directory, "bgio-small.bin") as path, fresh_file(path) as f:
            t0 = time.perf_counter()
            # One write() per block, not writelines(): the per-call cost is what is measured.
            for block in blocks:
                f.write(block)
            f.flush()
            return time.perf_counter() - t0

    def run_bgio() -> float:
        with scratch(directory, "bgio-small.bin") as path, fresh_file(path) as f:
            writer = Writer(f, priority=priority)
            t0 = time.perf_counter()
            for block in blocks:
                writer.write(block)
            writer.flush()
            seconds = time.perf_counter() - t0
            writer.close()
            return seconds

    sync_runs: list[float] = []
    bgio_runs: list[float] = []
    sides = [("sync", run_sync, sync_runs), ("bgio", run_bgio, bgio_runs)]
    if warmup:
        warm_up([(name, run) for name, run, _ in sides], step)
    for name, run, bucket in interleave(sides, repeat):
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
    step = progress(on_step)
    size = nbytes(data)

    def timed(path: str) -> float:
        with fresh_file(path) as f:
            t0 = time.perf_counter()
            handle = bgwrite(f, cast("Data", data), priority=priority)
            seconds = time.perf_counter() - t0
            # Waited for outside the timer: the next call must not find this write still running.
            handle.result(timeout_for(size))
        return seconds * 1e3

    def one() -> float:
        if directory is None:
            return timed(os.devnull)
        with scratch(directory, "bgio-call.bin") as path:
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
