"""``bgio.FramePool``: frames in shared memory, taken by writes and given back when done."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import FifoReader

import bgio
from bgio.process import parent


def _pipe_reader(read_end: int, received: bytearray) -> threading.Thread:
    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    return threading.Thread(target=drain)


def test_frames_have_the_shape_and_dtype_and_come_back_after_their_write(tmp_path):
    pool = bgio.FramePool((3, 5), "uint16", count=2)
    assert (pool.count, pool.frame_shape, pool.dtype, pool.free) == (2, (3, 5),
                                                                       np.dtype("uint16"), 2)
    assert repr(pool) == "<bgio.FramePool 2 x (3, 5) uint16, 2 of 2 free>"
    frame = pool.acquire()
    assert frame.shape == (3, 5) and frame.dtype == np.uint16 and pool.free == 1
    frame[:] = np.arange(15, dtype=np.uint16).reshape(3, 5)
    expected = frame.tobytes()
    assert bgio.bgwrite(tmp_path / "thread.bin", frame).result(timeout=60) == 30
    assert pool.free == 2  # the write took it, and gave it back once done
    assert (tmp_path / "thread.bin").read_bytes() == expected


def test_other_data_is_written_as_ever_while_pools_exist(tmp_path):
    pool = bgio.FramePool(8, "uint8", count=1)
    text = io.StringIO()
    assert bgio.bgwrite(text, "text is no frame").result(timeout=60) == 16
    assert bgio.bgwrite(tmp_path / "b.bin", [b"ab", bytearray(b"cd"), np.ones(2, np.uint8)]
                        ).result(timeout=60) == 6
    assert text.getvalue() == "text is no frame" and pool.free == 1
    assert (tmp_path / "b.bin").read_bytes() == b"abcd\x01\x01"


def test_a_frame_goes_to_the_writer_process_as_a_reference(tmp_path, monkeypatch):
    pool = bgio.FramePool((512, 1024), "uint16", count=4)  # 1 MiB frames
    frames = []
    for number in range(4):
        frame = pool.acquire()
        frame[:] = number
        frames.append(frame)
    bgio.bgwrite(tmp_path / "warm.bin", b"start the writer process",
                 backend="process").result(timeout=60)
    sent = []
    send = parent._Backend._send
    monkeypatch.setattr(parent._Backend, "_send",
                        lambda self, message: (sent.append(message[0]), send(self, message)))
    with bgio.Writer(tmp_path / "frames.bin", priority=1, backend="process") as writer:
        handles = [writer.write(frame) for frame in frames]
    assert [handle.result() for handle in handles] == [1 << 20] * 4
    assert sent.count("shared") == 4 and "data" not in sent
    assert pool.free == 4
    content = np.fromfile(tmp_path / "frames.bin", dtype=np.uint16).reshape(4, 512, 1024)
    assert all((content[number] == number).all() for number in range(4))


def test_an_exhausted_pool_blocks_times_out_or_raises():
    pool = bgio.FramePool(1 << 20, "uint8", count=1)
    frame = pool.acquire()
    frame[:] = 7
    with pytest.raises(bgio.QueueFull, match="all 1 frames of the pool are in use"):
        pool.acquire(block=False)
    with pytest.raises(bgio.QueueFull, match="no frame of the pool came back after 0.01 s"):
        pool.acquire(timeout=0.01)
    # Taken by a write to a pipe nobody reads yet: it comes back once the write is done.
    read_end, write_end = os.pipe()
    received = bytearray()
    reader = _pipe_reader(read_end, received)
    handle = bgio.bgwrite(write_end, frame, close_when_finished=True, backend="process")
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(timeout=60)))
    waiter.start()
    assert not handle.done() and pool.free == 0
    reader.start()
    waiter.join(timeout=60)
    reader.join(timeout=60)
    os.close(read_end)
    assert handle.result() == 1 << 20 and bytes(received) == bytes([7]) * (1 << 20)
    assert len(got) == 1 and got[0].shape == (1 << 20,)


def test_release_and_the_context_manager_give_back_frames_never_written(tmp_path):
    pool = bgio.FramePool((4,), "float64", count=2)
    frame = pool.acquire()
    pool.release(frame)
    assert pool.free == 2
    with pytest.raises(ValueError, match="release: not a frame of this pool held"):
        pool.release(frame)
    with pytest.raises(ValueError, match="release: not a frame of this pool held"):
        pool.release(np.zeros(4))
    with pool.acquired() as held:
        assert pool.free == 1 and held.shape == (4,)
    assert pool.free == 2
    with pool.acquired() as written:
        written[:] = 1.5
        bgio.bgwrite(tmp_path / "w.bin", written).result(timeout=60)
        assert pool.free == 2  # back already: leaving the block does not free it twice
    assert pool.free == 2
    assert (tmp_path / "w.bin").read_bytes() == np.full(4, 1.5).tobytes()


def test_a_closed_pool_hands_out_nothing_and_wakes_its_waiters():
    with bgio.FramePool(16, "uint8", count=1) as pool:
        frame = pool.acquire()
        errors = []

        def wait() -> None:
            try:
                pool.acquire(timeout=60)
            except ValueError as exc:
                errors.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
    waiter.join(timeout=60)
    assert [str(error) for error in errors] == ["acquire from a closed bgio.FramePool"]
    assert frame.shape == (16,)  # its frames stay usable memory
    with pytest.raises(ValueError, match="closed"):
        pool.acquire(block=False)


@pytest.mark.parametrize(("arguments", "error", "match"), [
    (((0, 4), "uint8", 1), ValueError, "frame_shape must have dimensions >= 1"),
    ((2.5, "uint8", 1), TypeError, "frame_shape must be an int or a tuple of ints"),
    (((2,), "no such type", 1), TypeError, "dtype"),
    (((2,), object, 1), ValueError, "dtype must be a fixed-size type without objects"),
    (((2,), "uint8", 0), ValueError, "count must be >= 1"),
    (((2,), "uint8", 1.0), TypeError, "count must be an int"),
])
def test_arguments_are_checked(arguments, error, match):
    with pytest.raises(error, match=match):
        bgio.FramePool(*arguments)


def test_importing_bgio_does_not_import_numpy():
    # Programs that never write arrays do not pay for numpy's import (about 80 ms).
    code = "import sys, bgio; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"


def test_a_frame_given_back_cannot_be_written_again_until_acquired(tmp_path):
    pool = bgio.FramePool(8, "uint8", count=2)
    frame = pool.acquire()
    bgio.bgwrite(tmp_path / "once.bin", frame).result(timeout=60)
    with pytest.raises(ValueError, match="a frame of a bgio.FramePool that is not acquired"):
        bgio.bgwrite(tmp_path / "twice.bin", frame)
    assert pool.free == 2 and not (tmp_path / "twice.bin").exists()


def test_leaving_acquired_after_the_frame_came_back_frees_nothing_else(tmp_path):
    pool = bgio.FramePool(8, "uint8", count=1)
    with pool.acquired() as frame:
        bgio.bgwrite(tmp_path / "f.bin", frame).result(timeout=60)
        again = pool.acquire()  # the same frame, handed out anew
    assert pool.free == 0  # still held as `again`
    pool.release(again)
    assert pool.free == 1


def test_a_refused_write_does_not_take_the_frame(tmp_path):
    pool = bgio.FramePool(1024, "uint8", count=1)
    big = 1 << 20  # more than a pipe holds: the first write waits for the reader
    for backend in ("thread", "process"):
        path = tmp_path / f"{backend}.fifo"
        os.mkfifo(path)
        reader = FifoReader(path)
        writer = bgio.Writer(path, max_pending_bytes=big, backend=backend)
        writer.write(bytes(big))
        frame = pool.acquire()
        with pytest.raises(bgio.QueueFull):
            writer.write(frame, block=False)
        reader.go()
        writer.close(timeout=60)
        assert reader.data() == bytes(big)
        with pytest.raises(ValueError, match="write to a closed bgio.Writer"):
            writer.write(frame)
        pool.release(frame)  # still the program's
        assert pool.free == 1


def test_the_thread_frame_writer_gives_frames_back_once_copied_or_stored(tmp_path):
    import h5py

    import bgio.h5

    pool = bgio.FramePool((4, 6), "uint16", count=2)
    gathered = bgio.h5.FrameWriter(tmp_path / "a.h5", "x", (4, 6), "uint16", chunk_frames=4,
                                   on_missing="ignore")
    frame = pool.acquire()
    frame[...] = 3
    gathered.write_at(1, frame)
    assert pool.free == 2  # copied into the chunk being filled: free at once
    by_reference = bgio.h5.FrameWriter(tmp_path / "b.h5", "x", (4, 6), "uint16",
                                       chunk_frames=1, copy=False)
    frame = pool.acquire()
    frame[...] = 5
    by_reference.write_at(0, frame)
    # Stored from the pool's memory, then given back (both frames come back).
    taken = [pool.acquire(timeout=30), pool.acquire(timeout=30)]
    assert len(taken) == 2
    gathered.close()
    by_reference.close()
    with h5py.File(tmp_path / "a.h5") as file:
        assert (file["x"][1] == 3).all()
    with h5py.File(tmp_path / "b.h5") as file:
        assert (file["x"][0] == 5).all()
