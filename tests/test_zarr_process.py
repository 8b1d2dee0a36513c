"""bgio.zarr.FrameWriter with ``backend="process"``: the array written by the writer process."""

from __future__ import annotations

import json
import os
import random
import signal
import threading

import numpy as np
import pytest

import bgio
import bgio.zarr

pytest.importorskip("tensorstore")

from bgio.process import parent
from bgio.process.zarr import ProcessFrameWriter

#: Each test talks to the writer process (started once, but waited on): outside the quick run.
pytestmark = pytest.mark.slow

#: Slow enough that a test can act while the stores are under way.
SLOW = bgio.PRESETS[1].replace(max_rate=2e5)


def _frames(count: int, shape: tuple[int, ...] = (32, 32), seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).poisson(100, (count, *shape)).astype("<u2")


def _read(store) -> np.ndarray:
    """The array as zarr-python reads it (imported only here: it takes a while)."""
    return pytest.importorskip("zarr").open_array(store, mode="r")


def _bgio_attribute(store) -> dict:
    with open(os.path.join(store, "zarr.json")) as file:
        return json.load(file)["attributes"]["bgio"]


@pytest.mark.parametrize("layout", [{}, {"shard_frames": 8}, {"chunk_frames": 4}])
def test_frames_from_several_threads_are_stored_exactly(tmp_path, layout):
    frames = _frames(40)
    store = tmp_path / "frames.zarr"
    writer = bgio.zarr.FrameWriter(store, (32, 32), "<u2", codec="lz4", backend="process",
                                   **layout)
    assert isinstance(writer, bgio.zarr.FrameWriter) and type(writer) is ProcessFrameWriter
    assert repr(writer) == (f"<bgio.zarr.FrameWriter open '{store}' frames=0 "
                            f"backend='process'>")
    slots = list(range(40))
    random.Random(3).shuffle(slots)

    def produce(part: list[int]) -> None:
        for index in part:
            writer.write_at(index, frames[index])

    threads = [threading.Thread(target=produce, args=(slots[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    last = writer.append(frames[:3])  # after the highest: 40..42
    writer.flush(timeout=60)
    assert _bgio_attribute(store) == {"frames": 43, "finished": False}
    writer.close(timeout=60)
    assert last.result(timeout=60) == frames[:3].nbytes
    assert (writer.frames_written, writer.extent, writer.missing) == (43, 43, [])
    array = _read(store)
    assert array[...].tobytes() == np.concatenate([frames, frames[:3]]).tobytes()
    assert _bgio_attribute(store) == {"frames": 43, "finished": True}


def test_a_frame_pool_frame_goes_by_reference_and_returns_to_the_pool(tmp_path):
    pool = bgio.FramePool((16, 16), "<u2", 2)
    store = tmp_path / "pool.zarr"
    with bgio.zarr.FrameWriter(store, (16, 16), "<u2", codec=None, backend="process") as writer:
        for value in range(6):  # more frames than the pool: each must come back
            frame = pool.acquire(timeout=60)
            frame[...] = value
            writer.append(frame).result(timeout=60)
    assert pool.free == 2
    array = _read(store)
    assert [int(array[i].max()) for i in range(6)] == list(range(6))


def test_copy_false_reads_the_callers_frames(tmp_path):
    frames = _frames(10)
    store = tmp_path / "nocopy.zarr"
    with bgio.zarr.FrameWriter(store, (32, 32), "<u2", copy=False, shard_frames=4,
                               backend="process") as writer:
        handles = [writer.append(frame) for frame in frames]
    assert all(handle.result(timeout=60) == frames[0].nbytes for handle in handles)
    assert _read(store)[...].tobytes() == frames.tobytes()


def test_slots_never_written_are_reported_at_the_close(tmp_path):
    store = tmp_path / "holes.zarr"
    writer = bgio.zarr.FrameWriter(store, (4,), "u1", backend="process", on_missing="raise")
    writer.append(np.arange(4, dtype="u1"))
    writer.write_at(3, np.full((2, 4), 9, "u1"))
    with pytest.raises(ValueError, match=r"2 slot\(s\) below frame 5 of .* were never written"):
        writer.close(timeout=60)
    assert writer.missing == [1, 2]
    assert _bgio_attribute(store)["missing"] == [[1, 3]]
    warned = bgio.zarr.FrameWriter(tmp_path / "warn.zarr", (4,), "u1", backend="process")
    warned.write_at(1, np.zeros(4, "u1"))
    with pytest.warns(RuntimeWarning, match=r"1 slot\(s\) below frame 2"):
        warned.close(timeout=60)


def test_bad_arguments_are_refused_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match="a memory:// store; give a path"):
        bgio.zarr.FrameWriter("memory://x", (4,), "u1", backend="process")
    with pytest.raises(ValueError, match="codec must be one of"):  # (checked there)
        bgio.zarr.FrameWriter(tmp_path / "c.zarr", (4,), "u1", codec="foo", backend="process")
    with pytest.raises(ValueError, match="backend must be 'thread' or 'process'"):
        bgio.zarr.FrameWriter(tmp_path / "d.zarr", (4,), "u1", backend="fork")
    with bgio.zarr.FrameWriter(tmp_path / "e.zarr", (4,), "u1", backend="process") as writer:
        writer.append(np.zeros(4, "u1"))
        with pytest.raises(ValueError, match="frame 0 was already written"):
            writer.write_at(0, np.zeros(4, "u1"))
        with pytest.raises(ValueError, match="shape"):
            writer.append(np.zeros(5, "u1"))
    with pytest.raises(ValueError, match="write to a closed bgio.zarr.FrameWriter"):
        writer.append(np.zeros(4, "u1"))
    # The default backend of a memory:// store stays the threads', whatever was set.
    bgio.set_default_backend("process")
    try:
        here = bgio.zarr.FrameWriter("memory://default-backend", (4,), "u1")
        assert type(here) is bgio.zarr.FrameWriter
        here.close()
    finally:
        bgio.set_default_backend("thread")


def test_an_ome_image_and_shared_writers_work_there_too(tmp_path):
    store = tmp_path / "image.zarr"
    frames = _frames(6, (8, 8))
    with bgio.zarr.FrameWriter(store, (8, 8), "<u2", ome=True, backend="process") as writer:
        writer.append(frames)
    assert _read(store / "0")[...].tobytes() == frames.tobytes()
    shared = tmp_path / "shared.zarr"
    one = bgio.zarr.FrameWriter(shared, (8, 8), "<u2", shared=True, shard_frames=4,
                                backend="process")
    two = bgio.zarr.FrameWriter(shared, (8, 8), "<u2", shared=True, backend="thread")
    for index in range(6):
        (one if index % 2 else two).write_at(index, frames[index])
    one.close(timeout=60)
    two.close(timeout=60)
    assert _read(shared)[...].tobytes() == frames.tobytes()
    assert _bgio_attribute(shared)["finished"] is True


def test_a_dead_writer_process_fails_the_zarr_writers_writes(tmp_path):
    writer = bgio.zarr.FrameWriter(tmp_path / "dies.zarr", (64, 64), "<u2", priority=SLOW,
                                   backend="process")
    handles = [writer.append(frame) for frame in _frames(8, (64, 64))]
    os.kill(parent._backend.process.pid, signal.SIGKILL)
    for handle in handles:
        error = handle.exception(timeout=60)
        assert error is None or isinstance(error, bgio.BgioError)
    assert isinstance(handles[-1].exception(), bgio.BgioError)
    later = writer.append(_frames(1, (64, 64))[0])
    with pytest.raises(bgio.BgioError, match="cannot go on"):
        later.result(timeout=60)
    with pytest.raises(bgio.BgioError):
        writer.close(timeout=60)
