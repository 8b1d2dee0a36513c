"""Paths: opened by the worker, appended or truncated, and replaced atomically."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import bgio

FAST = bgio.BackgroundIOPriority(0, 1000, 100)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_path_is_written_and_closed(tmp_path):
    path = tmp_path / "out.bin"
    data = bytes(range(256)) * 100
    assert bgio.bgwrite(path, data, priority=FAST).result(timeout=30) == len(data)
    assert path.read_bytes() == data
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()
    bgio.bgwrite(str(path), b"new", priority=FAST).result(timeout=30)
    assert path.read_bytes() == b"new"  # truncated by default


def test_path_modes(tmp_path):
    path = tmp_path / "log"
    bgio.bgwrite(path, b"one,", priority=FAST).result(timeout=30)
    bgio.bgwrite(path, b"two", mode="ab", priority=FAST).result(timeout=30)
    assert path.read_bytes() == b"one,two"
    with pytest.raises(FileExistsError):
        bgio.bgwrite(path, b"x", mode="xb").result(timeout=30)
    assert path.read_bytes() == b"one,two"


def test_writes_to_one_path_keep_their_order(tmp_path):
    path = tmp_path / "ordered"
    handles = [bgio.bgwrite(path, b"%03d" % i, mode="ab", priority=FAST) for i in range(100)]
    for h in handles:
        h.result(timeout=30)
    assert path.read_bytes() == b"".join(b"%03d" % i for i in range(100))


def test_writer_on_a_path_opens_once_and_closes(tmp_path):
    path = tmp_path / "w"
    with bgio.Writer(path, priority=FAST) as w:
        for i in range(50):
            w.write(b"%02d" % i)
        assert w.file is None
    assert path.read_bytes() == b"".join(b"%02d" % i for i in range(50))


def test_two_writers_on_one_path_keep_their_own_files(tmp_path):
    path = tmp_path / "shared"
    appender = bgio.Writer(path, mode="ab", priority=FAST)
    replacer = bgio.Writer(path, atomic=True, priority=FAST)
    for i in (1, 2):
        appender.write(b"A%d " % i)
        replacer.write(b"B%d " % i)
    appender.close()
    assert path.read_bytes() == b"A1 A2 "
    replacer.close()
    assert path.read_bytes() == b"B1 B2 "


def test_opening_errors_land_on_the_handle(tmp_path):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running with permissions that ignore the mode (root)")
        handle = bgio.bgwrite(tmp_path / "ro" / "f", b"x")
        with pytest.raises(PermissionError):
            handle.result(timeout=30)
    finally:
        os.chmod(tmp_path / "ro", 0o700)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "rb"}, "mode must be one of wb, ab, xb"),
        ({"mode": "ab", "atomic": True}, "atomic=True replaces the whole file"),
    ],
)
def test_path_options_are_checked_in_the_caller(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bgio.bgwrite(tmp_path / "x", b"x", **kwargs)


def test_path_checks_happen_in_the_caller(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        bgio.bgwrite(tmp_path / "missing" / "x", b"x")
    with pytest.raises(ValueError, match="is a directory"):
        bgio.bgwrite(tmp_path, b"x")
    with pytest.raises(ValueError, match="empty path"):
        bgio.bgwrite("", b"x")
    with pytest.raises(TypeError, match="str cannot be written"):
        bgio.bgwrite(tmp_path / "t", "text")


def test_path_only_options_refused_elsewhere(tmp_path, recorder):
    with pytest.raises(ValueError, match="mode applies to paths only"):
        bgio.bgwrite(recorder, b"x", mode="ab")
    with pytest.raises(ValueError, match="atomic=True applies to paths only"):
        bgio.bgwrite(recorder, b"x", atomic=True)


# ---- atomic ---------------------------------------------------------------------------------


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".bgio-tmp"))


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    data = os.urandom(300_000)
    assert bgio.bgwrite(path, data, atomic=True, priority=FAST).result(timeout=30) == len(data)
    assert path.read_bytes() == data
    assert _leftovers(tmp_path) == []
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def test_atomic_write_failing_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old content")

    def blocks():
        yield b"new " * 1000
        raise RuntimeError("producer failed")

    handle = bgio.bgwrite(path, blocks(), atomic=True, priority=FAST)
    with pytest.raises(RuntimeError, match="producer failed"):
        handle.result(timeout=30)
    assert path.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


def test_atomic_writer_appears_only_on_close(tmp_path):
    path = tmp_path / "w.bin"
    w = bgio.Writer(path, atomic=True, priority=FAST)
    w.write(b"part one, ")
    w.flush()
    assert not path.exists()  # still under its temporary name
    w.write(b"part two")
    w.close()
    assert path.read_bytes() == b"part one, part two"
    assert _leftovers(tmp_path) == []


def test_cancelled_atomic_write_leaves_nothing(tmp_path, monkeypatch):
    from bgio.sinks.path import PathSink

    path = tmp_path / "c.bin"
    path.write_bytes(b"keep")
    written = threading.Event()  # the temporary file exists and has bytes
    real_write = PathSink.write

    def write(self, block):
        taken = real_write(self, block)
        written.set()
        return taken

    monkeypatch.setattr(PathSink, "write", write)
    slow = bgio.BackgroundIOPriority(0, 1000, 100, max_rate=20_000)  # 1 kB every 50 ms
    handle = bgio.bgwrite(path, b"x" * 100_000, atomic=True, priority=slow)
    assert written.wait(10)
    assert handle.cancel()
    handle.wait(timeout=30)
    assert handle.cancelled()
    assert path.read_bytes() == b"keep"
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_atomic_write_killed_midway_leaves_old_or_new_never_partial(tmp_path):
    path = tmp_path / "k.bin"
    path.write_bytes(b"old" * 1000)
    script = textwrap.dedent(f"""
        import sys, bgio
        from bgio.sinks.path import PathSink
        real_write, told = PathSink.write, []

        def write(self, block):  # tells the test when bytes are in the temporary file
            taken = real_write(self, block)
            if not told:
                told.append(True)
                print("writing", file=sys.stderr, flush=True)
            return taken

        PathSink.write = write
        data = bytes(range(256)) * 4096 * 8       # 8 MiB at 8 MB/s: about a second
        slow = bgio.BackgroundIOPriority(0, 64 * 1024, 100, max_rate=8e6)
        h = bgio.bgwrite({str(path)!r}, data, atomic=True, priority=slow)
        print("started", flush=True)
        h.result()
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"started"
    proc.stderr.readline()  # "writing": the kill lands mid-write, not before it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    content = path.read_bytes()
    assert content in (b"old" * 1000, bytes(range(256)) * 4096 * 8)
    assert content == b"old" * 1000  # killed well before the end


def test_an_atomic_write_whose_sync_fails_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a"
    path.write_bytes(b"old")

    def broken(fd):
        raise OSError(5, "EIO (injected)")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(OSError, match="EIO"):
        bgio.bgwrite(path, b"new", atomic=True, priority=FAST).result(timeout=30)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_failed_atomic_writer_never_commits_even_after_its_queue_went_idle(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")
    w = bgio.Writer(path, atomic=True, priority=FAST)
    w.write(b"good ")

    def broken():
        yield b"half"
        raise RuntimeError("producer failed")

    failed = w.write(broken())
    failed.wait(timeout=30)
    assert bgio.wait_all(timeout=30)  # the path's queue is idle (and forgotten) now
    later = w.write(b"after the gap")
    with pytest.raises(bgio.ChainError):
        later.result(timeout=30)
    with pytest.raises(RuntimeError, match="producer failed"):
        w.close()
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_a_later_write_to_a_path_starts_afresh(tmp_path):
    path = tmp_path / "retry"

    def broken():
        yield b"x"
        raise RuntimeError("first attempt failed")

    with pytest.raises(RuntimeError):
        bgio.bgwrite(path, broken(), atomic=True).result(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert bgio.bgwrite(path, b"second attempt", atomic=True).result(timeout=30) == 14
    assert path.read_bytes() == b"second attempt"


def _abandon(objects: list) -> None:
    objects.clear()
    gc.collect()


def test_an_abandoned_atomic_writer_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "abandoned"
    writers = [bgio.Writer(path, atomic=True, priority=FAST)]
    writers[0].write(b"never committed")
    writers[0].flush()
    assert len(_leftovers(tmp_path)) == 1
    with pytest.warns(ResourceWarning, match="never closed"):
        _abandon(writers)
    assert _leftovers(tmp_path) == [] and not path.exists()


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
