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
    import bgio.batch

    def broken(*args, **kwargs):
        raise NameError("simulated bug")

    monkeypatch.setattr(bgio.batch, "_write_group", broken)
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
    from bgio.jobs import Job
    from bgio.source import Source

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
