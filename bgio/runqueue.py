"""How long the calling thread has waited for a CPU: Linux's per-thread run-queue delay.

The worker reads it around each chunk so that time spent runnable but
waiting for a CPU taken by other processes is not counted as busy time.
Elsewhere (or without ``/proc``) it reads 0.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["release", "run_delay"]

_SCHEDSTAT = "/proc/thread-self/schedstat"
#: Per thread: ``read`` (its bound reader) and ``file`` (its open schedstat).
_local = threading.local()
#: False once the file could not be opened: no thread tries again.
_available = sys.platform.startswith("linux")


class _Schedstat:
    """One thread's open schedstat file, closed when the thread ends (its thread-local
    values are dropped then) or on :func:`release`."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def run_delay() -> float:
    """Seconds the calling thread has been runnable but not running, since it started.

    0 where it cannot be read (another system, no ``/proc``, or no file
    descriptor to spare when the first thread tried: then it is not tried
    again in this process); a read that fails repeats the last value. It
    only refines pacing, and never fails a write. The worker calls it twice
    a chunk, so the reader is bound once per thread (about 2 us a call).
    """
    read: Callable[[], float] | None = getattr(_local, "read", None)
    if read is None:
        read = _local.read = _bind_reader()
    return read()


def release() -> None:
    """Close the calling thread's ``schedstat`` file, if it opened one (at thread exit)."""
    _local.read = None
    file: _Schedstat | None = getattr(_local, "file", None)
    if file is not None:
        _local.file = None
        file.close()


def _after_fork_in_child() -> None:
    # The forking thread's file names the parent's thread; the other
    # threads' files went with their threads' values.
    global _local
    release()
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _zero() -> float:
    return 0.0


def _bind_reader() -> Callable[[], float]:
    """A reader of the calling thread's run-queue delay, or :func:`_zero` where there is none."""
    global _available
    if not _available:
        return _zero
    try:
        import ctypes  # here: only a worker thread that paces needs it

        # PyDLL keeps the interpreter lock through the call: os.pread would
        # release it, and getting it back costs up to 5 ms beside a main
        # thread running Python. The arguments are C values made once (no
        # argtypes: converting them would cost more than the read, ~1 us).
        pread = ctypes.PyDLL(None).pread
        pread.restype = ctypes.c_ssize_t
        buffer = ctypes.create_string_buffer(64)
        size, offset = ctypes.c_size_t(64), ctypes.c_long(0)
        # /proc/thread-self names the thread that opens it.
        file = _local.file = _Schedstat(os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC))
    except (OSError, ImportError, AttributeError):
        _available = False  # stop trying: a worker must not fail for a statistic
        return _zero
    last = [0.0]

    def read(fd: int = file.fd, pread: Callable[..., int] = pread, buffer: Any = buffer,
             size: object = size, offset: object = offset, last: list[float] = last) -> float:
        # Bound as defaults: no lookups for a statistic read twice a chunk.
        if pread(fd, buffer, size, offset) > 0:
            try:
                # "<ns on a CPU> <ns waiting for one> <time slices>"
                last[0] = int(buffer.value.split(None, 2)[1]) * 1e-9
            except (ValueError, IndexError):
                pass
        return last[0]

    return read
