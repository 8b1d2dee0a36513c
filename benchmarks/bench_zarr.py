"""Zarr v3 frames: bgio.zarr.FrameWriter against tensorstore used directly, zarr-python
and bgio.h5.

    python benchmarks/bench_zarr.py [--repeat R] [--dir DIR] [--json F] [--sides S,...]

Frames of uint16 Poisson noise (what a camera's dark-ish frames look like
to a compressor): 500 of 256 x 256 and 100 of 1024 x 1024, with zstd (level
3) and lz4 (Blosc, level 5) (``--codecs none``: uncompressed), a chunk per
frame and 64-frame shards. Sides,
interleaved, medians of R rounds (default 5) with the range, in ms from the
first frame to the array complete on disk (DIR, default a temporary folder):

- ``bgio``: ``bgio.zarr.FrameWriter`` at preset 1, one ``append`` per frame;
- ``ts``: tensorstore alone, the way its documentation writes many chunks:
  the array created at its final size, every frame's write issued at once
  (futures), then all awaited (a shard's frames in one write);
- ``nocopy``: the same with ``copy=False`` (the caller's frames kept, a
  shard's committed in one transaction);
- ``zarr``: zarr-python 3, the array created at its final size, a frame
  per assignment (a shard's frames in one assignment);
- ``proc``: ``bgio`` with ``backend="process"`` (the array written by the
  writer process, each frame copied into shared memory here);
- ``bgio-busy``, ``ts-busy``, ``proc-busy``: ``bgio``, ``ts`` and ``proc``
  with a thread running Python meanwhile (what a busy GUI or acquisition
  loop does to the interpreter lock);
- ``ts-1core``: ``ts`` with every thread of this process pinned to one core
  (and ``data_copy_concurrency`` 1): what is left to a writer when a busy
  thread takes one of two cores;
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
import threading
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


def _bgio_process(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    with bgio.zarr.FrameWriter(path, frames.shape[1:], frames.dtype, codec=codec,
                               shard_frames=shard, priority=1, backend="process") as writer:
        for frame in frames:
            writer.append(frame)


def _bgio_nocopy(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    with bgio.zarr.FrameWriter(path, frames.shape[1:], frames.dtype, codec=codec,
                               shard_frames=shard, priority=1, copy=False) as writer:
        for frame in frames:
            writer.append(frame)


def _ts(path: str, frames: np.ndarray, codec: str, shard: int | None,
        cores: int | None = None) -> None:
    import tensorstore as ts

    name = None if codec == "none" else codec
    spec = array_spec(kvstore_of(path), frames.shape[1:], frames.dtype, name,
                      bgio.zarr.spec.CODECS[name], 1, shard)
    spec["metadata"]["shape"] = list(frames.shape)  # created at its final size
    context = ts.Context({"data_copy_concurrency": {"limit": cores}} if cores else {})
    array = ts.open(spec, context=context).result()
    if shard is None:
        futures = [array[index].write(frame) for index, frame in enumerate(frames)]
    else:
        futures = [array[start:start + len(part)].write(part)
                   for start in range(0, len(frames), shard)
                   for part in (frames[start:start + shard],)]
    for future in futures:
        future.result()


def _pin(cpus: set[int]) -> dict[int, set[int]]:
    """Pin every thread of this process to ``cpus``; return what each had."""
    before = {}
    for name in os.listdir("/proc/self/task"):
        tid = int(name)
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, cpus)
        except OSError:  # (a thread that just ended)
            pass
    return before


def _ts_one_core(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    """tensorstore with every thread of this process on one core (its pools too): what
    a writer has left when a busy thread holds the other of two cores."""
    before = _pin({min(os.sched_getaffinity(0))})
    try:
        _ts(path, frames, codec, shard, cores=1)
    finally:
        for tid, cpus in before.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


def _zarr_python(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    compressor = {"zstd": ZstdCodec(level=3), "none": None,
                  "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}[codec]
    array = zarr.create_array(path, shape=frames.shape, dtype=frames.dtype,
                              chunks=(1, *frames.shape[1:]), compressors=compressor,
                              shards=None if shard is None else (shard, *frames.shape[1:]))
    if shard is None:
        for index, frame in enumerate(frames):  # (a frame as it comes, pre-sized)
            array[index] = frame
    else:
        for start in range(0, len(frames), shard):  # (a shard's frames in one write)
            array[start:start + shard] = frames[start:start + shard]


def _h5(path: str, frames: np.ndarray, codec: str, shard: int | None) -> None:
    import hdf5plugin

    import bgio.h5

    filters = {"zstd": hdf5plugin.Zstd(clevel=3), "none": None,
               "lz4": hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)}
    with bgio.h5.FrameWriter(path + ".h5", "frames", frames.shape[1:], frames.dtype,
                             compression=filters[codec], chunk_frames=1, priority=1) as writer:
        for frame in frames:
            writer.append(frame)


def _spin(stop: threading.Event) -> None:
    """Python running beside the writer: what a busy GUI or acquisition loop does."""
    count = 0
    while not stop.is_set():
        count += 1


def _timed(side, folder: str, frames: np.ndarray, codec: str, shard: int | None,
           busy: bool = False) -> float:
    path = os.path.join(folder, "bench.zarr")
    stop = threading.Event()
    spinner = threading.Thread(target=_spin, args=(stop,)) if busy else None
    if spinner is not None:
        spinner.start()
    started = time.perf_counter()
    side(path, frames, codec, shard)
    elapsed = time.perf_counter() - started
    if spinner is not None:
        stop.set()
        spinner.join()
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path + ".h5"):
        os.remove(path + ".h5")
    return elapsed * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--sides", default="bgio,nocopy,ts,zarr,h5",
                        help="which sides (bgio, nocopy, ts, zarr, h5, proc, bgio-busy, ts-busy, "
                             "proc-busy, ts-1core)")
    parser.add_argument("--codecs", default=",".join(CODECS),
                        help="zstd, lz4 and/or none (uncompressed: what is left of a busy "
                             "thread's cost when compression does not take the cores)")
    args = parser.parse_args(argv)
    folder = args.dir or tempfile.mkdtemp(prefix="bgio-zarr-")
    known = {"bgio": _bgio, "nocopy": _bgio_nocopy, "ts": _ts, "zarr": _zarr_python,
             "h5": _h5, "proc": _bgio_process, "bgio-busy": _bgio, "ts-busy": _ts,
             "proc-busy": _bgio_process, "ts-1core": _ts_one_core}
    sides = {name: known[name] for name in args.sides.split(",")}
    for name, module in (("h5", "hdf5plugin"), ("zarr", "zarr")):
        try:
            __import__(module)
        except ImportError:
            sides.pop(name, None)
    rng = np.random.default_rng(3)
    results: dict[str, dict[str, list[float]]] = {}
    print(f"bgio {bgio.__version__}: ms to write the frames, medians of {args.repeat} "
          f"[min-max], interleaved; in {folder}")
    for shape, count in CASES:
        frames = rng.poisson(100, (count, *shape)).astype("<u2")
        for codec in args.codecs.split(","):
            for layout, shard in LAYOUTS:
                key = f"{count} x {shape[0]}x{shape[1]} {codec} {layout}"
                cell = results.setdefault(key, {})
                for name, side in sides.items():  # warm up
                    if not (name == "h5" and shard is not None):
                        _timed(side, folder, frames[:8], codec, shard, name.endswith("-busy"))
                for _ in range(args.repeat):
                    for name, side in sides.items():
                        if name == "h5" and shard is not None:
                            continue  # (HDF5 has no shards: its figure is the chunk row's)
                        cell.setdefault(name, []).append(
                            _timed(side, folder, frames, codec, shard, name.endswith("-busy")))
                line = "  ".join(
                    f"{name} {statistics.median(times):7.0f} [{min(times):.0f}-{max(times):.0f}]"
                    for name, times in cell.items())
                base = statistics.median(cell["ts"]) if "ts" in cell else None
                ratios = "  ".join(f"{name}/ts {statistics.median(cell[name]) / base:.2f}"
                                   for name in ("bgio", "nocopy", "zarr")
                                   if name in cell and base)
                if "ts-1core" in cell and base:
                    ratios += f"  ts-1core/ts rate {base / statistics.median(cell['ts-1core']):.2f}"
                for name in ("bgio", "ts", "proc"):
                    if f"{name}-busy" in cell and name in cell:
                        kept = statistics.median(cell[name]) / statistics.median(
                            cell[f"{name}-busy"])
                        ratios += f"  {name} busy/idle rate {kept:.2f}"
                print(f"{key:<34} {line}  {ratios}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
