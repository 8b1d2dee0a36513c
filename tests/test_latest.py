"""``FrameWriter.latest()``: the frame accepted last, for a live view, without reading the
file back; the writer's own copy, which later frames and stores do not change."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import gate_stores

import bgio
import bgio.h5

HANG = 60  # seconds: a bound that only catches hangs
SHAPE = (16, 16)


def frame(value: int) -> np.ndarray:
    return np.full(SHAPE, value, "<u2")


def test_none_before_the_first_frame_then_the_last_accepted(tmp_path):
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", SHAPE, "<u2", priority=1,
                             on_missing="ignore") as w:
        assert w.latest() is None
        w.append(frame(1))
        w.write_at(5, frame(5))
        w.write_at(2, frame(2))  # the last call, not the highest index
        index, shown = w.latest()
        assert index == 2
        np.testing.assert_array_equal(shown, frame(2))
        assert not shown.flags.writeable  # a view must not change what is stored
        with pytest.raises(ValueError):
            shown[0, 0] = 9
        w.append(frame(6))
        assert w.latest()[0] == 6


@pytest.mark.parametrize("chunk_frames", [1, 4])
def test_a_reused_buffer_does_not_change_the_latest_frame(tmp_path, monkeypatch, chunk_frames):
    gate = gate_stores(monkeypatch)
    buffer = np.empty(SHAPE, "<u2")
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", SHAPE, "<u2", priority=1,
                                 chunk_frames=chunk_frames)
    for value in range(12):
        buffer[...] = value  # a camera refilling its one buffer
        writer.append(buffer)
        buffer[...] = 999  # ... at once
        index, shown = writer.latest()
        assert index == value and (shown == value).all()
    gate.set()
    writer.close()
    index, shown = writer.latest()  # stores done, snapshots recycled: still its frame
    assert index == 11 and (shown == 11).all()
    with h5py.File(tmp_path / "f.h5", "r") as file:
        assert [int(f[0, 0]) for f in file["frames"]] == list(range(12))


@pytest.mark.slow
@pytest.mark.parametrize("use_pool", [False, True])
def test_the_writer_process_keeps_the_latest_frame_readable(tmp_path, use_pool):
    pool = bgio.FramePool(SHAPE, "<u2", count=2) if use_pool else None
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", SHAPE, "<u2", priority=1,
                                 backend="process", max_pending_bytes=2 * 4096)
    assert writer.latest() is None
    for value in range(20):
        if pool is not None:
            data = pool.acquire(timeout=HANG)  # two frames: one kept, one in flight
            data[...] = value
        else:
            data = frame(value)
        writer.append(data)
        index, shown = writer.latest()
        assert index == value and (shown == value).all()
    writer.close()
    index, shown = writer.latest()
    assert index == 19 and (shown == 19).all()
    if pool is not None:
        assert pool.free == 2  # the kept frame went back at close
    with h5py.File(tmp_path / "f.h5", "r") as file:
        assert [int(f[0, 0]) for f in file["frames"]] == list(range(20))


@pytest.mark.slow
def test_the_writer_process_holds_no_shared_frame_for_latest_once_stored(tmp_path):
    pool = bgio.FramePool(SHAPE, "<u2", count=1)  # one frame: it must come back
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", SHAPE, "<u2", priority=1,
                                 backend="process", max_pending_bytes=4 * 512,
                                 chunk_frames=1)
    for value in range(3):
        data = pool.acquire(timeout=HANG)
        data[...] = value
        writer.append(data).result(timeout=HANG)  # stored: the frame is the pool's again
        assert writer.latest()[0] == value and (writer.latest()[1] == value).all()
    stack = np.stack([frame(value) for value in range(3, 7)])  # all 4 shared frames at once
    writer.append(stack).result(timeout=HANG)
    writer.close()
    index, shown = writer.latest()
    assert index == 6 and (shown == 6).all()
    assert pool.free == 1


def test_a_frame_shown_is_not_changed_by_later_frames(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", SHAPE, "<u2", priority=1,
                                 chunk_frames=1)
    writer.append(frame(0))
    _, shown = writer.latest()
    writer.append(frame(1))
    gate.set()  # frame 0's snapshot is stored and recycled, then refilled by frame 2
    writer.append(frame(2))
    writer.close()
    assert (shown == 0).all()  # a copy of its own
