"""The process backend (``backend="process"``): writes done by bgio's writer process."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from conftest import FifoReader

import bgio
from bgio.process import parent, ring

MIB = 1024 * 1024
SEGMENT = ring.SEGMENT
#: Slow enough that a test can act while the write is under way.
SLOW = bgio.PRESETS[1].replace(max_rate=20e6)


def _blocks_then_signal(count: int, size: int, after: int, seen: threading.Event):
    """A lazy iterable of ``count`` random blocks; ``seen`` is set when block ``after`` is
    asked for. Lazy data goes through the ring, whose segments come back only as the
    writer process writes them: asked for block ``after`` > ring.SEGMENTS, it has
    written at least one."""
    blocks = [os.urandom(size) for _ in range(count)]

    def generate():
        for number, block in enumerate(blocks):
            if number == after:
                seen.set()
            yield block

    return blocks, generate()


@pytest.mark.slow
def test_bytes_arrays_and_lists_are_written_byte_exact(tmp_path):
    data = os.urandom(3 * SEGMENT + 12345)
    array = np.arange(600_000, dtype=np.float64).reshape(1000, 600)
    parts = [os.urandom(size) for size in (1, 100, 300_000, 70_000, 5 * MIB + 3, 7)]
    handles = {
        "bytes.bin": bgio.bgwrite(tmp_path / "bytes.bin", data, backend="process"),
        "array.bin": bgio.bgwrite(tmp_path / "array.bin", array, backend="process"),
        "list.bin": bgio.bgwrite(tmp_path / "list.bin", parts, backend="process"),
        "empty.bin": bgio.bgwrite(tmp_path / "empty.bin", b"", backend="process"),
    }
    assert {name: handle.result(timeout=60) for name, handle in handles.items()} == {
        "bytes.bin": len(data), "array.bin": array.nbytes,
        "list.bin": sum(map(len, parts)), "empty.bin": 0}
    assert (tmp_path / "bytes.bin").read_bytes() == data
    assert (tmp_path / "array.bin").read_bytes() == array.tobytes()
    assert (tmp_path / "list.bin").read_bytes() == b"".join(parts)
    assert (tmp_path / "empty.bin").read_bytes() == b""
    assert all(handle.bytes_written == handle.total_bytes for handle in handles.values())


def test_wait_all_waits_for_the_writer_process_too(tmp_path):
    slow = bgio.PRESETS[1].replace(max_rate=20e6)
    handle = bgio.bgwrite(tmp_path / "w.bin", os.urandom(2 * MIB), backend="process",
                          priority=slow)
    assert bgio.wait_all(60) is True and handle.done()
    first = bgio.bgwrite(tmp_path / "w.bin", os.urandom(2 * MIB), backend="process",
                         priority=slow)
    after = bgio.bgwrite(tmp_path / "t.bin", b"then", chain_after=first)
    assert bgio.wait_all(60) is True
    assert first.done() and after.result() == 4


def test_a_lazy_iterable_goes_through_shared_memory(tmp_path):
    blocks = [os.urandom(size) for size in (10, SEGMENT + 1, 3 * MIB, 0, 5)]
    handle = bgio.bgwrite(tmp_path / "lazy.bin", iter(blocks), backend="process")
    assert handle.result(timeout=60) == sum(map(len, blocks))
    assert (tmp_path / "lazy.bin").read_bytes() == b"".join(blocks)


def test_writes_to_one_path_keep_call_order(tmp_path):
    path = tmp_path / "log.bin"
    parts = [bytes([number]) * (1000 + number) for number in range(60)]
    handles = [bgio.bgwrite(path, part, mode="ab" if number else "wb", backend="process")
               for number, part in enumerate(parts)]
    assert [handle.result(timeout=60) for handle in handles] == [len(part) for part in parts]
    assert path.read_bytes() == b"".join(parts)


def test_path_options_work_in_the_writer_process(tmp_path):
    path = tmp_path / "opts.bin"
    path.write_bytes(b"old")
    data = os.urandom(MIB + 5)
    handle = bgio.bgwrite(path, data, atomic=True, fsync=True, backend="process")
    assert handle.result(timeout=60) == len(data) and handle.bytes_on_disk == len(data)
    assert path.read_bytes() == data and os.listdir(tmp_path) == ["opts.bin"]
    chunked = bgio.bgwrite_chunk(path, b"tail", 2, mode="ab", backend="process")
    assert chunked.result(timeout=60) == 4 and path.read_bytes() == data + b"tail"


def test_destinations_that_cannot_cross_are_refused_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match="cannot write to BytesIO objects: they have no file "
                                         "descriptor"):
        bgio.bgwrite(io.BytesIO(), b"x", backend="process")
    with open(tmp_path / "f.txt", "w") as text, pytest.raises(
            ValueError, match="TextIOWrapper objects: a text stream encodes in this process; "
                              "write bytes to its .buffer"):
        bgio.bgwrite(text, b"x", backend="process")
    (tmp_path / "f.bin").write_bytes(b"")
    with open(tmp_path / "f.bin", "rb") as reading:
        with pytest.raises(ValueError, match="not writable"):
            bgio.bgwrite(reading, b"x", backend="process")
        with pytest.raises(ValueError, match="file descriptor .* is not open for writing"):
            bgio.bgwrite(reading.fileno(), b"x", backend="process")
    with open(tmp_path / "f.bin", "wb") as stream:
        for option, match in (({"mode": "ab"}, "mode applies to paths only"),
                              ({"atomic": True}, "atomic=True applies to paths only"),
                              ({"direct": True}, "direct=True applies to paths only")):
            with pytest.raises(ValueError, match=match):
                bgio.bgwrite(stream, b"x", backend="process", **option)
    ssl = pytest.importorskip("ssl")
    left, right = socket.socketpair()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with left, right, context.wrap_socket(
            left, server_hostname="localhost", do_handshake_on_connect=False) as wrapped, \
            pytest.raises(ValueError, match="SSLSocket objects: the encryption lives"):
        bgio.bgwrite(wrapped, b"x", backend="process")
    with pytest.raises(ValueError, match="backend must be 'thread' or 'process', got 'proc'"):
        bgio.bgwrite(tmp_path / "x", b"x", backend="proc")
    with pytest.raises(TypeError, match="backend must be 'thread' or 'process', got int"):
        bgio.bgwrite(tmp_path / "x", b"x", backend=1)
    with pytest.raises(ValueError, match="directory .* does not exist"):
        bgio.bgwrite(tmp_path / "missing" / "x", b"x", backend="process")
    with pytest.raises(TypeError, match="str cannot be written to a binary stream"):
        bgio.bgwrite(tmp_path / "x", "text", backend="process")
    assert not (tmp_path / "x").exists()


def test_a_descriptor_is_written_at_its_position_and_in_call_order(tmp_path):
    path = tmp_path / "fd.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"head")
        # A buffer read from this process's memory, one copied into the ring, a small one.
        blocks = [os.urandom(MIB), os.urandom(100_000), b"small"]
        handles = [bgio.bgwrite(fd, block, priority=1, backend="process") for block in blocks]
        assert [handle.result(timeout=60) for handle in handles] == [MIB, 100_000, 5]
        # The writer process wrote through the same open file: its position moved.
        assert os.lseek(fd, 0, os.SEEK_CUR) == 4 + MIB + 100_005
        os.write(fd, b"tail")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + b"".join(blocks) + b"tail"
    # Once the writes are done neither process holds a duplicate of the descriptor.
    for pid in (os.getpid(), parent._backend.process.pid):
        assert str(path) not in _open_files(pid)


def test_a_file_object_is_flushed_first_and_keeps_its_position(tmp_path):
    path = tmp_path / "stream.bin"
    data = os.urandom(3 * MIB)
    with open(path, "wb") as stream:
        stream.write(b"buffered, not yet flushed")
        assert bgio.bgwrite(stream, data, backend="process").result(timeout=60) == len(data)
        assert stream.tell() == 25 + len(data)
        stream.write(b"end")
    assert path.read_bytes() == b"buffered, not yet flushed" + data + b"end"


def test_close_when_finished_closes_the_callers_object(tmp_path):
    stream = open(tmp_path / "closed.bin", "wb")  # noqa: SIM115 - bgio closes it
    handle = bgio.bgwrite(stream, b"abc", close_when_finished=True, backend="process")
    assert handle.result(timeout=60) == 3 and stream.closed
    fd = os.open(tmp_path / "closed-fd.bin", os.O_WRONLY | os.O_CREAT)
    handle = bgio.bgwrite(fd, b"defg", close_when_finished=True, backend="process")
    assert handle.result(timeout=60) == 4
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert (tmp_path / "closed.bin").read_bytes() == b"abc"
    assert (tmp_path / "closed-fd.bin").read_bytes() == b"defg"


def test_pipes_and_sockets_are_written_through_their_descriptors():
    data = os.urandom(3 * MIB)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the writer process waits for the reader, no polling
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    handle = bgio.bgwrite(write_end, data, close_when_finished=True, backend="process")
    assert handle.result(timeout=60) == len(data)
    reader.join(timeout=60)
    os.close(read_end)
    assert bytes(received) == data
    left, right = socket.socketpair()
    with left, right:
        assert bgio.bgwrite(left, b"over a socket", backend="process").result(timeout=60) == 13
        assert right.recv(100) == b"over a socket"


def test_an_error_in_the_writer_process_reaches_result_and_the_log(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="bgio")
    path = tmp_path / "exists.bin"
    path.write_bytes(b"keep")
    handle = bgio.bgwrite(path, b"new", mode="xb", backend="process")
    with pytest.raises(FileExistsError, match="File exists") as caught:
        handle.result(timeout=60)
    assert caught.value.filename == str(path)
    assert path.read_bytes() == b"keep" and handle.bytes_written == 0
    assert f"writer process: background write to {path} failed" in caplog.text


class ProgramError(Exception):
    """An exception of the program's own, which the writer process cannot import."""


def test_relative_paths_are_the_callers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bgio.bgwrite("first.bin", b"1", backend="process").result(timeout=60)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    bgio.bgwrite("second.bin", b"2", backend="process").result(timeout=60)
    assert (tmp_path / "first.bin").read_bytes() == b"1"
    assert (tmp_path / "elsewhere" / "second.bin").read_bytes() == b"2"


def test_an_iterable_that_raises_fails_the_write_after_what_it_gave(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="bgio")

    def blocks():
        for _ in range(5):
            yield b"x" * 1000
        raise ProgramError("the camera went away")

    path = tmp_path / "partial.bin"
    handle = bgio.bgwrite(path, blocks(), backend="process")
    with pytest.raises(ProgramError, match="the camera went away"):
        handle.result(timeout=60)
    assert handle.bytes_written == 5000 and path.read_bytes() == b"x" * 5000
    assert "the camera went away" in caplog.text
    after = bgio.bgwrite(tmp_path / "next.bin", b"y", chain_after=handle, backend="process")
    with pytest.raises(bgio.ChainError, match="ProgramError: the camera went away"):
        after.result(timeout=60)


def test_a_program_exception_crosses_as_a_description(tmp_path):
    class Failing:
        def write(self, data):
            raise ProgramError("disk on fire")

    failed = bgio.bgwrite(Failing(), b"data")
    after = bgio.bgwrite(tmp_path / "after.bin", b"data", chain_after=failed, backend="process")
    with pytest.raises(bgio.ChainError, match="ProgramError: disk on fire"):
        after.result(timeout=60)
    # The writer process is still there for the next write.
    assert bgio.bgwrite(tmp_path / "ok.bin", b"ok", backend="process").result(timeout=60) == 2


@pytest.mark.slow
def test_a_cancelled_iterable_write_never_reports_success(tmp_path):
    for trial in range(30):
        seen = threading.Event()
        _, data = _blocks_then_signal(40, 64 * 1024, 1, seen)
        handle = bgio.bgwrite(tmp_path / f"c{trial}.bin", data, backend="process")
        seen.wait(60)
        handle.cancel()
        assert handle.wait(60)
        if not handle.cancelled() and handle.exception() is None:
            assert handle.result() == 40 * 64 * 1024  # finished before the cancel: all of it


def test_chains_cross_backends_both_ways(tmp_path):
    # A process write after a thread write that fails: ChainError, nothing written.
    (tmp_path / "taken.bin").write_bytes(b"x")
    failed = bgio.bgwrite(tmp_path / "taken.bin", b"y", mode="xb")
    after = bgio.bgwrite(tmp_path / "after.bin", b"data", chain_after=failed, backend="process")
    with pytest.raises(bgio.ChainError, match="chained after failed .*FileExistsError"):
        after.result(timeout=60)
    assert not (tmp_path / "after.bin").exists()
    # A thread write after a process write: it waits for it.
    first = bgio.bgwrite(tmp_path / "first.bin", os.urandom(4 * MIB), backend="process",
                         priority=SLOW)
    second = bgio.bgwrite(tmp_path / "second.bin", b"then", chain_after=first)
    assert second.result(timeout=60) == 4 and first.done() and first.result() == 4 * MIB
    # A process write after a process write that succeeded.
    third = bgio.bgwrite(tmp_path / "third.bin", b"3", chain_after=first, backend="process")
    assert third.result(timeout=60) == 1


@pytest.mark.slow
def test_a_cancel_stops_the_write_where_it_stands(tmp_path):
    seen = threading.Event()
    count = ring.SEGMENTS + 4
    blocks, data = _blocks_then_signal(count, SEGMENT, ring.SEGMENTS + 2, seen)
    path = tmp_path / "cancelled.bin"
    handle = bgio.bgwrite(path, data, backend="process", priority=SLOW)
    assert seen.wait(60)
    assert handle.cancel() is True
    assert handle.wait(60) and handle.cancelled()
    written = handle.bytes_written
    assert 0 < written < count * SEGMENT
    assert path.read_bytes() == b"".join(blocks)[:written]


@pytest.mark.slow
def test_a_write_cancelled_before_it_starts_writes_nothing(tmp_path):
    seen = threading.Event()
    _, data = _blocks_then_signal(ring.SEGMENTS + 3, SEGMENT, ring.SEGMENTS + 1, seen)
    first = bgio.bgwrite(tmp_path / "busy.bin", data, backend="process", priority=SLOW)
    queued = bgio.bgwrite(tmp_path / "queued.bin", b"never", backend="process")
    assert queued.cancel() is True and queued.cancelled()
    assert seen.wait(60)
    first.cancel()
    first.wait(60)
    later = bgio.bgwrite(tmp_path / "later.bin", b"ok", chain_after=queued, backend="process")
    with pytest.raises(bgio.ChainError):
        later.result(timeout=60)
    assert not (tmp_path / "queued.bin").exists()


@pytest.mark.slow
def test_the_writer_process_dying_fails_its_writes_and_the_next_one_starts_anew(tmp_path):
    seen = threading.Event()
    blocks, data = _blocks_then_signal(ring.SEGMENTS + 6, SEGMENT, ring.SEGMENTS + 2, seen)
    path = tmp_path / "killed.bin"
    handle = bgio.bgwrite(path, data, backend="process", priority=SLOW)
    queued = bgio.bgwrite(tmp_path / "queued.bin", b"q", backend="process")
    assert seen.wait(60)
    pid = parent._backend.process.pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(bgio.BgioError, match=rf"writer process \(pid {pid}\) ended \(killed "
                                             r"by signal 9\) before this write to .* ended; "
                                             r"\d+ bytes of it were written"):
        handle.result(timeout=60)
    with pytest.raises(bgio.BgioError, match="ended"):
        queued.result(timeout=60)
    # Nothing is reported written that was not.
    assert handle.bytes_written <= os.path.getsize(path)
    assert path.read_bytes()[:handle.bytes_written] == b"".join(blocks)[:handle.bytes_written]
    again = bgio.bgwrite(tmp_path / "again.bin", b"again", backend="process")
    assert again.result(timeout=60) == 5
    assert parent._backend.process.pid != pid


def _open_files(pid: int) -> set[str]:
    """What the process's descriptors point at."""
    names = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # the listing's own descriptor
            pass
    return names


def _run(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_writes_pending_at_exit_are_finished(tmp_path):
    path = tmp_path / "exit.bin"
    done = _run(f"""
        import bgio, os
        data = bytes(range(256)) * (256 * 1024)  # 64 MiB
        bgio.bgwrite({str(path)!r}, data, backend="process",
                     priority=bgio.PRESETS[1].replace(max_rate=200e6))
    """)
    assert done.returncode == 0, done.stderr
    assert path.read_bytes() == bytes(range(256)) * (256 * 1024)


@pytest.mark.slow
def test_a_forked_child_that_never_uses_bgio_does_not_hang(tmp_path):
    done = _run(f"""
        import bgio, os, sys
        bgio.bgwrite({str(tmp_path / "x.bin")!r}, b"x", backend="process").result()
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # an ordinary exit: atexit handlers, threads joined
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
    """, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "child 0" in done.stdout


@pytest.fixture
def process_by_default():
    previous = bgio.set_default_backend("process")
    yield
    bgio.set_default_backend(previous)


def test_the_default_backend_sends_paths_to_the_writer_process(tmp_path, process_by_default):
    import bgio.h5

    assert bgio.default_backend() == "process"
    path = tmp_path / "a.raw"
    bgio.bgwrite(path, b"by default", priority=1).result(timeout=60)
    assert path.read_bytes() == b"by default"
    with bgio.Writer(tmp_path / "w.raw") as writer:
        assert writer.backend == "process"
        writer.write(b"x")
    with bgio.h5.FrameWriter(tmp_path / "f.h5", "x", (2, 2), "u1") as frames:
        assert "backend='process'" in repr(frames)
    # Other destinations keep the threads, unless a call asks.
    out = io.BytesIO()
    bgio.bgwrite(out, b"here", priority=1).result(timeout=60)
    assert out.getvalue() == b"here"
    with bgio.Writer(tmp_path / "t.raw", backend="thread") as writer:
        assert writer.backend == "thread"

    class Mine(bgio.Writer):
        pass

    with Mine(tmp_path / "m.raw") as mine:
        assert mine.backend == "thread"


def test_the_default_backend_is_checked():
    with pytest.raises(ValueError, match="backend must be 'thread' or 'process', got 'disk'"):
        bgio.set_default_backend("disk")
    with pytest.raises(TypeError, match="backend must be 'thread' or 'process', got int"):
        bgio.set_default_backend(1)
    with pytest.raises(TypeError, match="backend must be 'thread' or 'process', got NoneType"):
        bgio.set_default_backend(None)
    assert bgio.default_backend() == "thread"


HANG = 60  # seconds: a bound that only catches hangs


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_write_cancelled_while_queued_fails_the_later_ones_to_its_destination(
        tmp_path, backend):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    data = os.urandom(MIB)  # more than the pipe holds: the first write waits for the reader
    first = bgio.bgwrite(fifo, data, backend=backend, priority=1)
    queued = bgio.bgwrite(fifo, b"never", backend=backend, priority=1)
    assert queued.cancel() is True
    later = bgio.bgwrite(fifo, b"after the cancelled one", backend=backend, priority=1)
    # Commands reach the writer process in order: once this one is done, so is the
    # queuing of every write above (and the first is still waiting for the reader).
    bgio.bgwrite(tmp_path / "probe.bin", b"p", backend=backend).result(timeout=HANG)
    got = reader.data(timeout=HANG)
    assert first.result(timeout=HANG) == MIB
    assert queued.cancelled()
    with pytest.raises(bgio.ChainError,
                       match="^not written: an earlier write to this destination was cancelled$"):
        later.result(timeout=HANG)
    assert bytes(got) == data  # nothing of the cancelled write, nor of the one after it


@pytest.mark.slow
def test_a_writer_process_whose_program_died_ends_even_with_a_write_stuck_in_the_kernel(
        tmp_path):
    import psutil

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # never opened for reading: a write to it waits in open() for ever
    done = _run(f"""
        import bgio, os
        from bgio.process import parent
        bgio.bgwrite({str(fifo)!r}, b"never read", backend="process")
        bgio.bgwrite({str(tmp_path / "probe.bin")!r}, b"p", backend="process").result(60)
        print(parent._backend.process.pid, flush=True)
        os._exit(0)  # the program dies: no exit drain, no goodbye to the writer process
    """)
    assert done.returncode == 0, done.stderr
    child = psutil.Process(int(done.stdout))
    # It cancels what it had, and gives up on the write blocked in open() after
    # ABANDONED_WAIT (10 s), rather than living on as an orphan.
    child.wait(timeout=60)  # psutil.TimeoutExpired if it lived on (its status: not ours)
    assert not child.is_running()
