"""What a writer-process write goes to: a path, or a file descriptor handed to the child.

Checked in the caller's thread, like every destination: a path (opened by
the writer process), an int file descriptor, a plain stream socket, or a
binary file object with a real ``fileno()`` (flushed here first, then
written through its descriptor). The descriptor is duplicated at once, so
the write is independent of what the caller later does with its number;
the duplicate shares the open file, hence its position: bytes written by
the writer process move the caller's file position, as a thread's would.
Objects that live only in this process (a ``BytesIO``, a TLS socket, any
object without a descriptor) are refused with a ``ValueError``.
"""

from __future__ import annotations

import functools
import numbers
import os
import socket
from collections.abc import Callable
from typing import BinaryIO, cast

from ..sinks import (
    FdSink,
    PathSink,
    SocketSink,
    StreamSink,
    check_path_options,
    sink_for,
)

__all__ = ["Destination", "destination_for"]


class Destination:
    """A checked destination: a path (``path``), or a duplicate descriptor (``fd``, owned
    until :meth:`take_fd` or :meth:`discard`) with the ``key`` that orders its writes."""

    __slots__ = ("closes", "fd", "key", "name", "path")

    def __init__(self, name: str, path: str | None = None, fd: int | None = None,
                 key: str | None = None, closes: Callable[[], None] | None = None) -> None:
        self.name = name  # how messages name it: the path, or "fd N" (the caller's number)
        self.path = path
        self.fd = fd
        self.key = key  # the open file's identity (its writes share one queue there)
        self.closes = closes  # close_when_finished: what closes the caller's object

    def take_fd(self) -> int | None:
        """The duplicate descriptor, now the taker's to close (None for a path)."""
        fd, self.fd = self.fd, None
        return fd

    def discard(self) -> None:
        """Close the duplicate if it was never handed on."""
        fd = self.take_fd()
        if fd is not None:
            os.close(fd)


def _refused(file: object, why: str, instead: str) -> ValueError:
    return ValueError(f"file: backend='process' cannot write to {type(file).__qualname__} "
                      f"objects: {why}; {instead}")


def destination_for(file: object, mode: str | None, atomic: bool, direct: bool,
                    close_when_finished: bool) -> Destination:
    """Check ``file`` for the writer process (``mode``, ``atomic``, ``direct``: paths only).

    Raises
    ------
    TypeError
        If ``file`` is no destination at all.
    ValueError
        If it is closed, not writable, text, or lives only in this process.
    """
    if isinstance(file, (str, bytes, os.PathLike)):
        text = os.fsdecode(os.fspath(file))
        PathSink(text, "wb" if mode is None else mode, atomic, direct=direct)  # checks only
        # The writer process has a working directory of its own (the program may change its).
        path = os.path.abspath(text)
        return Destination(path, path=path)
    check_path_options(file, mode, atomic, direct)
    sink = sink_for(file)
    closes: Callable[[], None] | None = None
    if isinstance(sink, FdSink):
        fd = int(cast(numbers.Integral, file))  # (sink_for: an FdSink is for an integer)
        if close_when_finished:
            closes = functools.partial(os.close, fd)
    elif isinstance(sink, SocketSink):
        if type(file) is not socket.socket:
            raise _refused(file, "the encryption lives in this process", "use backend='thread'")
        fd = file.fileno()
        if close_when_finished:
            closes = file.close
    else:
        assert isinstance(sink, StreamSink)
        if sink.fd < 0:
            raise _refused(file, "they have no file descriptor (they live in this process)",
                           "pass a path, a file descriptor or a file object with one")
        if sink.kind != "bytes":
            raise _refused(file, "a text stream encodes in this process",
                           "write bytes to its .buffer, or use backend='thread'")
        flush = getattr(file, "flush", None)
        if callable(flush):
            flush()  # what it buffered goes first, and its position is the descriptor's
        fd = sink.fd
        if close_when_finished:
            closes = cast(BinaryIO, file).close  # (a binary file object with a descriptor)
    info = os.fstat(fd)
    duplicate = os.dup(fd)
    return Destination(f"fd {fd}", fd=duplicate, key=f"fd {fd} {info.st_dev} {info.st_ino}",
                       closes=closes)
