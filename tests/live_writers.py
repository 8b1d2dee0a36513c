"""Writer processes for the live-file tests (run in ``spawn`` subprocesses, so importable).

Frames and events are made from their index alone, so the reading side
knows exactly what each must hold.
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np

FRAME_SHAPE = (32, 48)
FEATURES = {"area": ((), "<f4"), "trace": ((4,), "<u2")}


def frame(index: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 65535, FRAME_SHAPE, dtype="<u2")


def events(index: int) -> dict[str, np.ndarray]:
    count = index % 4  # 0, 1, 2, 3 events, round and round
    rng = np.random.default_rng(1000 + index)
    return {"area": rng.normal(50, 5, count).astype("<f4"),
            "trace": rng.integers(0, 65535, (count, 4), dtype="<u2")}


def bgio_frames(path: str, count: int, delay: float, flush_interval: float = 0.1,
                stall_after: int | None = None, stalled=None, stall: float = 0.0,
                compression: str | None = "gzip", resumed=None) -> None:
    """FrameWriter with swmr=True; optionally flush after ``stall_after`` frames, set the
    ``stalled`` event and sleep ``stall`` seconds (then, for a SIGKILL test, go on slowly,
    and set ``resumed`` once 5 frames more are flushed)."""
    import bgio.h5

    with bgio.h5.FrameWriter(path, "frames", FRAME_SHAPE, "<u2", compression=compression,
                             swmr=True, flush_interval=flush_interval) as w:
        for index in range(count):
            w.append(frame(index))
            if stall_after is not None and index + 1 == stall_after:
                w.flush()
                if stalled is not None:
                    stalled.set()
                time.sleep(stall)  # the stall the reader is to time out in
                continue
            if resumed is not None and stall_after is not None and index + 1 == stall_after + 5:
                w.flush()
                resumed.set()
            if delay:
                time.sleep(delay)  # the pace of a producer, not a synchronisation


def bgio_records(path: str, count: int, delay: float) -> None:
    """RecordWriter with swmr=True, frames in order, 0..3 events each."""
    import bgio.h5

    with bgio.h5.RecordWriter(path, "events", FEATURES, compression="gzip", shuffle=True,
                              chunk_events=8, swmr=True, flush_interval=0.05) as w:
        for index in range(count):
            w.append(index, events(index))
            time.sleep(delay)  # the pace of a producer


def plain_h5py_frames(path: str, count: int, delay: float) -> None:
    """A writer that knows nothing of bgio: plain h5py, SWMR, the key convention, with
    its keys under /keys and its finished flag at /finished."""
    with h5py.File(path, "w", libver="latest") as f:
        data = f.create_dataset("data/images", shape=(0, *FRAME_SHAPE),
                                maxshape=(None, *FRAME_SHAPE), chunks=(1, *FRAME_SHAPE),
                                dtype="<u2")
        keys = f.create_dataset("keys/images", shape=(0,), maxshape=(None,), chunks=(64,),
                                dtype="<i4", fillvalue=0)
        finished = f.create_dataset("finished", shape=(1,), maxshape=(1,), dtype="<i4",
                                    fillvalue=0)
        f.swmr_mode = True
        for index in range(count):
            data.resize(index + 1, axis=0)
            data[index] = frame(index)
            data.flush()
            keys.resize(index + 1, axis=0)
            keys[index] = 1
            keys.flush()
            time.sleep(delay)  # the pace of a producer
        finished[0] = 1
        finished.flush()


def bgio_frames_gated(path: str, count: int, switched, go) -> None:
    """FrameWriter with swmr=True that switches the file to SWMR mode with its first append,
    sets ``switched`` before anything is announced, waits for ``go``, then writes the rest."""
    import bgio.h5

    with bgio.h5.FrameWriter(path, "frames", FRAME_SHAPE, "<u2", compression="gzip", swmr=True,
                             flush_interval=None, flush_every=3) as w:
        w.append(frame(0))  # the switch to SWMR; announced with frame 2
        switched.set()
        if not go.wait(60):
            raise RuntimeError("the test never said go")
        for index in range(1, count):
            w.append(frame(index))
            time.sleep(0.002)  # the pace of a producer, not a synchronisation


def bgio_crashing(path: str, count: int, done) -> None:
    """Frames and records (gzip) in one live file, flushed; ``done`` set, then the process
    ends without closing anything (no atexit, no HDF5 close), as a crash would."""
    import bgio.h5

    f = bgio.h5.open_live(path, "w")
    frames = bgio.h5.FrameWriter(f, "frames", FRAME_SHAPE, "<u2", compression="gzip",
                                 shuffle=True, swmr=True, flush_interval=None, flush_every=1000)
    records = bgio.h5.RecordWriter(f, "events", FEATURES, compression="gzip", shuffle=True,
                                   chunk_events=8, swmr=True, flush_interval=None,
                                   flush_every=1000)
    for index in range(count):
        frames.append(frame(index))
        records.append(index, events(index))
    frames.flush()
    records.flush()
    done.set()
    os._exit(0)
