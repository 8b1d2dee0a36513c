"""What a profile does to the disk: dirty memory, the device's rate, time until on disk, fairness.

    python benchmarks/bench_disk.py [--dir DIR] [--gib G] [--read-gib R] [--repeat N] [--json F]

Run as root on Linux, in a directory on the disk to measure (not tmpfs): the
page cache is dropped before every side. G GiB (default 4) of random data
(one 64 MiB block, repeated) are written to an fd by each side while the
main thread runs a 1 ms loop, then ``fsync``-ed:

- bgio at 100 % (preset 1's 5 MiB chunks) with 8 MiB write-back windows,
  and at busy shares of 80, 50 and 20 % with windows;
- today's behaviour for comparison: preset 1, and 50 %, without windows;
- bgio with ``direct=True`` (O_DIRECT; the data, not aligned in memory, is
  copied chunk by chunk into an aligned buffer) at 100 and 50 %;
- a plain thread's ``f.write`` of each block, and ``dd bs=1M oflag=direct``.

Then a second process reads an R GiB file (default 2; cache dropped) with
``dd``, alone and beside bgio at preset 10, at preset 1, and beside a plain
writer thread. Sides interleave (order reversed every other round); medians
of N rounds (default 5), with the range. Targets: peak Dirty at 50 % <= 64
MiB; the device's rate at 20/50/80 % within +-10 % of that share of the
windowed 100 % side's; time until on disk of the windowed 100 % side <= 1.1x
dd's and <= 1.1x the plain thread's; the reader keeps >= 70 % of its solo
rate beside preset 10.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict

try:
    import bgio
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio
from bgio.bench import disk
from bgio.bench.report import environment
from bgio.bench.schedule import interleave

GIB = 1024 ** 3
WINDOW = 8 * 1024 * 1024


def _profile(pct: float, window: int | None) -> bgio.BackgroundIOPriority:
    return bgio.PRESETS[1].replace(bandwidth_pct=pct, writeback_window=window)


WRITERS = {
    "bgio 100 % windowed": lambda d, b: disk.bgio_side("", d, b, _profile(100, WINDOW)),
    "bgio 80 % windowed": lambda d, b: disk.bgio_side("", d, b, _profile(80, WINDOW)),
    "bgio 50 % windowed": lambda d, b: disk.bgio_side("", d, b, _profile(50, WINDOW)),
    "bgio 20 % windowed": lambda d, b: disk.bgio_side("", d, b, _profile(20, WINDOW)),
    "bgio preset 1 no window (before)": lambda d, b: disk.bgio_side("", d, b, bgio.PRESETS[1]),
    "bgio 50 % no window (before)": lambda d, b: disk.bgio_side("", d, b, _profile(50, None)),
    "bgio 100 % direct": lambda d, b: disk.bgio_direct_side("", d, b, _profile(100, None)),
    "bgio 50 % direct": lambda d, b: disk.bgio_direct_side("", d, b, _profile(50, None)),
    "plain thread f.write": lambda d, b: disk.plain_side("", d, b),
    "dd oflag=direct": lambda d, b: disk.direct_dd_side("", d, b),
}


def _median(values):
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="directory on the disk (default: the temp dir)")
    parser.add_argument("--gib", type=float, default=4.0, help="GiB per write (default 4)")
    parser.add_argument("--read-gib", type=float, default=2.0, help="GiB the reader reads")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--sides", default=",".join(WRITERS), help="comma-separated writer sides")
    parser.add_argument("--no-fairness", action="store_true", help="skip the reader sides")
    parser.add_argument("--json", default=None, help="write every run to this file")
    args = parser.parse_args()
    if not disk.can_drop_caches():
        print("warning: not root (or not Linux): the page cache is not dropped between sides",
              file=sys.stderr)
    blocks = disk.source_blocks(int(args.gib * GIB))
    chosen = args.sides.split(",")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bgio-disk-") as directory:
        device = disk.device_of(directory)
        runs: dict[str, list[disk.DiskRun]] = {side: [] for side in chosen}
        for side in interleave(chosen, args.repeat):
            run = WRITERS[side](directory, blocks)
            run.label = side
            runs[side].append(run)
            print(f"  {side}: {run.on_disk_s:.2f} s on disk, dirty {run.peak_dirty_mib:.0f} MiB",
                  file=sys.stderr)
        reads: dict[str, list[disk.ReadRun]] = {}
        if not args.no_fairness:
            read_path = os.path.join(directory, "disk-bench-read.bin")
            with open(read_path, "wb") as file:
                file.writelines(disk.source_blocks(int(args.read_gib * GIB)))
                os.fsync(file.fileno())
            small = blocks[: max(1, len(blocks) // 4)]
            readers = {
                "alone": None,
                "beside bgio preset 10": disk.bgio_writer(directory, small, 10),
                "beside bgio preset 1": disk.bgio_writer(directory, small, 1),
                "beside a plain thread f.write": disk.plain_writer(directory, small),
            }
            reads = {name: [] for name in readers}
            for name in interleave(list(readers), args.repeat):
                read = disk.read_beside(name, directory, read_path, readers[name])
                reads[name].append(read)
                print(f"  read {name}: {read.read_mib_s:.0f} MiB/s", file=sys.stderr)
    print(f"{args.gib:g} GiB per write to {directory} (device {device}); "
          f"medians of {args.repeat} (range)")
    header = (f"  {'side':36s} {'write s':>8s} {'on disk s':>10s} {'dirty MiB':>10s} "
              f"{'device MiB/s':>13s} {'loop p99':>9s} {'loop max':>9s} {'fsync max':>10s}")
    print(header)
    med = {}
    for side in chosen:
        values = runs[side]
        fields = {name: _median([getattr(run, name) for run in values]) for name in
                  ("write_s", "on_disk_s", "peak_dirty_mib", "device_mib_s", "loop_p99_ms",
                   "loop_max_ms", "fsync_max_ms")}
        med[side] = fields
        low = min(run.on_disk_s for run in values)
        high = max(run.on_disk_s for run in values)
        print(f"  {side:36s} {fields['write_s']:8.2f} {fields['on_disk_s']:6.2f} "
              f"[{low:.2f}-{high:.2f}] {fields['peak_dirty_mib']:6.0f} "
              f"{fields['device_mib_s']:13.0f} {fields['loop_p99_ms']:9.2f} "
              f"{fields['loop_max_ms']:9.1f} {fields['fsync_max_ms']:10.1f}")
    checks = []
    if "bgio 50 % windowed" in med:
        dirty = med["bgio 50 % windowed"]["peak_dirty_mib"]
        checks.append((dirty <= 64, f"peak Dirty at 50 % with windows {dirty:.0f} MiB (<= 64)"))
    full = med.get("bgio 100 % windowed")
    if full is not None:
        for pct in (80, 50, 20):
            side = f"bgio {pct} % windowed"
            if side in med:
                share = med[side]["device_mib_s"] / full["device_mib_s"] * 100
                text = (f"device rate at {pct} %: {share:.1f} % of the 100 % side's "
                        f"(within +-10 % of {pct})")
                checks.append((abs(share - pct) <= pct * 0.10, text))
        for other in ("dd oflag=direct", "plain thread f.write"):
            if other in med:
                ratio = full["on_disk_s"] / med[other]["on_disk_s"]
                text = f"time until on disk at 100 % with windows: {ratio:.2f}x {other} (<= 1.1)"
                checks.append((ratio <= 1.1, text))
    fast = med.get("bgio 100 % direct")
    if fast is not None:
        if "dd oflag=direct" in med:
            ratio = fast["on_disk_s"] / med["dd oflag=direct"]["on_disk_s"]
            text = f"time until on disk with direct=True: {ratio:.2f}x dd oflag=direct (<= 1.1)"
            checks.append((ratio <= 1.1, text))
        if "bgio 50 % direct" in med:
            share = med["bgio 50 % direct"]["device_mib_s"] / fast["device_mib_s"] * 100
            text = (f"device rate at 50 % with direct=True: {share:.1f} % of 100 % direct "
                    "(within +-10 % of 50)")
            checks.append((abs(share - 50) <= 5, text))
    if reads:
        solo = _median([read.read_mib_s for read in reads["alone"]])
        print(f"\n  reader {args.read_gib:g} GiB (dd), MiB/s: alone {solo:.0f}")
        for name, values in reads.items():
            if name == "alone":
                continue
            rate = _median([read.read_mib_s for read in values])
            print(f"    {name:34s} {rate:7.0f}  ({rate / solo * 100:.0f} % of alone)")
        beside = _median([read.read_mib_s for read in reads["beside bgio preset 10"]])
        text = f"reader beside preset 10 keeps {beside / solo * 100:.0f} % of its solo rate (>= 70)"
        checks.append((beside >= 0.7 * solo, text))
    print()
    for ok, text in checks:
        print(("ok   " if ok else "MISS ") + text)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": environment(args.dir or tempfile.gettempdir()),
                       "runs": {side: [asdict(run) for run in values]
                                for side, values in runs.items()},
                       "reads": {name: [asdict(read) for read in values]
                                 for name, values in reads.items()}}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
