"""Every destination kind byte-exact: fds, pipes (blocking or not), sockets, buffered writers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import bgio

FAST = bgio.BackgroundIOPriority(0, 64 * 1024, 100)
DATA = bytes(range(256)) * 4096  # 1 MiB, every byte value, position-dependent


def _slow_reader(fd: int, out: list[bytes], pause: float = 0.002, size: int = 16 * 1024,
                 stop_after: int | None = None) -> threading.Thread:
    """Read `fd` in small bites with pauses until EOF (a reader that lags behind)."""

    def run() -> None:
        got = 0
        while True:
            block = os.read(fd, size)
            if not block:
                break
            out.append(block)
            got += len(block)
            if stop_after is not None and got >= stop_after:
                break
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_int_fd_of_a_regular_file(tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    handle = bgio.bgwrite(fd, DATA, priority=FAST, close_when_finished=True)
    assert handle.result(timeout=30) == len(DATA)
    assert (tmp_path / "f").read_bytes() == DATA
    with pytest.raises(OSError):
        os.fstat(fd)  # closed as asked


@pytest.mark.parametrize("blocking", [True, False])
def test_pipe_with_a_slow_reader(blocking):
    r, w = os.pipe()
    os.set_blocking(w, blocking)
    got: list[bytes] = []
    reader = _slow_reader(r, got)
    with bgio.Writer(w, priority=FAST, close_when_finished=True) as writer:
        for start in range(0, len(DATA), 100_000):
            writer.write(memoryview(DATA)[start : start + 100_000])
    reader.join(30)
    os.close(r)
    assert b"".join(got) == DATA


def test_non_blocking_socketpair_with_a_pausing_reader():
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []
    reader = _slow_reader(b.fileno(), got, pause=0.005, size=64 * 1024)
    handle = bgio.bgwrite(a, DATA, priority=FAST)
    assert handle.result(timeout=60) == len(DATA)
    a.shutdown(socket.SHUT_WR)
    reader.join(30)
    a.close()
    b.close()
    assert b"".join(got) == DATA


@pytest.mark.slow
def test_many_small_writes_to_a_non_blocking_socket_gather_and_stay_exact():
    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[bytes] = []
    reader = _slow_reader(b.fileno(), got, pause=0.001)
    blocks = [bytes([i % 251]) * 1000 for i in range(3000)]
    with bgio.Writer(a, priority=1) as writer:
        for block in blocks:
            writer.write(block)
    a.shutdown(socket.SHUT_WR)
    reader.join(30)
    a.close()
    b.close()
    assert b"".join(got) == b"".join(blocks)


def test_buffered_writer_over_a_non_blocking_pipe_loses_nothing():
    # BufferedWriter raises BlockingIOError with characters_written mid-chunk;
    # the write must resume exactly there.
    r, w = os.pipe()
    os.set_blocking(w, False)
    f = os.fdopen(w, "wb")
    got: list[bytes] = []
    reader = _slow_reader(r, got)
    handle = bgio.bgwrite_chunk(f, DATA, 300_000, close_when_finished=True, priority=1)
    assert handle.result(timeout=60) == len(DATA)
    reader.join(30)
    os.close(r)
    assert b"".join(got) == DATA


def test_reader_going_away_is_an_error_on_the_handle():
    r, w = os.pipe()
    got: list[bytes] = []
    reader = _slow_reader(r, got, stop_after=100_000)
    handle = bgio.bgwrite(w, DATA * 4, priority=FAST)
    reader.join(30)
    os.close(r)
    with pytest.raises(BrokenPipeError):
        handle.result(timeout=30)
    assert 100_000 <= handle.bytes_written < len(DATA) * 4
    os.close(w)


def test_reset_socket_is_an_error_on_the_handle():
    a, b = socket.socketpair()
    b.close()
    handle = bgio.bgwrite(a, DATA, priority=FAST)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        handle.result(timeout=30)
    a.close()


def test_cancel_while_waiting_for_a_stuck_reader(destination_waits):
    waiting = destination_waits
    r, w = os.pipe()
    os.set_blocking(w, False)
    handle = bgio.bgwrite(w, DATA, priority=FAST)
    assert waiting.wait(10)  # the pipe (64 KiB) is full; the worker waits in poll()
    assert handle.running()
    assert handle.cancel()
    assert handle.wait(timeout=10)
    assert handle.cancelled()
    os.set_blocking(r, False)
    drained = b""
    while True:
        try:
            block = os.read(r, 1 << 20)
        except BlockingIOError:
            break
        drained += block
    assert drained == DATA[: handle.bytes_written]  # exactly what was taken, no more
    os.close(r)
    os.close(w)


def test_waiting_for_a_slow_reader_is_not_busy_time():
    # Paced at 50 %: if the time blocked on the reader counted as writing, the
    # worker would add as much sleep again and report a 50 % duty cycle.
    r, w = os.pipe()
    os.set_blocking(w, False)
    got: list[bytes] = []
    reader = _slow_reader(r, got, pause=0.01, size=64 * 1024)
    handle = bgio.bgwrite(w, DATA, priority=bgio.BackgroundIOPriority(0, 64 * 1024, 50))
    handle.result(timeout=60)
    os.close(w)
    reader.join(30)
    os.close(r)
    assert b"".join(got) == DATA
    assert handle.duty_cycle < 0.3


def test_fd_and_socket_checks_happen_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match=r"file descriptor must be 0\.\.2147483647, got -1"):
        bgio.bgwrite(-1, b"x")
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(ValueError, match=f"file descriptor {w} is not open"):
        bgio.bgwrite(w, b"x")
    with pytest.raises(ValueError, match=f"file descriptor {r} is not open for writing"):
        bgio.bgwrite(r, b"x")
    os.close(r)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with pytest.raises(ValueError, match="must be a stream socket"):
        bgio.bgwrite(s, b"x")
    s.close()
    with pytest.raises(ValueError, match="closed socket"):
        bgio.bgwrite(s, b"x")
    with pytest.raises(TypeError, match="str cannot be written"):
        bgio.bgwrite(1, "text")


@pytest.mark.slow
def test_subprocess_stdin_with_a_slow_reader(tmp_path):
    # A real consumer process that reads slowly; Popen.stdin is a BufferedWriter on a pipe.
    out = tmp_path / "received"
    reader = (
        "import sys, time\n"
        f"with open({str(out)!r}, 'wb') as f:\n"
        "    while True:\n"
        "        block = sys.stdin.buffer.read1(32768)\n"
        "        if not block:\n"
        "            break\n"
        "        f.write(block)\n"
        "        time.sleep(0.001)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", reader], stdin=subprocess.PIPE)
    with bgio.Writer(proc.stdin, priority=4, close_when_finished=True) as writer:
        for start in range(0, len(DATA), 50_000):
            writer.write(DATA[start : start + 50_000])
        for i in range(2000):
            writer.write(b"%04d" % i)
    assert proc.wait(timeout=60) == 0
    assert out.read_bytes() == DATA + b"".join(b"%04d" % i for i in range(2000))


def test_fsync_on_a_pipe_is_accepted_and_harmless():
    r, w = os.pipe()
    bgio.bgwrite(w, b"piped", fsync=True, priority=FAST).result(timeout=30)
    assert os.read(r, 100) == b"piped"
    os.close(r)
    os.close(w)


def test_raw_file_object(tmp_path):
    with open(tmp_path / "raw", "wb", buffering=0) as raw:
        bgio.bgwrite(raw, DATA, priority=FAST).result(timeout=30)
        with bgio.Writer(raw, priority=1) as writer:
            for i in range(500):
                writer.write(b"%03d" % i)
    assert (tmp_path / "raw").read_bytes() == DATA + b"".join(b"%03d" % i for i in range(500))


def test_after_a_failure_on_an_fd_a_writer_stays_failed_and_a_new_pipe_is_fine():
    r, w = os.pipe()
    os.close(r)
    writer = bgio.Writer(w, priority=FAST)
    with pytest.raises(BrokenPipeError):
        writer.write(b"x").result(timeout=30)
    assert bgio.wait_all(timeout=30)  # the fd's queue is idle and forgotten
    with pytest.raises(bgio.ChainError, match="BrokenPipeError"):
        writer.write(b"y").result(timeout=30)
    with pytest.raises(BrokenPipeError):
        writer.close()
    os.close(w)
    r2, w2 = os.pipe()  # may well reuse the same fd numbers: another file all the same
    try:
        assert bgio.bgwrite(w2, b"fresh", priority=FAST).result(timeout=30) == 5
        assert os.read(r2, 10) == b"fresh"
    finally:
        os.close(r2)
        os.close(w2)


_EFBIG = textwrap.dedent("""
    import resource, signal, sys
    import bgio
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    with open(sys.argv[1], "wb") as f:
        handle = bgio.bgwrite(f, b"z" * (3 << 20), priority=1)
        error = handle.exception(timeout=60)
        print(type(error).__name__, handle.bytes_written)
""")


@pytest.mark.slow
def test_bytes_written_after_a_refused_buffered_write_is_what_reached_the_file(tmp_path):
    path = tmp_path / "limited.bin"
    out = subprocess.run([sys.executable, "-c", _EFBIG, str(path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    assert out[0] == "OSError"
    assert int(out[1]) == path.stat().st_size == 1 << 20


def test_bytes_written_after_a_broken_pipe_is_what_the_pipe_took():
    r, w = os.pipe()
    received = bytearray()

    def read_some_then_close():
        while len(received) < 1 << 20:
            received.extend(os.read(r, 65536))
        os.close(r)

    reader = threading.Thread(target=read_some_then_close)
    reader.start()
    with open(w, "wb") as f:
        handle = bgio.bgwrite(f, b"p" * (8 << 20), priority=1)
        error = handle.exception(timeout=60)
        reader.join(30)
        assert isinstance(error, BrokenPipeError)
        pipe_size = 1 << 20  # the most a pipe holds unread (64 KiB by default)
        assert len(received) <= handle.bytes_written <= len(received) + pipe_size
        assert 0 < handle.bytes_written < 8 << 20
        try:
            f.close()
        except BrokenPipeError:
            pass


def test_bytes_written_after_a_full_disk_is_what_reached_it():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "wb") as f:
        handle = bgio.bgwrite(f, b"q" * (1 << 20), priority=1)
        assert isinstance(handle.exception(timeout=30), OSError)
        assert handle.bytes_written == 0
        try:
            f.close()
        except OSError:
            pass


@pytest.mark.parametrize("fd", [2**31, 2**63, -2])
def test_an_fd_beyond_a_c_int_is_refused_in_the_caller(fd):
    with pytest.raises(ValueError, match="file descriptor must be 0..2147483647"):
        bgio.bgwrite(fd, b"x")


def test_a_file_closed_by_the_program_mid_write_is_not_written_through_a_reused_fd(tmp_path):
    f = open(tmp_path / "a.bin", "wb")  # noqa: SIM115 - the test closes it midway
    gate, first_out = threading.Event(), threading.Event()

    def chunks():
        yield b"A" * 4096
        first_out.set()  # asked for the next chunk: the first one is written
        gate.wait(30)
        yield b"A" * 4096

    handle = bgio.bgwrite(f, chunks(), priority=FAST)
    assert first_out.wait(30)
    f.close()
    other = open(tmp_path / "unrelated.log", "wb")  # noqa: SIM115 - likely the same fd number
    gate.set()
    error = handle.exception(timeout=30)
    other.close()
    assert isinstance(error, ValueError) and "closed" in str(error)
    assert handle.bytes_written == 4096 == (tmp_path / "a.bin").stat().st_size
    assert (tmp_path / "unrelated.log").read_bytes() == b""


def test_a_writer_on_a_plain_file_keeps_the_programs_own_writes_in_order(tmp_path):
    path = tmp_path / "log"
    with open(path, "wb") as f:
        writer = bgio.Writer(f, priority=FAST)
        writer.write(b"record1\n").result(timeout=30)
        f.write(b"---\n")
        writer.write(b"record2\n").result(timeout=30)
        writer.close()
    assert path.read_bytes() == b"record1\n---\nrecord2\n"
