"""Codec scenarios: frames through hdf5plugin's filters, bgio's own encoding, and tensorstore.

hdf5plugin and tensorstore are imported only when a side needs them; the
``codecs`` extra (numcodecs, bitshuffle) decides whether bgio encodes a
filter itself (see :mod:`bgio.h5.codecs`).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import h5py
import numpy as np

from ..h5 import FrameWriter
from .data import MIB
from .h5 import H5Run, h5py_loop
from .prepare import settle
from .schedule import interleave, progress, warm_up
from .stats import median_of, percentile  # noqa: F401  (median_of: for the caller)

__all__ = ["CODECS", "SAME_CODEC", "SIDES", "codec_scenario", "h5py_filter", "tensorstore_spec"]

#: Codec label -> (what h5py's create_dataset takes, tensorstore's zarr v2 compressor, and
#: what that compressor is against the HDF5 filter).
CODECS: dict[str, tuple[Callable[[], dict[str, Any]], dict[str, Any], str]] = {
    "gzip-4": (lambda: {"compression": "gzip", "compression_opts": 4},
               {"id": "zlib", "level": 4}, "zlib level 4 (deflate)"),
    "zstd-3": (lambda: dict(_plugin().Zstd(clevel=3)),
               {"id": "zstd", "level": 3}, "zstd level 3"),
    "lz4": (lambda: dict(_plugin().LZ4()),
            {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 0},
            "blosc lz4 without shuffle (zarr v2 has no bare lz4)"),
    "blosc-lz4-shuffle": (lambda: dict(_plugin().Blosc("lz4", 5, _plugin().Blosc.SHUFFLE)),
                          {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
                          "blosc lz4 level 5, byte shuffle"),
    "bitshuffle-lz4": (lambda: dict(_plugin().Bitshuffle()),
                       {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 2},
                       "blosc lz4 level 5 with bitshuffle (no bare bitshuffle in zarr v2)"),
}


#: The codecs whose tensorstore compressor is the HDF5 filter's own codec at the same level and
#: settings (zlib and deflate are one stream format; Blosc with the same compressor, level,
#: shuffle, type size and automatic block size): only for these does "bgio against tensorstore"
#: compare like with like. zarr v2 has no bare LZ4 and no Bitshuffle, so for "lz4" and
#: "bitshuffle-lz4" tensorstore runs the nearest Blosc variant, another codec: for information.
SAME_CODEC = frozenset({"gzip-4", "zstd-3", "blosc-lz4-shuffle"})


def _plugin() -> Any:
    import hdf5plugin  # registers the filters with h5py's HDF5

    return hdf5plugin


def h5py_filter(codec: str) -> dict[str, Any]:
    """The keyword arguments of ``create_dataset`` for ``codec`` (a key of :data:`CODECS`)."""
    return CODECS[codec][0]()


def tensorstore_spec(path: str, frames: np.ndarray, codec: str) -> dict[str, Any]:
    """A zarr v2 array like the HDF5 dataset: pre-sized, one frame per chunk, ``codec``."""
    return {
        "driver": "zarr", "kvstore": {"driver": "file", "path": path},
        "metadata": {"shape": list(frames.shape), "chunks": [1, *frames.shape[1:]],
                     "dtype": frames.dtype.str, "compressor": CODECS[codec][1]},
        "create": True, "delete_existing": True,
    }


def _small(directory: str) -> str:
    path = os.path.join(directory, "small.h5")
    with h5py.File(path, "w") as small:
        small["values"] = np.arange(100, dtype="f8")
    return path


def _sync(directory: str, frames: np.ndarray, codec: str) -> H5Run:
    """The main thread writes ``dset[i] = frame`` per frame, HDF5 filtering each."""
    path = os.path.join(directory, "sync.h5")
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("frames", shape=frames.shape, dtype=frames.dtype,
                                   chunks=(1, *frames.shape[1:]), **h5py_filter(codec))
        settle()
        started = time.perf_counter()
        for index, frame in enumerate(frames):
            dataset[index] = frame
        f.flush()
        seconds = time.perf_counter() - started
    os.remove(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds)


def _thread(directory: str, frames: np.ndarray, codec: str) -> H5Run:
    """A plain thread doing ``dset[i] = frame`` while the main thread calls h5py."""
    small_path, path = _small(directory), os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "r") as small, h5py.File(path, "w") as big:
        values = small["values"]
        dataset = big.create_dataset("frames", shape=frames.shape, dtype=frames.dtype,
                                     chunks=(1, *frames.shape[1:]), **h5py_filter(codec))
        done = threading.Event()

        def run() -> None:
            try:
                for index, frame in enumerate(frames):
                    dataset[index] = frame
                big.flush()
            finally:
                done.set()

        settle()
        thread = threading.Thread(target=run)
        started = time.perf_counter()
        thread.start()
        gaps = h5py_loop(values, done.is_set)
        seconds = time.perf_counter() - started
        thread.join()
    os.remove(small_path)
    os.remove(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds, percentile(gaps, 99) * 1e3,
                 max(gaps, default=0.0) * 1e3)


def _frame_writer(directory: str, frames: np.ndarray, codec: str, priority: int,
                  main_calls_h5py: bool, copy: bool = False) -> H5Run:
    """FrameWriter appends every frame; the main thread then waits, or calls h5py meanwhile."""
    small_path, path = _small(directory), os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "r") as small:
        values = small["values"]
        writer = FrameWriter(path, "frames", frames.shape[1:], frames.dtype, chunk_frames=1,
                             priority=priority, copy=copy, **h5py_filter(codec))
        settle()
        started = time.perf_counter()
        last = None
        for frame in frames:
            last = writer.append(frame)
        assert last is not None
        p99 = worst = None
        if main_calls_h5py:
            gaps = h5py_loop(values, last.done)
            p99, worst = percentile(gaps, 99) * 1e3, max(gaps, default=0.0) * 1e3
        last.result()
        writer.flush()
        seconds = time.perf_counter() - started
        writer.close()
    os.remove(small_path)
    os.remove(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds, p99, worst)


def _tensorstore(directory: str, frames: np.ndarray, codec: str) -> H5Run:
    """tensorstore writes one frame per chunk (all issued at once, then awaited)."""
    import tensorstore as ts

    path = os.path.join(directory, "frames.zarr")
    store = ts.open(tensorstore_spec(path, frames, codec)).result()
    settle()
    started = time.perf_counter()
    # The frames are not reused: neither side copies them (as bgio's copy=False).
    writes = [store[index].write(frame, can_reference_source_data_indefinitely=True)
              for index, frame in enumerate(frames)]
    for write in writes:
        write.result()
    seconds = time.perf_counter() - started
    shutil.rmtree(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds)


#: The sides measured for each codec: name -> how to measure it once.
SIDES: dict[str, Callable[[str, np.ndarray, str], H5Run]] = {
    "sync h5py loop": _sync,
    "h5py thread, main calls h5py": _thread,
    "tensorstore zarr": _tensorstore,
    "bgio p1": lambda d, f, c: _frame_writer(d, f, c, 1, False),
    "bgio p4": lambda d, f, c: _frame_writer(d, f, c, 4, False),
    "bgio p1, main calls h5py": lambda d, f, c: _frame_writer(d, f, c, 1, True),
    "bgio p4, main calls h5py": lambda d, f, c: _frame_writer(d, f, c, 4, True),
    "bgio p1, copy=True": lambda d, f, c: _frame_writer(d, f, c, 1, False, copy=True),
}


def codec_scenario(directory: str, frames: np.ndarray, codecs: Sequence[str],
                   sides: Sequence[str], repeat: int = 5,
                   on_step: Callable[[str], None] | None = None
                   ) -> dict[str, list[H5Run]]:
    """Every (codec, side), warmed up, interleaved over ``repeat`` rounds.

    Returns every run, keyed ``"<codec> | <side>"`` (:func:`median_of` for the medians).
    """
    step = progress(on_step)
    labels = [f"{codec} | {side}" for codec in codecs for side in sides]

    def measure(label: str, data: np.ndarray) -> H5Run:
        codec, side = label.split(" | ")
        run = SIDES[side](directory, data, codec)
        run.label = label
        return run

    warm_up([(label, functools.partial(measure, label, frames[:4])) for label in labels], step)
    runs: dict[str, list[H5Run]] = {label: [] for label in labels}
    for label in interleave(labels, repeat):
        runs[label].append(measure(label, frames))
        step(label)
    return runs
