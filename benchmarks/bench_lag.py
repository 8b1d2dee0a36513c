"""Keeping up with a camera: a paced FrameWriter with and without ``max_lag``.

    python benchmarks/bench_lag.py [--rate MIB_S] [--seconds S] [--repeat R]
                                   [--presets 7,10] [--max-lag 0.5] [--backends thread]
                                   [--conditions idle,cpu,python] [--dir DIR] [--json F]

A stand-in camera in the main thread hands 1024 x 1024 uint16 frames
(2 MiB, Poisson noise) to a ``bgio.h5.FrameWriter`` (gzip level 1, a chunk
per frame) at ``--rate`` MiB/s (default 60) for ``--seconds`` (default 4),
then closes it. Between frames the main thread sleeps (``idle``, ``cpu``:
two other processes spin the cores) or runs Python (``python``: a GUI busy
in its own code). Sides, interleaved, medians of R rounds (default 3): each
preset (default 7 and 10) without ``max_lag``, and with ``max_lag`` seconds
(default 0.5), for each backend (``--backends thread,process``).

Reported per side: the backlog when the camera stops (MiB held for frames
not yet stored), the seconds the close then takes (catching up), the share
of the bytes stored unpaced, and how late the camera's frames were handed
over (p99 / max ms: a writer that makes ``append`` wait shows here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import bgio
import bgio.h5
from bgio.bench.load import loaded

MIB = 1024 * 1024
SHAPE = (1024, 1024)


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.poisson(100, SHAPE).astype("u2") for _ in range(8)]


def _run(path: str, preset: int, max_lag: float | None, rate: float, seconds: float,
         condition: str, frames: list[np.ndarray], backend: str = "thread",
         ) -> dict[str, float]:
    writer = bgio.h5.FrameWriter(path, "frames", SHAPE, "u2", compression="gzip",
                                 compression_opts=1, chunk_frames=1, priority=preset,
                                 max_lag=max_lag, backend=backend)
    period = frames[0].nbytes / (rate * MIB)
    count = int(seconds / period)
    lateness = []
    start = time.perf_counter()
    for i, frame in zip(range(count), itertools.cycle(frames)):
        due = start + i * period
        if condition == "python":
            while time.perf_counter() < due:
                sum(range(200))  # the GUI's own Python work between frames
        else:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        lateness.append(max(0.0, time.perf_counter() - due))
        writer.append(frame)
    backlog = writer.pending_bytes
    stopped = time.perf_counter()
    writer.close()
    closed = time.perf_counter()
    stats = writer.stats()
    os.unlink(path)
    lateness.sort()
    return {
        "backlog_mib": backlog / MIB,
        "close_s": closed - stopped,
        "unpaced_pct": 100.0 * stats.unpaced_bytes / max(1, stats.bytes),
        "late_p99_ms": 1e3 * lateness[int(0.99 * (len(lateness) - 1))],
        "late_max_ms": 1e3 * lateness[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=60.0, help="camera MiB/s (60)")
    parser.add_argument("--seconds", type=float, default=4.0, help="camera run, s (4)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, medians (3)")
    parser.add_argument("--presets", default="7,10", help="presets (7,10)")
    parser.add_argument("--max-lag", type=float, default=0.5, help="max_lag, s (0.5)")
    parser.add_argument("--conditions", default="idle,cpu,python")
    parser.add_argument("--backends", default="thread", help="thread and/or process")
    parser.add_argument("--dir", default=None, help="where the files go (a temporary dir)")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args(argv)
    presets = [int(p) for p in args.presets.split(",")]
    sides = [(preset, lag, backend) for backend in args.backends.split(",")
             for preset in presets for lag in (None, args.max_lag)]
    frames = _frames()
    folder = args.dir or tempfile.mkdtemp(prefix="bgio-lag-")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    print(f"bgio {bgio.__version__}: a {args.rate:g} MiB/s camera for {args.seconds:g} s, "
          f"gzip-1 frames of 2 MiB, medians of {args.repeat} [min-max]; files in {folder}")
    for condition in args.conditions.split(","):
        per_side = results.setdefault(condition, {})
        with loaded("cpu" if condition == "cpu" else "idle"):
            for backend in {side[2] for side in sides}:
                _run(os.path.join(folder, "warm.h5"), presets[0], None, args.rate, 0.5,
                     condition, frames, backend)
            for _ in range(args.repeat):
                for preset, lag, backend in sides:  # interleaved
                    key = f"{backend} {preset}, max_lag={lag}"
                    per_side.setdefault(key, []).append(_run(
                        os.path.join(folder, "lag.h5"), preset, lag, args.rate, args.seconds,
                        condition, frames, backend))
        print(f"\n{condition}:")
        print(f"  {'side':<28} {'backlog MiB':>16} {'close s':>15} {'unpaced %':>10} "
              f"{'late p99/max ms':>16}")
        for key, runs in per_side.items():
            def cell(name: str, runs: list[dict[str, float]] = runs, digits: int = 1) -> str:
                values = [run[name] for run in runs]
                return (f"{statistics.median(values):.{digits}f} "
                        f"[{min(values):.{digits}f}-{max(values):.{digits}f}]")
            late = (f"{statistics.median(r['late_p99_ms'] for r in runs):.1f}/"
                    f"{statistics.median(r['late_max_ms'] for r in runs):.1f}")
            print(f"  {key:<28} {cell('backlog_mib'):>16} {cell('close_s', digits=2):>15} "
                  f"{statistics.median(r['unpaced_pct'] for r in runs):>10.0f} {late:>16}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
