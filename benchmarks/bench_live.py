"""Live files: follower latency, what SWMR costs the writer, and an idle follower's CPU.

    python benchmarks/bench_live.py [--repeat R] [--dir DIR]

Targets (issue "Live files"):

- latency from ``append`` in a writer process to ``bgio.h5.follow`` yielding
  the frame in this one: median <= flush_interval + 50 ms, at 0.1 s and at
  the default;
- writer throughput with SWMR >= 0.8x without (FrameWriter, preset 1, 100
  realistic 1024x1024 uint16 frames, gzip-4 and uncompressed);
- an idle follower uses <= 2 % of a core.

Sides are interleaved (order reversed every other round); figures are
medians of R rounds. The measuring lives in ``bgio.bench.live``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

try:
    from bgio.bench import live
    from bgio.bench.h5 import realistic_frames
    from bgio.bench.schedule import interleave
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio.bench import live
    from bgio.bench.h5 import realistic_frames
    from bgio.bench.schedule import interleave

from bgio.h5.live import DEFAULT_FLUSH_INTERVAL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--dir", default=None, help="directory for the files")
    args = parser.parse_args()
    frames = realistic_frames(100)
    checks = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        intervals = [0.1, DEFAULT_FLUSH_INTERVAL]
        runs: dict[float, list[live.Latency]] = {interval: [] for interval in intervals}
        live.latency(directory, 0.1, count=10)  # warm-up: spawn, imports, page cache
        for interval in interleave(intervals, args.repeat):
            runs[interval].append(live.latency(directory, interval))
            print(f"  latency at {interval} s", file=sys.stderr)
        print("latency append -> yielded by a follower in another process "
              f"(60 frames at 50 fps, medians of {args.repeat} runs)")
        for interval, results in runs.items():
            median = statistics.median(run.median_ms for run in results)
            p90 = statistics.median(run.p90_ms for run in results)
            worst = max(run.max_ms for run in results)
            target = interval * 1e3 + 50
            print(f"  flush_interval {interval:4} s: median {median:6.1f} ms  p90 {p90:6.1f} ms  "
                  f"max {worst:6.1f} ms  (target median <= {target:.0f} ms)")
            checks.append((f"latency at {interval} s: median {median:.1f} ms <= {target:.0f} ms",
                           median <= target))
        for level in (4, None):
            name = "gzip-4" if level else "uncompressed"
            sides = [(False, level), (True, level)]
            seconds: dict[bool, list[float]] = {False: [], True: []}
            live.swmr_seconds(directory, frames[:8], False, level)  # warm-up
            live.swmr_seconds(directory, frames[:8], True, level)
            for swmr, _ in interleave(sides, args.repeat):
                seconds[swmr].append(live.swmr_seconds(directory, frames, swmr, level))
                print(f"  throughput {name} swmr={swmr}", file=sys.stderr)
            plain, with_swmr = (statistics.median(seconds[k]) for k in (False, True))
            ratio = plain / with_swmr
            print(f"FrameWriter p1 {name}: {live.mib_s(frames, plain):6.0f} MiB/s without SWMR, "
                  f"{live.mib_s(frames, with_swmr):6.0f} MiB/s with ({ratio:.2f}x)")
            checks.append((f"SWMR throughput {name}: {ratio:.2f}x (>= 0.8)", ratio >= 0.8))
        cpu = statistics.median(live.follower_cpu(directory) for _ in range(3))
        print(f"idle follower: {cpu * 100:.2f} % of a core (3 s waits, median of 3)")
        checks.append((f"idle follower CPU {cpu * 100:.2f} % (<= 2 %)", cpu <= 0.02))
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
