"""Stream destinations against their plain counterparts, beside the targets.

    python benchmarks/bench_streams.py [--size MIB] [--repeat N] [--dir DIR]

Pipe (to ``cat``) and socketpair: bgio against a blocking write loop
(target >= 0.9x); 100,000 writes of 4 KiB through ``bgio.open`` against a
plain buffered file (target >= 0.5x); peak RSS of a producer that outpaces
a throttled Writer with ``max_pending_bytes=64 MiB`` (target <= 64 MiB plus
one block above the baseline). The measuring lives in ``bgio.bench``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

try:
    from bgio import bench
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio import bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1024, help="MiB per pipe/socket write")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (medians)")
    parser.add_argument("--dir", default=None, help="directory for the file measurements")
    args = parser.parse_args()
    data = bench.make_data(int(args.size * bench.MIB))
    rows = []
    for run in bench.pipe_and_socket(data, repeat=args.repeat):
        speeds = (f"{run.size_bytes / run.plain_s / bench.MIB:.0f} vs "
                  f"{run.size_bytes / run.bgio_s / bench.MIB:.0f} MiB/s ({run.ratio:.2f}x)")
        rows.append((f"{run.label}, {run.size_bytes / bench.MIB:g} MiB", speeds, ">= 0.9x",
                     run.ratio >= 0.9))
    del data
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        small = bench.open_small_writes(directory, repeat=args.repeat)
        times = f"{small.plain_s * 1e3:.0f} vs {small.bgio_s * 1e3:.0f} ms ({small.ratio:.2f}x)"
        rows.append((f"bgio.open, {small.label}", times, ">= 0.5x", small.ratio >= 0.5))
        bound = bench.memory_bound(directory)
        limit = bound.bound_bytes + bound.chunk_bytes
        peak = (f"+{bound.peak_rss_above_baseline / bench.MIB:.1f} MiB "
                f"(pending <= {bound.peak_pending_bytes / bench.MIB:.0f} MiB)")
        rows.append((f"peak RSS, max_pending_bytes={bound.bound_bytes // bench.MIB} MiB", peak,
                     f"<= +{limit / bench.MIB:.0f} MiB", bound.peak_rss_above_baseline <= limit))
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"bgio stream benchmark: medians of {args.repeat} interleaved rounds "
          "(plain first, then bgio)")
    for figure, value, target, ok in rows:
        print(f"{figure:<{width}}  {value:<{value_width}}  {target:<12}  {'ok' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
