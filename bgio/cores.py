"""How many cores bgio's own threads may keep busy at once.

In the caller's process that is every core the process may run on (its
CPU affinity, which container limits set too). The writer process of
``backend="process"`` reserves one of them for the program that started it
(:func:`reserve`): that program's main thread is busy in Python much of the
time (the reason to choose the process backend), and a writer process that
kept every core busy would put that thread in the run queue behind its own
threads. Measured on two cores with the caller's main thread running
Python: a writer process with two busy threads (read-ahead beside the
write, or a compression pool beside the worker) left the main thread 0.77x
its work rate alone and gave caller-side h5py calls gaps of ~10 ms; with
one busy thread the main thread kept its core.

The rule is read by the parts that start helper threads of their own: the
HDF5 compression pool (:func:`bgio.h5.filters.encoding_pool`) and the
writer process's read-ahead of the caller's memory.
"""

from __future__ import annotations

import os

_reserved = 0


def available() -> int:
    """The number of cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def usable() -> int:
    """The number of cores bgio's threads in this process may keep busy (at least 1)."""
    return max(1, available() - _reserved)


def reserve(count: int) -> None:
    """Leave ``count`` cores to other programs from now on (0: none).

    The writer process calls ``reserve(1)`` when it starts.

    Raises
    ------
    TypeError
        If ``count`` is not an int.
    ValueError
        If ``count`` is negative.
    """
    global _reserved
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    _reserved = count
