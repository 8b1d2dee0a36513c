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

__all__ = ["release", "run_delay"]

_SCHEDSTAT = "/proc/thread-self/schedstat"
_local = threading.local()
_read: Callable[[], float] | None = None


def run_delay() -> float:
    """Seconds the calling thread has been runnable but not running, since it started.

    0 where it cannot be read (another system, no ``/proc``, no file
    descriptor to spare): it only refines pacing, and never fails a write.
    """
    global _read
    try:
        if _read is None:
            _read = _make_reader()
        return _read()
    except (OSError, ImportError, ValueError):
        _read = _zero  # stop trying: a worker must not fail for a statistic
        return 0.0


def release() -> None:
    """Close the calling thread's ``schedstat`` file, if it opened one (at thread exit)."""
    fd = getattr(_local, "fd", -1)
    if fd >= 0:
        _local.fd = -1
        os.close(fd)


def _zero() -> float:
    return 0.0


def _make_reader() -> Callable[[], float]:
    if not sys.platform.startswith("linux") or not os.path.exists(_SCHEDSTAT):
        return _zero
    import ctypes  # here: only a worker thread that paces needs it

    # PyDLL keeps the interpreter lock through the call: os.pread would
    # release it, and getting it back costs up to 5 ms beside a main thread
    # running Python. Reading this file takes about 2 us.
    pread = ctypes.PyDLL(None).pread
    pread.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
    pread.restype = ctypes.c_ssize_t

    def read() -> float:
        fd = getattr(_local, "fd", -1)
        if fd < 0:  # /proc/thread-self names the thread that opens it
            fd = _local.fd = os.open(_SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC)
            _local.buffer = ctypes.create_string_buffer(64)
        count = pread(fd, _local.buffer, 64, 0)
        if count <= 0:
            return 0.0
        # "<ns on a CPU> <ns waiting for one> <time slices>"
        return int(_local.buffer.raw[:count].split(None, 2)[1]) * 1e-9

    return read
