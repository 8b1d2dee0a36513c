"""HDF5 scenarios: realistic frames, and how long a main thread calling h5py waits on its lock."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from ..h5 import FrameWriter, pipeline_of
from .data import MIB
from .loop import idle_baseline, loop_gaps
from .prepare import settle
from .schedule import interleave, progress, warm_up
from .stats import median_of, percentile

__all__ = ["ARMS", "H5Run", "direct_chunk_thread", "h5_scenario", "h5py_loop", "plain_thread",
           "realistic_frames", "run_arm"]


def realistic_frames(count: int, shape: tuple[int, int] = (1024, 1024), seed: int = 0,
                     dtype: str = "<u2") -> np.ndarray:
    """Camera-like frames: a smooth background, noise and a few bright blobs (not zeros).

    Compression ratio and speed depend on content; zeros would flatter
    every compressor, so the benchmarks use this. Each blob is computed in
    a window around it (it is negligible beyond four widths), which keeps
    100 megapixel frames to a second or two.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    background = 200 + 50 * np.sin(xx / shape[1] * 3) * np.cos(yy / shape[0] * 2)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else None
    frames = np.empty((count, *shape), dtype=dtype)
    for index in range(count):
        image = background + 15 * rng.standard_normal(shape, dtype=np.float32)
        for _ in range(5):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            spread = rng.uniform(20, 400)  # 2 sigma squared
            reach = int(4 * np.sqrt(spread / 2)) + 1
            y0, y1 = max(0, int(cy) - reach), min(shape[0], int(cy) + reach + 1)
            x0, x1 = max(0, int(cx) - reach), min(shape[1], int(cx) + reach + 1)
            window = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2
            image[y0:y1, x0:x1] += 3000 * np.exp(-window / spread)
        frames[index] = image.clip(0, top)
    return frames


@dataclass
class H5Run:
    """One way of writing the frames, measured once (or the medians of several runs).

    Attributes
    ----------
    label : str
    seconds : float
        From the first frame handed over until the last is stored.
    mib_s : float
        Frames' bytes over ``seconds``.
    p99_ms, max_ms : float or None
        Iterations of the main thread's loop meanwhile (one small h5py read
        and a 1 ms sleep, or the sleep alone); None when the main thread
        did the writing itself or just waited.
    """

    label: str
    seconds: float
    mib_s: float
    p99_ms: float | None = None
    max_ms: float | None = None


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


def _create(group: h5py.Group, frames: np.ndarray, level: int | None) -> h5py.Dataset:
    """The layout every side writes: one frame per chunk, gzip at ``level`` or no filter."""
    return group.create_dataset(
        "frames", shape=frames.shape, dtype=frames.dtype, chunks=(1, *frames.shape[1:]),
        compression="gzip" if level is not None else None, compression_opts=level)


def h5py_loop(values: h5py.Dataset, done: Callable[[], bool]) -> list[float]:
    """The main thread's loop: a small h5py read, a 1 ms sleep; return the gaps (seconds)."""
    gaps: list[float] = []
    clock = time.perf_counter
    previous = clock()
    while True:  # one iteration at least, however soon the writer is done
        values[0:10]
        time.sleep(0.001)
        now = clock()
        gaps.append(now - previous)
        previous = now
        if done():
            return gaps


def _synchronous(directory: str, frames: np.ndarray, level: int | None, slab: bool) -> H5Run:
    """The main thread writes itself: ``dset[i] = frame`` per frame, or one ``dset[...] = frames``."""
    path = os.path.join(directory, "sync.h5")
    with h5py.File(path, "w") as f:
        dataset = _create(f, frames, level)
        settle()
        started = time.perf_counter()
        if slab:
            dataset[...] = frames
        else:
            plain_thread(dataset, frames)
        f.flush()
        seconds = time.perf_counter() - started
    os.remove(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds)


def _thread_beside_h5py(directory: str, frames: np.ndarray, level: int | None) -> H5Run:
    """A plain thread doing ``dset[i] = frame`` while the main thread calls h5py."""
    small_path = os.path.join(directory, "small.h5")
    path = os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "w") as small:
        small["values"] = np.arange(100, dtype="f8")
    with h5py.File(small_path, "r") as small, h5py.File(path, "w") as big:
        # Opened before the writer starts: with it running, even this call would wait.
        values = small["values"]
        dataset = _create(big, frames, level)
        done = threading.Event()

        def run() -> None:
            try:
                plain_thread(dataset, frames)
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


def _frame_writer(directory: str, frames: np.ndarray, level: int | None, priority: int,
                  main: str) -> H5Run:
    """FrameWriter appends every frame; the main thread then ``main``: "h5py" (a small read
    and a 1 ms sleep, in a loop), "python" (the 1 ms sleep loop) or "wait"."""
    small_path = os.path.join(directory, "small.h5")
    path = os.path.join(directory, "frames.h5")
    with h5py.File(small_path, "w") as small:
        small["values"] = np.arange(100, dtype="f8")
    with h5py.File(small_path, "r") as small:
        values = small["values"]
        writer = FrameWriter(path, "frames", frames.shape[1:], frames.dtype,
                             compression="gzip" if level is not None else None,
                             compression_opts=level, chunk_frames=1, priority=priority)
        settle()
        started = time.perf_counter()
        last = None
        for frame in frames:
            last = writer.append(frame)
        assert last is not None
        p99 = worst = None
        if main == "h5py":
            gaps = h5py_loop(values, last.done)
            p99, worst = percentile(gaps, 99) * 1e3, max(gaps, default=0.0) * 1e3
        elif main == "python":
            stats = loop_gaps(until=last.done)
            p99, worst = stats.p99_ms, stats.max_ms
        last.result()
        writer.flush()  # the file's own flush, as the synchronous sides do
        seconds = time.perf_counter() - started
        writer.close()
    os.remove(small_path)
    os.remove(path)
    return H5Run("", seconds, frames.nbytes / MIB / seconds, p99, worst)


def _idle(directory: str, frames: np.ndarray) -> H5Run:
    stats = idle_baseline(1.0)
    return H5Run("", stats.seconds, 0.0, stats.p99_ms, stats.max_ms)


#: The sides of the HDF5 scenario: label -> how to measure it once.
ARMS: dict[str, Callable[[str, np.ndarray], H5Run]] = {
    "sync gzip-4 dset[i]=frame": lambda d, f: _synchronous(d, f, 4, slab=False),
    "plain thread gzip-4, main calls h5py": lambda d, f: _thread_beside_h5py(d, f, 4),
    "FrameWriter p1 gzip-4, main calls h5py": lambda d, f: _frame_writer(d, f, 4, 1, "h5py"),
    "FrameWriter p4 gzip-4, main calls h5py": lambda d, f: _frame_writer(d, f, 4, 4, "h5py"),
    "FrameWriter p1 gzip-4": lambda d, f: _frame_writer(d, f, 4, 1, "wait"),
    "FrameWriter p1 gzip-4, main runs Python": lambda d, f: _frame_writer(d, f, 4, 1, "python"),
    "FrameWriter p4 gzip-4, main runs Python": lambda d, f: _frame_writer(d, f, 4, 4, "python"),
    "idle main loop": _idle,
    "sync uncompressed dset[i]=frame": lambda d, f: _synchronous(d, f, None, slab=False),
    "sync uncompressed dset[...]=frames": lambda d, f: _synchronous(d, f, None, slab=True),
    "FrameWriter p1 uncompressed": lambda d, f: _frame_writer(d, f, None, 1, "wait"),
}


def run_arm(label: str, directory: str, frames: np.ndarray) -> H5Run:
    """Measure the side called ``label`` (a key of :data:`ARMS`) once."""
    run = ARMS[label](directory, frames)
    run.label = label
    return run


def h5_scenario(directory: str, frames: np.ndarray, repeat: int = 5,
                arms: Sequence[str] | None = None,
                on_step: Callable[[str], None] | None = None) -> dict[str, H5Run]:
    """Every side of the HDF5 scenario, warmed up, interleaved, ``repeat`` rounds; the medians.

    Parameters
    ----------
    directory : str
        Where the files are written (and removed).
    frames : numpy.ndarray
        The frames, e.g. :func:`realistic_frames` ``(100)``.
    repeat : int, default 5
        Rounds; each side's figures are the medians over them.
    arms : sequence of str or None
        Labels of :data:`ARMS` to measure; None for all.
    on_step : callable taking a str, or None
        Called after each measurement (a progress bar).

    Returns
    -------
    dict of str to H5Run
    """
    step = progress(on_step)
    labels = list(ARMS if arms is None else arms)
    # One small warm-up per side: thread pools, HDF5's first file, page allocation.
    warm_up([(label, functools.partial(run_arm, label, directory, frames[:4]))
             for label in labels], step)
    runs: dict[str, list[H5Run]] = {label: [] for label in labels}
    for label in interleave(labels, repeat):
        runs[label].append(run_arm(label, directory, frames))
        step(label)
    return {label: median_of(results) for label, results in runs.items()}
