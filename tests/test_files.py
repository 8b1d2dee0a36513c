"""bgio.open: a file object whose writes return at once."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from conftest import Recorder

import bgio


def test_binary_round_trip(tmp_path):
    path = tmp_path / "b.bin"
    blocks = [os.urandom(n) for n in (1, 4096, 100, 300_000, 7, 1 << 20)]
    with bgio.open(path, priority=1) as f:
        assert f.writable() and not f.readable() and not f.seekable()
        for block in blocks:
            assert f.write(block) == len(block)
        assert f.tell() == sum(map(len, blocks))
        f.write(np.arange(10, dtype=np.uint16))
    assert f.closed
    assert path.read_bytes() == b"".join(blocks) + np.arange(10, dtype=np.uint16).tobytes()


def test_many_small_writes(tmp_path):
    path = tmp_path / "small"
    with bgio.open(path) as f:
        for i in range(20_000):
            f.write(b"%05d\n" % i)
    assert path.read_bytes() == b"".join(b"%05d\n" % i for i in range(20_000))


def test_text_mode(tmp_path):
    path = tmp_path / "t.txt"
    with bgio.open(path, "w", encoding="utf-8") as f:
        assert isinstance(f, io.TextIOWrapper)
        for i in range(1000):
            f.write(f"línea {i}\n")
    assert path.read_text(encoding="utf-8") == "".join(f"línea {i}\n" for i in range(1000))
    with bgio.open(path, "a", encoding="latin-1", newline="\r\n") as f:
        f.write("fin\n")
    assert path.read_bytes().endswith(b"fin\r\n")


def test_write_copies_like_a_buffered_file(tmp_path):
    path = tmp_path / "c"
    buf = bytearray(b"first")
    big = bytearray(b"A" * 400_000)
    with bgio.open(path) as f:
        f.write(buf)
        buf[:] = b"XXXXX"  # a file's write() has taken what it was given
        f.write(big)
        big[:1] = b"Z"
    assert path.read_bytes() == b"first" + b"A" * 400_000


def test_background_error_is_raised_by_the_next_call():
    rec = Recorder(fail_after=10)
    f = bgio.open(rec)
    f.write(b"x" * 300_000)  # large: queued at once, and fails
    with pytest.raises(OSError, match="No space"):
        f.flush()
    with pytest.raises(OSError, match="No space"):
        f.write(b"more")
    with pytest.raises(OSError, match="No space"):
        f.close()
    assert f.closed and rec.closed


def test_closed_file_refuses_writes(tmp_path):
    f = bgio.open(tmp_path / "x")
    f.close()
    f.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        f.write(b"late")
    with pytest.raises(ValueError, match="closed"):
        f.tell()


def test_fd_and_file_object_destinations_are_closed_with_it(tmp_path):
    fd = os.open(tmp_path / "fd", os.O_WRONLY | os.O_CREAT)
    with bgio.open(fd) as f:
        f.write(b"via fd")
    assert (tmp_path / "fd").read_bytes() == b"via fd"
    with pytest.raises(OSError):
        os.fstat(fd)
    raw = open(tmp_path / "obj", "wb")  # noqa: SIM115 - closed by bgio's close()
    with bgio.open(raw) as f:
        f.write(b"via object")
    assert raw.closed and (tmp_path / "obj").read_bytes() == b"via object"


def test_atomic_open(tmp_path):
    path = tmp_path / "a"
    path.write_bytes(b"old")
    with bgio.open(path, atomic=True, fsync=True) as f:
        f.write(b"new content")
        f.flush()
        assert path.read_bytes() == b"old"
    assert path.read_bytes() == b"new content"


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("rb",), {}, ValueError, "mode must be one of"),
        (("w+",), {}, ValueError, "mode must be one of"),
        (("wb",), {"encoding": "utf-8"}, ValueError, "text mode only"),
    ],
)
def test_bad_arguments(tmp_path, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        bgio.open(tmp_path / "x", *args, **kwargs)


def test_text_destinations_and_non_path_modes_are_refused():
    with pytest.raises(TypeError, match="binary destination"):
        bgio.open(io.StringIO())
    with pytest.raises(ValueError, match="applies to paths only"):
        bgio.open(io.BytesIO(), "ab")


def test_no_fileno():
    f = bgio.open(io.BytesIO())
    with pytest.raises(io.UnsupportedOperation):
        f.fileno()
    f.close()


def test_bgio_open_from_several_threads_writes_every_byte_once_each_write_whole(tmp_path):
    path = tmp_path / "many.bin"
    records_per_thread, threads = 5000, 4

    def produce(f, me):
        for i in range(records_per_thread):
            # Sizes vary so writes straddle the 256 KiB gathering buffer.
            f.write(b"<%d:%05d:" % (me, i) + bytes([65 + me]) * (i % 377) + b">")

    with bgio.open(path, "wb", priority=1) as f:
        workers = [threading.Thread(target=produce, args=(f, me)) for me in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    data = path.read_bytes()
    expected = sum(len(b"<0:00000:>") + (i % 377) for i in range(records_per_thread)) * threads
    assert len(data) == expected
    records = data[1:-1].split(b"><")
    assert len(records) == records_per_thread * threads
    for me in range(threads):
        mine = [r for r in records if r.startswith(b"%d:" % me)]
        assert [int(r[2:7]) for r in mine] == list(range(records_per_thread))  # in order
        for record in mine:  # whole: its filler unbroken and of its length
            i = int(record[2:7])
            assert record[8:] == bytes([65 + me]) * (i % 377)


def test_a_write_while_another_thread_closes_is_refused_not_lost(tmp_path):
    from conftest import Recorder

    rec = Recorder(gated=True)
    f = bgio.open(rec, "wb", priority=1)
    f.write(b"x" * (512 * 1024))  # queued: the worker now waits on the gate
    assert rec.entered.wait(30)
    closer = threading.Thread(target=f.close)
    closer.start()
    closer.join(0.2)  # close() has begun, and must still be waiting for the write ahead
    assert closer.is_alive()
    with pytest.raises(ValueError, match="closed"):
        f.write(b"LATE")
    rec.gate.set()
    closer.join(30)
    assert not closer.is_alive() and f.closed
    assert rec.getvalue() == b"x" * (512 * 1024)


def test_small_writes_of_mutable_buffers_are_copied_and_counted(tmp_path):
    path = tmp_path / "small"
    buf = bytearray(b"abc")
    with bgio.open(path) as f:
        f.write(buf)
        f.write(memoryview(buf)[1:])
        buf[:] = b"XYZ"  # both writes took their bytes already
        f.write(memoryview(b"\x01\x02\x03\x04").cast("B", (2, 2)))  # counted as bytes
        assert f.tell() == 9
    assert path.read_bytes() == b"abcbc\x01\x02\x03\x04"


def test_small_writes_racing_close_are_written_or_refused_never_lost(tmp_path):
    # Small writes take no lock: each one that returns must be in the file,
    # in its thread's order, and each one refused must not be.
    path = tmp_path / "race.bin"
    f = bgio.open(path, "wb", priority=1)
    accepted: dict[int, list[int]] = {me: [] for me in range(3)}
    going = [threading.Event() for _ in range(3)]

    def produce(me):
        for i in range(1_000_000):
            if i == 5000:
                going[me].set()  # well under way: now close() may come
            try:
                f.write(b"<%d:%07d>" % (me, i))
            except ValueError as exc:
                assert "closed" in str(exc)
                return
            accepted[me].append(i)

    threads = [threading.Thread(target=produce, args=(me,)) for me in range(3)]
    for thread in threads:
        thread.start()
    for event in going:
        assert event.wait(60)
    f.close()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    records = path.read_bytes()[1:-1].split(b"><")
    for me, done in accepted.items():
        assert [int(r[2:]) for r in records if r.startswith(b"%d:" % me)] == done
    assert len(records) == sum(len(done) for done in accepted.values())


def test_flush_while_another_thread_closes_waits_and_raises_the_error():
    from conftest import Recorder

    rec = Recorder(fail_after=0, gated=True)
    f = bgio.open(rec, "wb", priority=1)
    f.write(b"x" * 100)
    errors: list[BaseException] = []

    def close():
        try:
            f.close()
        except OSError as exc:
            errors.append(exc)

    closer = threading.Thread(target=close)
    closer.start()
    assert rec.entered.wait(30)  # the close's write is under way
    threading.Timer(0.1, rec.gate.set).start()
    with pytest.raises(OSError, match="No space left"):
        f.flush()  # waits for what the close is writing, and says how it went
    closer.join(30)
    assert len(errors) == 1


def test_a_file_freed_with_its_write_pending_is_closed_without_a_deadlock(tmp_path):
    # The write's done-callback may hold the file's last reference: the file is then
    # freed in the worker thread, whose close must not wait for that worker.
    import gc
    import os as _os

    path = tmp_path / "freed.bin"
    data = _os.urandom(12 << 20)
    out = bgio.open(path, "wb", priority=1)
    out.write(data)
    del out
    gc.collect()
    assert bgio.wait_all(60)
    assert path.read_bytes() == data
