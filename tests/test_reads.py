"""bgio.bgread: every source kind read byte-exact, into buffers, short sources, cancels, errors."""

from __future__ import annotations

import errno
import io
import itertools
import logging
import os
import socket
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

import bgio
from bgio import reads

DATA = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture
def small() -> bgio.BackgroundIOPriority:
    """Small chunks, no pacing: many reads per source."""
    return bgio.BackgroundIOPriority(0, 4096, 100)


@pytest.fixture
def data_file(tmp_path) -> str:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    return str(path)


def _feed(fd: int, data: bytes, pieces: int = 7, close: bool = True) -> threading.Thread:
    """Write ``data`` to ``fd`` from a thread, in ``pieces`` writes, then close it."""
    def run() -> None:
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            os.write(fd, data[start:start + step])
        if close:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- what is read, from each kind of source -------------------------------------------------


def test_a_path_is_read_whole_into_a_new_bytearray(data_file, small):
    handle = bgio.bgread(data_file, priority=small)
    got = handle.result(timeout=30)
    assert type(got) is bytearray and got == DATA
    assert (handle.bytes_read, handle.total_bytes) == (len(DATA), len(DATA))
    assert isinstance(handle, bgio.BackgroundRead) and handle.rate is not None


def test_an_empty_file_reads_as_an_empty_bytearray(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    assert bgio.bgread(tmp_path / "empty").result(timeout=30) == bytearray()


def test_a_slice_of_a_path_by_offset_and_size(data_file, small):
    got = bgio.bgread(data_file, 1000, offset=12_345, priority=small).result(timeout=30)
    assert got == DATA[12_345:13_345]


def test_reads_of_one_fd_run_in_call_order_from_its_position(data_file, small):
    fd = os.open(data_file, os.O_RDONLY)
    try:
        os.lseek(fd, 10, os.SEEK_SET)
        handles = [bgio.bgread(fd, 50_000, priority=small) for _ in range(5)]
        got = b"".join(handle.result(timeout=30) for handle in handles)
        assert got == DATA[10:250_010]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 250_010
    finally:
        os.close(fd)


def test_an_offset_on_an_fd_reads_there_and_leaves_its_position(data_file):
    fd = os.open(data_file, os.O_RDONLY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        assert bgio.bgread(fd, 100, offset=200).result(timeout=30) == DATA[200:300]
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7
    finally:
        os.close(fd)


@pytest.mark.parametrize("blocking", [True, False])
def test_a_pipe_is_read_to_its_end(small, blocking):
    r, w = os.pipe()
    os.set_blocking(r, blocking)
    feeder = _feed(w, DATA)
    got = bgio.bgread(r, priority=small, close_when_finished=True).result(timeout=30)
    feeder.join()
    assert got == DATA
    with pytest.raises(OSError):
        os.fstat(r)  # closed, as asked


def test_a_socket_is_read_to_its_end(small):
    mine, theirs = socket.socketpair()
    feeder = threading.Thread(target=lambda: (theirs.sendall(DATA), theirs.close()))
    feeder.start()
    with mine:
        got = bgio.bgread(mine, priority=small).result(timeout=30)
    feeder.join()
    assert got == DATA


def test_a_binary_file_object_and_a_bytesio(data_file, small):
    with open(data_file, "rb") as file:
        file.seek(100)
        assert bgio.bgread(file, priority=small).result(timeout=30) == DATA[100:]
    assert bgio.bgread(io.BytesIO(DATA), priority=small).result(timeout=30) == DATA


def test_a_buffered_pipe_gives_what_its_buffer_holds_and_stays_blocking(small):
    r, w = os.pipe()
    os.write(w, b"header\n" + DATA[:1000])
    stream = os.fdopen(r, "rb")
    assert stream.readline() == b"header\n"  # the rest now sits in the stream's buffer
    handle = bgio.bgread(stream, 1000, priority=small)
    assert handle.result(timeout=30) == DATA[:1000]  # (the pipe is empty, its writer open)
    assert os.get_blocking(r)
    os.close(w)
    stream.close()


def test_text_streams_read_as_str_a_split_character_too(tmp_path, small):
    text = "héllo wörld ✓\n" * 500
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8") as file:
        assert bgio.bgread(file, priority=small).result(timeout=30) == text
    r, w = os.pipe()
    encoded = "✓".encode() * 3
    os.write(w, encoded[:4])  # a character cut in two
    stream = os.fdopen(r, encoding="utf-8")
    handle = bgio.bgread(stream, 3)
    os.write(w, encoded[4:])
    assert handle.result(timeout=30) == "✓✓✓"
    os.close(w)
    stream.close()


@pytest.mark.parametrize("dtype", ["u1", "<u2", ">i4", "f8", "c8"])
def test_into_a_numpy_array_of_any_dtype(data_file, dtype):
    array = np.zeros((30, 10), dtype)
    handle = bgio.bgread(data_file, into=array, offset=64)
    assert handle.result(timeout=30) == array.nbytes
    assert array.tobytes() == DATA[64:64 + array.nbytes]


def test_into_a_buffer_without_size_reads_what_it_holds_or_less(data_file, tmp_path):
    buffer = bytearray(1000)
    assert bgio.bgread(data_file, into=buffer).result(timeout=30) == 1000
    assert buffer == DATA[:1000]
    (tmp_path / "short").write_bytes(b"abc")
    view = memoryview(bytearray(10))
    assert bgio.bgread(tmp_path / "short", into=view[2:]).result(timeout=30) == 3
    assert bytes(view) == b"\0\0abc" + b"\0" * 5


# -- the end of the source, cancels, errors --------------------------------------------------


def test_a_source_shorter_than_size_is_a_short_read_with_the_data(data_file):
    handle = bgio.bgread(data_file, len(DATA) + 10)
    with pytest.raises(bgio.ShortRead, match=r"ended after 300000 of the 300010 bytes") as caught:
        handle.result(timeout=30)
    assert isinstance(caught.value, EOFError)
    assert (caught.value.bytes_read, caught.value.expected) == (len(DATA), len(DATA) + 10)
    assert caught.value.data == DATA and handle.bytes_read == len(DATA)
    buffer = np.zeros(len(DATA) + 5, "u1")
    with pytest.raises(bgio.ShortRead) as caught:
        bgio.bgread(data_file, len(DATA) + 5, into=buffer).result(timeout=30)
    assert bytes(caught.value.data) == DATA


def test_a_pipe_that_ends_early_is_a_short_read():
    r, w = os.pipe()
    _feed(w, b"abc", pieces=1).join()
    with pytest.raises(bgio.ShortRead, match="ended after 3 of the 10 bytes"):
        bgio.bgread(r, 10, close_when_finished=True).result(timeout=30)


def test_cancel_stops_a_read_waiting_on_a_stalled_pipe(destination_waits):
    r, w = os.pipe()
    os.write(w, b"abc")
    handle = bgio.bgread(r, 100)
    three = threading.Event()
    handle.add_progress_callback(lambda record: record.done == 3 and three.set(), interval=0)
    assert three.wait(30) and destination_waits.wait(30)  # (had the 3 bytes, waits for more)
    assert handle.cancel()
    with pytest.raises(CancelledError, match="read cancelled after 3 bytes"):
        handle.result(timeout=30)
    assert handle.cancelled() and handle.bytes_read == 3
    os.close(w)
    os.close(r)


def test_cancel_cuts_a_pacing_pause_short(data_file, monkeypatch):
    paused = threading.Event()
    real = reads.pause_cancellably

    def pause(*args):
        paused.set()
        return real(*args)

    monkeypatch.setattr(reads, "pause_cancellably", pause)
    slow = bgio.BackgroundIOPriority(0, 1000, 100, max_rate=1000)  # a pause of ~1 s a chunk
    handle = bgio.bgread(data_file, priority=slow)
    assert paused.wait(30)
    handle.cancel()
    with pytest.raises(CancelledError):
        handle.result(timeout=30)
    assert 0 < handle.bytes_read < len(DATA)


def test_errors_are_on_the_handle_named_and_logged(tmp_path, caplog):
    missing = tmp_path / "missing.bin"
    with caplog.at_level(logging.ERROR, logger="bgio"), \
            pytest.raises(FileNotFoundError) as caught:
        bgio.bgread(missing).result(timeout=30)
    assert caught.value.filename == str(missing)
    assert f"background read of {missing} failed" in caplog.text
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory: opened, but no read takes from it
    try:
        with pytest.raises(IsADirectoryError) as caught:
            bgio.bgread(fd).result(timeout=30)
    finally:
        os.close(fd)
    assert (caught.value.errno, caught.value.filename) == (errno.EISDIR, f"fd {fd}")


def test_drop_cache_advises_the_ranges_read(data_file, small, monkeypatch):
    advised = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, start, length, advice: advised.append((start, length, advice)))
    bgio.bgread(data_file, offset=1000, priority=small, drop_cache=True).result(timeout=30)
    assert {advice for _, _, advice in advised} == {os.POSIX_FADV_DONTNEED}
    covered = sorted((start, start + length) for start, length, _ in advised)
    assert covered[0][0] == 1000 and covered[-1][1] == len(DATA)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_progress_callbacks_hear_of_every_chunk(data_file, small):
    records = []
    finished = threading.Event()
    handle = bgio.bgread(data_file, priority=small)

    def note(record) -> None:
        records.append(record)
        if record.finished:
            finished.set()

    handle.add_progress_callback(note, interval=0)
    assert finished.wait(30)
    assert records[-1].done == len(DATA) and records[-1].finished


def test_the_profiles_io_priority_is_set_on_the_reading_thread(data_file, monkeypatch):
    from bgio import ioprio

    asked = []
    monkeypatch.setattr(ioprio, "apply", asked.append)
    bgio.bgread(data_file, priority=10).result(timeout=30)
    assert asked == [bgio.PRESETS[10].io_priority]


# -- arguments checked in the caller --------------------------------------------------------


@pytest.mark.parametrize("source, error, message", [
    (1.5, TypeError, "source: expected a path, a file descriptor"),
    (True, TypeError, "got bool"),
    (-1, ValueError, "a file descriptor is >= 0"),
    ("", ValueError, "the path is empty"),
    (object(), TypeError, "got object"),
])
def test_bad_sources_raise_in_the_caller(source, error, message):
    with pytest.raises(error, match=message):
        bgio.bgread(source)


def test_bad_file_descriptors_raise_in_the_caller(data_file):
    unused = os.sysconf("SC_OPEN_MAX") - 1
    with pytest.raises(ValueError, match=f"source: fd {unused} is not open"):
        bgio.bgread(unused)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match=f"source: fd {w} is not open for reading"):
            bgio.bgread(w)
        with pytest.raises(ValueError, match=f"offset: fd {r} is not a regular file"):
            bgio.bgread(r, offset=0)
    finally:
        os.close(r)
        os.close(w)
    assert bgio.bgread(data_file, np.int64(3), offset=np.int64(2)).result(timeout=30) == DATA[2:5]


def test_bad_arguments_raise_in_the_caller(data_file, tmp_path):
    with pytest.raises(ValueError, match="size: must be >= 0"):
        bgio.bgread(data_file, -1)
    with pytest.raises(TypeError, match="size: expected an int"):
        bgio.bgread(data_file, 2.0)
    with pytest.raises(ValueError, match="offset: must be >= 0"):
        bgio.bgread(data_file, offset=-5)
    with pytest.raises(ValueError, match="offset: a file object is read from where it stands"):
        bgio.bgread(io.BytesIO(b"x"), offset=1)
    with pytest.raises(ValueError, match="size: 11 bytes do not fit in into= \\(10 bytes\\)"):
        bgio.bgread(data_file, 11, into=bytearray(10))
    with pytest.raises(TypeError, match="into: bytes is read-only"):
        bgio.bgread(data_file, into=b"abc")
    with pytest.raises(ValueError, match="into: the numpy array is not C-contiguous"):
        bgio.bgread(data_file, into=np.zeros((4, 4))[:, ::2])
    with pytest.raises(TypeError, match="into: a text stream"):
        bgio.bgread(io.StringIO("x"), into=bytearray(1))
    with pytest.raises(ValueError, match="chunk_size"):
        bgio.bgread(data_file, chunk_size=0)
    with pytest.raises(ValueError, match="priority must be 1..10"):
        bgio.bgread(data_file, priority=11)
    with open(data_file, "rb") as closed:
        pass
    with pytest.raises(ValueError, match="is closed"):
        bgio.bgread(closed)
    with open(tmp_path / "out", "wb") as out, pytest.raises(ValueError, match="not open for reading"):
        bgio.bgread(out)


def test_a_fifo_path_is_read_as_a_stream(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    handle = bgio.bgread(fifo)
    with open(fifo, "wb") as writer:  # (the read's open waits for a writer)
        writer.write(DATA[:5000])
    assert handle.result(timeout=30) == DATA[:5000]


def test_a_text_pipe_translates_newlines_as_open_does():
    r, w = os.pipe()
    _feed(w, b"a\r\nb\rc\n", pieces=1).join()
    with open(r, encoding="utf-8") as stream:
        assert bgio.bgread(stream).result(timeout=30) == "a\nb\nc\n"


def test_a_cancel_after_the_last_byte_lets_the_read_finish(data_file, small):
    handle = bgio.bgread(data_file, 1000, priority=small)
    handle.add_progress_callback(lambda record: record.done == 1000 and handle.cancel(),
                                 interval=0)
    assert handle.result(timeout=30) == DATA[:1000]


def test_text_like_and_socket_like_objects(tmp_path):
    import codecs
    import tempfile

    path = tmp_path / "text"
    path.write_text("héllo", encoding="utf-8")
    with codecs.open(str(path), encoding="utf-8") as stream:
        assert bgio.bgread(stream).result(timeout=30) == "héllo"
    with tempfile.SpooledTemporaryFile(mode="w+") as spooled:
        spooled.write("spooled")
        spooled.seek(0)
        assert bgio.bgread(spooled).result(timeout=30) == "spooled"

    class RecvOnly:
        def __init__(self, sock):
            self._sock = sock

        def recv(self, count):
            return self._sock.recv(count)

        def fileno(self):
            return self._sock.fileno()

    mine, theirs = socket.socketpair()
    theirs.sendall(b"hello")
    theirs.close()
    with mine:
        assert bgio.bgread(RecvOnly(mine)).result(timeout=30) == b"hello"
