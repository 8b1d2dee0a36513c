"""The caller's h5py calls beside a FrameWriter: thread backend against the writer process.

    python benchmarks/bench_process_h5.py [--dir DIR] [--frames N] [--repeat R] [--json F]

N frames (default 100) of 1024 x 1024 uint16 (Poisson noise, so gzip has
work to do) are appended at preset 1 with gzip level 4 to a dataset in
DIR (default ``/dev/shm``), while the main thread keeps calling h5py on
another file (a small read of an open dataset, in a loop). Sides:

- ``thread``: ``bgio.h5.FrameWriter`` (bgio compresses outside h5py's lock,
  but in this process), frames given as plain arrays (``copy=True``);
- ``process``: ``FrameWriter(..., backend="process")``, frames taken from a
  ``bgio.FramePool`` and filled in place.

Reported per side: the longest gap between two of the main thread's h5py
calls while the frames are appended and stored (ms), its p99, the
caller's cost per ``append`` (median and p99, us), and the time until the
writer is closed. Sides interleave; medians of R rounds (default 5) with
the range. Targets (the process backend's issue): max gap <= 5 ms; append
of a FramePool frame <= 50 us.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

import h5py
import numpy as np

try:
    import bgio
    import bgio.h5
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio
    import bgio.h5

SHAPE = (1024, 1024)


def _side(backend: str, directory: str, frames: list[np.ndarray], pool: bgio.FramePool | None,
          other: h5py.Dataset) -> dict[str, float]:
    path = os.path.join(directory, f"bench-{backend}.h5")
    if os.path.exists(path):
        os.remove(path)
    done = threading.Event()
    gaps: list[float] = []

    def produce(costs: list[float]) -> None:
        writer = bgio.h5.FrameWriter(path, "frames", SHAPE, "uint16", compression="gzip",
                                     compression_opts=4, priority=1, backend=backend)
        for frame in frames:
            if pool is not None:
                buffer = pool.acquire(timeout=60)
                np.copyto(buffer, frame)
                frame = buffer
            started = time.perf_counter()
            writer.append(frame)
            costs.append(time.perf_counter() - started)
        writer.close()
        done.set()

    costs: list[float] = []
    started = time.perf_counter()
    producer = threading.Thread(target=produce, args=(costs,))
    producer.start()
    last = time.perf_counter()
    while not done.is_set():
        other[0:16]  # an h5py call of the program's own, on another file
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    elapsed = time.perf_counter() - started
    producer.join()
    os.remove(path)
    ordered = sorted(gaps)
    appends = sorted(costs)
    return {"max_gap_ms": ordered[-1] * 1e3,
            "p99_gap_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
            "append_median_us": statistics.median(appends) * 1e6,
            "append_p99_us": appends[int(len(appends) * 0.99)] * 1e6,
            "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(dir=args.dir)
    rng = np.random.default_rng(1)
    frames = [rng.poisson(200, size=SHAPE).astype(np.uint16) for _ in range(args.frames)]
    pool = bgio.FramePool(SHAPE, "uint16", count=16)
    other_path = os.path.join(directory, "other.h5")
    with h5py.File(other_path, "w") as file:
        file["data"] = np.arange(4096, dtype=np.float64)
    results: dict[str, list[dict[str, float]]] = {"thread": [], "process": []}
    with h5py.File(other_path, "r") as file:
        other = file["data"]
        _side("process", directory, frames[:8], pool, other)  # warm up: start the writer process
        _side("thread", directory, frames[:8], None, other)
        for _ in range(args.repeat):
            for backend in ("thread", "process"):
                results[backend].append(_side(backend, directory, frames,
                                              pool if backend == "process" else None, other))
    os.remove(other_path)
    os.rmdir(directory)
    print(f"{args.frames} gzip-4 frames of {SHAPE[0]}x{SHAPE[1]} uint16 at preset 1; main thread "
          f"calling h5py on another file. Medians of {args.repeat} [min-max]:")
    summary = {}
    for backend, runs in results.items():
        line = []
        summary[backend] = {}
        for key in runs[0]:
            values = [run[key] for run in runs]
            summary[backend][key] = statistics.median(values)
            line.append(f"{key} {statistics.median(values):.2f} "
                        f"[{min(values):.2f}-{max(values):.2f}]")
        print(f"  {backend:8s} " + ", ".join(line))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"runs": results, "medians": summary}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
