"""Measure bgio against plain synchronous writes: the one implementation behind ``bgio bench`` and benchmarks/."""

from __future__ import annotations

from .compare import Comparison, compare_steps, compare_writes
from .data import MIB, make_data
from .loop import LoopStats, idle_baseline, loop_gaps
from .overhead import CallLatency, SmallWrites, call_latency, small_writes
from .pacing import RateRun, duty_cycles, max_rate
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
    "MIB",
    "CallLatency",
    "Comparison",
    "LoopStats",
    "MemoryBound",
    "RateRun",
    "SmallWrites",
    "StreamRun",
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
    "memory_bound",
    "open_small_writes",
    "pipe_and_socket",
    "priority_label",
    "small_writes",
    "to_jsonable",
]
