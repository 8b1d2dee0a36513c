"""The busy scenario: the thread and process backends side by side, the main thread running Python.

A main thread that runs Python (a GUI handling events, an acquisition loop)
hands the interpreter lock to a writer thread only at the switch interval,
so a thread-backed write gets one chunk per 5 ms; the writer process does
not need this process's lock at all. Each arm writes the same buffer with
``bgio.bgwrite(path, data, priority=p, backend=b)`` while the main thread
sums integers, for at most :data:`WINDOW` seconds (then the write is
cancelled and its rate is what it wrote by then), and reports its rate,
its duty cycle and the share of the main thread's own work rate that the
write left it.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..api import bgwrite
from ..priority import PRESETS
from .data import MIB
from .prepare import scratch, settle

if TYPE_CHECKING:
    from ..protocols import Data
from .schedule import interleave, progress, warm_up
from .stats import median_of

__all__ = ["BACKEND_PRESETS", "WINDOW", "BusyRun", "BusyScenario", "advice", "busy_scenario",
           "busy_steps"]

#: The presets the scenario compares, each with both backends.
BACKEND_PRESETS = (1, 4, 7, 10)
#: Seconds each arm runs at most.
WINDOW = 1.0
#: Additions between two looks at the clock and the handle (~30 us of bytecode).
_BLOCK = 1000
#: Seconds the main thread's work rate is measured alone, before each arm.
_ALONE = 0.25


@dataclass
class BusyRun:
    """One backend at one preset, the main thread running Python.

    Attributes
    ----------
    label : str
        ``"thread p1"``, ``"process p1"``, ...
    mib_s : float
        What the write wrote per second (all of it, or what it had by
        the end of the window).
    requested_duty_pct, measured_duty_pct : float or None
        The profile's busy fraction, and the write's (``handle.duty_cycle``).
    main_work_pct : float
        The main thread's Python work rate during the write, in % of its
        rate alone.
    """

    label: str
    mib_s: float
    requested_duty_pct: float | None
    measured_duty_pct: float | None
    main_work_pct: float


@dataclass
class BusyScenario:
    """Medians per arm, in order (backends side by side per preset), and every run."""

    size_bytes: int
    rows: dict[str, BusyRun]
    runs: dict[str, list[BusyRun]] = field(default_factory=dict)
    alone_per_s: list[float] = field(default_factory=list)


def busy_steps(presets: Sequence[int] = BACKEND_PRESETS, repeat: int = 1) -> int:
    """Progress steps of :func:`busy_scenario`."""
    return 2 + 2 * len(presets) * repeat


def _work_for(seconds: float) -> float:
    """The main thread's Python work alone: additions per second."""
    clock = time.perf_counter
    count = 0
    block = range(_BLOCK)
    started = clock()
    end = started + seconds
    while clock() < end:
        for _ in block:
            count += 1
    return count / (clock() - started)


def _arm(path: str, data: object, preset: int, backend: str, alone: float,
         window: float) -> BusyRun:
    settle()
    clock = time.perf_counter
    count = 0
    block = range(_BLOCK)
    started = clock()
    handle = bgwrite(path, cast("Data", data), priority=preset, backend=backend)
    give_up = started + window
    while not handle.done() and clock() < give_up:
        for _ in block:
            count += 1
    ended = clock()
    if not handle.done():
        handle.cancel()
        if not handle.wait(60):
            raise TimeoutError(f"{backend} p{preset}: a cancelled write did not end in 60 s")
    else:
        handle.result()
    seconds = ended - started
    duty = handle.duty_cycle
    return BusyRun(f"{backend} p{preset}", handle.bytes_written / MIB / seconds,
                   PRESETS[preset].bandwidth_pct, None if duty is None else duty * 100.0,
                   100.0 * count / seconds / alone)


def busy_scenario(directory: str, data: object, presets: Sequence[int] = BACKEND_PRESETS,
                  repeat: int = 1, window: float = WINDOW,
                  on_step: Callable[[str], None] | None = None) -> BusyScenario:
    """Write ``data`` with each backend at each preset, the main thread busy in Python.

    Parameters
    ----------
    directory : str
        Where the files go (each removed after its run).
    data : bytes-like
        What every arm writes.
    presets : sequence of int
        Presets, each measured with both backends.
    repeat : int
        Interleaved rounds; medians are reported.
    window : float
        Seconds an arm runs at most.
    on_step : callable taking a str, or None
        Progress (:func:`busy_steps` calls).
    """
    step = progress(on_step)
    size = memoryview(data).nbytes  # type: ignore[arg-type]
    arms = [(backend, preset) for preset in presets for backend in ("thread", "process")]
    runs: dict[str, list[BusyRun]] = {f"{b} p{p}": [] for b, p in arms}
    alone: list[float] = []
    with scratch(directory, "bgio-busy.bin") as path:
        rate = _work_for(_ALONE)
        warm_up([(backend, functools.partial(_arm, path, data, presets[0], backend, rate,
                                             window / 4))
                 for backend in ("process", "thread")], step)
        for backend, preset in interleave(arms, repeat):
            # Beside each arm: the machine's state (the page cache, the clock speed)
            # drifts from one arm to the next.
            settle()
            alone.append(_work_for(_ALONE))
            run = _arm(path, data, preset, backend, alone[-1], window)
            runs[run.label].append(run)
            os.remove(path)
            step(run.label)
    return BusyScenario(size, {label: median_of(values) for label, values in runs.items()},
                        runs, alone)


def advice(scenario: BusyScenario) -> str:
    """One line: which backend to pick when the main thread is busy, from the figures."""
    rows = scenario.rows
    fastest = min(int(label.split("p")[-1]) for label in rows)
    thread, process = rows.get(f"thread p{fastest}"), rows.get(f"process p{fastest}")
    if thread is None or process is None or thread.mib_s <= 0:
        return ""
    ratio = process.mib_s / thread.mib_s
    work = statistics.median(row.main_work_pct for label, row in rows.items()
                             if label.startswith("process"))
    work_thread = statistics.median(row.main_work_pct for label, row in rows.items()
                                    if label.startswith("thread"))
    if ratio >= 1.2:
        choice = "backend='process' is the one to pick for a program whose main thread is busy"
    elif ratio <= 0.8:
        choice = "the threads do better here: keep the default backend"
    else:
        choice = "the backends are alike here: keep the default unless h5py or the GIL bites"
    return (f"(main thread busy: backend='process' wrote {ratio:.1f}x the threads' rate at "
            f"preset {fastest}, and left the main thread {work:.0f} % of its work rate against "
            f"{work_thread:.0f} % with threads; {choice})")
