"""The keyword options: fsync, copy, and a Writer's bound on pending bytes."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 1000, 100)


def test_fsync_syncs_before_the_handle_completes(tmp_path, monkeypatch):
    calls: list[tuple[int, bool]] = []
    real = os.fdatasync
    handles: list[bgio.BackgroundWriteProcess] = []

    def spy(fd: int) -> None:
        calls.append((fd, handles[0].done()))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    with open(tmp_path / "f", "wb") as f:
        handles.append(bgio.bgwrite(f, b"durable" * 1000, fsync=True, priority=FAST))
        handles[0].result(timeout=30)
        assert calls == [(f.fileno(), False)]  # synced, and before done


def test_fsync_on_a_path_and_a_writer(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    bgio.bgwrite(tmp_path / "p", b"x" * 5000, fsync=True, priority=FAST).result(timeout=30)
    assert len(synced) == 1
    with bgio.Writer(tmp_path / "w", fsync=True, priority=FAST) as w:
        for _ in range(20):
            w.write(b"small")
        w.flush()
        assert len(synced) >= 2  # flush() returned: the writes so far are on disk
    assert (tmp_path / "w").read_bytes() == b"small" * 20


def test_without_fsync_nothing_is_synced(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fdatasync", lambda fd: pytest.fail("fdatasync called"))
    bgio.bgwrite(tmp_path / "p", b"x" * 5000, priority=FAST).result(timeout=30)


def test_fsync_needs_a_file_descriptor():
    with pytest.raises(ValueError, match="fsync=True needs a destination with a file descriptor"):
        bgio.bgwrite(io.BytesIO(), b"x", fsync=True)


def test_fsync_on_a_pipe_is_accepted_and_harmless():
    r, w = os.pipe()
    bgio.bgwrite(w, b"piped", fsync=True, priority=FAST).result(timeout=30)
    assert os.read(r, 100) == b"piped"
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("kind", ["bytearray", "numpy", "list", "generator"])
def test_copy_protects_a_buffer_changed_right_after_the_call(kind):
    rec = Recorder(gated=True)
    buf = bytearray(b"original")
    arr = np.frombuffer(buf, dtype=np.uint8)
    data = {"bytearray": buf, "numpy": arr, "list": [buf],
            "generator": (b for b in [buf])}[kind]
    handle = bgio.bgwrite(rec, data, copy=True, priority=FAST)
    buf[:] = b"CHANGED!"
    rec.gate.set()
    handle.result(timeout=30)
    assert rec.getvalue() == b"original"


def test_without_copy_the_buffer_is_read_in_place():
    rec = Recorder(gated=True)
    buf = bytearray(b"original")
    handle = bgio.bgwrite(rec, buf, priority=FAST)
    buf[:] = b"CHANGED!"
    rec.gate.set()
    handle.result(timeout=30)
    assert rec.getvalue() == b"CHANGED!"


# ---- bounded memory ----------------------------------------------------------------------


def test_writer_bound_blocks_times_out_and_raises_queue_full():
    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=FAST, max_pending_bytes=10)
    w.write(b"123456")
    assert w.pending_bytes == 6
    with pytest.raises(bgio.QueueFull, match="no room for 6"):
        w.write(b"abcdef", block=False)
    with pytest.raises(bgio.QueueFull, match="after 0.05 s"):
        w.write(b"abcdef", timeout=0.05)
    w.write(b"1234")  # exactly fits
    done = threading.Event()

    def blocked_writer() -> None:
        w.write(b"later")
        done.set()

    thread = threading.Thread(target=blocked_writer)
    thread.start()
    assert not done.wait(0.1)  # waits for room
    rec.gate.set()
    assert done.wait(10)
    thread.join()
    w.close()
    assert rec.getvalue() == b"1234561234later"
    assert w.pending_bytes == 0


def test_a_write_larger_than_the_bound_goes_alone():
    rec = Recorder()
    with bgio.Writer(rec, priority=FAST, max_pending_bytes=4) as w:
        w.write(b"much more than four bytes")
        w.write(b"!")
    assert rec.getvalue() == b"much more than four bytes!"


def test_the_bound_is_held_while_a_producer_outpaces_the_writer():
    pending_seen: list[int] = []

    class Slow(Recorder):
        def write(self, data):
            pending_seen.append(w.pending_bytes)
            return super().write(data)

    rec = Slow()
    w = bgio.Writer(rec, priority=bgio.BackgroundIOPriority(0, 100, 100, max_rate=200_000),
                    max_pending_bytes=1000)
    for i in range(100):
        w.write(bytes([i]) * 100)
    w.close()
    assert rec.getvalue() == b"".join(bytes([i]) * 100 for i in range(100))
    assert max(pending_seen) <= 1000


def test_closing_wakes_a_writer_waiting_for_room():
    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=FAST, max_pending_bytes=5, close_when_finished=True)
    w.write(b"12345")
    errors: list[BaseException] = []

    def blocked_writer() -> None:
        try:
            w.write(b"x")
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=blocked_writer)
    thread.start()
    closer = threading.Thread(target=w.close)
    closer.start()
    thread.join(10)
    assert errors and "closed bgio.Writer" in str(errors[0])
    rec.gate.set()
    closer.join(10)
    assert rec.closed and rec.getvalue() == b"12345"


def test_max_pending_bytes_is_checked():
    with pytest.raises(ValueError, match="max_pending_bytes"):
        bgio.Writer(io.BytesIO(), max_pending_bytes=0)
    with pytest.raises(TypeError, match="max_pending_bytes"):
        bgio.Writer(io.BytesIO(), max_pending_bytes="1M")
