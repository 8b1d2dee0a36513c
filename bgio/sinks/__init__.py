"""Destination adapters: pick the sink for what the caller passed as ``file``."""

from __future__ import annotations

import numbers
import socket

from .base import Sink
from .fd import FdSink, SocketSink
from .objects import ObjectSink
from .path import PathSink
from .stream import StreamSink
from .wait import Waiter, WriteInterrupted

__all__ = ["FdSink", "PathSink", "Sink", "SocketSink", "StreamSink", "Waiter", "WriteInterrupted",
           "check_path_options", "fit_chunk_size", "sink_can_sync", "sink_for"]


def sink_for(file: object, name: str = "file") -> Sink:
    """Return the sink that writes into ``file``, checked in the caller's thread.

    ``file`` may be a file object (anything with ``write``), an int file
    descriptor, or a connected stream socket.

    Raises
    ------
    TypeError
        If ``file`` is none of those.
    ValueError
        If it is closed or not open for writing.
    """
    if isinstance(file, socket.socket):
        return SocketSink(file, name)
    if isinstance(file, numbers.Integral) and not isinstance(file, bool):
        return FdSink(int(file), name)
    return StreamSink(file, name)


def check_path_options(file: object, mode: str | None, atomic: bool, direct: bool) -> None:
    """Refuse the options that apply to paths only, for ``file`` that is not one.

    Raises
    ------
    ValueError
        Naming the option.
    """
    if mode is not None:
        raise ValueError(f"mode applies to paths only; got {mode!r} with {type(file).__qualname__}")
    if atomic:
        raise ValueError(f"atomic=True applies to paths only, not to {type(file).__qualname__}")
    if direct:
        raise ValueError(f"direct=True applies to paths only, not to {type(file).__qualname__} "
                         "(bgio opens the file with O_DIRECT itself)")


def sink_can_sync(sink: Sink) -> bool:
    """Whether ``fsync=True`` can be honoured: the sink reaches a file descriptor."""
    return not isinstance(sink, StreamSink) or sink.fd >= 0


def fit_chunk_size(sink: Sink, size: int) -> int:
    """``size`` rounded up to a multiple of what the sink writes whole (the page size for
    a direct path, so that no chunk ends unaligned), or the pieces a paced upload is
    handed over in; else unchanged."""
    if isinstance(sink, ObjectSink) and sink.piece_size is not None:
        return sink.piece_size
    multiple = sink.chunk_multiple if isinstance(sink, PathSink) else 1
    return -(-size // multiple) * multiple
