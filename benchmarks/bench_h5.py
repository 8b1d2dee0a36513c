"""HDF5 frames: how long a main thread calling h5py waits, and throughput, side by side.

    python benchmarks/bench_h5.py [--frames N] [--dir DIR]

Realistic 1024x1024 uint16 frames with gzip-4: a plain thread doing
``dset[i] = frame`` against ``bgio.h5.FrameWriter`` (target: main-thread
max gap <= 20 ms, p99 <= 5 ms), and throughput against a synchronous loop.
The measuring lives in ``bgio.bench.h5``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

try:
    from bgio.bench import h5
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio.bench import h5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames per run (default 40)")
    parser.add_argument("--dir", default=None, help="directory for the files")
    args = parser.parse_args()
    frames = h5.realistic_frames(args.frames)
    mib = frames.nbytes / 2**20
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        sync = h5.sync_seconds(directory, frames)
        rows = [h5.h5_call_gaps(directory, frames, h5.plain_thread, "plain thread dset[i]=frame"),
                h5.frame_writer_gaps(directory, frames, priority=1),
                h5.frame_writer_gaps(directory, frames, priority=4)]
    print(f"{args.frames} frames of 1024x1024 uint16, gzip-4; synchronous loop "
          f"{mib / sync:.0f} MiB/s")
    for row in rows:
        ok = row.max_ms <= 20 and row.p99_ms <= 5
        print(f"{row.label:<28} {mib / row.seconds:5.0f} MiB/s ({sync / row.seconds:.2f}x sync)  "
              f"main h5py loop p99 {row.p99_ms:7.2f} ms  max {row.max_ms:8.2f} ms  "
              f"{'ok' if ok else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
