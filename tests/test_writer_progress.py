"""Progress callbacks on writers: the totals of all their writes, a last record once closed,
and ``bgio.tqdm`` following a handle or a writer."""

from __future__ import annotations

import io
import os
import threading

import h5py
import numpy as np
import pytest
from conftest import Recorder

import bgio
import bgio.h5
from bgio.progress import WriteProgress

HANG = 60  # seconds: a bound that only catches hangs
SHAPE = (16, 8)


class Collector:
    """A progress callback that keeps every record and says when the last came."""

    def __init__(self) -> None:
        self.records: list[WriteProgress] = []
        self.finished = threading.Event()

    def __call__(self, record: WriteProgress) -> None:
        self.records.append(record)
        if record.finished:
            self.finished.set()

    def last(self) -> WriteProgress:
        assert self.finished.wait(HANG)
        assert [r.finished for r in self.records].count(True) == 1
        assert self.records[-1].finished
        dones = [r.done for r in self.records]
        assert dones == sorted(dones)  # never backwards
        return self.records[-1]


def _frames(count: int) -> list[np.ndarray]:
    return [np.full(SHAPE, index, dtype=np.uint16) for index in range(count)]


def test_a_writers_records_count_all_its_writes_and_the_last_comes_once_closed(tmp_path):
    collect = Collector()
    writer = bgio.Writer(tmp_path / "f.bin", priority=1)
    writer.add_progress_callback(collect, interval=0)
    pieces = [b"small", os.urandom(300_000), b"x" * 10]
    for piece in pieces:
        writer.write(piece)
    writer.write(iter([b"ab", b"cd"]))  # of no known size: counted as written
    assert not collect.finished.is_set()  # (open: not finished, whatever was stored)
    writer.close()
    last = collect.last()
    size = sum(map(len, pieces)) + 4
    assert (last.done, last.total, last.pending, last.error) == (size, size, 0, None)
    assert last.frames_done is None and last.frames_total is None
    assert (tmp_path / "f.bin").read_bytes() == b"".join(pieces) + b"abcd"


@pytest.mark.parametrize("chunk_frames", [1, 4])
def test_a_frame_writers_records_count_frames_stored(tmp_path, chunk_frames):
    collect = Collector()
    frames = _frames(10)
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16",
                                 chunk_frames=chunk_frames, priority=1)
    writer.add_progress_callback(collect, interval=0)
    for frame in frames:
        writer.append(frame)
    writer.close()
    last = collect.last()
    assert (last.frames_done, last.frames_total) == (10, 10)
    assert (last.done, last.total, last.pending) == (10 * frames[0].nbytes,) * 2 + (0,)
    # Frames are counted once stored: never more than accepted, before the end too.
    assert all(r.frames_done <= r.frames_total for r in collect.records)
    with h5py.File(tmp_path / "f.h5", "r") as file:
        np.testing.assert_array_equal(file["x"][...], np.stack(frames))


def test_a_record_writers_records_count_frames_given_out_of_order(tmp_path):
    collect = Collector()
    writer = bgio.h5.RecordWriter(tmp_path / "r.h5", "ev", {"a": ((), "f4")}, priority=1)
    writer.add_progress_callback(collect, interval=0)
    for frame_index in (1, 0, 3, 2):  # (1 and 3 held until the frame before comes)
        writer.append(frame_index, {"a": np.full(5, frame_index, dtype="f4")})
    writer.close()
    last = collect.last()
    assert (last.frames_done, last.frames_total, last.done, last.total) == (4, 4, 80, 80)
    with h5py.File(tmp_path / "r.h5", "r") as file:
        np.testing.assert_array_equal(file["ev/a"][...], np.repeat(np.arange(4, dtype="f4"), 5))


def test_a_failed_write_is_the_records_error_and_its_bytes_are_not_done():
    collect = Collector()
    sink = Recorder(fail_after=1000)
    writer = bgio.Writer(sink, priority=1)
    writer.add_progress_callback(collect, interval=0)
    writer.write(b"a" * 800)
    failing = writer.write(b"b" * 800)
    with pytest.raises(OSError, match="No space left on device"):
        failing.result(timeout=HANG)
    with pytest.raises(OSError, match="No space left on device"):
        writer.close()
    last = collect.last()
    assert isinstance(last.error, OSError) and last.error.errno == 28
    assert (last.done, last.total, last.pending) == (800, 1600, 800)


def test_added_once_closed_it_gets_the_last_record_at_once(tmp_path):
    first, later = Collector(), Collector()
    writer = bgio.Writer(tmp_path / "f.bin", priority=1)
    writer.add_progress_callback(first)
    writer.write(b"abc")
    writer.close()
    assert first.last().done == 3
    writer.add_progress_callback(later)
    assert later.last() == first.last()


def test_nothing_is_counted_before_the_first_callback(tmp_path):
    collect = Collector()
    writer = bgio.Writer(tmp_path / "f.bin", priority=1)
    writer.write(b"before").result(timeout=HANG)
    writer.add_progress_callback(collect)
    writer.write(b"after")
    writer.close()
    assert (collect.last().done, collect.last().total) == (5, 5)


def test_bad_arguments_are_refused_in_the_caller(tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16")
    with pytest.raises(TypeError, match="^fn must be callable, got int$"):
        writer.add_progress_callback(3)
    with pytest.raises(ValueError, match="^interval must be finite and >= 0, got -1$"):
        writer.add_progress_callback(print, interval=-1)
    writer.close()
    with pytest.raises(TypeError, match="^target must be a bgio handle or writer, got str$"):
        bgio.tqdm("x")


class _Lines(io.StringIO):
    """A bar's output; says when a line ended (a bar closed with leave=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def write(self, text: str) -> int:
        if "\n" in text:
            self.ended.set()
        return super().write(text)


def test_tqdm_follows_a_frame_writer_in_frames_and_closes_with_it(tmp_path):
    out = _Lines()
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16", priority=1)
    bar = bgio.tqdm(writer, file=out, desc="frames", interval=0)
    for frame in _frames(12):
        writer.append(frame)
    writer.close()
    assert out.ended.wait(HANG)
    assert (bar.n, bar.total, bar.unit) == (12, 12, "frame")
    assert "frames: 100%" in out.getvalue() and "12/12" in out.getvalue()


def test_tqdm_follows_a_handle_in_bytes(tmp_path):
    out = _Lines()
    data = os.urandom(1 << 20)
    handle = bgio.bgwrite(tmp_path / "f.bin", data, priority=1)
    bar = bgio.tqdm(handle, file=out)
    assert handle.result(timeout=HANG) == len(data)
    assert out.ended.wait(HANG)
    assert (bar.n, bar.total, bar.unit) == (len(data), len(data), "B")
    assert "100%" in out.getvalue()


@pytest.mark.slow
def test_the_writer_process_backends_count_the_same(tmp_path):
    frames = _frames(6)
    collects = [Collector() for _ in range(3)]
    writer = bgio.Writer(tmp_path / "f.bin", priority=1, backend="process")
    writer.add_progress_callback(collects[0], interval=0)
    writer.write(b"abc")
    writer.write(b"x" * 100_000)
    writer.close()
    pool = bgio.FramePool(SHAPE, "uint16", count=2)
    frame_writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16", priority=1,
                                       backend="process")
    frame_writer.add_progress_callback(collects[1], interval=0)
    for index, frame in enumerate(frames):
        if index % 2:  # a FramePool frame (the lean path) and a copied one
            shared = pool.acquire(timeout=HANG)
            shared[...] = frame
            frame = shared
        frame_writer.append(frame)
    frame_writer.close()
    records = bgio.h5.RecordWriter(tmp_path / "r.h5", "ev", {"a": ((), "f4")}, priority=1,
                                   backend="process")
    records.add_progress_callback(collects[2], interval=0)
    for frame_index in (1, 0):
        records.append(frame_index, {"a": np.zeros(5, dtype="f4")})
    records.close()
    last = [collect.last() for collect in collects]
    assert (last[0].done, last[0].total, last[0].frames_done) == (100_003, 100_003, None)
    assert (last[1].frames_done, last[1].done) == (6, 6 * frames[0].nbytes)
    assert (last[2].frames_done, last[2].frames_total, last[2].done) == (2, 2, 40)
    with h5py.File(tmp_path / "f.h5", "r") as file:
        np.testing.assert_array_equal(file["x"][...], np.stack(frames))
