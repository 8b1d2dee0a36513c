"""Windowed write-back: a file written in the background reaches the device window by window.

A buffered write only copies data into the page cache; the kernel writes it
to the device later, at full speed and outside any pacing, once enough of
memory is dirty (about 2 GiB on a 24 GiB machine), and whoever calls
``fsync`` or needs memory next pays for it. A :class:`Writeback` keeps the
dirty data of one file to about two windows instead, as PostgreSQL's
``*_flush_after`` and RocksDB's ``bytes_per_sync`` do. Windows end between
two pieces of a write (:meth:`Writeback.turn`), once ``window`` bytes were
written since the last one ended: the worker then waits for the window the
device is writing (``sync_file_range`` with its wait flags), drops it from
the cache (``posix_fadvise(DONTNEED)``), and, after any pacing pause, starts
the device write of the window just ended (:meth:`Writeback.resume`,
``SYNC_FILE_RANGE_WRITE``) before it writes the next piece. So the device
writes one window while the next is copied into the cache, the wait is
inside the worker's busy time, and the device rests during the pauses: a
profile's busy share is the device's share too.

Linux only (``sync_file_range`` through the C library); regular files on
file systems with a device. Pipes, sockets, tmpfs and ramfs, and other
systems keep plain buffered writes (:func:`unsupported_reason` says why).

``DONTNEED`` after the wait is used rather than ``RWF_DONTCACHE`` (Linux
6.14 and later): it needs no positional writes, so file descriptors in
append mode, or shared with the program, are written as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import stat
import sys
from collections.abc import Callable
from typing import Protocol

__all__ = ["NoWindows", "Progress", "Writeback", "available", "follow", "unsupported_reason", "write_range"]

logger = logging.getLogger("bgio")

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4
#: ``statfs`` magic numbers of file systems whose pages never go to a device.
_NO_DEVICE = {0x01021994: "tmpfs", 0x858458F6: "ramfs"}
#: Errors that mean "this file cannot be written back by range": fall back, don't fail.
_UNSUPPORTED = {errno.EINVAL, errno.ESPIPE, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENODEV}

_SyncFileRange = Callable[[int, int, int, int], int]
_StatFs = Callable[[int, ctypes.Array[ctypes.c_char]], int]


def _load() -> tuple[_SyncFileRange | None, _StatFs | None]:
    if not sys.platform.startswith("linux"):
        return None, None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sync_file_range = libc.sync_file_range
        fstatfs = libc.fstatfs
    except (OSError, AttributeError):
        return None, None
    sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    sync_file_range.restype = ctypes.c_int
    fstatfs.argtypes = [ctypes.c_int, ctypes.c_char_p]
    fstatfs.restype = ctypes.c_int
    return sync_file_range, fstatfs


_sync_file_range, _fstatfs = _load()


def available() -> bool:
    """True if this platform has ``sync_file_range`` (Linux)."""
    return _sync_file_range is not None


def _file_system(fd: int) -> int | None:
    # struct statfs starts with f_type (a long on every Linux ABI).
    if _fstatfs is None:
        return None
    buffer = ctypes.create_string_buffer(256)
    if _fstatfs(fd, buffer) != 0:
        return None
    return int.from_bytes(buffer.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)


def unsupported_reason(fd: int) -> str | None:
    """Why ``fd``'s writes cannot be written back by window, or None if they can.

    Parameters
    ----------
    fd : int
        An open file descriptor.
    """
    if _sync_file_range is None:
        return "no sync_file_range on this platform"
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return "not a regular file"
    name = _NO_DEVICE.get(_file_system(fd) or 0)
    if name is not None:
        return f"on {name}, which has no device"
    return None


def _ranged(fd: int, offset: int, size: int, flags: int) -> int:
    """``sync_file_range``: 0 when done, the error number where the file system refuses
    ranged write-back (fall back, don't fail); ``OSError`` if the device failed."""
    assert _sync_file_range is not None
    if _sync_file_range(fd, offset, size, flags) == 0:
        return 0
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return code
    raise OSError(code, f"write-back failed: {os.strerror(code)}")


def write_range(fd: int, offset: int, size: int) -> bool:
    """Write ``size`` bytes of ``fd`` from ``offset`` to the device and wait for them.

    Returns False, having done nothing, where ranged write-back is not
    available or the file system refuses it; raises ``OSError`` if the
    device fails to write them.
    """
    if _sync_file_range is None or size <= 0:
        return False
    return _ranged(fd, offset, size, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) == 0


class Progress(Protocol):
    """What the worker reads and drives of a sink's write-back: a :class:`Writeback`, or
    a sink's own account where its writes reach the device another way (direct I/O)."""

    @property
    def written(self) -> int:
        """Bytes written through it."""

    @property
    def on_disk(self) -> int:
        """Of those, the bytes on the device."""

    def resume(self) -> None:
        """Before a piece: start the device write of the window ended last."""

    def turn(self, window: int | None = None) -> None:
        """After a piece: end a window if one is full."""

    @property
    def settled_by_flush(self) -> bool:
        """True if a flush of the sink leaves everything it took on the device (direct
        I/O); then :attr:`on_disk` reaching :attr:`written` says all of it is there."""


class NoWindows:
    """A base for a sink's own account (a :class:`Progress` without windows): its
    writes reach their end another way, so :meth:`resume` and :meth:`turn` do nothing."""

    __slots__ = ()

    def resume(self) -> None:
        """Nothing to start."""

    def turn(self, window: int | None = None) -> None:
        """No window to end."""


class Writeback:
    """The write-back windows of one file descriptor, fed the byte count of each write.

    Parameters
    ----------
    fd : int
        The file's descriptor; not closed here. Where windows do not apply
        (:func:`unsupported_reason`), the object is made disabled.
    window : int
        Bytes per window.

    Attributes
    ----------
    written : int
        Bytes written through this object (:meth:`wrote`).
    on_disk : int
        Of those, the bytes the kernel has reported written to the device
        (not necessarily durable: the device's own cache, and the file's
        metadata, need ``fsync``). Trails :attr:`written` by at most two
        windows.
    enabled : bool
        False where windows do not apply, or once the file system refused
        ranged write-back (the writes go on as plain buffered writes).
    reason : str or None
        Why windows are off, if they are.
    """

    __slots__ = ("_closed", "_fd", "_origin", "_started", "enabled", "on_disk", "reason",
                 "window", "written")

    #: A flush leaves the windows' last bytes in the page cache (see Progress).
    settled_by_flush = False

    def __init__(self, fd: int, window: int) -> None:
        self._fd = fd
        self.window = window
        # Offsets from the origin: [on_disk, _started) is being written back,
        # [_started, _closed) is a window ended and not yet started, and
        # [_closed, written) the window being written.
        self._started = 0
        self._closed = 0
        self.written = 0
        self.on_disk = 0
        self.reason = unsupported_reason(fd)
        self.enabled = self.reason is None
        self._origin = 0
        if not self.enabled:
            return
        # The file offset of the first byte: windows are ranges of the file.
        self._origin = self._position()

    def _position(self) -> int:
        # In append mode every write goes to the end, wherever the offset is.
        if fcntl.fcntl(self._fd, fcntl.F_GETFL) & os.O_APPEND:
            return os.fstat(self._fd).st_size
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def moved(self) -> bool:
        """True if the file's offset is no longer where this object's writes ended (the
        program wrote or seeked between bgio's writes): its windows no longer match the
        file, and a new object should follow from here."""
        return self.enabled and self._position() != self._origin + self.written

    def wrote(self, count: int) -> None:
        """Count ``count`` more bytes written (the sink calls it after each write)."""
        self.written += count

    def turn(self, window: int | None = None) -> None:
        """Between two pieces of the write: if a window's worth (``window``, default
        :attr:`window`) was written since the last window ended, wait for the window in
        flight, drop it from the cache, and end a window here (its write-back starts at
        the next :meth:`resume`)."""
        if not self.enabled or self.written - self._closed < (window or self.window):
            return
        self._wait_for(self.on_disk, self._started)
        self._closed = self.written

    def resume(self) -> None:
        """Before the next piece (after any pause): start the write-back of the window
        ended last, so the device writes it while the next one is written."""
        if self.enabled and self._closed > self._started:
            self._call(self._started, self._closed, _WRITE)
            self._started = self._closed

    def finish(self, wait: bool = False) -> None:
        """The stream ends (for now): start the write-back of what is left; with ``wait``,
        wait for all of it and drop it from the cache."""
        if not self.enabled:
            return
        self._closed = self.written
        self.resume()
        if wait:
            self._wait_for(self.on_disk, self._started)

    def synced(self) -> None:
        """Everything written is on disk (an ``fsync`` returned)."""
        self.on_disk = self._started = self._closed = self.written

    def _wait_for(self, start: int, end: int) -> None:
        if self._call(start, end, _WAIT_BEFORE | _WRITE | _WAIT_AFTER):
            self.on_disk = max(self.on_disk, end)
            try:
                os.posix_fadvise(self._fd, self._origin + start, end - start,
                                 os.POSIX_FADV_DONTNEED)
            except OSError:  # only a hint: the data is written either way
                pass

    def _call(self, start: int, end: int, flags: int) -> bool:
        if end <= start or not self.enabled:
            return False
        code = _ranged(self._fd, self._origin + start, end - start, flags)
        if code == 0:
            return True
        self.enabled = False
        self.reason = f"sync_file_range refused: {os.strerror(code)}"
        logger.debug("bgio: fd %d: ranged write-back refused (%s); plain buffered writes",
                     self._fd, os.strerror(code))
        return False


def follow(current: Writeback | None, fd: int, window: int | None) -> Writeback | None:
    """The :class:`Writeback` a sink writing ``fd`` uses for its next run, given the one it
    has (``current``) and the profile's ``window``.

    None stops windowing (what is left is started on its way first); a file
    whose offset moved since (:meth:`Writeback.moved`) gets a new one from
    where it is. Where windows do not apply, a disabled one is kept, so the
    file is not examined again at every run.
    """
    if window is None:
        if current is not None:
            current.finish()  # a later window starts afresh from where the file is
        return None
    if current is not None and current.moved():
        current.finish()
        current = None
    if current is None:
        current = Writeback(fd, window)
    current.window = window
    return current
