"""``close(wait=False)``: the writers' close for a GUI thread, which must not wait for the
backlog. It returns at once (no more writes accepted) with a handle that ends once
everything is stored and the file closed, and raises what ``close()`` would have."""

from __future__ import annotations

import logging
import os
import threading
import types

import h5py
import numpy as np
import pytest
from conftest import FifoReader, Recorder, gate_stores

import bgio
import bgio.h5

HANG = 60  # seconds: a bound that only catches hangs
FAST = bgio.PRESETS[1]


def test_a_writer_closes_in_the_background_and_its_handle_says_when():
    rec = Recorder(gated=True)
    writer = bgio.Writer(rec, priority=FAST, close_when_finished=True)
    writer.write(b"first ")
    writer.write(b"second")
    closing = writer.close(wait=False)
    assert isinstance(closing, bgio.BackgroundWriteProcess)
    assert not closing.done() and not rec.closed  # the writes are held: the close waits
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"too late")  # closed at the call, not when the handle ends
    assert writer.close(wait=False) is closing  # the same close
    rec.gate.set()
    assert closing.result(timeout=HANG) == 0
    assert rec.getvalue() == b"first second" and rec.closed
    assert writer.close() is None  # again: nothing to do, no error


def test_a_failed_write_fails_the_background_close_and_the_close_after(caplog):
    rec = Recorder(fail_after=4)
    writer = bgio.Writer(rec, priority=FAST)
    writer.write(b"12345678")
    with caplog.at_level(logging.ERROR, logger="bgio"):
        closing = writer.close(wait=False)
        with pytest.raises(OSError, match="No space left on device"):
            closing.result(timeout=HANG)
    assert "in the background failed: OSError" in caplog.text
    with pytest.raises(OSError, match="No space left on device"):
        writer.close()  # waits for the background close and raises its error


def test_wait_and_timeout_are_checked_in_the_caller():
    writer = bgio.Writer(Recorder(), priority=FAST)
    with pytest.raises(TypeError, match="wait must be True or False, got 0"):
        writer.close(wait=0)
    with pytest.raises(ValueError, match="^timeout: close\\(wait=False\\) does not wait"):
        writer.close(1.0, wait=False)
    assert not writer.closed  # refused before anything was done
    writer.close()


def test_a_frame_writer_closes_in_the_background(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    path = tmp_path / "f.h5"
    frames = [np.full((64, 64), index, "<u2") for index in range(5)]
    writer = bgio.h5.FrameWriter(path, "frames", (64, 64), "<u2", priority=1)
    for frame in frames:
        writer.append(frame)
    closing = writer.close(wait=False)  # a GUI thread goes on
    assert not closing.done()
    with pytest.raises(ValueError, match="closed"):
        writer.append(frames[0])
    gate.set()
    assert closing.result(timeout=HANG) == 0
    writer.close()  # waits (nothing left) and returns
    with h5py.File(path, "r") as file:  # closed by the writer: readable here
        np.testing.assert_array_equal(file["frames"][...], np.stack(frames))


def test_frames_never_written_fail_the_background_close_as_close_does(tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", priority=1,
                                 on_missing="raise")
    writer.write_at(0, np.zeros((4, 4), "u1"))
    writer.write_at(2, np.ones((4, 4), "u1"))
    closing = writer.close(wait=False)
    with pytest.raises(ValueError, match="1"):
        closing.result(timeout=HANG)
    with pytest.raises(ValueError):
        writer.close()  # the same error, once the background close is done


def test_a_record_writer_closes_in_the_background(tmp_path):
    path = tmp_path / "r.h5"
    writer = bgio.h5.RecordWriter(path, "events", {"area": ((), "f4")}, priority=1)
    for index in range(3):
        writer.append(index, {"area": np.arange(index + 1, dtype="f4")})
    closing = writer.close(wait=False)
    assert closing.result(timeout=HANG) == 0
    with h5py.File(path, "r") as file:
        np.testing.assert_array_equal(file["events"]["area"][...],
                                      np.array([0, 0, 1, 0, 1, 2], "f4"))


def test_process_backend_writers_close_in_the_background(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    data = os.urandom(1 << 20)  # more than a pipe holds: the write waits for the reader
    writer = bgio.Writer(fifo, priority=1, backend="process")
    writer.write(data)
    closing = writer.close(wait=False)
    assert not closing.done()  # the writer process waits for the reader
    assert reader.data(timeout=HANG) == data
    assert closing.result(timeout=HANG) == 0
    path = tmp_path / "f.h5"
    frames = bgio.h5.FrameWriter(path, "frames", (8, 8), "<u2", priority=1, backend="process")
    for index in range(4):
        frames.append(np.full((8, 8), index, "<u2"))
    assert frames.close(wait=False).result(timeout=HANG) == 0
    assert frames.frames_written == 4
    with h5py.File(path, "r") as file:
        np.testing.assert_array_equal(file["frames"][:, 0, 0], [0, 1, 2, 3])


@pytest.mark.parametrize("backend", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_the_missing_frames_warning_points_at_the_call_of_close(tmp_path, backend):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", priority=1,
                                 backend=backend)
    writer.write_at(1, np.zeros((4, 4), "u1"))
    with pytest.warns(RuntimeWarning, match="never written") as caught:
        writer.close()
    assert caught[0].filename == __file__


def test_a_background_close_made_while_another_thread_closes_waits_for_that_close():
    rec = Recorder(gated=True)
    writer = bgio.Writer(rec, priority=FAST, close_when_finished=True)
    writer.write(b"held")
    closer = threading.Thread(target=writer.close)
    closer.start()
    assert rec.entered.wait(HANG)  # the first close's write is under way
    closing = writer.close(wait=False)  # the writer is closed already: by that thread
    assert not closing.done()  # not before the first close's writes are done
    rec.gate.set()
    assert closing.result(timeout=HANG) == 0
    closer.join(HANG)
    assert rec.getvalue() == b"held" and rec.closed


def test_a_background_close_after_a_failed_close_reports_its_error():
    writer = bgio.Writer(Recorder(fail_after=2), priority=FAST)
    writer.write(b"too long")
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert writer.close() is None  # a second close() raises nothing more, as ever
    with pytest.raises(OSError, match="No space left"):
        writer.close(wait=False).result(timeout=HANG)  # but a handle says how it went


def test_with_no_thread_to_be_had_the_background_close_is_done_here(monkeypatch):
    from bgio import closing as closing_module

    class NoThread:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(closing_module, "threading",
                        types.SimpleNamespace(Thread=NoThread, Lock=threading.Lock,
                                              Condition=threading.Condition))
    rec = Recorder()
    writer = bgio.Writer(rec, priority=FAST)
    writer.write(b"data")
    closing = writer.close(wait=False)
    monkeypatch.undo()
    assert closing.done() and closing.result() == 0  # (waited for here instead)
    writer.close(timeout=HANG)  # no handle left running for ever
    assert rec.getvalue() == b"data"


def test_a_close_that_refused_missing_frames_is_reported_by_a_later_background_close(tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", priority=1,
                                 on_missing="raise")
    writer.write_at(1, np.zeros((4, 4), "u1"))
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    writer.close()  # a second close raises nothing more
    with pytest.raises(ValueError, match="never written"):
        writer.close(wait=False).result(timeout=HANG)


def test_a_close_that_timed_out_leaves_the_rest_to_the_next(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (64, 64), "<u2", priority=1,
                                 chunk_frames=1, on_missing="raise")
    writer.write_at(1, np.ones((64, 64), "<u2"))
    with pytest.raises(TimeoutError, match="not stored after 0.05 s"):
        writer.close(timeout=0.05)
    gate.set()
    with pytest.raises(ValueError, match="never written"):  # the rest ran this time
        writer.close(timeout=HANG)
