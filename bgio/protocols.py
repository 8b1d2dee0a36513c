"""The types of what bgio's calls take: destinations, read sources and data, for checkers.

At run time the calls check their arguments themselves (a clear ``TypeError`` in the
caller); these names say the same to a checker such as ``mypy --strict``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

__all__ = ["BufferLike", "Data", "Destination", "ReadSource", "Readable", "ReadsInto",
           "Receives", "Writable"]


class Writable(Protocol):
    """A file object bgio can write to: anything with ``write``."""

    def write(self, data: Any, /) -> object: ...


class Readable(Protocol):
    """A file object bgio can read from: anything with ``read`` (``readinto`` is used when
    there is one)."""

    def read(self, size: int, /) -> Any: ...


class ReadsInto(Protocol):
    """A raw stream bgio can read from with ``readinto`` alone."""

    def readinto(self, buffer: Any, /) -> Any: ...


class Receives(Protocol):
    """A socket-like object bgio can read from: ``recv`` and a descriptor to wait on."""

    def recv(self, size: int, /) -> bytes: ...

    def fileno(self) -> int: ...


if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from typing_extensions import Buffer

    #: One buffer: bytes, bytearray, memoryview, mmap, array.array, a numpy array (which
    #: numpy's own types call a buffer only from Python 3.12 on).
    BufferLike = Buffer | npt.NDArray[Any]
    #: What a write takes: a buffer, a str for text streams, or an iterable of those.
    Data = BufferLike | str | Iterable[BufferLike | str]
    _Fd = int | np.integer[Any]
    _Path = str | bytes | os.PathLike[str] | os.PathLike[bytes]
    #: Where a write goes: a path, an int file descriptor, a stream socket, an object-store
    #: URL (a str), or a file object.
    Destination = _Path | _Fd | socket.socket | Writable
    #: What a read takes from: a path, an int file descriptor, a stream socket (or an object
    #: with ``recv``), a file object.
    ReadSource = _Path | _Fd | socket.socket | Readable | ReadsInto | Receives
else:  # (the buffer protocol has no runtime type before Python 3.12)
    BufferLike = Data = Destination = ReadSource = Any
