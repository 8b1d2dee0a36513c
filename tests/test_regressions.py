"""Scenarios found in review, each once a real defect: they must stay fixed."""

from __future__ import annotations

import gc
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 1000, 100)


def test_a_file_object_closed_by_its_finalizer_in_the_worker_does_not_deadlock(tmp_path):
    # The worker drops the last reference to a bgio.open file, whose close()
    # writes through bgio again: that must not happen under the engine's lock.
    path = tmp_path / "inner"
    handle = bgio.bgwrite(bgio.open(path), b"payload", priority=FAST)
    assert handle.result(timeout=30) == 7
    assert bgio.wait_all(timeout=10)
    gc.collect()
    assert bgio.wait_all(timeout=10)
    assert path.read_bytes() == b"payload"


def test_a_failed_write_does_not_keep_the_file_or_the_data_alive(caplog):
    # (A log handler that keeps records keeps their tracebacks: none here.)
    caplog.set_level(logging.CRITICAL, logger="bgio")
    f = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - freed by the test
    data = bytearray(1 << 20)
    handle = bgio.bgwrite(f, data, priority=FAST)
    assert isinstance(handle.exception(timeout=30), OSError)
    file_ref = weakref.ref(f)
    del f, data
    gc.collect()
    assert file_ref() is None
    assert handle.exception().__traceback__ is None  # logged already; not kept


def test_chain_error_messages_stay_short():
    w = bgio.Writer(Recorder(fail_after=0), priority=FAST)
    handles = [w.write(b"x") for _ in range(1000)]
    assert bgio.wait_all(timeout=30)
    last = handles[-1].exception()
    assert isinstance(last, bgio.ChainError)
    assert len(str(last)) < 200
    assert isinstance(last.root_cause, OSError)
    assert "No space left on device" in str(last)


def test_a_write_from_an_atexit_handler_is_complete(tmp_path):
    out = tmp_path / "late.bin"
    script = textwrap.dedent(f"""
        import atexit, bgio
        def save():
            bgio.bgwrite({str(out)!r}, b"x" * (8 << 20), priority=10)
        atexit.register(save)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == 8 << 20


def test_cancelling_a_later_small_write_leaves_the_earlier_one_whole():
    r, w = os.pipe()
    os.set_blocking(w, False)
    filler = b"." * 65536
    while True:  # fill the pipe
        try:
            os.write(w, filler)
        except BlockingIOError:
            break
    gate = threading.Event()

    class Held:
        mode = "wb"

        def write(self, data):
            gate.wait()
            return len(data)

    held = bgio.bgwrite(Held(), b"x", priority=FAST)
    first = bgio.bgwrite(w, b"1" * 100, chain_after=held, priority=FAST)
    kept = bgio.bgwrite(w, b"2" * 100, priority=FAST)
    cancelled = bgio.bgwrite(w, b"3" * 100, priority=FAST)
    gate.set()
    time.sleep(0.2)
    assert cancelled.cancel()
    os.set_blocking(r, False)
    drained = b""
    deadline = time.monotonic() + 10
    while not (kept.done() and cancelled.done()) and time.monotonic() < deadline:
        try:
            drained += os.read(r, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
    assert first.result(timeout=10) == 100 and kept.result(timeout=10) == 100
    assert cancelled.cancelled()
    while True:
        try:
            drained += os.read(r, 1 << 16)
        except BlockingIOError:
            break
    assert drained.replace(b".", b"") == b"1" * 100 + b"2" * 100
    os.close(r)
    os.close(w)


def test_a_cancelled_closing_write_still_flushes_the_earlier_ones(tmp_path):
    rec = Recorder(gated=True)
    blocker = bgio.bgwrite(rec, b"b", priority=FAST)
    out = open(tmp_path / "f", "wb")  # noqa: SIM115 - closed by the closing write
    earlier = bgio.bgwrite(out, b"1" * 100, chain_after=blocker, priority=FAST)
    closing = bgio.bgwrite(out, b"2" * 100, close_when_finished=True, priority=FAST)
    assert closing.cancel()
    rec.gate.set()
    assert earlier.result(timeout=30) == 100
    assert bgio.wait_all(timeout=30)
    assert out.closed and (tmp_path / "f").read_bytes() == b"1" * 100


def test_a_generator_may_wait_for_an_earlier_small_write():
    out = io.BytesIO()
    first = bgio.bgwrite(out, b"header", priority=FAST)

    def body():
        first.result(timeout=10)  # complete before the body is produced
        yield b"body"

    second = bgio.bgwrite(out, body(), priority=FAST)
    assert second.result(timeout=15) == 4
    assert out.getvalue() == b"headerbody"


def test_two_writers_on_one_path_keep_their_own_files(tmp_path):
    path = tmp_path / "shared"
    appender = bgio.Writer(path, mode="ab", priority=FAST)
    replacer = bgio.Writer(path, atomic=True, priority=FAST)
    for i in (1, 2):
        appender.write(b"A%d " % i)
        replacer.write(b"B%d " % i)
    appender.close()
    assert path.read_bytes() == b"A1 A2 "
    replacer.close()
    assert path.read_bytes() == b"B1 B2 "


def test_an_atomic_write_whose_sync_fails_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a"
    path.write_bytes(b"old")

    def broken(fd):
        raise OSError(5, "EIO (injected)")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(OSError, match="EIO"):
        bgio.bgwrite(path, b"new", atomic=True, priority=FAST).result(timeout=30)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_closing_a_writer_from_two_threads(recorder):
    w = bgio.Writer(recorder, close_when_finished=True, priority=FAST)
    w.write(b"data")
    errors: list[BaseException] = []

    def close() -> None:
        try:
            w.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert bgio.wait_all(timeout=10)
    assert recorder.closed and recorder.getvalue() == b"data"


def test_a_bug_in_the_worker_fails_the_writes_and_leaves_wait_all_working(monkeypatch, caplog):
    import bgio.worker

    finish_run = bgio.worker._finish_run

    def broken(lane, run, *args, **kwargs):
        if len(run) > 1:  # only a pass of several small writes
            raise NameError("simulated bug")
        return finish_run(lane, run, *args, **kwargs)

    monkeypatch.setattr(bgio.worker, "_finish_run", broken)
    caplog.set_level(logging.CRITICAL, logger="bgio")
    rec = Recorder(gated=True)
    first = bgio.bgwrite(rec, b"x" * 2000, priority=FAST)  # two chunks: never in a group
    handles = [bgio.bgwrite(rec, b"y", priority=FAST) for _ in range(10)]  # a group
    rec.gate.set()
    assert first.result(timeout=10) == 2000
    for h in handles:
        assert isinstance(h.exception(timeout=10), (RuntimeError, bgio.ChainError))
    assert bgio.wait_all(timeout=10)
    monkeypatch.undo()
    assert bgio.bgwrite(Recorder(), b"after", priority=FAST).result(timeout=10) == 5
    assert bgio.wait_all(timeout=10)


class _Gate:
    """A sink for the engine tests: each write waits for ``go`` and is recorded."""

    kind = None
    nonblocking = False
    write_many = None
    waiter = None

    def __init__(self, key, log, go):
        self.key = key
        self.target = self  # what the lane anchors to
        self.name = f"gate {key}"
        self.log = log
        self.go = go

    def write(self, block):
        self.log.append(("start", bytes(block)))
        self.go.wait(30)
        self.log.append(("end", bytes(block)))
        return len(block)

    def flush(self):
        pass

    def sync(self):
        pass

    def close(self):
        pass


def _job(sink, data):
    from bgio.handle import BackgroundWriteProcess
    from bgio.source import Source
    from bgio.worker import Job

    return Job(BackgroundWriteProcess(len(data)), sink, Source((data,), "bytes", len(data), False,
                                                                len(data)), FAST)


def test_a_freed_object_does_not_take_its_key_from_a_live_one():
    # Two objects with one key (an fd reused by a new file object): the first
    # is freed while the second writes. Its lane must stay, or a second
    # worker would write to the destination at the same time as the first.
    from bgio import engine

    log, go = [], threading.Event()
    first = _Gate("shared", log, go)
    go.set()
    assert engine.submit(_job(first, b"a")).result(timeout=30) == 1
    assert bgio.wait_all(timeout=10)  # idle: the lane is anchored to `first`
    go.clear()
    second = _Gate("shared", log, go)
    busy = engine.submit(_job(second, b"b"))
    while ("start", b"b") not in log:
        time.sleep(0.001)
    del first
    gc.collect()  # `first` is freed while `second` writes
    after = engine.submit(_job(second, b"c"))
    time.sleep(0.05)
    assert ("start", b"c") not in log  # queued behind b, not written beside it
    go.set()
    assert busy.result(timeout=30) == 1 and after.result(timeout=30) == 1
    assert log[-4:] == [("start", b"b"), ("end", b"b"), ("start", b"c"), ("end", b"c")]
    assert bgio.wait_all(timeout=10)
    del second
    gc.collect()
    engine.submit(_job(_Gate("other", [], go), b"x")).result(timeout=30)  # settles the freed
    assert "shared" not in engine._lanes


def test_a_new_file_at_the_same_path_does_not_inherit_an_old_failure(tmp_path):
    import h5py
    import numpy as np

    from bgio.h5 import FrameWriter

    path = tmp_path / "f.h5"
    old = FrameWriter(path, "frames", (8, 8), "u1", chunk_frames=1, compression="gzip")

    class Broken:
        compresses = True

        def encode(self, chunk):
            raise OSError(5, "Input/output error")

    old._sink.pipeline = Broken()
    with pytest.raises(OSError):
        old.append(np.zeros((8, 8), "u1")).result(timeout=30)
    with pytest.raises(OSError):
        old.close()
    path.unlink()  # `old` stays referenced: its lane and its failure live on
    for swmr in (False, True, False):
        with FrameWriter(path, "frames", (8, 8), "u1", swmr=swmr) as new:
            for i in range(30):
                new.append(np.full((8, 8), i, "u1"))
        with h5py.File(path, "r") as f:
            assert [int(frame[0, 0]) for frame in f["frames"]] == list(range(30))
        path.unlink()


def test_the_producer_of_the_awaited_record_frame_is_woken(tmp_path):
    from bgio.h5 import RecordWriter

    w = RecordWriter(tmp_path / "r.h5", "ev", {"a": ((), "f8")}, max_pending_bytes=1000)
    w.append(7, {"a": np.zeros(50)})  # held (800 bytes), waiting for 0..6
    accepted = threading.Event()

    def producer():
        w.append(5, {"a": np.zeros(20)})  # 800 + 320 > 1000: waits, as frame 5 is not next
        accepted.set()

    thread = threading.Thread(target=producer)
    thread.start()
    time.sleep(0.1)
    for frame in range(5):  # 0..4 in order: frame 5 is now the awaited one
        w.append(frame, {"a": np.zeros(1)})
    assert accepted.wait(10)
    thread.join()
    w.append(6, {"a": np.zeros(1)})
    w.close()


def test_room_is_free_before_the_callbacks_of_a_chunks_handle_run(tmp_path):
    from bgio.h5 import FrameWriter

    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=4,
                    max_pending_bytes=4 * 64)  # one chunk
    seen = []

    def appended_from_callback(handle):
        seen.append(w.pending_bytes)
        w.append(np.full((8, 8), 9, "u1"), block=False)  # QueueFull if the room were not free

    first = w.append(np.zeros((4, 8, 8), "u1"))  # a whole chunk
    first.add_done_callback(appended_from_callback)
    first.result(timeout=30)
    w.close()
    assert seen == [0]
    import h5py

    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].shape == (5, 8, 8) and (f["frames"][4] == 9).all()


def test_writing_a_frame_again_is_refused_not_stored_over_its_neighbours(tmp_path):
    from bgio.h5 import FrameWriter

    with FrameWriter(tmp_path / "f.h5", "frames", (2, 2), "u1", chunk_frames=4) as w:
        w.append(np.arange(1, 5, dtype="u1").repeat(4).reshape(4, 2, 2))  # chunk 0, stored
        with pytest.raises(ValueError, match="index: frame 2 was already written"):
            w.write_at(2, np.full((2, 2), 99, "u1"))
        w.write_at(5, np.full((2, 2), 6, "u1"))
        w.write_at(4, np.full((2, 2), 5, "u1"))  # a hole: fine
        with pytest.raises(ValueError, match="frame 5 was already written"):
            w.write_at(5, np.zeros((2, 2, 2), "u1"))  # 5 and 6: 5 is taken
    import h5py

    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert [int(frame[0, 0]) for frame in f["frames"]] == [1, 2, 3, 4, 5, 6]


def test_close_with_a_timeout_raises_and_a_second_close_waits(tmp_path, monkeypatch):
    from bgio.h5 import FrameWriter, sink

    release = threading.Event()
    real = sink.DatasetSink.write

    def slow(self, chunk):
        release.wait(30)
        return real(self, chunk)

    monkeypatch.setattr(sink.DatasetSink, "write", slow)
    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=1)
    w.append(np.zeros((8, 8), "u1"))
    with pytest.raises(TimeoutError, match="frames not stored after 0.05 s"):
        w.close(timeout=0.05)
    release.set()
    w.close(timeout=30)  # waits for the stores this time
    assert w._last.done()


def test_bgwrite_into_a_contiguous_dataset_at_an_offset(tmp_path):
    import h5py

    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = f.create_dataset("d", shape=(10, 4), dtype="i4")  # contiguous
        bgio.bgwrite(ds, np.ones((3, 4), "i4"), offset=2).result(timeout=30)
        assert ds[:, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


def test_fsync_on_a_dataset_reaches_the_disk(tmp_path, monkeypatch):
    import h5py

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        ds = f.create_dataset("d", shape=(0, 4), maxshape=(None, 4), chunks=(2, 4), dtype="i4")
        bgio.bgwrite(ds, np.ones((3, 4), "i4"), fsync=True).result(timeout=30)
        assert synced == [f.id.get_vfd_handle()]


def test_a_chunk_written_alone_is_padded_with_the_fill_value(tmp_path):
    import h5py

    with h5py.File(tmp_path / "p.h5", "w") as f:
        ds = f.create_dataset("d", shape=(0, 2), maxshape=(None, 2), chunks=(4, 2), dtype="i4",
                              fillvalue=-1, compression="gzip")
        bgio.bgwrite(ds, np.ones((2, 2), "i4")).result(timeout=30)  # half a chunk, alone
        ds.resize(4, axis=0)
        assert ds[:, 0].tolist() == [1, 1, -1, -1]  # as h5py itself would have it


def test_writers_left_open_are_closed_at_exit(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, bgio.h5
        w = bgio.h5.FrameWriter(sys.argv[1], "frames", (8, 8), "u1", chunk_frames=4)
        for i in range(6):
            w.append(np.full((8, 8), i, "u1"))
        r = bgio.h5.RecordWriter(sys.argv[1], "g", {"x": ((), "i4")})
        r.append(1, {"x": [5]})
        r.append(0, {"x": [1, 2]})
    """)
    path = tmp_path / "open.h5"
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0 and run.stderr == "", run.stderr
    import h5py

    with h5py.File(path, "r") as f:
        assert f["frames"][:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
        assert f["g/x"][:].tolist() == [1, 2, 5] and f["g/nevents"][:].tolist() == [2, 1]


def test_a_write_far_ahead_costs_no_memory_per_skipped_slot(tmp_path):
    from bgio.h5 import FrameWriter

    w = FrameWriter(tmp_path / "f.h5", "frames", (2, 2), "u1", on_missing="ignore")
    w.write_at(10**9, np.ones((2, 2), "u1"))  # a billion slots skipped: one range
    w.write_at(5, np.ones((2, 2), "u1"))
    assert len(w._holes) == 10**9 - 1 and 5 not in w._holes and 6 in w._holes
