"""What a background read takes its bytes from: paths, descriptors, file objects, sockets.

Each reader fills the buffers it is given (``readinto``) and returns 0 at
the end of the data. A source that can make a read wait (a pipe, a socket,
a terminal, a non-blocking descriptor) is waited on with ``poll()`` beside
the lane's wake-up descriptor, so that :meth:`~bgio.BackgroundRead.cancel`
cuts a stalled source short; regular files are read straight away.

A buffered binary file object over a pipe may hold bytes already read from
its descriptor (after a ``readline()``, say), which ``poll()`` cannot see;
while bgio reads it, the pipe is made non-blocking, so that a read takes
what the buffer holds and then says "would block" instead of waiting where
no cancel can reach it; its mode is restored when the read ends. A socket's
or a terminal's descriptor is shared with the program's own writes, so it
is left as it is, and waited on before each read.
"""

from __future__ import annotations

import codecs
import fcntl
import io
import os
import select
import socket
import stat
from collections.abc import Hashable
from typing import Any, Literal

from .sinks.wait import Waiter

__all__ = ["Reader", "describe_source", "fileno_of", "make_reader", "own_nonblocking",
           "text_decoder", "would_wait"]

Kind = Literal["bytes", "text"]


def would_wait(fd: int) -> bool:
    """True if a read of ``fd`` may wait for data (anything but a regular file or a
    block device, whose reads wait only for the device).

    Raises
    ------
    OSError
        If ``fd`` is not open (EBADF).
    """
    mode = os.fstat(fd).st_mode
    return not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))


def fileno_of(stream: Any) -> int | None:
    """A file object's descriptor, or None if it has none (``io.BytesIO``, a closed or
    detached stream)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation is both)
        return None
    return fd if isinstance(fd, int) else None


def own_nonblocking(fd: int) -> int | None:
    """Make a pipe's (or FIFO's) descriptor non-blocking for a read; return it to be made
    blocking again after, or None if nothing was changed.

    Only a pipe: its read end is this program's alone, while a socket or a
    terminal shares its file description with the program's writes (a
    ``sendall`` or a ``print`` would meet "would block"); those are waited
    on with ``poll()`` before each read instead.
    """
    if stat.S_ISFIFO(os.fstat(fd).st_mode) and os.get_blocking(fd):
        os.set_blocking(fd, False)
        return fd
    return None


class Reader:
    """The reads of one source, in the worker thread.

    ``key`` identifies the source: reads with the same key run in call
    order. ``kind`` is "bytes", or "text" for a text stream (read with
    :meth:`read_text`). ``fd`` is the descriptor read, where there is one
    (for the page-cache advice and for waiting).
    """

    kind: Kind = "bytes"
    fd: int | None = None
    waiter: Waiter | None = None  # the lane's, set before the first read
    #: Set before :meth:`open` when the profile paces (a busy share below 100 % or a
    #: rate cap): a file's read-ahead is then turned off for the read, or the kernel
    #: would keep the device busy reading ahead through the pacing pauses.
    paced = False

    def __init__(self, name: str, key: Hashable) -> None:
        self.name = name
        self.key = key

    def open(self) -> None:
        """Open the source (a path is opened here, in the worker)."""

    def size_left(self) -> int | None:
        """Bytes from the read's start to the end of a regular file; None if not known."""
        return None

    def readinto(self, view: memoryview) -> int:
        """Fill some of ``view``; return how many bytes, 0 at the end of the data.

        Raises
        ------
        bgio.sinks.wait.WriteInterrupted
            If a cancel woke a wait for data.
        """
        raise NotImplementedError

    def read_text(self, count: int) -> str:
        """Up to ``count`` characters ("" at the end) of a text source."""
        raise NotImplementedError

    def done_with(self, start: int, stop: int) -> None:
        """Bytes ``start..stop`` of the read were read and will not be read again: drop
        them from the page cache (``drop_cache=True``), where the source is a file."""

    def close(self, close_source: bool) -> None:
        """The read is over: restore what was changed; close the source if asked."""

    def _wait(self, fd: int) -> None:
        assert self.waiter is not None
        self.waiter.wait_writable(fd, select.POLLIN)


class FdReader(Reader):
    """A file descriptor: a file (``offset``: read there with ``pread``, the position
    unchanged), a pipe, a FIFO, a terminal, blocking or not."""

    def __init__(self, fd: int, offset: int | None, name: str, key: Hashable) -> None:
        super().__init__(name, key)
        self.fd = fd
        self._offset = offset  # where the next pread reads; None: the fd's own position
        self._start = 0  # where the read began in the file (for size_left and done_with)
        self._waits = True
        self._advised = False  # read-ahead turned off (see Reader.paced)

    def open(self) -> None:
        assert self.fd is not None
        self._waits = would_wait(self.fd)
        if not self._waits:
            self._start = (self._offset if self._offset is not None
                           else os.lseek(self.fd, 0, os.SEEK_CUR))
            if self.paced and hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
                self._advised = True

    def size_left(self) -> int | None:
        if self._waits:
            return None
        assert self.fd is not None
        return max(0, os.fstat(self.fd).st_size - self._start)

    def readinto(self, view: memoryview) -> int:
        fd = self.fd
        assert fd is not None
        while True:
            if self._waits:
                self._wait(fd)
            try:
                if self._offset is None:
                    return os.readv(fd, [view])
                count = os.preadv(fd, [view], self._offset)
                self._offset += count
                return count
            except BlockingIOError:
                continue  # (woken by another reader of the same pipe: wait again)

    def done_with(self, start: int, stop: int) -> None:
        if self.fd is not None and not self._waits and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, self._start + start, stop - start,
                             os.POSIX_FADV_DONTNEED)

    def close(self, close_source: bool) -> None:
        try:
            if self._advised and not close_source:  # (the caller's fd: as it was)
                assert self.fd is not None
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_NORMAL)
        finally:
            if close_source and self.fd is not None:
                os.close(self.fd)


class PathReader(FdReader):
    """A path, opened (read-only) by the worker and closed when the read ends."""

    def __init__(self, path: str, offset: int | None) -> None:
        # (Read at its position, 0 when just opened, unless an offset is asked: a FIFO's
        # path cannot be read with pread.)
        super().__init__(-1, offset, path, ("read path", object()))
        self.fd = None
        self._path = path

    def open(self) -> None:
        self.fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        super().open()

    def close(self, close_source: bool) -> None:
        super().close(True)


class StreamReader(Reader):
    """A binary file object: ``readinto1`` (or ``readinto``), waiting on its descriptor
    where a read could wait (see the module's text)."""

    def __init__(self, stream: Any, name: str) -> None:
        super().__init__(name, ("read", id(stream)))
        self._stream = stream
        readinto = getattr(stream, "readinto1", None) or getattr(stream, "readinto", None)
        self._readinto = readinto
        self._read: Any = None if readinto is not None else stream.read
        self._restore_blocking: int | None = None  # the fd made non-blocking for the read
        self._poll_first = False

    def open(self) -> None:
        fd = fileno_of(self._stream)
        if fd is None:
            return
        self.fd = fd
        if not would_wait(fd):
            return
        self._restore_blocking = own_nonblocking(fd)
        # A socket or a terminal (left as it is): waited on before each read (what its
        # buffer holds already is read once more data comes, or the end).
        self._poll_first = not stat.S_ISFIFO(os.fstat(fd).st_mode)

    def size_left(self) -> int | None:
        if self.fd is None or would_wait(self.fd):
            return None
        try:
            return max(0, os.fstat(self.fd).st_size - int(self._stream.tell()))
        except (OSError, ValueError):
            return None

    def readinto(self, view: memoryview) -> int:
        while True:
            if self._poll_first:
                assert self.fd is not None
                self._wait(self.fd)
            if self._readinto is not None:
                count = self._readinto(view)
            else:  # (a read() only: one copy, into the buffer)
                data = self._read(len(view))
                count = None if data is None else len(data)
                if count:
                    view[:count] = data
            if count is not None:
                return int(count)
            if self.fd is None:  # would block, with nothing to wait on
                raise BlockingIOError(f"{self.name}: the stream has no data now and no "
                                      f"descriptor to wait on")
            self._wait(self.fd)

    def done_with(self, start: int, stop: int) -> None:
        """(A file object's own buffering hides where its bytes are: nothing dropped.)"""

    def close(self, close_source: bool) -> None:
        try:
            if self._restore_blocking is not None:
                os.set_blocking(self._restore_blocking, True)
        finally:
            if close_source:
                self._stream.close()


class SocketReader(Reader):
    """A connected stream socket: ``recv_into``, waited on with ``poll()``."""

    def __init__(self, sock: Any, name: str) -> None:
        super().__init__(name, ("read", id(sock)))
        self._socket = sock
        self.fd = sock.fileno()

    def readinto(self, view: memoryview) -> int:
        sock = self._socket
        pending = getattr(sock, "pending", None)  # (TLS: bytes decrypted already)
        while True:
            if not (pending is not None and pending()):
                self._wait(sock.fileno())
            try:
                if not hasattr(sock, "recv_into"):  # (socket-like, recv only: one copy)
                    data = sock.recv(len(view))
                    view[: len(data)] = data
                    return len(data)
                return int(sock.recv_into(view))
            except (BlockingIOError, InterruptedError):
                continue
            except TimeoutError:  # (a socket with a timeout woken for nothing)
                continue

    def close(self, close_source: bool) -> None:
        if close_source:
            self._socket.close()


class TextReader(Reader):
    """A text stream. Over a pipe or a socket it is read through its binary buffer
    (waited for as a binary stream is) and decoded here with the stream's encoding and
    errors: the text layer itself, made non-blocking, would take "nothing now" for the
    end and fail on a character cut in two. Files and ``io.StringIO`` are read with
    ``read(n)``."""

    kind: Kind = "text"

    def __init__(self, stream: Any, name: str) -> None:
        super().__init__(name, ("read", id(stream)))
        self._stream = stream
        self._binary: StreamReader | None = None
        self._decoder: io.IncrementalNewlineDecoder | None = None
        self._bytes = bytearray(0)

    def open(self) -> None:
        buffer = getattr(self._stream, "buffer", None)
        fd = fileno_of(self._stream)
        if fd is not None and buffer is not None and would_wait(fd):
            self.fd = fd
            self._binary = StreamReader(buffer, self.name)
            self._binary.waiter = self.waiter
            self._binary.open()
            # Newlines as open()'s default translates them: the text layer's own
            # setting (newline=) is not to be read back from it.
            self._decoder = io.IncrementalNewlineDecoder(text_decoder(self._stream),
                                                         translate=True)

    def read_text(self, count: int) -> str:
        if self._binary is None:
            text = self._stream.read(count)
            return "" if text is None else str(text)
        assert self._decoder is not None
        if len(self._bytes) < count:
            self._bytes = bytearray(count)
        while True:
            with memoryview(self._bytes) as view:
                got = self._binary.readinto(view[:count])
                text = self._decoder.decode(view[:got], final=got == 0)
            if text or got == 0:
                return text

    def close(self, close_source: bool) -> None:
        try:
            if self._binary is not None:
                self._binary.close(False)
        finally:
            if close_source:
                self._stream.close()


def text_decoder(stream: Any) -> codecs.IncrementalDecoder:
    """An incremental decoder with a text stream's encoding and errors."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    errors = getattr(stream, "errors", None) or "strict"
    return codecs.getincrementaldecoder(encoding)(errors)


def describe_source(source: object) -> str:
    """The source, for messages: its path or name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)
    if isinstance(source, int):
        return f"fd {source}"
    name = getattr(source, "name", None)
    if isinstance(name, (str, bytes)) and name:
        return os.fsdecode(name)
    return f"<{type(source).__qualname__}>"


def make_reader(source: object, offset: int | None) -> Reader:
    """The reader of ``source``; checks it in the caller's thread.

    Raises
    ------
    TypeError
        If ``source`` is none of the kinds a read takes from.
    ValueError
        If it is closed, not open for reading, or ``offset`` is given for a source
        with no position of its own to read at (a file object, a socket).
    """
    if isinstance(source, bool):
        raise TypeError("source: expected a path, a file descriptor, a file object or a "
                        "socket, got bool")
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(source)
        if not path:
            raise ValueError("source: the path is empty")
        return PathReader(path, offset)
    if isinstance(source, int):
        if source < 0:
            raise ValueError(f"source: a file descriptor is >= 0, got {source}")
        try:
            mode = os.fstat(source).st_mode
            flags = fcntl.fcntl(source, fcntl.F_GETFL)
        except OSError:
            raise ValueError(f"source: fd {source} is not open") from None
        if flags & os.O_ACCMODE == os.O_WRONLY:
            raise ValueError(f"source: fd {source} is not open for reading")
        if offset is not None and not stat.S_ISREG(mode) and not stat.S_ISBLK(mode):
            raise ValueError(f"offset: fd {source} is not a regular file: it is read where "
                             f"it stands")
        return FdReader(source, offset, f"fd {source}", ("read fd", source))
    name = describe_source(source)
    if isinstance(source, socket.socket):
        if source.fileno() < 0:
            raise ValueError(f"source: {name} is closed")
        if source.type != socket.SOCK_STREAM:
            raise ValueError(f"source: {name} is not a stream socket")
        _no_offset(offset, "a socket")
        return SocketReader(source, name)
    if not (hasattr(source, "readinto") or hasattr(source, "read")) and (
            hasattr(source, "recv") and hasattr(source, "fileno")):
        _no_offset(offset, "a socket")  # (socket-like: recv and a descriptor to wait on)
        return SocketReader(source, name)
    if not (hasattr(source, "readinto") or hasattr(source, "read")):
        raise TypeError(f"source: expected a path, a file descriptor, a file object or a "
                        f"socket, got {type(source).__qualname__}")
    if getattr(source, "closed", False):
        raise ValueError(f"source: {name} is closed")
    readable = getattr(source, "readable", None)
    if readable is not None and not readable():
        raise ValueError(f"source: {name} is not open for reading")
    _no_offset(offset, "a file object")
    if isinstance(source, io.TextIOBase) or (
            not isinstance(source, (io.RawIOBase, io.BufferedIOBase))
            and isinstance(getattr(source, "read", bytes)(0), str)):  # (codecs.open, ...)
        return TextReader(source, name)
    return StreamReader(source, name)


def _no_offset(offset: int | None, what: str) -> None:
    if offset is not None:
        raise ValueError(f"offset: {what} is read from where it stands (seek it first); "
                         f"offset= is for paths and file descriptors")
