"""The disk scenario: what a profile does to the device, not only to the page cache.

Each side writes the same data to a file on the directory's file system,
with the page cache dropped before it (as root; otherwise the figures say
the cache was not dropped), while the main thread runs the 1 ms loop. It
records how long until the write's handle is done and until an ``fsync``
after it returns, the peak of ``Dirty`` in ``/proc/meminfo`` (sampled every
50 ms), and the device's write rate from ``/proc/diskstats`` over the
write. A reader side times a second process reading another file (cache
dropped) alone and beside each writer. Linux only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import bgio
from bgio import writeback

from .data import MIB
from .loop import loop_gaps

__all__ = ["BLOCK", "DiskRun", "ReadRun", "bgio_side", "bgio_writer", "can_drop_caches",
           "device_of", "direct_dd_side", "drop_caches", "plain_side", "plain_writer",
           "read_beside", "source_blocks", "windows_apply"]

#: Bytes of the random block the data repeats (the data is that block, many times, no copy).
BLOCK = 64 * MIB
#: How often ``Dirty`` is sampled.
SAMPLE = 0.05


@dataclass
class DiskRun:
    """One writer side's figures.

    Attributes
    ----------
    label : str
    write_s : float
        From the start until the write is done (its handle, or the last ``write`` call).
    on_disk_s : float
        From the start until an ``fsync`` after the write returned.
    peak_dirty_mib : float
        Highest ``Dirty`` seen, in MiB, above what it was at the start.
    device_mib_s : float
        MiB the device wrote during the write (``/proc/diskstats``), per second of it.
    loop_p99_ms, loop_max_ms : float
        The main thread's 1 ms loop during the write.
    fsync_max_ms : float
        The loop's longest iteration during the final ``fsync``.
    cache_dropped : bool
        Whether the page cache was dropped before the side.
    """

    label: str
    write_s: float
    on_disk_s: float
    peak_dirty_mib: float
    device_mib_s: float
    loop_p99_ms: float
    loop_max_ms: float
    fsync_max_ms: float
    cache_dropped: bool


@dataclass
class ReadRun:
    """A reader's rate, alone or beside a writer side."""

    label: str
    read_mib_s: float


def can_drop_caches() -> bool:
    """True if this process may drop the page cache (root, on Linux)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0


def drop_caches() -> bool:
    """``sync``, then drop the page cache if allowed; True if it was dropped."""
    os.sync()
    if not can_drop_caches():
        return False
    with open("/proc/sys/vm/drop_caches", "w") as control:
        control.write("3\n")
    return True


def _dirty_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) * 1024
    return 0


def windows_apply(directory: str) -> bool:
    """True if files in ``directory`` get write-back windows (see :mod:`bgio.writeback`)."""
    probe = os.path.join(directory, ".bgio-disk-probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return writeback.unsupported_reason(fd) is None
    finally:
        os.close(fd)
        os.remove(probe)


def device_of(directory: str) -> str | None:
    """The block device (as ``/proc/diskstats`` names it) behind ``directory``, or None."""
    number = os.stat(directory).st_dev
    link = f"/sys/dev/block/{os.major(number)}:{os.minor(number)}"
    if not os.path.exists(link):
        return None
    return os.path.basename(os.path.realpath(link))


def _sectors_written(device: str | None) -> int:
    if device is None:
        return 0
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if len(fields) > 9 and fields[2] == device:
                return int(fields[9])  # 512-byte sectors, whatever the device's own size
    return 0


class _Sampler:
    """Samples ``Dirty`` every :data:`SAMPLE` seconds in a thread; ``stop()`` returns the peak."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._base = _dirty_bytes()
        self._peak = self._base
        self._thread = threading.Thread(target=self._run, name="bgio-bench-dirty", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(SAMPLE):
            self._peak = max(self._peak, _dirty_bytes())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return max(0, self._peak - self._base) / MIB


def source_blocks(total: int) -> list[memoryview]:
    """``total`` bytes as views of one random block (the last one cut short)."""
    block = memoryview(os.urandom(BLOCK))
    views = []
    left = total
    while left > 0:
        views.append(block[: min(BLOCK, left)])
        left -= BLOCK
    return views


@contextmanager
def _measured(label: str, directory: str, out: list[DiskRun]) -> Iterator[Callable[[], None]]:
    """Drop the cache, start the samplers; the body starts the write and returns once it is
    under way; the loop runs until the body's ``done`` is called (via the yielded setter)."""
    dropped = drop_caches()
    device = device_of(directory)
    finished = threading.Event()
    sampler = _Sampler()
    sectors = _sectors_written(device)
    started = time.perf_counter()
    yield finished.set
    loop = loop_gaps(until=finished, timeout=3600)
    write_end = time.perf_counter()
    device_bytes = (_sectors_written(device) - sectors) * 512
    peak = sampler.stop()
    out.append(DiskRun(label, write_end - started, 0.0, peak,
                       device_bytes / MIB / max(write_end - started, 1e-9),
                       loop.p99_ms, loop.max_ms, 0.0, dropped))


def _fsync_timed(fd: int, run: DiskRun, started: float) -> None:
    done = threading.Event()
    result: list[BaseException] = []

    def sync() -> None:
        try:
            os.fsync(fd)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=sync, name="bgio-bench-fsync")
    begin = time.perf_counter()
    thread.start()
    loop = loop_gaps(until=done, timeout=3600)
    thread.join()
    if result:
        raise result[0]
    run.on_disk_s = run.write_s + (time.perf_counter() - begin)
    run.fsync_max_ms = loop.max_ms
    del started


def bgio_side(label: str, directory: str, blocks: Sequence[memoryview],
              profile: bgio.BackgroundIOPriority | int) -> DiskRun:
    """``bgio.bgwrite`` of ``blocks`` to an fd at ``profile``, then ``fsync``."""
    path = os.path.join(directory, "disk-bench.bin")
    runs: list[DiskRun] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with _measured(label, directory, runs) as done:
            handle = bgio.bgwrite(fd, list(blocks), priority=profile)
            handle.add_done_callback(lambda _: done())
        handle.result()
        started = time.perf_counter()
        _fsync_timed(fd, runs[0], started)
    finally:
        os.close(fd)
        os.remove(path)
    return runs[0]


def bgio_direct_side(label: str, directory: str, blocks: Sequence[memoryview],
                     profile: bgio.BackgroundIOPriority | int) -> DiskRun:
    """``bgio.bgwrite(path, ..., direct=True)`` of ``blocks`` at ``profile`` (on the device
    when it is done), then ``fsync`` (the file's metadata and the device's cache)."""
    path = os.path.join(directory, "disk-bench.bin")
    runs: list[DiskRun] = []
    try:
        with _measured(label, directory, runs) as done:
            handle = bgio.bgwrite(path, list(blocks), priority=profile, direct=True)
            handle.add_done_callback(lambda _: done())
        handle.result()
        fd = os.open(path, os.O_WRONLY)
        try:
            _fsync_timed(fd, runs[0], time.perf_counter())
        finally:
            os.close(fd)
    finally:
        os.remove(path)
    return runs[0]


def plain_side(label: str, directory: str, blocks: Sequence[memoryview]) -> DiskRun:
    """A plain thread doing ``f.write`` of each block, then ``fsync``."""
    path = os.path.join(directory, "disk-bench.bin")
    runs: list[DiskRun] = []
    with open(path, "wb", buffering=0) as file:
        with _measured(label, directory, runs) as done:
            def write() -> None:
                try:
                    file.writelines(blocks)
                finally:
                    done()

            thread = threading.Thread(target=write, name="bgio-bench-plain")
            thread.start()
        thread.join()
        _fsync_timed(file.fileno(), runs[0], time.perf_counter())
    os.remove(path)
    return runs[0]


def direct_dd_side(label: str, directory: str, blocks: Sequence[memoryview]) -> DiskRun:
    """``dd bs=1M oflag=direct`` fed the same bytes through a pipe (on disk when it ends)."""
    path = os.path.join(directory, "disk-bench.bin")
    runs: list[DiskRun] = []
    with _measured(label, directory, runs) as done:
        dd = subprocess.Popen(["dd", f"of={path}", "bs=1M", "oflag=direct", "iflag=fullblock",
                               "status=none"], stdin=subprocess.PIPE)
        assert dd.stdin is not None

        def feed() -> None:
            try:
                for block in blocks:
                    dd.stdin.write(block)  # type: ignore[union-attr]
                dd.stdin.close()  # type: ignore[union-attr]
                dd.wait()
            finally:
                done()

        threading.Thread(target=feed, name="bgio-bench-dd", daemon=True).start()
    runs[0].on_disk_s = runs[0].write_s
    os.remove(path)
    return runs[0]


def read_beside(label: str, directory: str, read_path: str,
                writer: Callable[[threading.Event], None] | None) -> ReadRun:
    """A second process reads ``read_path`` (cache dropped) with ``dd``, alone (``writer``
    None) or while ``writer`` writes until the Event it gets is set."""
    drop_caches()
    stop = threading.Event()
    thread = None
    if writer is not None:
        thread = threading.Thread(target=writer, args=(stop,), name="bgio-bench-writer")
        thread.start()
    size = os.path.getsize(read_path)
    started = time.perf_counter()
    subprocess.run(["dd", f"if={read_path}", "of=/dev/null", "bs=1M", "status=none"],
                   check=True)
    seconds = time.perf_counter() - started
    stop.set()
    if thread is not None:
        thread.join()
    del directory
    return ReadRun(label, size / MIB / seconds)


def bgio_writer(directory: str, blocks: Sequence[memoryview],
                profile: bgio.BackgroundIOPriority | int) -> Callable[[threading.Event], None]:
    """A writer for :func:`read_beside`: bgio writes ``blocks`` many times over, cancelled
    when told."""
    def write(stop: threading.Event) -> None:
        path = os.path.join(directory, "disk-bench-w.bin")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            handle = bgio.bgwrite(fd, list(blocks) * 64, priority=profile)
            stop.wait()
            handle.cancel()
            handle.wait()  # until the worker has stopped
        finally:
            os.close(fd)
            os.remove(path)
    return write


def plain_writer(directory: str, blocks: Sequence[memoryview]) -> Callable[[threading.Event], None]:
    """A writer for :func:`read_beside`: a plain thread's ``f.write`` until told."""
    def write(stop: threading.Event) -> None:
        path = os.path.join(directory, "disk-bench-w.bin")
        with open(path, "wb", buffering=0) as file:
            while not stop.is_set():
                for block in blocks:
                    if stop.is_set():
                        break
                    file.write(block)
        os.remove(path)
    return write
