"""Windowed write-back: files written with a profile's ``writeback_window`` reach the device
window by window and leave the page cache (bgio.writeback)."""

from __future__ import annotations

import ctypes
import errno
import io
import logging
import os
import sys
import threading

import pytest
from pagecache import dirty_bytes, resident_bytes

import bgio
from bgio import worker, writeback
from bgio.writeback import Writeback

MIB = 1024 * 1024
WINDOW = 4 * MIB

linux_only = pytest.mark.skipif(not writeback.available(), reason="needs sync_file_range")


def _on_a_device(path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return writeback.unsupported_reason(fd) is None
    finally:
        os.close(fd)


@pytest.fixture
def disk_dir(tmp_path):
    """A directory on a file system with a device (skips on tmpfs)."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    if not writeback.available() or not _on_a_device(probe):
        pytest.skip("the test directory has no device behind it")
    return tmp_path


def _credits(monkeypatch):
    """Record (bytes_on_disk, bytes_written) of a run's first handle after every credit."""
    seen: list[tuple[int | None, int]] = []
    real = worker._Windows.after_piece

    def credit(self):
        real(self)
        if self._owners:
            seen.append((self._owners[0].bytes_on_disk, self._owners[0].bytes_written))

    monkeypatch.setattr(worker._Windows, "after_piece", credit)
    return seen


PROFILE = bgio.PRESETS[1].replace(default_chunk_size=MIB, writeback_window=WINDOW)


@pytest.mark.slow  # (one of the longest of the quick run)
@linux_only
def test_windows_leave_the_file_on_disk_not_in_the_page_cache(disk_dir, monkeypatch):
    data = os.urandom(MIB) * 64
    seen = _credits(monkeypatch)
    path = disk_dir / "windowed.bin"
    handle = bgio.bgwrite(path, data, priority=PROFILE)
    assert handle.result(timeout=60) == len(data)
    # At most two windows were not yet known on disk; what is, left the cache.
    assert len(data) - 2 * WINDOW <= handle.bytes_on_disk <= len(data)
    assert resident_bytes(path) <= 3 * WINDOW
    assert path.read_bytes() == data
    on_disk = [value for value, _ in seen]
    assert on_disk == sorted(on_disk, key=lambda value: value or 0)  # never goes back
    assert all(value is None or value <= written for value, written in seen)
    assert all(written - (value or 0) <= 2 * WINDOW + MIB for value, written in seen)


@linux_only
def test_without_a_window_the_page_cache_keeps_it_and_nothing_is_said(disk_dir):
    data = os.urandom(MIB) * 32
    path = disk_dir / "cached.bin"
    handle = bgio.bgwrite(path, data, priority=PROFILE.replace(writeback_window=None))
    handle.result(timeout=60)
    assert handle.bytes_on_disk is None
    assert resident_bytes(path) >= len(data) // 2  # the contrast the windows make


@pytest.mark.slow  # 256 MiB to the disk
@linux_only
def test_dirty_memory_stays_near_two_windows_while_256_mib_go_out(disk_dir):
    data = os.urandom(MIB) * 256
    os.sync()
    baseline = dirty_bytes()
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):  # a sampling period, not a synchronisation
            peak[0] = max(peak[0], dirty_bytes())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        bgio.bgwrite(disk_dir / "big.bin", data, priority=4).result(timeout=120)
    finally:
        done.set()
        sampler.join()
    # Preset 4's 8 MiB windows: two dirty at most; a generous bound for
    # other programs' writes meanwhile (without windows it would be 256 MiB).
    assert peak[0] - baseline <= 64 * MIB


@linux_only
def test_fsync_means_every_byte_on_disk(disk_dir):
    data = os.urandom(MIB) * 10
    handle = bgio.bgwrite(disk_dir / "synced.bin", data, priority=PROFILE, fsync=True)
    handle.result(timeout=60)
    assert handle.bytes_on_disk == len(data)


@linux_only
def test_fds_and_plain_binary_files_get_windows_too(disk_dir):
    data = os.urandom(MIB) * 20
    fd = os.open(disk_dir / "fd.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"head")  # windows are ranges of the file from where bgio starts
        handle = bgio.bgwrite(fd, data, priority=PROFILE)
        handle.result(timeout=60)
        assert handle.bytes_on_disk >= len(data) - 2 * WINDOW
    finally:
        os.close(fd)
    assert (disk_dir / "fd.bin").read_bytes() == b"head" + data
    with open(disk_dir / "file.bin", "wb") as file:
        handle = bgio.bgwrite(file, data, priority=PROFILE)
        handle.result(timeout=60)
        assert handle.bytes_on_disk >= len(data) - 2 * WINDOW
    assert (disk_dir / "file.bin").read_bytes() == data
    with open(disk_dir / "text.txt", "w") as text:  # written through Python's buffer
        handle = bgio.bgwrite(text, "x" * (5 * MIB), priority=PROFILE)
        handle.result(timeout=60)
        assert handle.bytes_on_disk is None


@linux_only
def test_windows_follow_the_file_when_the_program_writes_in_between(disk_dir):
    data = os.urandom(MIB) * 12
    path = disk_dir / "between.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer = bgio.Writer(fd, priority=PROFILE)
        writer.write(data).result(timeout=60)
        program = b"p" * (16 * MIB)
        os.write(fd, program)  # the program writes through the same descriptor meanwhile
        second = writer.write(data)
        second.result(timeout=60)
        writer.close()
        assert second.bytes_on_disk >= len(data) - 2 * WINDOW
        # The second write's windows are its own bytes: written back, out of the cache.
        assert resident_bytes(path, len(data) + len(program)) <= 2 * WINDOW + MIB
    finally:
        os.close(fd)
    assert path.read_bytes() == data + program + data


@linux_only
def test_an_append_mode_fd_is_windowed_from_the_end_of_the_file(disk_dir):
    path = disk_dir / "append.bin"
    path.write_bytes(b"x" * 12345)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        keeper = Writeback(fd, WINDOW)
        assert keeper.enabled
        assert keeper._origin == 12345
    finally:
        os.close(fd)


def test_pipes_and_tmpfs_keep_plain_buffered_writes(tmp_path):
    read_end, write_end = os.pipe()
    try:
        keeper = Writeback(write_end, WINDOW)
        assert not keeper.enabled and keeper.reason == (
            "not a regular file" if writeback.available() else "no sync_file_range on this platform")
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(_read_all(read_end)))
        reader.start()
        handle = bgio.bgwrite(write_end, b"y" * (3 * MIB), priority=PROFILE,
                              close_when_finished=True)
        handle.result(timeout=60)
        reader.join(60)
        assert result == [b"y" * (3 * MIB)] and handle.bytes_on_disk is None
    finally:
        os.close(read_end)
    if os.path.isdir("/dev/shm") and writeback.available():
        path = os.path.join("/dev/shm", f"bgio-test-{os.getpid()}")
        try:
            handle = bgio.bgwrite(path, b"z" * (9 * MIB), priority=PROFILE)
            handle.result(timeout=60)
            assert handle.bytes_on_disk is None
            fd = os.open(path, os.O_RDONLY)
            try:
                assert writeback.unsupported_reason(fd) == "on tmpfs, which has no device"
            finally:
                os.close(fd)
        finally:
            os.remove(path)


def _read_all(fd: int) -> bytes:
    parts = []
    while True:
        part = os.read(fd, MIB)
        if not part:
            return b"".join(parts)
        parts.append(part)


class _Calls:
    """A stand-in for sync_file_range that records its calls and can fail."""

    def __init__(self, fail_with: int | None = None, fail_at: int = 0):
        self.calls: list[tuple[int, int, int]] = []
        self.fail_with = fail_with
        self.fail_at = fail_at

    def __call__(self, fd, offset, length, flags):
        self.calls.append((offset, length, flags))
        if self.fail_with is not None and len(self.calls) > self.fail_at:
            ctypes.set_errno(self.fail_with)
            return -1
        return 0


@linux_only
def test_each_window_is_started_then_the_one_before_waited_for_and_dropped(disk_dir,
                                                                           monkeypatch):
    calls = _Calls()
    monkeypatch.setattr(writeback, "_sync_file_range", calls)
    dropped = []
    monkeypatch.setattr(writeback.os, "posix_fadvise",
                        lambda fd, offset, length, advice: dropped.append((offset, length)))
    with open(disk_dir / "w.bin", "wb") as file:
        keeper = Writeback(file.fileno(), 100 * 1024)
        for _ in range(7):  # as the worker does it, piece after piece
            keeper.resume()
            keeper.wrote(50 * 1024)  # 350 KiB: three windows and a half
            keeper.turn()
        keeper.finish(wait=True)
    kib = 1024
    start, wait = 2, 1 | 2 | 4
    # Each window ends after the piece that fills it; the one the device is
    # writing is waited for then, and the new one starts before the next piece.
    assert calls.calls == [
        (0, 100 * kib, start),
        (0, 100 * kib, wait), (100 * kib, 100 * kib, start),
        (100 * kib, 100 * kib, wait), (200 * kib, 100 * kib, start),
        (300 * kib, 50 * kib, start), (200 * kib, 150 * kib, wait),
    ]
    assert dropped == [(0, 100 * kib), (100 * kib, 100 * kib), (200 * kib, 150 * kib)]
    assert keeper.on_disk == keeper.written == 350 * kib


@linux_only
def test_a_file_system_that_refuses_ranges_falls_back_quietly(disk_dir, monkeypatch, caplog):
    monkeypatch.setattr(writeback, "_sync_file_range", _Calls(fail_with=errno.EINVAL))
    caplog.set_level(logging.DEBUG, logger="bgio")
    data = os.urandom(MIB) * 12
    handle = bgio.bgwrite(disk_dir / "refused.bin", data, priority=PROFILE)
    assert handle.result(timeout=60) == len(data)
    assert handle.bytes_on_disk is None
    assert (disk_dir / "refused.bin").read_bytes() == data
    assert "ranged write-back refused (Invalid argument)" in caplog.text


@linux_only
def test_a_device_error_during_write_back_fails_the_write(disk_dir, monkeypatch):
    monkeypatch.setattr(writeback, "_sync_file_range", _Calls(fail_with=errno.EIO, fail_at=1))
    handle = bgio.bgwrite(disk_dir / "eio.bin", os.urandom(MIB) * 12, priority=PROFILE)
    with pytest.raises(OSError, match="write-back failed: Input/output error") as caught:
        handle.result(timeout=60)
    assert caught.value.errno == errno.EIO
    assert handle.bytes_written < 12 * MIB


def test_profiles_take_a_window_and_the_presets_have_one():
    assert bgio.PRESETS[1].writeback_window is None
    assert {bgio.PRESETS[level].writeback_window for level in range(2, 11)} == {8 * MIB}
    profile = bgio.BackgroundIOPriority(0.001, MIB, 50, writeback_window=2 * MIB)
    assert profile.writeback_window == 2 * MIB
    assert profile.replace(bandwidth_pct=20).writeback_window == 2 * MIB
    assert profile.replace(writeback_window=None).writeback_window is None
    assert bgio.BackgroundIOPriority(0.001, MIB, 50).writeback_window is None
    with pytest.raises(ValueError, match="writeback_window must be >= 65536 bytes"):
        bgio.BackgroundIOPriority(0.001, MIB, 50, writeback_window=4096)
    with pytest.raises(TypeError, match="writeback_window must be an int"):
        bgio.BackgroundIOPriority(0.001, MIB, 50, writeback_window="8M")


def test_io_bytesio_has_no_writeback():
    buffer = io.BytesIO()
    handle = bgio.bgwrite(buffer, b"a" * MIB, priority=PROFILE)
    handle.result(timeout=60)
    assert handle.bytes_on_disk is None and buffer.getvalue() == b"a" * MIB


if sys.platform != "linux":  # pragma: no cover - documented: Linux only
    pytestmark = pytest.mark.skip(reason="write-back windows are Linux only")


@linux_only
def test_a_later_empty_write_does_not_claim_the_earlier_one_is_on_disk(disk_dir):
    # Both flushed together: the empty write's sink has nothing on the device, which
    # says nothing of the first write's last window (still in the page cache).
    fd = os.open(disk_dir / "two.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        first = bgio.bgwrite(fd, os.urandom(MIB) * 12, priority=5)
        empty = bgio.bgwrite(fd, b"", priority=5)
        assert first.result(timeout=60) == 12 * MIB and empty.result(timeout=60) == 0
        assert first.bytes_on_disk is not None and first.bytes_on_disk < 12 * MIB
    finally:
        os.close(fd)
