"""Direct I/O for paths (``direct=True``): byte-exact files, nothing left in the page cache,
clear refusals (bgio.sinks.direct)."""

from __future__ import annotations

import errno
import io
import mmap
import os
import stat

import numpy as np
import pytest
from pagecache import resident_bytes

import bgio
from bgio import worker, writeback
from bgio.sinks import direct

MIB = 1024 * 1024
PAGE = mmap.PAGESIZE
#: Preset 1 without windows: whatever stays out of the cache does so because of O_DIRECT.
FAST = bgio.PRESETS[1].replace(writeback_window=None)

needs_o_direct = pytest.mark.skipif(not direct.DIRECT_FLAG, reason="no O_DIRECT here")


@pytest.fixture
def disk_dir(tmp_path):
    """A directory on a file system with a device that takes O_DIRECT (else skip)."""
    if not direct.DIRECT_FLAG or not writeback.available():
        pytest.skip("no O_DIRECT or no sync_file_range here")
    probe = tmp_path / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | direct.DIRECT_FLAG, 0o644)
    except OSError:
        pytest.skip("the test directory's file system refuses O_DIRECT")
    try:
        if writeback.unsupported_reason(fd) is not None:
            pytest.skip("the test directory has no device behind it")
    finally:
        os.close(fd)
        probe.unlink()
    return tmp_path


@pytest.fixture
def fresh_probes(monkeypatch):
    """Forget which file systems were found to take O_DIRECT (the probe runs again)."""
    monkeypatch.setattr(direct, "_accepted", set())
    monkeypatch.setattr(direct, "_refused", set())


def _aligned(size: int) -> np.ndarray:
    """``size`` random bytes in page-aligned memory (an mmap)."""
    memory = mmap.mmap(-1, max(size, 1))
    array = np.frombuffer(memory, dtype=np.uint8)[:size]
    array[:] = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    return array


def _count_calls(monkeypatch, name: str) -> list[int]:
    """Record the size of each call of ``DirectSink.<name>`` (its data argument)."""
    calls: list[int] = []
    real = getattr(direct.DirectSink, name)

    def spy(self, data, position):
        calls.append(data.size)
        return real(self, data, position)

    monkeypatch.setattr(direct.DirectSink, name, spy)
    return calls


SIZES = [0, 1, 511, 512, PAGE - 1, PAGE, PAGE + 1, MIB + 3, 5 * MIB + 17]


@pytest.mark.parametrize("size", SIZES)
def test_unaligned_data_of_any_length_is_written_byte_exact(disk_dir, size):
    data = os.urandom(size)  # a bytes object's data is never page-aligned
    path = disk_dir / "out.bin"
    handle = bgio.bgwrite(path, data, priority=FAST, direct=True)
    assert handle.result(timeout=60) == size
    assert path.read_bytes() == data
    assert handle.bytes_on_disk == handle.bytes_written == size


@pytest.mark.parametrize("size", [PAGE, 3 * MIB, 3 * MIB + 100])
def test_aligned_memory_goes_to_the_device_without_a_copy(disk_dir, monkeypatch, size):
    buffers: list[int] = []
    real = direct._huge_buffer

    def counting(size):
        buffers.append(size)
        return real(size)

    data = _aligned(size)
    monkeypatch.setattr(direct, "_huge_buffer", counting)
    path = disk_dir / "aligned.bin"
    assert bgio.bgwrite(path, data, priority=FAST, direct=True).result(timeout=60) == size
    assert path.read_bytes() == data.tobytes()
    # Only an unaligned end needs bgio's buffer; whole pages are written from the array.
    assert buffers == ([] if size % PAGE == 0 else [MIB])


def test_nothing_of_a_direct_file_stays_in_the_page_cache(disk_dir):
    data = os.urandom(MIB) * 32 + b"tail"
    direct_path, cached_path = disk_dir / "direct.bin", disk_dir / "cached.bin"
    bgio.bgwrite(direct_path, data, priority=FAST, direct=True).result(timeout=60)
    bgio.bgwrite(cached_path, data, priority=FAST).result(timeout=60)
    assert resident_bytes(direct_path) <= PAGE  # the tail went through the cache, then left
    assert resident_bytes(cached_path) >= len(data) // 2  # the contrast O_DIRECT makes
    assert direct_path.read_bytes() == data


def test_only_the_unaligned_end_of_a_write_goes_through_the_cache(disk_dir, monkeypatch):
    buffered = _count_calls(monkeypatch, "_buffered")
    data = os.urandom(4 * MIB + 1234)
    bgio.bgwrite(disk_dir / "tail.bin", data, priority=FAST, direct=True).result(timeout=60)
    assert buffered == [1234]
    assert (disk_dir / "tail.bin").read_bytes() == data


def test_an_unaligned_chunk_size_is_rounded_to_whole_pages(disk_dir, monkeypatch):
    buffered = _count_calls(monkeypatch, "_buffered")
    written = _count_calls(monkeypatch, "_direct")
    data = os.urandom(3 * MIB + 5)
    handle = bgio.bgwrite_chunk(disk_dir / "odd.bin", data, 1000, priority=FAST, direct=True)
    assert handle.result(timeout=60) == len(data)
    assert (disk_dir / "odd.bin").read_bytes() == data
    assert buffered == [5]  # not two small writes per 1000-byte chunk
    assert set(written) == {PAGE}
    # The presets' own chunk sizes are not all whole pages either.
    assert bgio.PRESETS[5].default_chunk_size % PAGE
    data = os.urandom(4 * MIB)
    bgio.bgwrite(disk_dir / "p5.bin", data, priority=5, direct=True).result(timeout=60)
    assert (disk_dir / "p5.bin").read_bytes() == data
    assert buffered == [5]


def test_appending_to_a_file_of_unaligned_length(disk_dir):
    path = disk_dir / "log.bin"
    path.write_bytes(b"head" * 1001)
    expected = path.read_bytes()
    for size in (3, PAGE * 2 + 7, MIB + 1, 0, 1):
        data = os.urandom(size)
        bgio.bgwrite(path, data, mode="ab", priority=FAST, direct=True).result(timeout=60)
        expected += data
        assert path.read_bytes() == expected


def test_writes_queued_in_order_to_one_direct_path(disk_dir):
    path = disk_dir / "ordered.bin"
    first = os.urandom(MIB + 11)
    parts = [os.urandom(size) for size in (PAGE + 1, 17, 2 * MIB, 5)]
    handles = [bgio.bgwrite(path, first, priority=FAST, direct=True)]
    handles += [bgio.bgwrite(path, part, mode="ab", priority=FAST, direct=True)
                for part in parts]
    assert [handle.result(timeout=60) for handle in handles] == [len(first)] + [
        len(part) for part in parts]
    assert path.read_bytes() == first + b"".join(parts)


def test_a_writer_of_many_small_unaligned_writes(disk_dir):
    path = disk_dir / "small.bin"
    parts = [os.urandom(size) for size in range(1, 3000, 7)]
    with bgio.Writer(path, priority=FAST, direct=True) as writer:
        handles = [writer.write(part) for part in parts]
        big = writer.write(_aligned(2 * MIB))
    assert [handle.result(timeout=60) for handle in handles] == [len(part) for part in parts]
    assert big.result(timeout=60) == 2 * MIB
    assert path.read_bytes() == b"".join(parts) + _aligned(2 * MIB).tobytes()


def test_bgio_open_writes_a_direct_text_file(disk_dir):
    path = disk_dir / "text.txt"
    with bgio.open(path, "w", encoding="utf-8", direct=True) as out:
        for number in range(5000):
            out.write(f"line {number}\n")
    assert path.read_text(encoding="utf-8") == "".join(f"line {n}\n" for n in range(5000))


def test_an_atomic_direct_write_replaces_the_file_whole(disk_dir):
    path = disk_dir / "atomic.bin"
    path.write_bytes(b"old")
    data = os.urandom(2 * MIB + 3)
    handle = bgio.bgwrite(path, data, atomic=True, direct=True, priority=FAST)
    assert handle.result(timeout=60) == len(data)
    assert path.read_bytes() == data
    assert sorted(os.listdir(disk_dir)) == ["atomic.bin"]
    assert handle.bytes_on_disk == len(data)


def _failing_pwrite(monkeypatch, at: int, short: int = 0, once: bool = True):
    """Make the ``at``-th ``os.pwrite`` fail with ENOSPC (and with ``once=False`` every one
    after it); with ``short``, the call before writes only that many bytes."""
    real = os.pwrite
    calls = [0]

    def pwrite(fd, data, position):
        calls[0] += 1
        if calls[0] == at - 1 and short:
            return real(fd, memoryview(data)[:short], position)
        if calls[0] == at or (calls[0] > at and not once):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, position)

    monkeypatch.setattr(direct.os, "pwrite", pwrite)


def test_a_failing_device_write_says_how_far_it_got(disk_dir, monkeypatch):
    _failing_pwrite(monkeypatch, at=3, once=False)
    path = disk_dir / "full.bin"
    chunk = FAST.default_chunk_size
    handle = bgio.bgwrite(path, os.urandom(5 * chunk), priority=FAST, direct=True)
    with pytest.raises(OSError) as caught:
        handle.result(timeout=60)
    assert caught.value.errno == errno.ENOSPC
    assert handle.bytes_written == handle.bytes_on_disk == 2 * chunk == os.path.getsize(path)


def test_a_failure_after_held_bytes_still_writes_them(disk_dir, monkeypatch):
    _failing_pwrite(monkeypatch, at=2)
    first, second = os.urandom(PAGE + 100), os.urandom(3 * MIB)
    path = disk_dir / "held.bin"
    handle = bgio.bgwrite(path, [first, second], priority=FAST, direct=True)
    with pytest.raises(OSError) as caught:
        handle.result(timeout=60)
    assert caught.value.errno == errno.ENOSPC
    # The 100 bytes held after the first block's whole pages reached the file.
    assert path.read_bytes() == first
    assert handle.bytes_written == handle.bytes_on_disk == len(first)


def test_a_short_device_write_is_taken_as_it_is(disk_dir, monkeypatch):
    _failing_pwrite(monkeypatch, at=3, short=8 * PAGE, once=False)
    data = os.urandom(3 * MIB)
    path = disk_dir / "short.bin"
    handle = bgio.bgwrite_chunk(path, data, MIB, priority=FAST, direct=True)
    with pytest.raises(OSError) as caught:
        handle.result(timeout=60)
    assert caught.value.errno == errno.ENOSPC
    assert handle.bytes_written == handle.bytes_on_disk == MIB + 8 * PAGE
    assert path.read_bytes() == data[:MIB + 8 * PAGE]


def test_bytes_on_disk_never_goes_back_nor_passes_bytes_written(disk_dir, monkeypatch):
    seen: list[tuple[int | None, int]] = []
    real = worker._Windows.after_piece

    def credit(self):
        real(self)
        seen.append((self._owners[0].bytes_on_disk, self._owners[0].bytes_written))

    monkeypatch.setattr(worker._Windows, "after_piece", credit)
    data = os.urandom(MIB) * 24 + b"x" * 100
    handle = bgio.bgwrite(disk_dir / "progress.bin", data,
                          priority=FAST.replace(default_chunk_size=MIB), direct=True)
    assert handle.result(timeout=60) == len(data)
    assert len(seen) == 25
    on_disk = [value for value, _ in seen]
    assert None not in on_disk and on_disk == sorted(on_disk)
    assert all(value <= written for value, written in seen)
    assert handle.bytes_on_disk == len(data)


@needs_o_direct
def test_tmpfs_takes_direct_writes_but_has_no_device_to_count(tmp_path):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = os.path.join("/dev/shm", f"bgio-direct-{os.getpid()}")
    data = os.urandom(MIB + 9)
    try:
        handle = bgio.bgwrite(path, data, priority=FAST, direct=True)
        try:
            assert handle.result(timeout=60) == len(data)
        except ValueError as exc:  # an older tmpfs refuses O_DIRECT: said in the caller
            pytest.skip(str(exc))
        with open(path, "rb") as copy:
            assert copy.read() == data
        assert handle.bytes_on_disk is None
    finally:
        if os.path.exists(path):
            os.remove(path)


# -- refusals -------------------------------------------------------------------------------


def test_direct_applies_to_paths_only(tmp_path):
    with open(tmp_path / "f.bin", "wb") as stream:
        with pytest.raises(ValueError, match="direct=True applies to paths only, not to "
                                             "BufferedWriter"):
            bgio.bgwrite(stream, b"x", direct=True)
        with pytest.raises(ValueError, match="direct=True applies to paths only, not to int"):
            bgio.bgwrite(stream.fileno(), b"x", direct=True)
    with pytest.raises(ValueError, match="direct=True applies to paths only, not to BytesIO"):
        bgio.Writer(io.BytesIO(), direct=True)
    with pytest.raises(ValueError, match="direct=True applies to paths only"):
        bgio.open(io.BytesIO(), direct=True)


def test_direct_does_not_apply_to_an_hdf5_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "d.h5", "w") as file:
        dataset = file.create_dataset("d", (0, 4), maxshape=(None, 4), dtype="u1")
        with pytest.raises(ValueError, match="direct.* do not apply to an h5py dataset"):
            bgio.bgwrite(dataset, np.zeros(4, "u1"), direct=True)


@needs_o_direct
def test_a_path_that_is_not_a_regular_file_is_refused(tmp_path, fresh_probes):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ValueError, match=r"fifo' is not a regular file; direct=True writes "
                                         "regular files only"):
        bgio.bgwrite(fifo, b"x", direct=True)


def test_a_platform_without_o_direct_refuses_it_in_the_caller(tmp_path, monkeypatch):
    monkeypatch.setattr(direct, "DIRECT_FLAG", 0)
    with pytest.raises(ValueError, match="direct=True needs O_DIRECT, which this platform"):
        bgio.bgwrite(tmp_path / "x.bin", b"x", direct=True)
    assert not (tmp_path / "x.bin").exists()


def _refusing_o_direct(monkeypatch) -> list[str]:
    """Make every open with O_DIRECT fail as a file system without it does (EINVAL)."""
    opened: list[str] = []
    real = os.open

    def open_(path, flags, *args, **kwargs):
        if flags & direct.DIRECT_FLAG:
            opened.append(os.fspath(path))
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    return opened


@needs_o_direct
def test_a_file_system_without_o_direct_is_refused_in_the_caller(tmp_path, monkeypatch,
                                                                 fresh_probes):
    # No file system here refuses O_DIRECT (ext4 and tmpfs take it): the refusal is made.
    opened = _refusing_o_direct(monkeypatch)
    message = (f"file: the file system of {str(tmp_path)!r} does not support direct I/O "
               r"\(O_DIRECT\); write without direct=True")
    with pytest.raises(ValueError, match=message):
        bgio.bgwrite(tmp_path / "new.bin", b"x", direct=True)
    assert len(opened) == 1 and ".bgio-direct-probe." in opened[0]
    assert os.listdir(tmp_path) == []  # the probe leaves nothing
    # Known now: the next call is refused without another probe.
    with pytest.raises(ValueError, match="does not support direct I/O"):
        bgio.Writer(tmp_path / "other.bin", direct=True)
    assert len(opened) == 1


@needs_o_direct
def test_an_existing_file_is_probed_itself_and_left_unchanged(tmp_path, monkeypatch,
                                                               fresh_probes):
    path = tmp_path / "old.bin"
    path.write_bytes(b"keep me")
    opened = _refusing_o_direct(monkeypatch)
    with pytest.raises(ValueError, match="does not support direct I/O"):
        bgio.bgwrite(path, b"new", direct=True)
    assert opened == [str(path)]
    assert path.read_bytes() == b"keep me"


@needs_o_direct
def test_a_refusal_only_the_worker_meets_is_on_the_handle(tmp_path, monkeypatch, fresh_probes):
    # The caller's probe passed (say, another mount was put over the directory since).
    bgio.bgwrite(tmp_path / "first.bin", b"ok", direct=True).result(timeout=60)
    _refusing_o_direct(monkeypatch)
    handle = bgio.bgwrite(tmp_path / "second.bin", b"x", direct=True)
    with pytest.raises(OSError, match="does not support direct I/O") as caught:
        handle.result(timeout=60)
    assert caught.value.errno == errno.EINVAL
    assert caught.value.filename == str(tmp_path / "second.bin")


# -- alignment ------------------------------------------------------------------------------


@needs_o_direct
def test_alignment_is_the_file_systems_or_the_page_size(tmp_path):
    fd = os.open(tmp_path / "a.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        memory, offset = direct.alignment(fd)
    finally:
        os.close(fd)
    for value in (memory, offset):
        assert value > 0 and value & (value - 1) == 0  # a power of two
    assert offset >= min(PAGE, os.stat(tmp_path / "a.bin").st_blksize)
    assert memory <= PAGE


@needs_o_direct
def test_without_statx_the_page_size_is_assumed(tmp_path, monkeypatch):
    monkeypatch.setattr(direct, "_statx", None)
    fd = os.open(tmp_path / "a.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert direct.alignment(fd)[0] == PAGE
        assert direct.alignment(fd)[1] % PAGE == 0
    finally:
        os.close(fd)
