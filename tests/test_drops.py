"""Frames never lost silently: gaps in the producer's frame_id, frames refused by back-pressure
and frames the producer says it lost are counted, recorded in the file, and reported."""

from __future__ import annotations

import threading
import warnings

import h5py
import numpy as np
import pytest

import bgio
import bgio.h5
from bgio.progress import WriteProgress

HANG = 60
SHAPE = (4, 6)


def frame(value: int) -> np.ndarray:
    return np.full(SHAPE, value, dtype=np.uint16)


def events(value: int) -> dict[str, np.ndarray]:
    return {"a": np.full(3, value, dtype=np.float32)}


def _attrs(node: h5py.Dataset | h5py.Group) -> tuple[int, list[list[int]]]:
    return int(node.attrs["dropped_frames"]), node.attrs["dropped_frame_ids"].tolist()


def test_gaps_in_frame_id_are_counted_recorded_and_warned_of(tmp_path):
    path = tmp_path / "f.h5"
    writer = bgio.h5.FrameWriter(path, "x", SHAPE, "uint16")
    ids = [10, 11, 14, 15, 20]
    for frame_id in ids:
        writer.append(frame(frame_id), frame_id=frame_id)
    writer.append(np.stack([frame(21), frame(22)]), frame_id=21)  # a stack takes two ids
    writer.append(frame(30), frame_id=25)
    assert writer.dropped_frames == 2 + 4 + 2
    with pytest.warns(RuntimeWarning, match=r"^frames: 8 frame\(s\) were dropped before they "
                                            r"reached the writer \(recorded in the file as "
                                            r"dropped_frames\)$"):
        writer.close()
    with h5py.File(path, "r") as file:
        assert _attrs(file["x"]) == (8, [[12, 14], [16, 20], [23, 25]])
        assert [int(f[0, 0]) for f in file["x"]] == [*ids, 21, 22, 30]  # every frame given


def test_without_frame_ids_or_drops_the_file_records_nothing(tmp_path):
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16") as writer:
        writer.append(frame(0))
    with h5py.File(tmp_path / "f.h5", "r") as file:
        assert "dropped_frames" not in file["x"].attrs
    with bgio.h5.FrameWriter(tmp_path / "g.h5", "x", SHAPE, "uint16") as writer:
        writer.append(frame(0), frame_id=0)
        writer.append(frame(1), frame_id=1)
    with h5py.File(tmp_path / "g.h5", "r") as file:  # ids given: a count of 0 says none lost
        assert _attrs(file["x"]) == (0, [])


def test_a_bad_frame_id_is_refused_and_nothing_is_accepted(tmp_path):
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16") as writer:
        writer.append(frame(0), frame_id=5)
        with pytest.raises(ValueError, match="^frame_id: 5 is not after the last one given, 5$"):
            writer.append(frame(1), frame_id=5)
        with pytest.raises(TypeError, match="^frame_id must be an int, got float$"):
            writer.append(frame(1), frame_id=6.0)
        with pytest.raises(ValueError, match="^frame_id must be an int >= 0, got -1$"):
            writer.append(frame(1), frame_id=-1)
        assert writer.frames_written == 1 and writer.dropped_frames == 0
        writer.append(frame(1), frame_id=np.int64(6))
    with pytest.raises(ValueError, match="^on_drop must be 'warn', 'raise' or 'ignore', got 'x'$"):
        bgio.h5.FrameWriter(tmp_path / "g.h5", "x", SHAPE, "uint16", on_drop="x")


def test_on_drop_raise_fails_the_next_append_and_the_close_after_storing_all(tmp_path):
    path = tmp_path / "f.h5"
    writer = bgio.h5.FrameWriter(path, "x", SHAPE, "uint16", on_drop="raise")
    writer.append(frame(0), frame_id=0)
    writer.append(frame(2), frame_id=2)  # accepted: the gap is before it
    with pytest.raises(bgio.FramesDropped, match=r"^1 frame\(s\) were dropped before they "
                                                 r"reached the writer; this writer was made "
                                                 r"with on_drop='raise'$") as raised:
        writer.append(frame(3), frame_id=3)
    assert raised.value.dropped == 1 and writer.frames_written == 2
    with pytest.raises(bgio.FramesDropped, match=r"^frames: 1 frame\(s\) were dropped"):
        writer.close()
    with h5py.File(path, "r") as file:  # closed, whole, and readable by plain h5py
        assert [int(f[0, 0]) for f in file["x"]] == [0, 2]
        assert _attrs(file["x"]) == (1, [[1, 2]])


def test_frames_refused_by_back_pressure_count_as_dropped_once(tmp_path, monkeypatch):
    from conftest import gate_stores

    gate = gate_stores(monkeypatch)
    path = tmp_path / "f.h5"
    size = frame(0).nbytes
    writer = bgio.h5.FrameWriter(path, "x", SHAPE, "uint16", max_pending_bytes=size,
                                 chunk_frames=1, on_drop="ignore")
    writer.append(frame(0), frame_id=0)
    with pytest.raises(bgio.QueueFull):
        writer.append(frame(1), frame_id=1, block=False)
    assert writer.dropped_frames == 1
    gate.set()
    writer.append(frame(2), frame_id=2)  # (id 1 was counted when refused: no gap now)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on_drop="ignore": no warning
        writer.close()
    assert writer.dropped_frames == 1
    with h5py.File(path, "r") as file:
        assert _attrs(file["x"]) == (1, [[1, 2]])


def test_a_record_writer_counts_gaps_and_records_them_on_its_group(tmp_path):
    path = tmp_path / "r.h5"
    writer = bgio.h5.RecordWriter(path, "ev", {"a": ((), "f4")})
    for frame_index, frame_id in enumerate((100, 101, 104)):
        writer.append(frame_index, events(frame_index), frame_id=frame_id)
    writer.add_dropped(3)  # the camera's own count: ids not known
    writer.add_dropped(1, first_id=200)
    assert writer.dropped_frames == 6
    with pytest.warns(RuntimeWarning, match=r"6 frame\(s\) were dropped"):
        writer.close()
    with h5py.File(path, "r") as file:
        assert _attrs(file["ev"]) == (6, [[102, 104], [200, 201]])
        np.testing.assert_array_equal(file["ev/a"][...], np.repeat(np.arange(3, dtype="f4"), 3))


def test_add_dropped_checks_its_arguments(tmp_path):
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16", on_drop="ignore") as w:
        with pytest.raises(TypeError, match="^count must be an int, got float$"):
            w.add_dropped(1.0)
        with pytest.raises(ValueError, match="^count must be an int >= 0, got -1$"):
            w.add_dropped(-1)
        with pytest.raises(ValueError, match="^frame_id must be an int >= 0, got -2$"):
            w.add_dropped(1, first_id=-2)
        assert w.dropped_frames == 0
        w.add_dropped(np.int64(2))
        w.add_dropped(0)  # (none: the file says so all the same)
        assert w.dropped_frames == 2


def test_progress_records_say_how_many_frames_were_dropped(tmp_path):
    records: list[WriteProgress] = []
    finished = threading.Event()

    def collect(record: WriteProgress) -> None:
        records.append(record)
        if record.finished:
            finished.set()

    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16", on_drop="ignore")
    writer.add_progress_callback(collect, interval=0)
    writer.append(frame(0), frame_id=0)
    writer.append(frame(1), frame_id=4)
    writer.close()
    assert finished.wait(HANG)
    assert records[-1].dropped_frames == 3 and records[-1].frames_done == 2


@pytest.mark.slow
def test_the_writer_process_counts_and_records_the_same(tmp_path):
    pool = bgio.FramePool(SHAPE, "uint16", count=2)
    path = tmp_path / "f.h5"
    writer = bgio.h5.FrameWriter(path, "x", SHAPE, "uint16", backend="process", on_drop="raise")
    for frame_id in (0, 1, 3):  # a FramePool frame (the lean path) with its id
        shared = pool.acquire(timeout=HANG)
        shared[...] = frame(frame_id)
        writer.append(shared, frame_id=frame_id)
    assert writer.dropped_frames == 1
    with pytest.raises(bgio.FramesDropped):
        writer.append(frame(4), frame_id=4)
    with pytest.raises(bgio.FramesDropped, match=r"1 frame\(s\) were dropped"):
        writer.close()
    records = bgio.h5.RecordWriter(tmp_path / "r.h5", "ev", {"a": ((), "f4")},
                                   backend="process", on_drop="ignore")
    records.append(0, events(0), frame_id=7)
    records.append(1, events(1), frame_id=9)
    records.add_dropped(2)
    records.close()
    with h5py.File(path, "r") as file:
        assert [int(f[0, 0]) for f in file["x"]] == [0, 1, 3]
        assert _attrs(file["x"]) == (1, [[2, 3]])
    with h5py.File(tmp_path / "r.h5", "r") as file:
        assert _attrs(file["ev"]) == (3, [[8, 9]])


@pytest.mark.parametrize("backend", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_stats_sum_the_run_up_once_closed(tmp_path, backend):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", SHAPE, "uint16", on_drop="ignore",
                                 backend=backend)
    for frame_id in (0, 1, 5):
        writer.append(frame(frame_id), frame_id=frame_id)
    writer.write_at(4, frame(9))  # (slot 3 never written)
    assert not writer.stats().closed
    with pytest.warns(RuntimeWarning, match="never written"):
        writer.close()
    stats = writer.stats()
    assert (stats.frames_written, stats.dropped_frames, stats.missing_frames, stats.bytes,
            stats.closed) == (4, 3, 1, 4 * frame(0).nbytes, True)
    assert stats.seconds > 0 and stats == writer.stats()  # final: the same each time
    if backend == "thread":
        assert stats.peak_backlog_bytes is not None and stats.peak_backlog_bytes > 0
    else:
        assert stats.peak_backlog_bytes is None
    records = bgio.h5.RecordWriter(tmp_path / "r.h5", "ev", {"a": ((2,), "f4")},
                                   backend=backend)
    records.append(0, {"a": np.zeros((5, 2), "f4")})
    records.close()
    assert (records.stats().bytes, records.stats().frames_written) == (40, 1)


def test_frames_dropped_pickles_with_its_count():
    import pickle

    error = pickle.loads(pickle.dumps(bgio.FramesDropped("3 frame(s) were dropped", 3)))
    assert type(error) is bgio.FramesDropped and str(error) == "3 frame(s) were dropped"
    assert error.dropped == 3


@pytest.mark.slow
def test_a_pool_frame_refused_for_its_id_stays_the_callers(tmp_path):
    pool = bgio.FramePool(SHAPE, "uint16", count=2)
    for backend in ("thread", "process"):
        path = tmp_path / f"{backend}.h5"
        with bgio.h5.FrameWriter(path, "x", SHAPE, "uint16", backend=backend) as writer:
            writer.append(frame(0), frame_id=5)
            shared = pool.acquire(timeout=HANG)
            shared[...] = frame(1)
            with pytest.raises(ValueError, match="^frame_id: 5 is not after the last"):
                writer.append(shared, frame_id=5)
            assert pool.free == 1  # still held by the program
            writer.append(shared, frame_id=6)  # (retried with its right id)
        with h5py.File(path, "r") as file:
            assert [int(f[0, 0]) for f in file["x"]] == [0, 1]
            assert _attrs(file["x"]) == (0, [])  # ids given, none lost: the same both ways
        assert pool.free == 2
