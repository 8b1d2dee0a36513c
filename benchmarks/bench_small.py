"""Small writes, per call: Writer.write and bgio.open against a plain buffered file.

Usage: python benchmarks/bench_small.py [--dir DIR] [--repeat 5] [--json FILE]

Three figures side by side (issue "Worker core", point 7), each the median of
interleaved rounds with the spread:

- 1,000,000 writes of 64 B through one ``bgio.Writer`` (preset 1), against a
  ``for b in blocks: f.write(b)`` loop on a buffered ``open()`` file;
- the same through ``bgio.open`` against ``open()``;
- 100,000 writes of 4 KiB through one ``bgio.Writer`` against the loop.

The measuring code is the bgio.bench package; this script chooses sizes and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

try:
    from bgio import bench
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bgio import bench

TARGETS = {"writer_64": 2.5, "open_ratio": 3.0, "writer_4k_ratio": 2.0}


def _spread(runs: list[float], count: int) -> str:
    return f"{min(runs) / count * 1e6:.2f}-{max(runs) / count * 1e6:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where to write (default /dev/shm: the engine, not the disk)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    directory = args.dir or tempfile.gettempdir()

    tiny = bench.small_writes(1_000_000, 64, priority=1, repeat=args.repeat, directory=directory)
    opened = bench.open_small_writes(directory, count=1_000_000, size=64, repeat=args.repeat,
                                     priority=1)
    pages = bench.small_writes(100_000, 4096, priority=1, repeat=args.repeat,
                               directory=directory)

    rows = [
        ("1,000,000 x 64 B, Writer.write", tiny.bgio_seconds / tiny.count * 1e6,
         _spread(tiny.bgio_runs, tiny.count), tiny.sync_seconds / tiny.count * 1e6,
         tiny.ratio, f"<= {TARGETS['writer_64']} us/call",
         tiny.bgio_seconds / tiny.count * 1e6 <= TARGETS["writer_64"]),
        ("1,000,000 x 64 B, bgio.open", opened.bgio_s / 1e6 * 1e6,
         _spread(opened.bgio_runs, 1_000_000), opened.plain_s / 1e6 * 1e6,
         1 / opened.ratio, f"<= {TARGETS['open_ratio']}x open()",
         1 / opened.ratio <= TARGETS["open_ratio"]),
        ("100,000 x 4 KiB, Writer.write", pages.bgio_seconds / pages.count * 1e6,
         _spread(pages.bgio_runs, pages.count), pages.sync_seconds / pages.count * 1e6,
         pages.ratio, f"<= {TARGETS['writer_4k_ratio']}x the loop",
         pages.ratio <= TARGETS["writer_4k_ratio"]),
    ]
    print(f"small writes into {directory}, medians of {args.repeat} interleaved rounds")
    print(f"{'case':34} {'bgio us/call':>12} {'(range)':>13} {'plain us/call':>13} "
          f"{'ratio':>6}  target")
    for label, ours, spread, plain, ratio, target, ok in rows:
        print(f"{label:34} {ours:12.2f} {spread:>13} {plain:13.3f} {ratio:6.2f}  "
              f"{target} {'ok' if ok else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"writer_64": dataclasses.asdict(tiny), "open_64": dataclasses.asdict(opened),
             "writer_4k": dataclasses.asdict(pages)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
