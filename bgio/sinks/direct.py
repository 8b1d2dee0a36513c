"""Direct I/O (``O_DIRECT``) for paths: the data goes from memory to the device, past the page cache.

A direct write must start at a file offset, cover a length and come from a
memory address that are multiples of what the file system asks for (Linux
reports it through ``statx``'s ``STATX_DIOALIGN``; where it does not, the
page size is assumed). Data rarely arrives that way: a numpy array or a
``bytes`` object starts 16 or 32 bytes past an aligned address, and a
write's length is whatever it is. So :class:`DirectSink`

- writes straight from the caller's memory when it is aligned, and
  otherwise copies each chunk into a buffer of its own (one ``memcpy`` per
  chunk, done by numpy without the interpreter lock);
- keeps the last, unaligned bytes of a chunk (fewer than the alignment) in
  that buffer, so the next chunk continues from an aligned offset; they
  reach the file with the next chunk, or at :meth:`DirectSink.flush`, where
  they are written buffered (the descriptor's ``O_DIRECT`` flag turned off
  for that one write) and then sent to the device at once;
- after a flush, writes the few bytes up to the next aligned offset the
  same way before going on directly.

Every byte is written once, in order. Direct writes are submitted by the
worker's own thread, so its I/O priority governs them, and the time a
write takes is the device's: pacing governs the disk with no windows
needed. A direct write is on the device (not necessarily durable:
``fsync`` flushes the device's own cache and the file's metadata) when it
returns, so ``bytes_on_disk`` follows it closely.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import stat
import sys
import threading

import numpy as np

from ..source import Block
from ..writeback import NoWindows, unsupported_reason, write_range
from ..writeback import available as writeback_available

__all__ = ["DIRECT_FLAG", "DirectProgress", "DirectSink", "alignment", "check_supported",
           "chunk_unit", "refused"]

#: ``os.O_DIRECT`` where the platform has it, else 0 (``direct=True`` is then refused).
DIRECT_FLAG: int = getattr(os, "O_DIRECT", 0)

_AT_EMPTY_PATH = 0x1000
_STATX_DIOALIGN = 0x2000
#: Offsets in ``struct statx`` (``linux/stat.h``): the mask, and the two alignments.
_MASK_AT, _MEM_ALIGN_AT, _OFFSET_ALIGN_AT = 0, 152, 156
_STATX_SIZE = 256
#: The buffer a chunk is copied into is at least this large (fewer, larger device writes).
_MIN_BUFFER = 1 << 20
_SYNC_RANGE = 1 | 2 | 4  # wait for any write-back, write, wait for it


def _load_statx() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        statx = libc.statx
    except (OSError, AttributeError):  # a C library older than glibc 2.28
        return None
    statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                      ctypes.c_char_p]
    statx.restype = ctypes.c_int
    return statx


_statx = _load_statx()


def alignment(fd: int) -> tuple[int, int]:
    """The (memory, offset) alignment direct writes to ``fd`` need, in bytes.

    The file system's own figures where Linux reports them (``statx`` with
    ``STATX_DIOALIGN``, Linux 6.1 and later), else the page size for both.
    The offset alignment is raised to the file system's block size, so that
    no direct write covers part of a block (which some file systems accept
    only by serialising and zeroing).

    Parameters
    ----------
    fd : int
        A descriptor of the file (open with or without ``O_DIRECT``).
    """
    page = mmap.PAGESIZE
    memory = offset = 0
    if _statx is not None:
        buffer = ctypes.create_string_buffer(_STATX_SIZE)
        if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_DIOALIGN, buffer) == 0:  # type: ignore[operator]
            raw = buffer.raw
            mask = int.from_bytes(raw[_MASK_AT:_MASK_AT + 4], sys.byteorder)
            if mask & _STATX_DIOALIGN:
                memory = int.from_bytes(raw[_MEM_ALIGN_AT:_MEM_ALIGN_AT + 4], sys.byteorder)
                offset = int.from_bytes(raw[_OFFSET_ALIGN_AT:_OFFSET_ALIGN_AT + 4],
                                        sys.byteorder)
    if memory <= 0 or offset <= 0:
        memory = offset = page
    return memory, _whole_blocks(offset, os.fstat(fd).st_blksize)


def _whole_blocks(unit: int, block: int) -> int:
    """``unit`` raised to the file system's ``block`` where that is a larger multiple of
    it (up to 64 KiB): no direct write then covers part of a block."""
    return block if block > unit and block % unit == 0 and block <= 1 << 16 else unit


def chunk_unit(directory: str) -> int:
    """What a direct path's chunks are made multiples of, so that none ends unaligned:
    the page size, or the block of the file system holding ``directory`` where larger
    (the offsets :func:`alignment` gives its files)."""
    return _whole_blocks(mmap.PAGESIZE, os.stat(directory).st_blksize)


def refused(path: str) -> OSError:
    """The error for a file system that refuses ``O_DIRECT`` when the file is opened."""
    return OSError(errno.EINVAL, "the file system does not support direct I/O (O_DIRECT); "
                   "write without direct=True", path)


#: Devices whose file system was found to refuse ``O_DIRECT`` (``st_dev``), and those that take it.
_refused: set[int] = set()
_accepted: set[int] = set()
_probe_lock = threading.Lock()


def check_supported(path: str, name: str) -> None:
    """Refuse ``direct=True`` for ``path`` in the caller if it cannot work.

    The platform must have ``O_DIRECT``, and the file system holding
    ``path`` must take it: an existing file is opened with it (and closed,
    unchanged); otherwise a small hidden file is created beside it and
    removed, once per file system per process. Other errors (no permission,
    say) are left for the write itself to report.

    Raises
    ------
    ValueError
        Naming ``name`` and the directory, if direct I/O cannot be used there.
    """
    if not DIRECT_FLAG:
        raise ValueError(f"{name}: direct=True needs O_DIRECT, which this platform "
                         f"({sys.platform}) does not have")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        existing: os.stat_result | None = os.stat(path)
    except OSError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise ValueError(f"{name}: {path!r} is not a regular file; direct=True writes "
                         "regular files only")
    try:
        device = existing.st_dev if existing is not None else os.stat(directory).st_dev
    except OSError:
        return  # the write reports it
    if device in _accepted:
        return
    if device in _refused:
        raise _refusal(name, directory)
    with _probe_lock:
        # An existing file is opened as it is (not truncated); else a probe beside it.
        probe = None if existing is not None else os.path.join(
            directory, f".bgio-direct-probe.{os.urandom(4).hex()}")
        flags = os.O_WRONLY | DIRECT_FLAG | os.O_CLOEXEC
        try:
            if probe is None:
                fd = os.open(path, flags)
            else:
                fd = os.open(probe, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            _judge(exc, device, name, directory)
            return
        os.close(fd)
        if probe is not None:
            os.unlink(probe)
        _accepted.add(device)


def _judge(exc: OSError, device: int, name: str, directory: str) -> None:
    if exc.errno == errno.EINVAL:
        _refused.add(device)
        raise _refusal(name, directory) from None
    # Anything else (permissions, a read-only file system) is not about
    # O_DIRECT: the write reports it as it would without direct=True.


def _refusal(name: str, directory: str) -> ValueError:
    return ValueError(f"{name}: the file system of {directory!r} does not support direct "
                      "I/O (O_DIRECT); write without direct=True")


class DirectProgress(NoWindows):
    """How much of a :class:`DirectSink`'s data is on the device: what the worker's
    write-back windows read (``written``, ``on_disk``); direct writes are on the
    device when they return, so there are no windows."""

    __slots__ = ("_sink",)

    #: After a flush every byte the sink took is on the device.
    settled_by_flush = True

    def __init__(self, sink: DirectSink) -> None:
        self._sink = sink

    @property
    def written(self) -> int:
        """Bytes the sink has taken (the last few may still be in its buffer)."""
        return self._sink.taken

    @property
    def on_disk(self) -> int:
        """Of those, the bytes written to the device."""
        return self._sink.on_disk


class DirectSink:
    """Writes a file opened with ``O_DIRECT`` at explicit offsets (``os.pwrite``).

    Parameters
    ----------
    fd : int
        The file, open for writing with ``O_DIRECT`` and without ``O_APPEND``;
        closed by :meth:`close`.
    name : str
        The path, for messages.
    position : int
        The file offset of the first byte (the file's size, to append).

    Attributes
    ----------
    taken : int
        Bytes taken so far (written, or held in the buffer until the next write or flush).
    on_disk : int
        Of those, the bytes written to the device.
    """

    __slots__ = ("_buffer", "_fd", "_flags", "_held", "_memory_align", "_offset_align",
                 "_position", "_progress", "_view", "key", "kind", "name", "nonblocking",
                 "on_disk", "taken", "target", "waiter", "write_many")

    def __init__(self, fd: int, name: str, position: int = 0) -> None:
        self._fd = fd
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        self._memory_align, self._offset_align = alignment(fd)
        self._position = position  # where the buffer's bytes (or the next write) go
        self._held = 0  # bytes at the front of the buffer, not yet in the file
        self._buffer: mmap.mmap | None = None  # page-aligned, made when first needed
        self._view: np.ndarray | None = None
        self.taken = 0
        self.on_disk = 0
        self.key: object = name
        self.target: object = None
        self.kind = "bytes"
        self.name = name
        self.waiter = None
        self.nonblocking = False
        self.write_many = None  # one chunk at a time: each goes out aligned
        # No device behind the file (tmpfs) or no way to send a range to it:
        # bytes_on_disk stays unknown, as for any such file.
        self._progress: DirectProgress | None = None
        if writeback_available() and unsupported_reason(fd) is None:
            self._progress = DirectProgress(self)

    @property
    def alignment(self) -> tuple[int, int]:
        """The (memory, offset) alignment in use (see :func:`alignment`)."""
        return self._memory_align, self._offset_align

    def write(self, block: Block | bytes) -> int:
        data = np.frombuffer(block, dtype=np.uint8)  # type: ignore[arg-type]  # bytes only
        size = data.size
        if size == 0:
            return 0
        align = self._offset_align
        if not self._held and self._position % align:
            # After a flush: the bytes up to the next aligned offset go buffered.
            count = min(size, align - self._position % align)
            self._buffered(data[:count], self._position)
            self._position += count
            self.taken += count
            self.on_disk = self.taken
            return count
        if not self._held and data.ctypes.data % self._memory_align == 0 and size >= align:
            # Straight from the caller's memory (a short write is taken as it is).
            count = self._direct(data[:size - size % align], self._position)
            self._position += count
            self.taken += count
            self.on_disk = self.taken
            return count
        view = self._room(size)
        held = self._held
        count = min(size, view.size - held)
        view[held:held + count] = data[:count]  # numpy: without the GIL
        filled = held + count
        ready = filled - filled % align
        if not ready:
            self._held = filled
            self.taken += count
            return count
        try:
            written = self._direct(view[:ready], self._position)
        except OSError:
            # The bytes held from before were taken (bytes_written counts them):
            # they go to the file now if the device still takes them, so that
            # the failed write's bytes_on_disk says what the file holds.
            self._flush_after_failure()
            raise
        self._position += written
        if written < ready:
            # A short write: of this block, only what reached the file is taken.
            kept = max(held - written, 0)
            view[:kept] = view[written:written + kept]
            self._held = kept
            count = max(written - held, 0)
        else:
            rest = filled - ready
            view[:rest] = view[ready:filled]
            self._held = rest
        self.taken += count
        self.on_disk = self.taken - self._held
        return count

    def _flush_after_failure(self) -> None:
        try:
            self.flush()
        except OSError:  # refused too: they stay held, bytes_on_disk says how far it got
            pass

    def _room(self, size: int) -> np.ndarray:
        """The aligned buffer, large enough for the bytes held and a chunk of ``size``."""
        align = max(self._offset_align, self._memory_align)
        need = max(_MIN_BUFFER, -(-(size + self._held) // align) * align)
        if self._view is None or self._view.size < need:
            buffer, view = _huge_buffer(need)
            if self._view is not None and self._held:
                view[:self._held] = self._view[:self._held]
            self._release()
            self._buffer, self._view = buffer, view
        assert self._view is not None
        return self._view

    def _release(self) -> None:
        buffer, self._buffer, self._view = self._buffer, None, None
        if buffer is not None:
            try:
                buffer.close()
            except BufferError:  # a view still held by an exception's traceback
                pass

    def _direct(self, data: np.ndarray, position: int) -> int:
        """Write ``data`` at ``position``; return the bytes written: all of them, or fewer if
        the device stopped short (the error, if any, comes with the next write)."""
        memory = memoryview(data)  # type: ignore[arg-type]
        done = 0
        while done < data.size:
            try:
                taken = os.pwrite(self._fd, memory[done:], position + done)
            except OSError as exc:
                if done:
                    return done
                if exc.errno == errno.EINVAL:
                    raise OSError(errno.EINVAL, "direct write refused (O_DIRECT, alignment "
                                  f"{self._memory_align}/{self._offset_align} bytes)",
                                  self.name) from None
                raise
            if taken == 0:  # never for a regular file; not a reason to spin
                if done:
                    return done
                raise OSError(errno.EIO, "the direct write took no bytes", self.name)
            done += taken
        return done

    def _buffered(self, data: np.ndarray, position: int) -> None:
        """Write a few unaligned bytes through the page cache, then to the device at once."""
        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags & ~DIRECT_FLAG)
        try:
            memory = memoryview(data)  # type: ignore[arg-type]
            done = 0
            while done < data.size:
                taken = os.pwrite(self._fd, memory[done:], position + done)
                if taken == 0:  # never for a regular file; not a reason to spin
                    raise OSError(errno.EIO, "the write took no bytes", self.name)
                done += taken
        finally:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
        if self._progress is not None:
            # A direct file keeps nothing in the cache: these bytes go now.
            _to_device(self._fd, position, data.size)

    def use_writeback(self, window: int | None) -> DirectProgress | None:
        """Direct writes need no windows: the progress the worker reads, whatever
        ``window`` is, or None where there is no device to count bytes on (tmpfs)."""
        return self._progress

    def flush(self) -> None:
        """Write the bytes held in the buffer (the unaligned end of the last write)."""
        if self._held:
            assert self._view is not None
            held, self._held = self._held, 0
            try:
                self._buffered(self._view[:held], self._position)
            except BaseException:
                self._held = held
                raise
            self._position += held
            self.on_disk = self.taken

    def sync(self) -> None:
        self.flush()
        os.fdatasync(self._fd)
        self.on_disk = self.taken

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._release()
            os.close(self._fd)


#: Huge pages are 2 MiB on the platforms that have them (x86-64, arm64 with 4 KiB pages).
_HUGE = 2 << 20


def _huge_buffer(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """``size`` bytes of page-aligned memory, in huge pages where the system gives them.

    A device write is split into requests by the pages it comes from (a
    virtio disk takes 254 segments per request): from 4 KiB pages a 4 MiB
    write is many requests, from 2 MiB pages a few (measured: ~10 % faster
    from an unaligned array, within the disk's noise). The buffer starts on
    a huge-page boundary and asks for huge pages (``MADV_HUGEPAGE``); where
    that is refused it is ordinary memory, page-aligned, which any direct
    I/O alignment here accepts.
    """
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is None:
        buffer = mmap.mmap(-1, size)
        return buffer, np.frombuffer(buffer, dtype=np.uint8)
    buffer = mmap.mmap(-1, size + _HUGE)
    whole = np.frombuffer(buffer, dtype=np.uint8)
    start = -whole.ctypes.data % _HUGE
    try:
        buffer.madvise(advice, start, size)
    except OSError:  # no transparent huge pages: ordinary pages
        pass
    return buffer, whole[start:start + size]


def _to_device(fd: int, position: int, size: int) -> None:
    """Send ``size`` bytes at ``position`` to the device, wait, and drop them from the cache."""
    if write_range(fd, position, size):
        try:
            os.posix_fadvise(fd, position, size, os.POSIX_FADV_DONTNEED)
        except OSError:  # only a hint
            pass
