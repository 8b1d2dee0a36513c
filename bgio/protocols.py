"""The types of what bgio's calls take: destinations, read sources and data, for checkers.

At run time the calls check their arguments themselves (a clear ``TypeError`` in the
caller); these names say the same to a checker such as ``mypy --strict``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

__all__ = ["Data", "Destination", "ReadSource", "Readable", "Writable"]


class Writable(Protocol):
    """A file object bgio can write to: anything with ``write``."""

    def write(self, data: Any, /) -> object: ...


class Readable(Protocol):
    """A file object bgio can read from: anything with ``read`` (``readinto`` is used when
    there is one)."""

    def read(self, size: int = ..., /) -> Any: ...


if TYPE_CHECKING:
    from typing_extensions import Buffer

    #: What a write takes: a buffer (bytes, bytearray, memoryview, a numpy array, ...), a
    #: str for text streams, or an iterable of those.
    Data = Buffer | str | Iterable[Buffer | str]
else:  # (the buffer protocol has no runtime type before Python 3.12)
    Data = Any

#: Where a write goes: a path, an int file descriptor, a stream socket, an object-store URL
#: (a str), or a file object.
Destination = str | bytes | os.PathLike[str] | int | socket.socket | Writable
#: What a read takes from: a path, an int file descriptor, a stream socket, a file object.
ReadSource = str | bytes | os.PathLike[str] | int | socket.socket | Readable
