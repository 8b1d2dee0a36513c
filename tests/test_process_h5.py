"""The HDF5 writers with ``backend="process"``: the file is open in the writer process only."""

from __future__ import annotations

import os
import random
import signal
import threading

import h5py
import numpy as np
import pytest

import bgio
import bgio.h5
from bgio.process import parent
from bgio.process.h5 import ProcessFrameWriter, ProcessRecordWriter

FEATURES = {"deform": ((), "float32"), "image": ((8, 8), "uint8")}
#: Slow enough that a test can act while the stores are under way.
SLOW = bgio.PRESETS[1].replace(max_rate=2e5)


def _frames(count: int, shape: tuple[int, ...] = (64, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.poisson(100, size=shape).astype(np.uint16) for _ in range(count)]


def _events(frame: int) -> dict[str, np.ndarray]:
    count = frame % 4
    return {"deform": np.full(count, frame / 7, np.float32),
            "image": np.full((count, 8, 8), frame % 251, np.uint8)}


def test_frames_are_stored_exactly_from_several_threads_in_any_order(tmp_path):
    frames = _frames(60)
    path = tmp_path / "frames.h5"
    writer = bgio.h5.FrameWriter(path, "frames", (64, 64), "uint16", compression="gzip",
                                 shuffle=True, chunk_frames=4, backend="process")
    assert isinstance(writer, bgio.h5.FrameWriter) and type(writer) is ProcessFrameWriter
    assert repr(writer) == f"<bgio.h5.FrameWriter open '{path}:frames' backend='process'>"
    with pytest.raises(AttributeError, match="the file is open in the writer process only"):
        writer.dataset  # noqa: B018
    slots = list(range(60))
    random.Random(3).shuffle(slots)

    def produce(part: list[int]) -> None:
        for index in part:
            writer.write_at(index, frames[index])

    threads = [threading.Thread(target=produce, args=(slots[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stack = np.stack(frames[:5])
    last = writer.append(stack)  # after the highest: 60..64
    writer.flush(timeout=60)
    with h5py.File(path, "r", swmr=False, locking=False) as file:  # flushed: readable now
        assert np.array_equal(file["frames"][60:65], stack)
    assert not last.done()  # its chunk (64..67) is open until more frames come, or close
    assert writer.frames_written == 65
    writer.close(timeout=60)
    assert last.done() and writer.missing == []
    with h5py.File(path, "r") as file:
        dataset = file["frames"]
        assert dataset.shape == (65, 64, 64) and dataset.chunks == (4, 64, 64)
        assert dataset.compression == "gzip" and dataset.shuffle
        assert np.array_equal(dataset[:60], np.stack(frames))
        assert np.array_equal(dataset[60:], stack)


def test_the_writer_process_raises_its_errors_in_the_caller(tmp_path):
    path = tmp_path / "exists.h5"
    with bgio.h5.FrameWriter(path, "frames", (4,), "uint8", backend="process") as writer:
        writer.append(np.arange(4, dtype=np.uint8))
        with pytest.raises(ValueError, match=r"frames: expected one frame of shape \(4,\)"):
            writer.append(np.zeros(5, np.uint8))
        with pytest.raises(TypeError, match="float64 cannot be stored as uint8 without loss"):
            writer.append(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="name: 'frames' already exists in '/'"):
        bgio.h5.FrameWriter(path, "frames", (4,), "uint8", backend="process")
    with h5py.File(tmp_path / "open.h5", "w") as file, pytest.raises(
            ValueError, match="target: backend='process' opens the file in the writer process"):
        bgio.h5.FrameWriter(file, "frames", (4,), "uint8", backend="process")
    with pytest.raises(ValueError, match="backend must be 'thread' or 'process'"):
        bgio.h5.FrameWriter(path, "other", (4,), "uint8", backend="threads")
    with pytest.raises(ValueError, match="write to a closed FrameWriter"):
        writer.append(np.zeros(4, np.uint8))


def test_missing_frames_are_reported_by_close_in_the_caller(tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "gaps.h5", "frames", (2,), "int32",
                                 backend="process")
    writer.write_at(0, np.array([1, 2], np.int32))
    writer.write_at(3, np.array([7, 8], np.int32))
    with pytest.warns(RuntimeWarning, match=r"2 frame\(s\) of 4 never written \(first: \[1, 2\]\)"):
        writer.close(timeout=60)
    assert writer.missing == [1, 2]
    raising = bgio.h5.FrameWriter(tmp_path / "gaps.h5", "more", (2,), "int32",
                                  on_missing="raise", backend="process")
    raising.write_at(1, np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match=r"1 frame\(s\) of 2 never written"):
        raising.close(timeout=60)


def test_pool_frames_go_by_reference_and_come_back(tmp_path):
    pool = bgio.FramePool((256, 256), "uint16", count=3)
    path = tmp_path / "pool.h5"
    with bgio.h5.FrameWriter(path, "frames", (256, 256), "uint16", compression="gzip",
                             priority=1, backend="process") as writer:
        for number in range(12):
            frame = pool.acquire(timeout=60)  # waits for a stored frame to come back
            frame[:] = number
            writer.append(frame)
    assert pool.free == 3
    with h5py.File(path, "r") as file:
        assert [int(file["frames"][number, 9, 9]) for number in range(12)] == list(range(12))


def test_copy_false_reads_the_callers_array_and_copy_true_snapshots_it(tmp_path):
    path = tmp_path / "copies.h5"
    frame = np.full((512, 512), 5, np.uint16)
    with bgio.h5.FrameWriter(path, "frames", (512, 512), "uint16", chunk_frames=1,
                             backend="process") as writer:
        kept = writer.append(frame, copy=True)
        frame[:] = 6  # the snapshot is stored, not this
        kept.result(timeout=60)
        by_reference = writer.append(frame, copy=False)
        by_reference.result(timeout=60)  # unchanged until done, as the caller must
    with h5py.File(path, "r") as file:
        assert int(file["frames"][0, 0, 0]) == 5 and int(file["frames"][1, 0, 0]) == 6


@pytest.mark.slow
def test_back_pressure_on_the_shared_frames(tmp_path):
    # 128-byte frames stored at 1,000 bytes/s, one at a time: the four shared frames
    # fill up long before the stores catch up.
    crawl = bgio.PRESETS[1].replace(max_rate=1000, num_chunks_rate_smoothing=1)
    writer = bgio.h5.FrameWriter(tmp_path / "slow.h5", "frames", (8, 8), "uint16",
                                 chunk_frames=1, priority=crawl,
                                 max_pending_bytes=4 * 128, backend="process")
    frames = _frames(60, (8, 8))
    with pytest.raises(bgio.QueueFull, match=r"no room for 1 frame\(s\): all 4 shared"):
        for frame in frames:
            writer.append(frame, block=False)
    accepted = writer.frames_written
    assert 4 <= accepted < 60
    assert writer.pending_bytes <= 4 * 128
    appended = frames[:accepted]
    for _ in range(20):  # (a store may end, and free a frame, within the millisecond)
        try:
            writer.append(frames[0], timeout=0.001)
        except bgio.QueueFull as exc:
            assert str(exc) == "no room for 1 frame(s) after 0.001 s"
            break
        appended.append(frames[0])
    else:
        pytest.fail("a full writer never kept a frame out for a millisecond")
    with pytest.warns(RuntimeWarning, match=r"2 frame\(s\) were dropped"):  # the refused
        writer.close(timeout=60)
    assert writer.dropped_frames == 2
    assert writer.frames_written == len(appended)
    with h5py.File(tmp_path / "slow.h5", "r") as file:
        assert np.array_equal(file["frames"][...], np.stack(appended))


def test_records_from_several_threads_match_the_thread_writer(tmp_path):
    order = list(range(300))
    random.Random(5).shuffle(order)
    order.remove(150)
    files = {}
    for backend in ("thread", "process"):
        path = files[backend] = tmp_path / f"{backend}.h5"
        writer = bgio.h5.RecordWriter(path, "events", FEATURES, compression="gzip",
                                      backend=backend)
        lock = threading.Lock()

        def produce(part: list[int], writer=writer, lock=lock) -> None:
            for frame in part:
                with lock:  # the same order for both backends
                    writer.append(frame, _events(frame))

        threads = [threading.Thread(target=produce, args=(order[i::2],)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        with pytest.warns(RuntimeWarning, match=r"1 frame\(s\) of 300 never appended"):
            writer.close(timeout=60)
        assert writer.missing == [150]
    assert type(bgio.h5.RecordWriter.__new__(bgio.h5.RecordWriter, backend="process")) \
        is ProcessRecordWriter
    with h5py.File(files["thread"], "r") as expected, h5py.File(files["process"], "r") as got:
        names = []
        expected.visit(names.append)
        got_names = []
        got.visit(got_names.append)
        assert names == got_names
        for name in names:
            if isinstance(expected[name], h5py.Dataset):
                assert np.array_equal(expected[name][()], got[name][()]), name


def test_record_arguments_are_checked_in_the_caller(tmp_path):
    with bgio.h5.RecordWriter(tmp_path / "r.h5", "events", FEATURES,
                              backend="process") as writer:
        writer.append(0, _events(1))
        with pytest.raises(ValueError, match="frame_index: frame 0 was already appended"):
            writer.append(0, _events(1))
        with pytest.raises(ValueError, match=r"events: missing features \['image'\]"):
            writer.append(1, {"deform": np.zeros(1, np.float32)})
        with pytest.raises(TypeError, match="frame_index must be an int"):
            writer.append(1.0, {})
        assert writer.frames_written == 1 and writer.events_written == 1
        with pytest.raises(AttributeError, match="group: with backend='process'"):
            writer.group  # noqa: B018
    with pytest.raises(ValueError, match="append to a closed RecordWriter"):
        writer.append(1, {})


def test_a_live_file_written_by_the_writer_process_is_followed_here(tmp_path):
    path = tmp_path / "live.h5"
    frames = _frames(20, (16, 16))
    writer = bgio.h5.FrameWriter(path, "frames", (16, 16), "uint16", swmr=True,
                                 flush_every=1, backend="process")
    writer.append(frames[0])
    writer.flush(timeout=60)
    seen = []
    follower = bgio.h5.follow(path, "frames", timeout=60)

    def follow() -> None:
        for index, frame in follower:
            seen.append((index, frame.copy()))

    reader = threading.Thread(target=follow)
    reader.start()
    for frame in frames[1:]:
        writer.append(frame)
    writer.close(timeout=60)
    reader.join(timeout=60)
    assert [index for index, _ in seen] == list(range(20))
    assert all(np.array_equal(frame, frames[index]) for index, frame in seen)


@pytest.mark.slow
def test_a_dead_writer_process_fails_the_hdf5_writers_writes(tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "dies.h5", "frames", (256, 256), "uint16",
                                 chunk_frames=1, priority=SLOW, backend="process")
    handles = [writer.append(frame) for frame in _frames(8, (256, 256))]
    pid = parent._backend.process.pid
    os.kill(pid, signal.SIGKILL)
    for handle in handles:
        assert handle.exception(timeout=60) is None or isinstance(handle.exception(),
                                                                   bgio.BgioError)
    assert isinstance(handles[-1].exception(), bgio.BgioError)
    later = writer.append(_frames(1, (256, 256))[0])
    with pytest.raises(bgio.BgioError, match="cannot go on"):
        later.result(timeout=60)
    with pytest.raises(bgio.BgioError):
        writer.close(timeout=60)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_writing_no_frames_is_done_at_once_and_changes_nothing(tmp_path, backend):
    no_frames = np.zeros((0, 4, 4), "<u2")
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "<u2",
                             backend=backend) as writer:
        assert writer.append(no_frames).result(timeout=60) == 0
        assert writer.write_at(3, no_frames).result(timeout=60) == 0
        assert writer.extent == 0
        writer.append(np.ones((4, 4), "<u2"))
    assert writer.frames_written == 1 and writer.extent == 1
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"][...].tobytes() == np.ones((1, 4, 4), "<u2").tobytes()


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_frame_written_twice_is_refused_in_the_caller(tmp_path, backend):
    frame = np.ones((4, 4), "<u2")
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "<u2",
                             backend=backend) as writer:
        writer.write_at(1, frame)
        with pytest.raises(ValueError, match="index: frame 1 was already written"):
            writer.write_at(0, np.zeros((2, 4, 4), "<u2"))
        writer.write_at(0, frame * 2)
    assert writer.frames_written == 2
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"][...].tobytes() == np.stack([frame * 2, frame]).tobytes()


@pytest.mark.slow
def test_a_frame_writer_left_open_at_exit_is_closed_and_the_program_ends(tmp_path):
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "open.h5"
    script = f"""
        import bgio.h5, numpy as np
        w = bgio.h5.FrameWriter({str(path)!r}, "frames", (8, 8), "<u2", priority=1,
                                backend="process")
        for i in range(3):
            w.append(np.full((8, 8), i, "<u2"))  # small frames: a chunk still being filled
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    with h5py.File(path, "r") as file:
        assert [int(f[0, 0]) for f in file["frames"]] == [0, 1, 2]
