"""Per-frame records (cytometry-like events) with RecordWriter against plain h5py, side by side.

    python benchmarks/bench_records.py [--frames N] [--repeat R] [--dir DIR]

Each frame has 50 events of 20 float32 features and a 64-sample uint16
trace, gzip + shuffle. Sides: RecordWriter at presets 1 and 4 (time from
the first append until close() returns, and each append call's latency),
and a synchronous loop that resizes and assigns every dataset per frame,
as acquisition code commonly does. Interleaved rounds, medians of R.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import h5py
import numpy as np

try:
    from bgio.bench.schedule import interleave
    from bgio.h5 import RecordWriter
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio.bench.schedule import interleave
    from bgio.h5 import RecordWriter

EVENTS = 50
FEATURES = {f"f{i}": ((), "<f4") for i in range(20)}
FEATURES["trace"] = ((64,), "<u2")


def make_events(count: int = 50) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        events = {f"f{i}": rng.normal(100, 10, EVENTS).astype("<f4") for i in range(20)}
        events["trace"] = rng.normal(1000, 50, (EVENTS, 64)).astype("<u2")
        frames.append(events)
    return frames


def bgio_side(path: str, frames: int, events: list, priority: int) -> tuple[float, list[float]]:
    writer = RecordWriter(path, "events", FEATURES, compression="gzip", shuffle=True,
                          priority=priority)
    latencies = []
    clock = time.perf_counter
    started = clock()
    for frame in range(frames):
        before = clock()
        writer.append(frame, events[frame % len(events)])
        latencies.append(clock() - before)
    writer.close()
    return clock() - started, latencies


def plain_side(path: str, frames: int, events: list) -> tuple[float, list[float]]:
    started = time.perf_counter()
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        datasets = {name: group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape),
                                               dtype=dtype, chunks=(4096, *shape),
                                               compression="gzip", shuffle=True)
                    for name, (shape, dtype) in FEATURES.items()}
        stored = 0
        for frame in range(frames):
            for name, dataset in datasets.items():
                dataset.resize(stored + EVENTS, axis=0)
                dataset[stored:] = events[frame % len(events)][name]
            stored += EVENTS
    return time.perf_counter() - started, []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    events = make_events()
    row_bytes = sum(np.dtype(dtype).itemsize * int(np.prod(shape)) for shape, dtype in
                    FEATURES.values())
    mib = args.frames * EVENTS * row_bytes / 2**20
    sides = ["RecordWriter p1", "RecordWriter p4", "plain h5py resize+assign per frame"]
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    latency: dict[str, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        path = os.path.join(directory, "records.h5")
        for side in sides:  # warm-up
            (plain_side(path, 50, events) if side.startswith("plain")
             else bgio_side(path, 50, events, int(side[-1])))
            os.remove(path)
        for side in interleave(sides, args.repeat):
            if side.startswith("plain"):
                took, calls = plain_side(path, args.frames, events)
            else:
                took, calls = bgio_side(path, args.frames, events, int(side[-1]))
            os.remove(path)
            seconds[side].append(took)
            latency[side].extend(calls)
            print(f"  {side}", file=sys.stderr)
    print(f"{args.frames} frames x {EVENTS} events ({mib:.0f} MiB of records), gzip + shuffle; "
          f"medians of {args.repeat}")
    for side in sides:
        took = statistics.median(seconds[side])
        line = f"{side:<36} {mib / took:6.1f} MiB/s"
        if latency[side]:
            calls = np.asarray(latency[side]) * 1e6
            line += (f"   append median {np.median(calls):5.0f} us  p99 "
                     f"{np.percentile(calls, 99):6.0f} us")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
