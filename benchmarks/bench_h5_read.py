"""Reading a gzip HDF5 dataset in the background while the main thread keeps calling h5py.

    python benchmarks/bench_h5_read.py [--dir DIR] [--mib M] [--repeat N] [--json F]

An M MiB (default 1024) dataset of uint16 frames, one 4 MiB frame per
chunk, gzip level 1 with shuffle, is read whole by:

- ``bgio.h5.read`` at presets 1, 4 and 10 (each chunk's stored bytes taken
  with ``read_direct_chunk``, inflated outside h5py's lock);
- a plain thread's ``dataset[...]`` (h5py inflates under its lock).

Meanwhile the main thread reads one small dataset of another file every
millisecond (``small[0]``, an h5py call); the gaps between its calls are
reported (p99, longest), with the read's time. Target: longest gap <= 20 ms
for bgio. Sides interleave (order reversed every other round); medians of
N rounds (default 5), with the range. The page cache is warm (the file was
just written): what is measured is h5py's lock, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import h5py
import numpy as np

try:
    import bgio
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio
import bgio.h5
from bgio.bench.report import environment
from bgio.bench.schedule import interleave
from bgio.bench.stats import percentile

FRAME = (1024, 2048)  # 4 MiB of uint16
MIB = 1024 ** 2


def _frames(count: int) -> np.ndarray:
    """Camera-like frames: a smooth image plus noise (gzip makes them about a third)."""
    rng = np.random.default_rng(4)
    base = (np.add.outer(np.arange(FRAME[0]), np.arange(FRAME[1])) % 4096).astype("<u2")
    return base + rng.integers(0, 64, (count, *FRAME), dtype="<u2")


def _bgio(priority: int) -> Callable[[h5py.Dataset], None]:
    def read(dataset: h5py.Dataset) -> None:
        bgio.h5.read(dataset, priority=priority).result()
    return read


def _plain(dataset: h5py.Dataset) -> None:
    dataset[...]


SIDES: dict[str, Callable[[h5py.Dataset], None]] = {
    **{f"bgio.h5.read preset {p}": _bgio(p) for p in (1, 4, 10)},
    "plain thread ds[...]": _plain,
}


def side(name: str, dataset: h5py.Dataset, small: h5py.Dataset) -> dict:
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            SIDES[name](dataset)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            failure.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="bench-h5-reader")
    started = time.perf_counter()
    thread.start()
    gaps: list[float] = []
    previous = time.perf_counter()
    while not done.is_set():
        small[0]  # an h5py call of the program's own, on another file
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - previous)
        previous = now
    thread.join()
    seconds = time.perf_counter() - started
    if failure:
        raise failure[0]
    return {"side": name, "seconds": seconds,
            "mib_s": dataset.size * dataset.dtype.itemsize / MIB / seconds,
            "gap_p99_ms": percentile(gaps, 99) * 1e3, "gap_max_ms": max(gaps) * 1e3}


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="directory for the files (default: temp)")
    parser.add_argument("--mib", type=int, default=1024, help="MiB of frames (default 1024)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--json", default=None, help="write every run to this file")
    args = parser.parse_args()
    count = max(1, args.mib // 4)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bgio-h5-read-") as directory:
        path = os.path.join(directory, "frames.h5")
        with h5py.File(path, "w") as file:
            dataset = file.create_dataset("frames", (count, *FRAME), "<u2",
                                          chunks=(1, *FRAME), compression="gzip",
                                          compression_opts=1, shuffle=True)
            for start in range(0, count, 16):
                dataset[start:start + 16] = _frames(min(16, count - start))
        with h5py.File(os.path.join(directory, "small.h5"), "w") as other:
            other["small"] = np.arange(100)
        with h5py.File(path, "r") as file, \
                h5py.File(os.path.join(directory, "small.h5"), "r") as other:
            dataset, small = file["frames"], other["small"]
            stored = dataset.id.get_storage_size() / MIB
            for name in SIDES:  # warm-up, discarded
                side(name, dataset, small)
            runs: dict[str, list[dict]] = {name: [] for name in SIDES}
            for name in interleave(list(SIDES), args.repeat):
                run = side(name, dataset, small)
                runs[name].append(run)
                print(f"  {name}: {run['seconds']:.2f} s, longest gap {run['gap_max_ms']:.1f} ms",
                      file=sys.stderr)
    print(environment())
    print(f"{count * 4} MiB of uint16 frames ({stored:.0f} MiB stored, gzip 1 + shuffle, one "
          f"frame per chunk); main thread calling h5py every 1 ms; medians of {args.repeat} "
          f"(range)")
    print(f"{'side':24s} {'MiB/s':>22s} {'gap p99 ms':>20s} {'longest gap ms':>22s}")
    for name, side_runs in runs.items():
        print(f"{name:24s} {_median_range([r['mib_s'] for r in side_runs]):>22s} "
              f"{_median_range([r['gap_p99_ms'] for r in side_runs]):>20s} "
              f"{_median_range([r['gap_max_ms'] for r in side_runs]):>22s}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(runs, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
