"""The shared memory that carries data to the writer process: fixed segments, handed out in turn.

The parent copies a write's data into a free segment (one large ``memcpy``,
done by numpy without the interpreter lock) and tells the child which
segment holds how many bytes; the child writes from the segment and gives it
back. A segment is never reused before the child has given it back, so the
child never reads bytes that are being replaced.

The memory is an anonymous file (``memfd_create`` on Linux, else an
unlinked temporary file) whose descriptor the child inherits: it has no
name to leak, and the system frees it when both processes have let go,
however they end.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import threading
from collections.abc import Callable

import numpy as np

__all__ = ["SEGMENT", "SEGMENTS", "Attached", "Ring"]

#: Bytes per segment: large, because each one costs the parent's feeding thread
#: a round trip for the interpreter lock (5 ms while the program runs Python).
SEGMENT = 16 * 1024 * 1024
#: Segments in the ring (so 64 MiB of shared memory while the backend runs).
SEGMENTS = 4


class Ring:
    """The parent's side: creates the shared memory and keeps track of free segments.

    Parameters
    ----------
    segments, segment : int
        How many segments, of how many bytes each.
    """

    def __init__(self, segments: int = SEGMENTS, segment: int = SEGMENT) -> None:
        self.segment = segment
        self.segments = segments
        size = segments * segment
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("bgio-ring", os.MFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            with tempfile.TemporaryFile(dir=shm) as file:
                self.fd = os.dup(file.fileno())
        os.ftruncate(self.fd, size)
        self._memory = mmap.mmap(self.fd, size)
        self._array = np.frombuffer(self._memory, dtype=np.uint8)
        self._free = list(range(segments - 1, -1, -1))
        self._changed = threading.Condition()
        self._closed = False

    def take(self, cancelled: Callable[[], bool] | None = None) -> int | None:
        """Wait for a free segment and return its number; None if the ring was closed, or
        ``cancelled()`` (a callable) became true meanwhile (woken by :meth:`wake`)."""
        with self._changed:
            while not self._free:
                if self._closed or (cancelled is not None and cancelled()):
                    return None
                self._changed.wait()
            if self._closed:
                return None
            return self._free.pop()

    def fill(self, index: int, data: memoryview, offset: int = 0) -> None:
        """Copy ``data`` into segment ``index`` from ``offset`` on (it must fit)."""
        start = index * self.segment + offset
        source = np.frombuffer(data, dtype=np.uint8)
        self._array[start:start + source.size] = source

    def give_back(self, index: int) -> None:
        """The child is done with segment ``index``."""
        with self._changed:
            self._free.append(index)
            self._changed.notify_all()

    def wake(self) -> None:
        """Wake a :meth:`take` waiting for a segment (a write it feeds was cancelled)."""
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        """Free the shared memory (the child must be gone or done with it)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        del self._array
        try:
            self._memory.close()
        except BufferError:  # a view still held by a traceback: freed with it
            pass
        os.close(self.fd)


class Attached:
    """The child's side: views of the segments the parent filled, through the inherited
    descriptor ``fd``."""

    def __init__(self, fd: int, segment: int) -> None:
        self._memory = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
        self.segment = segment

    def view(self, index: int, size: int) -> memoryview:
        """The first ``size`` bytes of segment ``index``."""
        start = index * self.segment
        return memoryview(self._memory)[start:start + size]
