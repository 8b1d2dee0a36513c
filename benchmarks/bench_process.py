"""Thread against writer process, with the main thread idle and busy in Python.

    python benchmarks/bench_process.py [--dir DIR] [--mib N] [--repeat R] [--json F]

N MiB (default 512) of random data (one 64 MiB block, repeated, so the
caller's buffers are large) are written to a file in DIR (default
``/dev/shm``, so the disk's noise stays out) by ``bgio.bgwrite`` at a
preset, with ``backend="thread"`` and ``backend="process"``, while the main
thread either waits for the handle (idle) or runs a Python loop until the
write is done (busy). Reported: the write's MiB/s; for the busy runs, the
main thread's loop rate as a share of its rate with no write going on; and
the write's duty cycle at presets 4, 7 and 10 (``handle.duty_cycle``: the
thread's is the parent's handle, the process's is reported by the writer
process through the same handle). Sides interleave; medians of R rounds
(default 5) with the range.

Preset 1 is measured a third way, ``pool``: the process backend with the
data already in a ``bgio.FramePool`` (one copy, the writer process's,
instead of two: reading this process's memory, then writing).

Targets (the process backend's issue): preset 1 with the process backend,
main thread busy, at >= 0.8x the idle rate; the main thread keeps >= 0.9x its
work rate; presets 4/7/10 keep their duty cycle within +-5 points in both
conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

try:
    import bgio
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio

MIB = 1024 * 1024
BLOCK = 64 * MIB
#: Iterations of the busy loop between looks at the handle.
STEP = 10_000


def _busy_rate(seconds: float) -> float:
    """Loop iterations per second of the busy loop with nothing else going on."""
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(STEP):
            count += 1
    return count / seconds


_POOL: bgio.FramePool | None = None


def _pool_frames(count: int, block: bytes) -> list[object]:
    """The same data in frames of a FramePool (filled once; acquired again each run)."""
    global _POOL
    if _POOL is None:
        import numpy as np

        _POOL = bgio.FramePool((BLOCK,), "uint8", count)
        for frame in [_POOL.acquire() for _ in range(count)]:
            frame[:] = np.frombuffer(block, dtype=np.uint8)
            _POOL.release(frame)
    return [_POOL.acquire(timeout=60) for _ in range(count)]


def _write(path: str, data: list[bytes], preset: int, backend: str, busy: bool
           ) -> dict[str, float]:
    total = sum(map(len, data))
    source: list[object] = list(data)
    if backend == "pool":  # the process backend, the data in shared memory already
        source, backend = _pool_frames(len(data), data[0]), "process"
    started = time.perf_counter()
    handle = bgio.bgwrite(path, source, priority=preset, backend=backend)
    count = 0
    if busy:
        while not handle.done():
            for _ in range(STEP):
                count += 1
    handle.result()
    seconds = time.perf_counter() - started
    os.remove(path)
    return {"mib_s": total / MIB / seconds, "loop_rate": count / seconds,
            "duty": handle.duty_cycle or 0.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--mib", type=int, default=512, help="MiB per write (default 512)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--json", default=None, help="write every run to this file")
    args = parser.parse_args()
    block = os.urandom(BLOCK)
    data = [block] * max(1, args.mib * MIB // BLOCK)
    sides = [(preset, backend, busy) for preset in (1, 4, 7, 10)
             for backend in ("thread", "process") for busy in (False, True)]
    sides[4:4] = [(1, "pool", False), (1, "pool", True)]
    runs: dict[tuple[int, str, bool], list[dict[str, float]]] = {side: [] for side in sides}
    base: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bgio-process-") as directory:
        path = os.path.join(directory, "out.bin")
        _write(path, data[:1], 1, "process", False)  # start the writer process: warm up
        for round_number in range(args.repeat):
            base.append(_busy_rate(0.5))
            order = sides if round_number % 2 == 0 else sides[::-1]
            for side in order:
                runs[side].append(_write(path, data, *side))
            print(f"  round {round_number + 1} of {args.repeat}", file=sys.stderr)
    idle_rate = statistics.median(base)
    print(f"{args.mib} MiB per write to {args.dir}; medians of {args.repeat} (range); "
          f"busy loop alone: {idle_rate / 1e6:.1f} M iterations/s")
    print(f"  {'preset':>6s} {'backend':8s} {'main':5s} {'MiB/s':>14s} {'duty':>6s} "
          f"{'main loop kept':>15s}")
    medians: dict[tuple[int, str, bool], dict[str, float]] = {}
    for side in sides:
        values = runs[side]
        rates = [run["mib_s"] for run in values]
        medians[side] = {key: statistics.median(run[key] for run in values)
                         for key in values[0]}
        kept = (f"{medians[side]['loop_rate'] / idle_rate * 100:14.0f}%" if side[2]
                else f"{'':15s}")
        print(f"  {side[0]:6d} {side[1]:8s} {'busy' if side[2] else 'idle':5s} "
              f"{medians[side]['mib_s']:6.0f} [{min(rates):.0f}-{max(rates):.0f}] "
              f"{medians[side]['duty'] * 100:5.0f}% {kept}")
    print()
    checks = []
    pool_busy, pool_idle = medians[(1, "pool", True)], medians[(1, "pool", False)]
    busy, idle = medians[(1, "process", True)], medians[(1, "process", False)]
    thread_idle = medians[(1, "thread", False)]
    checks.append((busy["mib_s"] >= 0.8 * idle["mib_s"],
                   (f"preset 1, process, main busy: {busy['mib_s'] / idle['mib_s']:.2f}x its "
                   f"idle rate ({busy['mib_s'] / thread_idle['mib_s']:.2f}x the thread's "
                   "idle rate) (>= 0.8)")))
    checks.append((pool_busy["mib_s"] >= 0.8 * pool_idle["mib_s"],
                   (f"preset 1, process, FramePool data, main busy: "
                    f"{pool_busy['mib_s'] / pool_idle['mib_s']:.2f}x its idle rate (>= 0.8)")))
    checks.append((busy["loop_rate"] >= 0.9 * idle_rate,
                   (f"main loop beside the writer process at preset 1: "
                   f"{busy['loop_rate'] / idle_rate:.2f}x alone (>= 0.9)")))
    for preset in (4, 7, 10):
        share = bgio.PRESETS[preset].bandwidth_pct
        for condition in (False, True):
            duty = medians[(preset, "process", condition)]["duty"] * 100
            checks.append((abs(duty - share) <= 5,
                           (f"preset {preset}, process, main {'busy' if condition else 'idle'}: "
                           f"duty {duty:.0f} % (profile {share:g} % +-5)")))
    for ok, text in checks:
        print(("ok   " if ok else "MISS ") + text)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({f"{p} {b} {'busy' if m else 'idle'}": values
                       for (p, b, m), values in runs.items()}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
