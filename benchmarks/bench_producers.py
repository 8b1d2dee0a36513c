"""Frames from worker processes into one FrameWriter: ``writer.producer()`` against a Queue.

    python benchmarks/bench_producers.py [--dir DIR] [--frames N] [--workers W]
                                         [--repeat R] [--json F]

W ``spawn``ed workers (default 2) make N frames each (default 200) of
512 x 512 uint16 and hand them, interleaved by index, to a
``FrameWriter(..., backend="process")`` in DIR (default ``/dev/shm``), at
preset 1, no compression. Sides:

- ``queue``: the pattern acquisition programs use today: workers put
  ``(index, frame)`` on a ``multiprocessing.Queue`` (pickled), a thread of
  the main process takes them and calls ``write_at``;
- ``producer``: ``writer.producer()`` in the workers, each frame filled in
  place in a slot from ``acquire()`` and passed to ``write_at``.

Each side runs with the main thread idle (waiting on an Event) and busy
(running Python the whole time). Reported: frames per second from the
workers' start to the writer's close, the workers' cost per hand-over
(``put`` or ``write_at``: median and p99, us), and for the busy rounds the
main thread's work rate relative to a round with no writer. Sides and
conditions interleave; medians of R rounds (default 5) with the range.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

try:
    import bgio
    import bgio.h5
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio
    import bgio.h5

SHAPE = (512, 512)
_spawn = multiprocessing.get_context("spawn")


def _frame(index: int) -> np.ndarray:
    return np.full(SHAPE, index % 65535, dtype=np.uint16)


def _queue_worker(queue, indices: list[int], costs) -> None:
    taken = []
    for index in indices:
        frame = _frame(index)
        started = time.perf_counter()
        queue.put((index, frame))
        taken.append(time.perf_counter() - started)
    costs.put(taken)


def _producer_worker(producer, indices: list[int], costs) -> None:
    taken = []
    for index in indices:
        with producer.acquired(timeout=60) as frame:
            frame[...] = index % 65535
            started = time.perf_counter()
            producer.write_at(index, frame)
            taken.append(time.perf_counter() - started)
    producer.flush()
    costs.put(taken)


def _busy(stop: threading.Event) -> int:
    """The main thread's Python work until ``stop``: loops done."""
    loops = 0
    while not stop.is_set():
        total = 0
        for value in range(200):
            total += value * value
        loops += 1
    return loops


def _round(side: str, directory: str, frames: int, workers: int, busy: bool
           ) -> dict[str, float]:
    path = os.path.join(directory, f"bench-{side}.h5")
    if os.path.exists(path):
        os.remove(path)
    writer = bgio.h5.FrameWriter(path, "frames", SHAPE, "uint16", priority=1,
                                 backend="process")
    costs = _spawn.Queue()
    parts = [list(range(k, frames * workers, workers)) for k in range(workers)]
    finished = threading.Event()
    consumer = None
    if side == "queue":
        queue = _spawn.Queue(maxsize=16)

        def consume() -> None:
            for _ in range(frames * workers):
                index, frame = queue.get()
                writer.write_at(index, frame)

        consumer = threading.Thread(target=consume)
        consumer.start()
        processes = [_spawn.Process(target=_queue_worker, args=(queue, part, costs))
                     for part in parts]
    else:
        producer = writer.producer(shared_frames=16)
        processes = [_spawn.Process(target=_producer_worker, args=(producer, part, costs))
                     for part in parts]

    def run() -> None:
        for process in processes:
            process.join()
        if consumer is not None:
            consumer.join()
        writer.close()
        finished.set()

    started = time.perf_counter()
    for process in processes:
        process.start()
    ender = threading.Thread(target=run)
    ender.start()
    loops = _busy(finished) if busy else (finished.wait(), 0)[1]
    elapsed = time.perf_counter() - started
    ender.join()
    taken = sorted(cost for _ in parts for cost in costs.get(timeout=60))
    os.remove(path)
    return {"frames_per_s": frames * workers / elapsed,
            "handover_median_us": statistics.median(taken) * 1e6,
            "handover_p99_us": taken[int(len(taken) * 0.99)] * 1e6,
            "loops_per_s": loops / elapsed}


def _idle_work_rate(seconds: float = 1.0) -> float:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    started = time.perf_counter()
    timer.start()
    loops = _busy(stop)
    return loops / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    directory = tempfile.mkdtemp(dir=args.dir)
    keys = [(side, busy) for busy in (False, True) for side in ("queue", "producer")]
    results: dict[str, list[dict[str, float]]] = {f"{s} {'busy' if b else 'idle'}": []
                                                  for s, b in keys}
    _round("producer", directory, 8, args.workers, False)  # warm up: the writer process
    _round("queue", directory, 8, args.workers, False)
    alone = []
    for _ in range(args.repeat):
        alone.append(_idle_work_rate())
        for side, busy in keys:
            results[f"{side} {'busy' if busy else 'idle'}"].append(
                _round(side, directory, args.frames, args.workers, busy))
    os.rmdir(directory)
    base = statistics.median(alone)
    print(f"{args.workers} spawned workers x {args.frames} frames of {SHAPE[0]}x{SHAPE[1]} "
          f"uint16 into FrameWriter(backend='process'), preset 1. Medians of {args.repeat} "
          f"[min-max]; main thread alone: {base:,.0f} loops/s [{min(alone):,.0f}-"
          f"{max(alone):,.0f}]")
    summary: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        summary[name] = {}
        line = []
        for key in runs[0]:
            if key == "loops_per_s" and "idle" in name:
                continue
            values = [run[key] for run in runs]
            if key == "loops_per_s":
                key, values = "main_work_ratio", [value / base for value in values]
            summary[name][key] = statistics.median(values)
            line.append(f"{key} {statistics.median(values):,.2f} "
                        f"[{min(values):,.2f}-{max(values):,.2f}]")
        print(f"  {name:14s} " + ", ".join(line))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"runs": results, "medians": summary, "alone": alone}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
