"""HDF5 codecs: bgio's own encoding against hdf5plugin through h5py and tensorstore, side by side.

    python benchmarks/bench_codecs.py [--frames N] [--repeat R] [--dir DIR] [--codecs A,B] [--json F]

Realistic 1024x1024 uint16 frames (background, noise, blobs), one frame per
chunk, for gzip-4, zstd-3, lz4, blosc-lz4 with shuffle and bitshuffle-lz4.
Sides: a synchronous ``dset[i] = frame`` loop (HDF5 filtering through
hdf5plugin), a plain thread doing the same while the main thread calls
h5py, tensorstore writing a zarr v2 array with the nearest compressor (see
``bgio.bench.codecs.CODECS``), and FrameWriter at presets 1 and 4 (main
thread waiting, or calling h5py on another file: a small read and a 1 ms
sleep in a loop), with ``copy=False`` (the frames are not reused; tensorstore
is told the same, ``can_reference_source_data_indefinitely``), and at preset
1 with the default ``copy=True`` (shown, not checked). Every side is warmed up, the sides are interleaved (order
reversed every other round); figures are medians of R rounds, and the
worst gap of any round is shown too. Needs hdf5plugin, numcodecs,
bitshuffle and tensorstore installed (and zlib-ng, for bgio's faster
deflate: the ``codecs`` extra). Targets, for every codec:

- main thread calling h5py beside FrameWriter (p1 and p4): max gap <= 20 ms;
- p1 throughput >= 1.5x the synchronous loop;
- p4 throughput >= the synchronous loop;
- p1 throughput >= tensorstore's, for the codecs tensorstore runs as the same
  codec and level (gzip-4 against zlib-4, zstd-3, blosc-lz4-shuffle:
  ``SAME_CODEC``). For lz4 and bitshuffle-lz4 tensorstore runs the nearest
  Blosc variant (zarr v2 has neither): that ratio is shown as "info", not
  checked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict

try:
    from bgio.bench import codecs
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio.bench import codecs
from bgio.bench.h5 import realistic_frames
from bgio.bench.report import environment
from bgio.bench.stats import median_of
from bgio.h5 import deflate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames per run (default 100)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--dir", default=None, help="directory for the files (e.g. /dev/shm)")
    parser.add_argument("--codecs", default=",".join(codecs.CODECS), help="comma-separated")
    parser.add_argument("--json", default=None, help="write every run to this file")
    args = parser.parse_args()
    chosen = args.codecs.split(",")
    frames = realistic_frames(args.frames)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        runs = codecs.codec_scenario(directory, frames, chosen, list(codecs.SIDES),
                                     repeat=args.repeat,
                                     on_step=lambda label: print(f"  {label}", file=sys.stderr))
    print(f"{args.frames} frames of 1024x1024 uint16, one per chunk; medians of {args.repeat}"
          f" (worst max of any round in brackets); files in {args.dir or tempfile.gettempdir()};"
          f" bgio's deflate: {deflate.implementation()}")
    checks = []
    notes = []  # comparisons shown for information only
    for codec in chosen:
        same = codec in codecs.SAME_CODEC
        print(f"\n{codec}  (tensorstore: {codecs.CODECS[codec][2]}; "
              f"{'the same codec' if same else 'NOT the same codec, nearest only'})")
        print(f"  {'side':<30} {'seconds':>8} {'MiB/s':>7} {'x sync':>7} {'p99 ms':>8} "
              f"{'max ms':>16}")
        medians = {side: median_of(runs[f"{codec} | {side}"]) for side in codecs.SIDES}
        sync = medians["sync h5py loop"].seconds
        for side, run in medians.items():
            worst = max((r.max_ms or 0.0) for r in runs[f"{codec} | {side}"])
            p99 = f"{run.p99_ms:8.2f}" if run.p99_ms is not None else " " * 8
            gap = f"{run.max_ms:7.1f} [{worst:6.1f}]" if run.max_ms is not None else " " * 16
            print(f"  {side:<30} {run.seconds:8.3f} {run.mib_s:7.0f} {sync / run.seconds:7.2f} "
                  f"{p99} {gap}")
        for priority in (1, 4):
            side = f"bgio p{priority}, main calls h5py"
            worst = max((r.max_ms or 0.0) for r in runs[f"{codec} | {side}"])
            text = (f"{codec} p{priority}: main thread's h5py max gap {worst:.1f} ms in the "
                    "worst round (<= 20)")
            checks.append((text, worst <= 20))
        p1, p4 = medians["bgio p1"].seconds, medians["bgio p4"].seconds
        store = medians["tensorstore zarr"].seconds
        if same:
            checks.append((f"{codec} p1: {store / p1:.2f}x tensorstore, same codec (>= 1)",
                           p1 <= store))
        else:
            notes.append(f"{codec} p1: {store / p1:.2f}x tensorstore's nearest codec, "
                         f"{codecs.CODECS[codec][2]}: not the same codec, not checked")
        checks.append((f"{codec} p1: {sync / p1:.2f}x the sync loop (>= 1.5)", sync / p1 >= 1.5))
        checks.append((f"{codec} p4: {sync / p4:.2f}x the sync loop (>= 1)", p4 <= sync))
    print()
    for text, ok in checks:
        print(f"{'ok  ' if ok else 'MISS'} {text}")
    for text in notes:
        print(f"info {text}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": environment(), "frames": args.frames, "repeat": args.repeat,
                       "runs": {label: [asdict(r) for r in rs] for label, rs in runs.items()},
                       "checks": [{"check": text, "ok": ok} for text, ok in checks],
                       "notes": notes}, out,
                      indent=2)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
