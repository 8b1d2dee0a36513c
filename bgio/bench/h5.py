"""HDF5 scenarios: realistic frames, and how long a main thread calling h5py waits on its lock."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from ..h5 import FrameWriter, pipeline_of
from .stats import percentile

__all__ = ["H5Gaps", "direct_chunk_thread", "frame_writer_gaps", "h5_call_gaps", "plain_thread",
           "realistic_frames", "sync_seconds"]


def realistic_frames(count: int, shape: tuple[int, int] = (1024, 1024), seed: int = 0,
                     dtype: str = "<u2") -> np.ndarray:
    """Camera-like frames: a smooth background, noise and a few bright blobs (not zeros).

    Compression ratio and speed depend on content; zeros would flatter
    every compressor, so the benchmarks use this.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    background = 200 + 50 * np.sin(xx / shape[1] * 3) * np.cos(yy / shape[0] * 2)
    frames = np.empty((count, *shape), dtype=dtype)
    for index in range(count):
        image = background + rng.normal(0, 15, shape).astype(np.float32)
        for _ in range(5):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            image += 3000 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(20, 400))
        frames[index] = image.clip(0, np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else None)
    return frames


@dataclass
class H5Gaps:
    """What a main thread calling h5py in a loop saw while frames were written.

    Attributes
    ----------
    label : str
    seconds : float
        Time to write all frames.
    p99_ms, max_ms : float
        The loop's iterations (one small h5py read each).
    """

    label: str
    seconds: float
    p99_ms: float
    max_ms: float


def plain_thread(dataset: h5py.Dataset, frames: np.ndarray) -> None:
    """What programs do today: ``dset[i] = frame``, h5py compressing under its lock."""
    for index, frame in enumerate(frames):
        dataset[index] = frame


def direct_chunk_thread(dataset: h5py.Dataset, frames: np.ndarray) -> None:
    """Compress outside the lock, then a short ``write_direct_chunk`` (one frame per chunk)."""
    pipeline = pipeline_of(dataset)
    if pipeline is None or dataset.chunks != (1, *frames.shape[1:]):
        raise ValueError("direct_chunk_thread needs one frame per chunk and a supported filter")
    for index, frame in enumerate(frames):
        data = pipeline.encode(frame)
        dataset.id.write_direct_chunk((index, *(0,) * (frames.ndim - 1)), data)


def h5_call_gaps(
    directory: str,
    frames: np.ndarray,
    writer: Callable[[h5py.Dataset, np.ndarray], None],
    label: str,
    compression: str | None = "gzip",
    level: int = 4,
) -> H5Gaps:
    """Write ``frames`` with ``writer`` in a thread while the main thread reads h5py in a loop.

    The main thread reads a small dataset of another open file, again and
    again; every h5py call takes the process-wide lock, so the longest gap
    between its iterations is how long a GUI doing the same would freeze.
    """
    small_path = os.path.join(directory, "small.h5")
    big_path = os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "w") as small:
        small["values"] = np.arange(100, dtype="f8")
    with h5py.File(small_path, "r") as small, h5py.File(big_path, "w") as big:
        values = small["values"]
        dataset = big.create_dataset(
            "frames", shape=frames.shape, dtype=frames.dtype, chunks=(1, *frames.shape[1:]),
            compression=compression, compression_opts=level if compression else None,
        )
        done = threading.Event()

        def run() -> None:
            try:
                writer(dataset, frames)
            finally:
                done.set()

        thread = threading.Thread(target=run)
        started = time.perf_counter()
        thread.start()
        gaps = _main_loop(values, done.is_set)  # small reads: each takes h5py's lock
        seconds = time.perf_counter() - started
        thread.join()
    os.remove(small_path)
    os.remove(big_path)
    return H5Gaps(label, seconds, percentile(gaps, 99) * 1e3, max(gaps, default=0.0) * 1e3)


def _main_loop(values: h5py.Dataset, done: Callable[[], bool]) -> list[float]:
    """The main thread's loop: a small h5py read, a 1 ms sleep; return the gaps (seconds)."""
    gaps: list[float] = []
    previous = time.perf_counter()
    while not done():
        values[0:10]
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - previous)
        previous = now
    return gaps


def frame_writer_gaps(directory: str, frames: np.ndarray, priority: int = 1,
                      compression: str | None = "gzip", level: int = 4) -> H5Gaps:
    """Append ``frames`` with :class:`bgio.h5.FrameWriter` while the main thread reads h5py.

    The time runs from the first ``append`` until the last frame is stored
    (``close()`` is outside it, as it only flushes and closes).
    """
    small_path = os.path.join(directory, "small.h5")
    big_path = os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "w") as small:
        small["values"] = np.arange(100, dtype="f8")
    with h5py.File(small_path, "r") as small:
        writer = FrameWriter(big_path, "frames", frames.shape[1:], frames.dtype,
                             compression=compression,
                             compression_opts=level if compression else None, priority=priority)
        started = time.perf_counter()
        last = None
        for frame in frames:
            last = writer.append(frame)
        assert last is not None
        gaps = _main_loop(small["values"], last.done)
        seconds = time.perf_counter() - started
        writer.close()
    os.remove(small_path)
    os.remove(big_path)
    return H5Gaps(f"FrameWriter p{priority}", seconds, percentile(gaps, 99) * 1e3,
                  max(gaps, default=0.0) * 1e3)


def sync_seconds(directory: str, frames: np.ndarray, compression: str | None = "gzip",
                 level: int = 4) -> float:
    """Seconds for a synchronous ``dset[i] = frame`` loop, same layout and filter."""
    path = os.path.join(directory, "sync.h5")
    with h5py.File(path, "w") as f:
        dataset = f.create_dataset("frames", shape=frames.shape, dtype=frames.dtype,
                                   chunks=(1, *frames.shape[1:]), compression=compression,
                                   compression_opts=level if compression else None)
        started = time.perf_counter()
        plain_thread(dataset, frames)
        seconds = time.perf_counter() - started
    os.remove(path)
    return seconds
