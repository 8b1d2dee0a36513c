"""Regression tests of the Worker core issue (to be folded into their module files)."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import weakref

import pytest

import bgio

FAST = bgio.BackgroundIOPriority(0, 64 * 1024, 100)


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


@pytest.mark.slow
def test_writes_after_a_failure_cost_the_same_and_free_their_handles():
    class Full:
        mode = "wb"

        def write(self, data):
            raise OSError(28, "No space left on device")

    destination = Full()
    first = bgio.bgwrite(destination, b"x", priority=FAST)
    assert isinstance(first.exception(timeout=30), OSError)
    refs = []
    tracemalloc.start()
    try:
        timings = []
        for round_ in range(10):
            started = time.perf_counter()
            for _ in range(10_000):
                handle = bgio.bgwrite(destination, b"y", priority=FAST)
                if len(refs) < 1000:
                    refs.append(weakref.ref(handle))
            assert bgio.wait_all(timeout=60)
            timings.append(time.perf_counter() - started)
            if round_ == 1:
                base, _ = tracemalloc.get_traced_memory()
        error = handle.exception(timeout=30)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, bgio.ChainError)
    assert error.__cause__ is error.root_cause and isinstance(error.root_cause, OSError)
    assert error.predecessor is first  # the write that failed first, not the one before
    del handle, error
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0  # failed handles are freed
    assert current - base < 2 * 1024 * 1024  # memory flat over 80,000 more failing writes
    # O(1) each: the last rounds cost what the first did (a generous bound: this is no benchmark).
    assert min(timings[-3:]) < 5 * max(timings[:3])


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


def test_a_path_with_a_nul_byte_is_refused_in_the_caller(tmp_path):
    bad = str(tmp_path / "a\0b")
    with pytest.raises(ValueError, match="NUL"):
        bgio.bgwrite(bad, b"x")
    with pytest.raises(ValueError, match="NUL"):
        bgio.Writer(bad)
    with pytest.raises(ValueError, match="NUL"):
        bgio.open(bad, "wb")
    with pytest.raises(ValueError, match="NUL"):
        bgio.bgwrite(os.fsencode(bad), b"x")


@pytest.mark.parametrize("fd", [2**31, 2**63, -2])
def test_an_fd_beyond_a_c_int_is_refused_in_the_caller(fd):
    with pytest.raises(ValueError, match="file descriptor must be 0..2147483647"):
        bgio.bgwrite(fd, b"x")


@pytest.mark.parametrize("changes", [{"bandwidth_pct": 1e-300}, {"bandwidth_pct": 0.001},
                                     {"max_rate": 1e-300}, {"max_rate": 0.5}])
def test_pacing_that_cannot_be_honoured_is_refused_when_the_profile_is_made(changes):
    name = next(iter(changes))
    with pytest.raises(ValueError, match=name):
        bgio.PRESETS[4].replace(**changes)


def test_the_gentlest_profiles_still_write_and_cancel():
    slow = bgio.BackgroundIOPriority(0, 10, 0.01, max_rate=1.0)
    out = io.BytesIO()
    handle = bgio.bgwrite(out, b"a" * 100, priority=slow)
    assert handle.cancel()  # pending, or in the pause of ~10 s after its first chunk
    assert handle.wait(30) and handle.cancelled()
    assert out.getvalue() == b"a" * handle.bytes_written
