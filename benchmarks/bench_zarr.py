"""Zarr v3 frames: bgio.zarr.FrameWriter against tensorstore used directly, and bgio.h5.

    python benchmarks/bench_zarr.py [--repeat R] [--dir DIR] [--json F]

Frames of uint16 Poisson noise (what a camera's dark-ish frames look like
to a compressor): 500 of 256 x 256 and 100 of 1024 x 1024, with zstd (level
3) and lz4 (Blosc, level 5), a chunk per frame and 64-frame shards. Sides,
interleaved, medians of R rounds (default 5) with the range, in ms from the
first frame to the array complete on disk (DIR, default a temporary folder):

- ``bgio``: ``bgio.zarr.FrameWriter`` at preset 1, one ``append`` per frame;
- ``ts``: tensorstore alone, the way its documentation writes many chunks:
  the array created at its final size, every frame's write issued at once
  (futures), then all awaited (a shard's frames in one write);
- ``h5``: ``bgio.h5.FrameWriter`` at preset 1 with hdf5plugin's codec of the
  same name and level (absent without hdf5plugin).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

import bgio.zarr
from bgio.zarr.spec import array_spec, kvstore_of

CASES = [((256, 256), 500), ((1024, 1024), 100)]
CODECS = ("zstd", "lz4")
LAYOUTS = (("chunk", None), ("shard64", 64))


def _bgio(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    with bgio.zarr.FrameWriter(path, frames.shape[1:], frames.dtype, codec=codec,
                               shard_frames=shard, priority=1) as writer:
        for frame in frames:
            writer.append(frame)


def _bgio_nocopy(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    with bgio.zarr.FrameWriter(path, frames.shape[1:], frames.dtype, codec=codec,
                               shard_frames=shard, priority=1, copy=False) as writer:
        for frame in frames:
            writer.append(frame)


def _ts(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    import tensorstore as ts

    level = bgio.zarr.spec.CODECS[codec]
    spec = array_spec(kvstore_of(path), frames.shape[1:], frames.dtype, codec, level, 1, shard)
    spec["metadata"]["shape"] = list(frames.shape)  # created at its final size
    array = ts.open(spec).result()
    if shard is None:
        futures = [array[index].write(frame) for index, frame in enumerate(frames)]
    else:
        futures = [array[start:start + len(part)].write(part)
                   for start in range(0, len(frames), shard)
                   for part in (frames[start:start + shard],)]
    for future in futures:
        future.result()


def _h5(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    import hdf5plugin

    import bgio.h5

    filters = {"zstd": hdf5plugin.Zstd(clevel=3),
               "lz4": hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)}
    with bgio.h5.FrameWriter(path + ".h5", "frames", frames.shape[1:], frames.dtype,
                             compression=filters[codec], chunk_frames=1, priority=1) as writer:
        for frame in frames:
            writer.append(frame)


def _timed(side, folder: str, frames: np.ndarray, codec: str, shard: int | None) -> float:
    path = os.path.join(folder, "bench.zarr")
    started = time.perf_counter()
    side(path, frames, codec, shard)
    elapsed = time.perf_counter() - started
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path + ".h5"):
        os.remove(path + ".h5")
    return elapsed * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    folder = args.dir or tempfile.mkdtemp(prefix="bgio-zarr-")
    sides = {"bgio": _bgio, "nocopy": _bgio_nocopy, "ts": _ts}
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass
    else:
        sides["h5"] = _h5
    rng = np.random.default_rng(3)
    results: dict[str, dict[str, list[float]]] = {}
    print(f"bgio {bgio.__version__}: ms to write the frames, medians of {args.repeat} "
          f"[min-max], interleaved; in {folder}")
    for shape, count in CASES:
        frames = rng.poisson(100, (count, *shape)).astype("<u2")
        for codec in CODECS:
            for layout, shard in LAYOUTS:
                key = f"{count} x {shape[0]}x{shape[1]} {codec} {layout}"
                cell = results.setdefault(key, {})
                for name, side in sides.items():  # warm up
                    if not (name == "h5" and shard is not None):
                        _timed(side, folder, frames[:8], codec, shard)
                for _ in range(args.repeat):
                    for name, side in sides.items():
                        if name == "h5" and shard is not None:
                            continue  # (HDF5 has no shards: its figure is the chunk row's)
                        cell.setdefault(name, []).append(
                            _timed(side, folder, frames, codec, shard))
                line = "  ".join(
                    f"{name} {statistics.median(times):7.0f} [{min(times):.0f}-{max(times):.0f}]"
                    for name, times in cell.items())
                ts_median = statistics.median(cell["ts"])
                ratios = "  ".join(f"{name}/ts {statistics.median(cell[name]) / ts_median:.2f}"
                                   for name in ("bgio", "nocopy"))
                print(f"{key:<34} {line}  {ratios}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
