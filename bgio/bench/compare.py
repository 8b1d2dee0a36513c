"""Interleaved comparison of write runs: sync against bgio profiles and an idle baseline."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import PriorityLike
from .loop import LoopStats, idle_baseline
from .prepare import scratch, workdir
from .schedule import interleave, progress, warm_up
from .stats import median_of
from .writes import (
    SYNC_LABEL,
    THREAD_LABEL,
    WriteRun,
    measure_bgio,
    measure_nonblock,
    measure_sync,
    measure_thread,
    priority_label,
)

__all__ = ["Comparison", "compare_steps", "compare_writes"]

#: Label of the idle-baseline arm (its results are kept apart from the writes).
IDLE_LABEL = "idle loop"


@dataclass
class Comparison:
    """Medians and raw runs of an interleaved comparison (see :func:`compare_writes`).

    Attributes
    ----------
    sync : WriteRun or None
        Median of the synchronous runs (None if they were not measured).
    thread : WriteRun or None
        Median of the plain-thread runs (None if they were not measured).
    nonblock : dict of str to WriteRun
        Median per preset of the older ``nonblock`` module, when it was measured.
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
    thread: WriteRun | None = None
    nonblock: dict[str, WriteRun] = field(default_factory=dict)


def compare_steps(
    n_profiles: int, repeat: int = 1, *, sync: bool = True, idle: bool = True, warmup: bool = True,
    thread: bool = False,
    nonblock: int = 0,
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
    warm = (int(sync) + int(thread) + int(n_profiles > 0) + int(nonblock > 0)) if warmup else 0
    return warm + repeat * (n_profiles + int(sync) + int(thread) + int(idle) + nonblock)


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
    thread: bool = False,
    nonblock: Sequence[int] = (),
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
    thread : bool, default False
        Include ``f.write`` in a plain thread (:func:`~bgio.bench.writes.measure_thread`).
    nonblock : sequence of int
        Presets at which to include the older ``nonblock.bgwrite`` (it must be installed).

    Returns
    -------
    Comparison
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    labels = [priority_label(p) for p in priorities]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two profiles have the same label: {labels}")

    with workdir(directory) as where:
        return _compare(where, data, priorities, labels, repeat, sync, idle_seconds, warmup,
                        progress(on_step), thread, nonblock)


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
    thread: bool = False,
    nonblock: Sequence[int] = (),
) -> Comparison:
    """The rounds of :func:`compare_writes`, in an existing ``directory``."""

    def write_arm(
        measure: Callable[..., WriteRun], *args: Any, **kwargs: Any
    ) -> Callable[[], WriteRun]:
        # Each run gets its own file, removed at once: repeated large writes
        # would otherwise fill the disk (and the page cache) as they go.
        def run() -> WriteRun:
            with scratch(directory, "bgio-bench.bin") as path:
                return measure(path, data, *args, **kwargs)

        return run

    sync_arm = write_arm(measure_sync)
    bgio_arms = [write_arm(measure_bgio, p, label=label) for p, label in zip(priorities, labels)]
    arms: list[tuple[str, Callable[[], WriteRun | LoopStats]]] = []
    thread_arm = write_arm(measure_thread)
    if sync:
        arms.append((SYNC_LABEL, sync_arm))
    if thread:
        arms.append((THREAD_LABEL, thread_arm))
    arms.extend(zip(labels, bgio_arms))
    nonblock_labels = [f"nonblock p{preset}" for preset in nonblock]
    nonblock_arms = [write_arm(measure_nonblock, preset) for preset in nonblock]
    arms.extend(zip(nonblock_labels, nonblock_arms))
    if idle_seconds is not None:
        duration = idle_seconds
        arms.append((IDLE_LABEL, lambda: idle_baseline(duration)))

    if warmup:
        # One run per side, not per profile: what the warm-up absorbs (page
        # allocation, thread start-up) is paid once per process, whatever the profile.
        sides = [("sync", sync_arm)] if sync else []
        sides += [("thread", thread_arm)] if thread else []
        sides += [("bgio", bgio_arms[0])] if bgio_arms else []
        sides += [("nonblock", nonblock_arms[0])] if nonblock_arms else []
        warm_up(sides, step)

    runs: dict[str, list[WriteRun]] = {label: [] for label, _ in arms if label != IDLE_LABEL}
    idle_runs: list[LoopStats] = []
    for label, arm in interleave(arms, repeat):
        result = arm()
        if isinstance(result, LoopStats):
            idle_runs.append(result)
        else:
            runs[label].append(result)
        step(label)

    return Comparison(
        sync=median_of(runs[SYNC_LABEL]) if sync else None,
        thread=median_of(runs[THREAD_LABEL]) if thread else None,
        nonblock={label: median_of(runs[label]) for label in nonblock_labels},
        bgio={label: median_of(runs[label]) for label in labels},
        idle=median_of(idle_runs) if idle_runs else None,
        runs=runs,
        idle_runs=idle_runs,
    )
