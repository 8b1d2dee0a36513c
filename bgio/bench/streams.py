"""Stream destinations side by side: pipes and sockets, bgio.open, and the memory bound."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..api import bgwrite
from ..files import open as bg_open
from ..priority import PRESETS
from ..writer import Writer
from .data import MIB
from .loop import rss
from .prepare import settle
from .schedule import interleave

__all__ = ["MemoryBound", "StreamRun", "memory_bound", "open_small_writes", "pipe_and_socket"]

#: Bytes per call of the plain blocking loop (what a careful program would use).
LOOP_BLOCK = 1 << 20


@dataclass
class StreamRun:
    """One destination kind: bgio against the plain way, medians of interleaved rounds.

    Attributes
    ----------
    label : str
    size_bytes : int
    plain_s, bgio_s : float
        Median seconds of each side.
    ratio : float
        ``plain_s / bgio_s``: above 1, bgio is faster.
    plain_runs, bgio_runs : list of float
        Every measured time of each side, seconds.
    """

    label: str
    size_bytes: int
    plain_s: float
    bgio_s: float
    ratio: float
    plain_runs: list[float] = field(default_factory=list)
    bgio_runs: list[float] = field(default_factory=list)


def _side_by_side(label: str, size: int, plain: Callable[[], float],
                  bgio_side: Callable[[], float], repeat: int) -> StreamRun:
    plain()  # warm-up: page allocation, thread and process start-up
    bgio_side()
    times: dict[int, list[float]] = {0: [], 1: []}
    for arm in interleave([0, 1], repeat):
        settle()
        times[arm].append((plain, bgio_side)[arm]())
    plain_s, bgio_s = statistics.median(times[0]), statistics.median(times[1])
    return StreamRun(label, size, plain_s, bgio_s, plain_s / bgio_s, times[0], times[1])


def _to_cat(write: Callable[[int], object]) -> float:
    """Time ``write(fd)`` into the stdin pipe of a ``cat > /dev/null`` process."""
    with subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None
        started = time.perf_counter()
        write(proc.stdin.fileno())
        elapsed = time.perf_counter() - started
        proc.stdin.close()
    return elapsed


def _to_socket(write: Callable[[socket.socket], object]) -> float:
    """Time ``write(sock)`` into a socketpair drained by a thread."""
    near, far = socket.socketpair()

    def drain() -> None:
        while far.recv(LOOP_BLOCK):
            pass

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        started = time.perf_counter()
        write(near)
        elapsed = time.perf_counter() - started
        near.shutdown(socket.SHUT_WR)
        reader.join()
    finally:
        near.close()
        far.close()
    return elapsed


def pipe_and_socket(data: object, repeat: int = 5, priority: int = 1) -> list[StreamRun]:
    """Write ``data`` into a pipe (to ``cat``) and a socketpair: a blocking loop against bgio.

    The plain side writes ``LOOP_BLOCK`` bytes per call, resuming partial
    writes; bgio's side is ``bgwrite(...).result()`` at ``priority``.

    Parameters
    ----------
    data : bytes-like or numpy array
    repeat : int
        Interleaved rounds per side; medians are reported.
    priority : int
        bgio's preset.

    Returns
    -------
    list of StreamRun
        The pipe, then the socket.
    """
    view = memoryview(data).cast("B")  # type: ignore[arg-type]
    size = len(view)

    def loop_fd(fd: int) -> None:
        for start in range(0, size, LOOP_BLOCK):
            rest = view[start : start + LOOP_BLOCK]
            while rest:
                rest = rest[os.write(fd, rest):]

    def loop_socket(sock: socket.socket) -> None:
        sock.sendall(view)

    return [
        _side_by_side("pipe to cat", size, lambda: _to_cat(loop_fd),
                      lambda: _to_cat(lambda fd: bgwrite(fd, view, priority=priority).result()),
                      repeat),
        _side_by_side("socketpair", size, lambda: _to_socket(loop_socket),
                      lambda: _to_socket(lambda s: bgwrite(s, view, priority=priority).result()),
                      repeat),
    ]


def open_small_writes(directory: str, count: int = 100_000, size: int = 4096,
                      repeat: int = 5, priority: int = 4) -> StreamRun:
    """``count`` writes of ``size`` bytes through ``bgio.open`` against a plain buffered file.

    Both sides open the file inside the timer and close it at the end (a
    close waits for bgio's last write), so the time covers all the work.
    """
    blocks = [os.urandom(size) for _ in range(min(count, 1000))]
    blocks = (blocks * (count // len(blocks) + 1))[:count]
    path = os.path.join(directory, "small-writes")

    def run(opener: Callable[[], object]) -> float:
        started = time.perf_counter()
        f = opener()
        for block in blocks:
            f.write(block)  # type: ignore[attr-defined]
        f.close()  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
        os.remove(path)
        return elapsed

    return _side_by_side(f"{count} x {size} B", count * size,
                         lambda: run(lambda: open(path, "wb")),
                         lambda: run(lambda: bg_open(path, "wb", priority=priority)),
                         repeat)


@dataclass
class MemoryBound:
    """Peak memory while a producer outpaces a throttled Writer with ``max_pending_bytes``.

    Attributes
    ----------
    bound_bytes, block_bytes, total_bytes : int
    chunk_bytes : int
        The Writer's chunk size: the issue's allowance above the bound.
    peak_rss_above_baseline : int
        Largest RSS growth seen during the run.
    peak_pending_bytes : int
        Largest ``Writer.pending_bytes`` seen.
    """

    bound_bytes: int
    block_bytes: int
    total_bytes: int
    chunk_bytes: int
    peak_rss_above_baseline: int
    peak_pending_bytes: int


def memory_bound(directory: str, bound: int = 64 * MIB, block: int = 1 * MIB,
                 total: int = 512 * MIB, rate: float = 400e6) -> MemoryBound:
    """Produce ``total`` bytes in fresh ``block``-sized buffers as fast as possible into a
    Writer capped at ``rate`` bytes/s with ``max_pending_bytes=bound``; watch RSS.
    """
    path = os.path.join(directory, "bounded")
    profile = PRESETS[1].replace(max_rate=rate)
    settle()
    baseline = rss()
    peak = peak_pending = 0
    with Writer(path, profile, max_pending_bytes=bound) as writer:
        for _ in range(total // block):
            writer.write(b"\x01" * block)  # a new, touched buffer each time, as a camera makes
            peak = max(peak, rss() - baseline)
            peak_pending = max(peak_pending, writer.pending_bytes)
    os.remove(path)
    return MemoryBound(bound, block, total, profile.default_chunk_size, peak, peak_pending)
