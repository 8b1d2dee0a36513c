"""Measure bgio against plain synchronous writes: the one implementation behind ``bgio bench`` and benchmarks/."""

from __future__ import annotations

from .compare import Comparison, compare_steps, compare_writes
from .data import MIB, make_data
from .load import CONDITIONS, Condition, loaded, spinners
from .loop import LoopStats, idle_baseline, loop_gaps
from .overhead import CallLatency, SmallWrites, call_latency, small_writes
from .pacing import (
    LoadedPacing,
    PacingCell,
    PacingRun,
    RateRun,
    Spread,
    TimedFile,
    duty_cycles,
    max_rate,
    pacing_run,
    pacing_steps,
    pacing_under_load,
    ring_file,
    window_rates,
)
from .report import environment, to_jsonable
from .stats import median_of
from .streams import (
    MemoryBound,
    StreamRun,
    memory_bound,
    open_small_writes,
    pipe_and_socket,
)
from .writes import WriteRun, measure_bgio, measure_sync, priority_label

__all__ = [
    "CONDITIONS",
    "MIB",
    "CallLatency",
    "Comparison",
    "Condition",
    "LoadedPacing",
    "LoopStats",
    "MemoryBound",
    "PacingCell",
    "PacingRun",
    "RateRun",
    "SmallWrites",
    "Spread",
    "StreamRun",
    "TimedFile",
    "WriteRun",
    "call_latency",
    "compare_steps",
    "compare_writes",
    "duty_cycles",
    "environment",
    "idle_baseline",
    "loaded",
    "loop_gaps",
    "make_data",
    "max_rate",
    "measure_bgio",
    "measure_sync",
    "median_of",
    "memory_bound",
    "open_small_writes",
    "pacing_run",
    "pacing_steps",
    "pacing_under_load",
    "pipe_and_socket",
    "priority_label",
    "ring_file",
    "small_writes",
    "spinners",
    "to_jsonable",
    "window_rates",
]
