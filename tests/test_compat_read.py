"""bgio.compat's readers: nonblock's nonblock_read, bgread and BackgroundReadData."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from bgio import compat

DATA = bytes(range(256)) * 800  # 204,800 bytes


def test_the_readers_are_importable_as_a_nonblock_program_imports_them():
    from bgio.compat import (
        BackgroundIOPriority,
        BackgroundReadData,
        bgread,
        bgwrite,
        nonblock_read,
    )

    assert all((BackgroundIOPriority, BackgroundReadData, bgread, bgwrite, nonblock_read))


# -- nonblock_read ---------------------------------------------------------------------------


def test_nonblock_read_a_pipe_nothing_then_data_then_the_end():
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stream:
        assert compat.nonblock_read(stream) == b""  # nothing yet: empty, not None
        os.write(w, b"abcdef")
        assert compat.nonblock_read(stream, limit=4) == b"abcd"
        assert compat.nonblock_read(stream) == b"ef"
        os.write(w, b"xyz")
        os.close(w)
        assert compat.nonblock_read(stream) == b"xyz"  # the rest: data first,
        assert compat.nonblock_read(stream) is None  # then None, the end
        assert os.get_blocking(r)  # (as it was)


def test_nonblock_read_sees_what_a_buffered_stream_holds_already():
    r, w = os.pipe()
    os.write(w, b"first line\nand the rest")
    with os.fdopen(r, "rb") as stream:
        assert stream.readline() == b"first line\n"  # the rest is in the stream's buffer
        assert compat.nonblock_read(stream) == b"and the rest"
    os.close(w)


def test_nonblock_read_a_text_pipe_keeps_a_cut_character_for_the_next_call():
    r, w = os.pipe()
    with os.fdopen(r, encoding="utf-8") as stream:
        encoded = "été".encode()
        os.write(w, encoded[:1])  # half of "é"
        assert compat.nonblock_read(stream) == ""  # (nothing whole yet, and not the end)
        os.write(w, encoded[1:4])  # the rest of "é", "t", half of the last "é"
        assert compat.nonblock_read(stream) == "ét"
        os.write(w, encoded[4:])
        os.close(w)
        assert compat.nonblock_read(stream) == "é"
        assert compat.nonblock_read(stream) is None


def test_nonblock_read_a_regular_file_and_a_bytesio(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(DATA)
    with open(path, "rb") as stream:
        assert compat.nonblock_read(stream, limit=10) == DATA[:10]
        assert compat.nonblock_read(stream) == DATA[10:]
        assert compat.nonblock_read(stream) is None
    stream = io.BytesIO(b"abc")
    assert (compat.nonblock_read(stream), compat.nonblock_read(stream)) == (b"abc", None)


def test_nonblock_read_a_socket():
    mine, theirs = socket.socketpair()
    with mine:
        assert compat.nonblock_read(mine) == b""
        theirs.sendall(b"hello")
        assert compat.nonblock_read(mine) == b"hello"
        theirs.close()
        assert compat.nonblock_read(mine) is None


def test_nonblock_read_force_mode_and_bad_streams():
    stream = io.BytesIO("héllo".encode())
    assert compat.nonblock_read(stream, forceMode="t") == "héllo"
    assert compat.nonblock_read(io.StringIO("abc"), forceMode="b") == b"abc"
    with pytest.raises(ValueError, match="Cannot determine how to read from provided stream"):
        compat.nonblock_read(object())


def test_nonblock_read_agrees_with_nonblock_on_a_pipe():
    nonblock = pytest.importorskip("nonblock")
    results = []
    for read in (nonblock.nonblock_read, compat.nonblock_read):
        r, w = os.pipe()
        with os.fdopen(r, "rb", buffering=0) as stream:
            steps = [read(stream)]
            os.write(w, b"some data")
            steps.append(read(stream))
            os.close(w)
            steps.append(read(stream))
        results.append(steps)
    assert results[0] == results[1] == [b"", b"some data", None]


# -- bgread ----------------------------------------------------------------------------------


def test_bgread_a_pipe_in_blocks_until_it_ends_then_closes_it():
    r, w = os.pipe()
    stream = os.fdopen(r, "rb")
    results = compat.bgread(stream, blockSizeLimit=10_000, pollTime=0)
    assert isinstance(results, compat.BackgroundReadData) and results.dataType is bytes

    def feed() -> None:
        for start in range(0, len(DATA), 30_000):
            os.write(w, DATA[start:start + 30_000])
        os.close(w)

    feeder = threading.Thread(target=feed)
    feeder.start()
    assert results.wait(30)
    feeder.join()
    assert results.data == DATA and results.isFinished and results.error is None
    assert all(0 < len(block) <= 10_000 for block in results.blocks)
    assert stream.closed


def test_bgread_keeps_the_stream_open_when_asked_and_reads_text_as_str(tmp_path):
    path = tmp_path / "text"
    path.write_text("line\n" * 1000)
    with open(path) as stream:
        results = compat.bgread(stream, closeStream=False)
        assert results.wait(30)
        assert results.data == "line\n" * 1000 and results.dataType is str
        assert all(isinstance(block, str) for block in results.blocks)
        assert results.isFinished and not stream.closed


def test_bgread_an_error_is_kept_and_the_read_is_not_finished():
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            raise OSError(5, "Input/output error")

    results = compat.bgread(Failing())
    assert results.wait(30)
    assert isinstance(results.error, OSError) and not results.isFinished
    assert results.blocks == []


@pytest.mark.slow  # (0.3 s)
def test_bgread_a_block_size_and_poll_time_cap_the_rate():
    # 2,000 bytes per 0.1 s: 20 kB/s, the older module's documented throughput bound.
    results = compat.bgread(io.BytesIO(DATA), blockSizeLimit=2000, pollTime=0.1)
    assert results.wait(0.3) is False  # 200 kB at 20 kB/s: far from done
    assert len(results.data) < 50_000
    results.handle.cancel()
    assert results.wait(30)
    assert not results.isFinished and 0 < len(results.data) < len(DATA)


@pytest.mark.parametrize("kwargs, message", [
    ({"pollTime": "soon"}, "Provided poll time must be a float."),
    ({"blockSizeLimit": 0}, 'Provided block size limit must be "None" for no limit'),
    ({"blockSizeLimit": "big"}, 'Provided block size limit must be "None" for no limit'),
    ({"pollTime": -1}, "pollTime must be a finite number >= 0"),
])
def test_bgread_bad_arguments_raise_the_older_modules_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compat.bgread(io.BytesIO(b"x"), **kwargs)
    with pytest.raises(ValueError, match='does not implement "read" or "recv"'):
        compat.bgread(object())


@pytest.mark.slow  # (a process)
@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip is not installed")
def test_a_nonblock_program_feeding_gzip_through_a_pipe_runs_on_bgio():
    # The program: bgwrite the compressed data to gzip's stdin, bgread its stdout.
    from bgio.compat import bgread, bgwrite

    process = subprocess.Popen(["gzip", "-dnc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writing = bgwrite(process.stdin, gzip.compress(DATA * 5), closeWhenFinished=True)
    results = bgread(process.stdout)
    assert results.wait(60)
    writing.join(60)
    assert process.wait(60) == 0
    assert results.isFinished and results.error is None
    assert results.data == DATA * 5


def test_nonblock_read_a_socket_with_a_timeout_waits_for_nothing():
    mine, theirs = socket.socketpair()
    mine.settimeout(5)
    with mine, theirs:
        started = time.perf_counter()
        assert compat.nonblock_read(mine) == b""
        theirs.sendall(b"important")
        assert compat.nonblock_read(mine) == b"important"
        with mine.makefile("rb") as stream:
            assert compat.nonblock_read(stream) == b""
        assert time.perf_counter() - started < 4  # (a wait for the timeout would be 5 s)


def test_nonblock_read_leaves_a_shared_socket_blocking():
    mine, theirs = socket.socketpair()
    with mine, theirs, mine.makefile("rb") as stream:
        compat.nonblock_read(stream)
        assert mine.getblocking() and os.get_blocking(mine.fileno())


def test_nonblock_read_a_text_pipe_translates_newlines_and_refuses_a_negative_limit():
    r, w = os.pipe()
    os.write(w, b"a\r\nb\rc\n")
    os.close(w)
    with os.fdopen(r, encoding="utf-8") as stream:
        with pytest.raises(ValueError, match="limit: expected None, 0"):
            compat.nonblock_read(stream, limit=-1)
        assert compat.nonblock_read(stream) == "a\nb\nc\n"
