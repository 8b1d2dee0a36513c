"""FrameWriter's default copy=True against copy=False: 200 uncompressed 1024x1024 uint16
frames to /dev/shm, append-call latency (median, p99) and total time, 5 interleaved rounds."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from bgio.h5 import FrameWriter

FRAMES, SHAPE, ROUNDS = 200, (1024, 1024), 5


def one_run(folder: str, copy: bool) -> tuple[float, float, float]:
    buffer = np.ones(SHAPE, "<u2")
    path = os.path.join(folder, f"copy-{copy}.h5")
    calls = []
    started = time.perf_counter()
    with FrameWriter(path, "frames", SHAPE, "<u2", priority=1, copy=copy) as w:
        for _ in range(FRAMES):
            before = time.perf_counter()
            w.append(buffer)
            calls.append(time.perf_counter() - before)
    total = time.perf_counter() - started
    os.remove(path)
    calls.sort()
    return statistics.median(calls), calls[int(len(calls) * 0.99)], total


def main() -> None:
    folder = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for _ in range(ROUNDS):
        for copy in (True, False):
            results[copy].append(one_run(folder, copy))
    for copy, runs in results.items():
        median, p99, total = (statistics.median(run[i] for run in runs) for i in range(3))
        print(f"copy={copy!s:5}  append median {median * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms  "
              f"total {total:.3f} s ({FRAMES} frames)")
    os.rmdir(folder)


if __name__ == "__main__":
    main()
