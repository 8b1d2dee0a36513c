"""Live-file scenarios: how soon a follower in another process sees a frame, what SWMR costs
the writer, and what an idle follower costs."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..h5 import FrameWriter, follow
from ..h5.live import DEFAULT_FLUSH_INTERVAL
from .data import MIB
from .prepare import settle

__all__ = ["Latency", "follower_cpu", "latency", "swmr_seconds", "timed_writer"]

#: Frames of the latency runs: small, so storing them takes next to no time.
LATENCY_SHAPE = (256, 256)


@dataclass
class Latency:
    """From ``append`` in a writer process to ``follow`` yielding the frame here.

    Attributes
    ----------
    flush_interval : float
    frames : int
    median_ms, p90_ms, max_ms : float
    """

    flush_interval: float
    frames: int
    median_ms: float
    p90_ms: float
    max_ms: float


def timed_writer(path: str, count: int, period: float, flush_interval: float) -> None:
    """Append ``count`` frames, one every ``period`` seconds, each stamped with the
    ``time.monotonic()`` of its append in its first 8 bytes (the clock is system-wide)."""
    frame = np.zeros(LATENCY_SHAPE, dtype="<u2")
    stamp = frame.reshape(-1).view(np.float64)
    with FrameWriter(path, "frames", LATENCY_SHAPE, "<u2", swmr=True,
                     flush_interval=flush_interval) as writer:
        next_at = time.monotonic()
        for _ in range(count):
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
            stamp[0] = time.monotonic()
            writer.append(frame.copy())


def latency(directory: str, flush_interval: float = DEFAULT_FLUSH_INTERVAL, count: int = 60,
            period: float = 0.02) -> Latency:
    """Run :func:`timed_writer` in a ``spawn`` process and follow it here."""
    path = os.path.join(directory, "live.h5")
    context = multiprocessing.get_context("spawn")
    writer = context.Process(target=timed_writer, args=(path, count, period, flush_interval))
    writer.start()
    delays = []
    try:
        with follow(path, "frames", timeout=30) as follower:
            for _, frame in follower:
                delays.append(time.monotonic() - float(frame.reshape(-1).view(np.float64)[0]))
    finally:
        writer.join(60)
    os.remove(path)
    if len(delays) != count:
        raise RuntimeError(f"followed {len(delays)} of {count} frames")
    delays_ms = sorted(d * 1e3 for d in delays)
    return Latency(flush_interval, count, statistics.median(delays_ms),
                   delays_ms[int(0.9 * (len(delays_ms) - 1))], delays_ms[-1])


def swmr_seconds(directory: str, frames: np.ndarray, swmr: bool, level: int | None = 4,
                 priority: int = 1) -> float:
    """Seconds for FrameWriter to store ``frames`` (then flush), with or without SWMR."""
    path = os.path.join(directory, "swmr.h5")
    writer = FrameWriter(path, "frames", frames.shape[1:], frames.dtype,
                         compression="gzip" if level is not None else None,
                         compression_opts=level, chunk_frames=1, priority=priority, swmr=swmr)
    settle()
    started = time.perf_counter()
    for frame in frames:
        writer.append(frame)
    writer.flush()
    seconds = time.perf_counter() - started
    writer.close()
    os.remove(path)
    return seconds


def follower_cpu(directory: str, seconds: float = 3.0,
                 clock: Callable[[], float] = time.process_time) -> float:
    """Share of one core an idle follower uses while it waits ``seconds`` for a frame.

    The file has one frame and no finished flag is looked at, so the
    follower waits out its whole timeout, as for a writer that stalled.
    """
    path = os.path.join(directory, "idle.h5")
    with FrameWriter(path, "frames", (8, 8), "u1", swmr=True) as writer:
        writer.append(np.zeros((8, 8), "u1"))
    started, used = time.monotonic(), clock()
    for _ in follow(path, "frames", finished=None, timeout=seconds):
        pass
    share = (clock() - used) / (time.monotonic() - started)
    os.remove(path)
    return share


def mib_s(frames: np.ndarray, seconds: float) -> float:
    """Throughput of ``frames`` written in ``seconds``."""
    return frames.nbytes / MIB / seconds
