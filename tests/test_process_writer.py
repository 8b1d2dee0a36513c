"""``bgio.Writer`` and ``bgio.open`` with ``backend="process"``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

import bgio
from bgio.process import parent
from bgio.process.writer import INLINE, ProcessWriter

MIB = 1024 * 1024
#: Slow enough that a test can act while a write is under way.
SLOW = bgio.PRESETS[1].replace(max_rate=20e6)


def test_a_process_writer_is_a_writer_and_writes_everything_in_call_order(tmp_path):
    path = tmp_path / "w.bin"
    # Inline (small), through the ring, read from this process's memory, an array, lazy.
    blocks = [b"tiny", os.urandom(INLINE), os.urandom(INLINE + 1), os.urandom(3 * MIB)]
    array = np.arange(100_000, dtype=np.uint32)
    lazy = [os.urandom(5000) for _ in range(7)]
    with bgio.Writer(path, priority=1, backend="process") as writer:
        assert isinstance(writer, bgio.Writer) and type(writer) is ProcessWriter
        assert repr(writer) == f"<bgio.Writer open file={str(path)!r} backend='process'>"
        assert writer.file is None and writer.kind == "bytes" and not writer.closed
        handles = [writer.write(block) for block in blocks]
        handles.append(writer.write(array))
        handles.append(writer.write(iter(lazy)))
        writer.flush()
        assert [handle.result() for handle in handles] == [
            len(block) for block in blocks] + [array.nbytes, 35_000]
        assert all(handle.bytes_written == handle.result() for handle in handles)
    assert writer.closed
    assert path.read_bytes() == b"".join(blocks) + array.tobytes() + b"".join(lazy)


def test_many_small_writes_arrive_whole_and_in_order(tmp_path):
    path = tmp_path / "small.bin"
    with bgio.Writer(path, backend="process") as writer:
        for number in range(2000):
            writer.write(b"%05d," % number)
    assert path.read_bytes() == b"".join(b"%05d," % number for number in range(2000))


def test_a_writer_on_a_descriptor_and_on_a_file_object(tmp_path):
    path = tmp_path / "fd.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"<")
        with bgio.Writer(fd, backend="process") as writer:
            assert writer.file == fd
            writer.write(b"small")
            writer.write(os.urandom(MIB))
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1 + 5 + MIB  # the shared position moved
        os.write(fd, b">")
    finally:
        os.close(fd)
    content = path.read_bytes()
    assert content[:6] == b"<small" and content[-1:] == b">" and len(content) == MIB + 7
    stream = open(tmp_path / "stream.bin", "wb")  # noqa: SIM115 - the Writer closes it
    stream.write(b"buffered ")
    with bgio.Writer(stream, close_when_finished=True, backend="process") as writer:
        writer.write(b"then written")
    assert stream.closed
    assert (tmp_path / "stream.bin").read_bytes() == b"buffered then written"


def test_a_failure_fails_the_later_writes_and_close_raises_it(tmp_path):
    path = tmp_path / "exists.bin"
    path.write_bytes(b"keep")
    writer = bgio.Writer(path, mode="xb", backend="process")
    first, second = writer.write(b"abc"), writer.write(os.urandom(MIB))
    with pytest.raises(FileExistsError, match="File exists"):
        writer.close(timeout=60)
    assert isinstance(first.exception(), FileExistsError)
    error = second.exception()
    assert isinstance(error, bgio.ChainError)
    assert isinstance(error.root_cause, FileExistsError)
    assert path.read_bytes() == b"keep"
    with pytest.raises(ValueError, match="write to a closed bgio.Writer"):
        writer.write(b"more")
    writer.close()  # again: nothing


def test_max_pending_bytes_bounds_what_is_accepted():
    # A pipe nobody reads yet: the first write cannot end until the test reads.
    read_end, write_end = os.pipe()
    first, second = os.urandom(3 * MIB), os.urandom(2 * MIB)
    received = bytearray()
    reader = threading.Thread(
        target=lambda: [received.extend(chunk) for chunk in iter(
            lambda: os.read(read_end, 1 << 16), b"")])
    with bgio.Writer(write_end, max_pending_bytes=4 * MIB, close_when_finished=True,
                     backend="process") as writer:
        writer.write(first)
        assert writer.pending_bytes == 3 * MIB
        with pytest.raises(bgio.QueueFull, match="3145728 bytes pending, bound 4194304: no "
                                                 "room for 2097152 bytes"):
            writer.write(second, block=False)
        with pytest.raises(bgio.QueueFull, match="no room for 2097152 bytes after 0.01 s"):
            writer.write(second, timeout=0.01)
        reader.start()
        writer.write(second)  # waits for room
    reader.join(timeout=60)
    os.close(read_end)
    assert writer.pending_bytes == 0
    assert bytes(received) == first + second


def test_arguments_are_checked_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match="backend must be 'thread' or 'process', got 'procs'"):
        bgio.Writer(tmp_path / "x", backend="procs")
    with pytest.raises(ValueError, match="cannot write to BytesIO objects"):
        bgio.Writer(io.BytesIO(), backend="process")
    with pytest.raises(ValueError, match="max_pending_bytes"):
        bgio.Writer(tmp_path / "x", max_pending_bytes=0, backend="process")
    with bgio.Writer(tmp_path / "x", backend="process") as writer, \
            pytest.raises(TypeError, match="str cannot be written to a binary stream"):
        writer.write("text")
    assert (tmp_path / "x").read_bytes() == b""


def test_bgio_open_in_text_and_binary_mode(tmp_path):
    with bgio.open(tmp_path / "log.txt", "w", encoding="utf-8", backend="process") as text:
        for number in range(1000):
            text.write(f"line {number} é\n")
    assert (tmp_path / "log.txt").read_text(encoding="utf-8") == "".join(
        f"line {number} é\n" for number in range(1000))
    data = os.urandom(5 * MIB)
    with bgio.open(tmp_path / "data.bin", "wb", priority=1, backend="process") as binary:
        for start in range(0, len(data), 100_000):
            binary.write(data[start:start + 100_000])
    assert (tmp_path / "data.bin").read_bytes() == data


@pytest.mark.slow
def test_a_writer_whose_writer_process_died_fails_and_stays_failed(tmp_path):
    writer = bgio.Writer(tmp_path / "dies.bin", SLOW, backend="process")
    under_way = writer.write(bytes(64 * MIB))
    first = writer.write(b"x")  # waits for the writer process, behind the first
    pid = parent._backend.process.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(bgio.BgioError, match=rf"writer process \(pid {pid}\) ended \(killed "
                                             r"by signal 9\)"):
        under_way.result(timeout=60)
    assert isinstance(first.exception(timeout=60), bgio.BgioError)
    later = writer.write(b"after")
    with pytest.raises(bgio.BgioError, match="this Writer's writes to .* cannot go on"):
        later.result(timeout=60)
    with pytest.raises(bgio.BgioError):
        writer.close(timeout=60)
    # A new Writer gets a new writer process.
    with bgio.Writer(tmp_path / "anew.bin", backend="process") as anew:
        anew.write(b"fine")
    assert (tmp_path / "anew.bin").read_bytes() == b"fine"


def test_a_write_cancelled_before_it_was_sent_fails_the_later_ones(tmp_path):
    path = tmp_path / "gap.bin"
    writer = bgio.Writer(path, SLOW, backend="process")
    first = writer.write(os.urandom(8 * MIB))  # paced: the others wait behind it
    cancelled = writer.write(b"B" * 1000)
    after = writer.write(b"C" * 1000)
    assert cancelled.cancel()
    with pytest.raises(bgio.ChainError, match="was cancelled"):
        after.result(timeout=60)
    with pytest.raises(CancelledError):
        writer.close(timeout=60)
    assert first.result() == 8 * MIB and path.stat().st_size == 8 * MIB  # nothing after a gap


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.slow
def test_what_is_left_open_or_written_late_is_written_at_exit(tmp_path):
    run = _run(f"""
        import atexit, threading, time, bgio
        unclosed = bgio.open({str(tmp_path / 'unclosed.bin')!r}, "wb", backend="process")
        unclosed.write(b"never closed")
        closed_late = bgio.open({str(tmp_path / 'atexit.bin')!r}, "wb", backend="process")
        closed_late.write(b"closed by atexit")
        atexit.register(closed_late.close)
        writer = bgio.Writer({str(tmp_path / 'thread.bin')!r}, backend="process")

        def late():
            time.sleep(0.3)  # the main thread has ended
            for number in range(10):
                writer.write(b"%d," % number)
            writer.close()
            bgio.bgwrite({str(tmp_path / 'last.bin')!r}, b"last", backend="process")

        threading.Thread(target=late).start()
    """)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "unclosed.bin").read_bytes() == b"never closed"
    assert (tmp_path / "atexit.bin").read_bytes() == b"closed by atexit"
    assert (tmp_path / "thread.bin").read_bytes() == b"".join(b"%d," % n for n in range(10))
    assert (tmp_path / "last.bin").read_bytes() == b"last"


@pytest.mark.slow
def test_a_writer_made_before_a_fork_refuses_to_write_in_the_child(tmp_path):
    run = _run(f"""
        import os, bgio
        writer = bgio.Writer({str(tmp_path / 'f.bin')!r}, backend="process")
        writer.write(b"parent,").result(timeout=60)
        pid = os.fork()
        if pid == 0:
            handle = writer.write(b"child,")
            error = handle.exception(timeout=10)
            os._exit(0 if isinstance(error, bgio.BgioError) and "forked" in str(error) else 3)
        _, status = os.waitpid(pid, 0)
        writer.write(b"parent again")
        writer.close()
        raise SystemExit(os.waitstatus_to_exitcode(status))
    """)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "f.bin").read_bytes() == b"parent,parent again"
