"""Free space: an HDF5 writer's check at the start, and its watch before every store.

HDF5 does not survive a full disk: a chunk store that fails with ``ENOSPC``
leaves the file's chunk index in a state where the chunks stored just
before may be lost when the file is closed, and HDF5 objects closed by
the garbage collector then raise in destructors, where nothing can catch
the error. So an HDF5 writer never lets the disk fill: before each store,
:meth:`SpaceWatch.check` knows how much is free (``statvfs``, asked again
every :data:`RECHECK` seconds and whenever the stores since could have
used half the room above ``min_free``), and if the store would leave less
than ``min_free`` it is not made: the writer stops with :class:`DiskFull`,
and the space left is what the file's metadata needs to be closed valid.
Given an expected total, :func:`check_room` refuses (or warns about) a run
that cannot fit before anything is written.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
import time
import warnings

from .errors import DiskFull

__all__ = ["DEFAULT_MIN_FREE", "RECHECK", "SMALLEST_DEFAULT", "SpaceWatch", "check_min_free",
           "check_room", "default_min_free", "free_bytes"]

#: Bytes an HDF5 writer leaves free by default: room for the metadata HDF5
#: writes at close (its metadata cache holds up to 32 MiB of it) and for the
#: other programs on the disk; on a file system smaller than 20 times this,
#: a twentieth of its size (at least :data:`SMALLEST_DEFAULT`): a 64 MiB
#: ``/dev/shm`` keeps 3.2 MiB.
DEFAULT_MIN_FREE = 64 * 1024 * 1024
#: The least ``min_free`` chosen for a small file system.
SMALLEST_DEFAULT = 1024 * 1024

#: Seconds a reading of the free space is trusted for (other programs write too).
RECHECK = 0.05

_MIB = 1024 * 1024


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still take on the file system holding ``path``
    (a file, or the folder a new file goes in)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def default_min_free(path: str | os.PathLike[str]) -> int:
    """The ``min_free`` of a writer to the file system holding ``path`` that was given
    none (see :data:`DEFAULT_MIN_FREE`)."""
    stats = os.statvfs(path)
    size = stats.f_blocks * stats.f_frsize
    return min(DEFAULT_MIN_FREE, max(SMALLEST_DEFAULT, size // 20))


def check_min_free(min_free: object, path: str | os.PathLike[str] | None = None) -> int:
    """``min_free`` as bytes (an int >= 0); None: :func:`default_min_free` of ``path``
    (:data:`DEFAULT_MIN_FREE` without one)."""
    if min_free is None:
        return DEFAULT_MIN_FREE if path is None else default_min_free(path)
    if isinstance(min_free, bool) or not isinstance(min_free, numbers.Integral):
        raise TypeError(f"min_free must be an int (bytes) or None, got "
                        f"{type(min_free).__qualname__}")
    value = int(min_free)
    if value < 0:
        raise ValueError(f"min_free must be >= 0, got {min_free!r}")
    return value


def _mib(nbytes: float) -> str:
    return f"{nbytes / _MIB:.1f} MiB"


def _size(nbytes: float) -> str:
    """A size for messages: MiB, KiB or bytes, whichever says it best."""
    if abs(nbytes) >= _MIB:
        return _mib(nbytes)
    if abs(nbytes) >= 1024:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{int(nbytes)} bytes"


def check_room(folder: str | os.PathLike[str], expected: int | None, min_free: int,
               compressed: bool, what: str) -> None:
    """At a writer's start: refuse a run the disk holding ``folder`` cannot take.

    ``expected`` is the run's bytes before compression (None: unknown).
    Less than ``min_free`` free raises :class:`DiskFull`; with ``expected``,
    so does too little room for it uncompressed, unless the data are
    ``compressed`` (they may still fit): then a ``RuntimeWarning``.
    """
    free = free_bytes(folder)
    if free < min_free:
        raise DiskFull(f"{what}: {_mib(free)} free on the disk of {os.fspath(folder)!r}, less "
                       f"than min_free={min_free} bytes; nothing was written", 0, free)
    if expected is None or free - expected >= min_free:
        return
    message = (f"{what}: the run expected ({_mib(expected)} before compression) leaves less "
               f"than min_free={min_free} bytes of the {_mib(free)} free on the disk of "
               f"{os.fspath(folder)!r}")
    if not compressed:
        raise DiskFull(message + "; nothing was written", 0, free)
    warnings.warn(message + "; it fits only if compression saves the difference, and the "
                  "writer stops when the disk has only min_free left", RuntimeWarning,
                  stacklevel=4)


class SpaceWatch:
    """Before each store: would it leave less than ``min_free`` on the disk? Then stop.

    Parameters
    ----------
    path : path
        The file written, as messages name it.
    min_free : int
        Bytes to leave free; 0 still stops a store that cannot fit.
    what : str
        What the messages call the stored items ("frames", "events").
    fd : int or None
        The file's descriptor, if it has one: its file system is asked
        (``fstatvfs``), wherever the file is moved meanwhile; else ``path``'s.
    """

    __slots__ = ("_checked_at", "_fd", "_free", "_since", "min_free", "path", "what")

    def __init__(self, path: str | os.PathLike[str], min_free: int, what: str,
                 fd: int | None = None) -> None:
        self.path = os.path.abspath(path)  # (a relative path would follow os.chdir)
        self.min_free = min_free
        self.what = what
        self._fd = fd
        self._free = 0  # bytes free at the last reading
        self._since = 0  # bytes stored since
        self._checked_at = -math.inf

    def free(self) -> int:
        """Bytes free now on the file's file system (see :func:`free_bytes`)."""
        if self._fd is None:
            return free_bytes(self.path)
        stats = os.fstatvfs(self._fd)
        return stats.f_bavail * stats.f_frsize

    def check(self, nbytes: int, stored: int) -> None:
        """Raise :class:`DiskFull` if storing ``nbytes`` would leave less than
        ``min_free`` (``stored``: the items stored so far, for its message); otherwise
        count them as taken."""
        now = time.monotonic()
        if (now - self._checked_at >= RECHECK
                or 2 * (self._since + nbytes) >= self._free - self.min_free):
            self._free, self._checked_at, self._since = self.free(), now, 0
        free = self._free - self._since  # (an estimate between readings)
        if free - nbytes < self.min_free:
            self._checked_at = -math.inf  # (read again at the next store)
            raise DiskFull(f"disk full: {stored} {self.what} stored in {self.path!r}, the "
                           f"rest not ({_size(free)} free, a store of {_size(nbytes)} would "
                           f"leave less than min_free={self.min_free} bytes); the file is "
                           f"left valid with those", stored, free)
        self._since += nbytes

    def failed(self, error: OSError, stored: int, after: str) -> DiskFull | None:
        """The :class:`DiskFull` a store's ``ENOSPC`` means (None for other errors), after
        ``stored`` items (``after``: what the writer makes of it); the caller raises it
        ``from error``."""
        if error.errno != errno.ENOSPC and "errno = 28" not in str(error):
            return None
        try:
            free: int | None = self.free()
        except OSError:
            free = None
        return DiskFull(f"disk full: a store into {self.path!r} failed after {stored} "
                        f"{self.what} were stored (another program took the space min_free "
                        f"kept); {after}", stored, free)
