"""Sinks for raw file descriptors (files, pipes, FIFOs, blocking or not) and sockets."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import sys
from typing import cast

from ..source import Block, Kind
from ..writeback import Writeback, follow
from .wait import Waiter

__all__ = ["FdSink", "SocketSink"]

#: The largest file descriptor number the OS can have (a C int).
_FD_MAX = 2**31 - 1


def _check_fd(fd: int, name: str) -> os.stat_result:
    try:
        info = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise ValueError(f"{name}: file descriptor {fd} is not open") from None
        raise
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise ValueError(f"{name}: file descriptor {fd} is not open for writing")
    return info


class FdSink:
    """Writes with ``os.write``/``os.writev`` to a file descriptor the caller owns.

    A non-blocking fd that is full (a pipe whose reader lags) raises
    ``BlockingIOError``; the sink then waits in ``poll()`` until it drains
    (cancel() cuts the wait short) and reports how much was taken, so the
    worker resumes exactly there without copying the rest.
    """

    __slots__ = ("_fd", "_regular", "_writeback", "key", "kind", "name", "nonblocking", "target",
                 "waiter")

    def __init__(self, fd: int, name: str = "file") -> None:
        if not 0 <= fd <= _FD_MAX:
            raise ValueError(f"{name}: file descriptor must be 0..{_FD_MAX}, got {fd}")
        info = _check_fd(fd, name)
        self._fd = fd
        self._regular = stat.S_ISREG(info.st_mode)
        self.nonblocking = not os.get_blocking(fd)
        self.target: object = fd
        # The key names the open file, not just the number: writes through a
        # reused fd number for another file never queue behind this one's.
        self.key: object = f"fd {fd} {info.st_dev} {info.st_ino}"  # a str: its hash is cached
        self.kind: Kind = "bytes"
        self.name = f"fd {fd}"
        self.waiter: Waiter | None = None
        self._writeback: Writeback | None = None

    def write(self, block: Block | bytes) -> int:
        try:
            taken = os.write(self._fd, cast("memoryview | bytes", block))  # (a bytes sink)
        except BlockingIOError:
            self._wait()
            return 0
        if self._writeback is not None:
            self._writeback.wrote(taken)
        return taken

    def write_many(self, blocks: list[Block | bytes]) -> int:
        try:
            taken = os.writev(self._fd, cast("list[memoryview | bytes]", blocks))
        except BlockingIOError:
            self._wait()
            return 0
        if self._writeback is not None:
            self._writeback.wrote(taken)
        return taken

    def flush(self) -> None:
        """Nothing is buffered in this process."""

    def sync(self) -> None:
        # Pipes and sockets have nothing to put on disk (fdatasync says EINVAL).
        if self._regular:
            os.fdatasync(self._fd)
            if self._writeback is not None:
                self._writeback.synced()

    def use_writeback(self, window: int | None) -> Writeback | None:
        """Write back each ``window`` bytes as they are written (None: stop windowing); the
        :class:`~bgio.writeback.Writeback` in use, or None where it does not apply."""
        writeback = self._writeback = follow(self._writeback, self._fd, window)
        return writeback if writeback is not None and writeback.enabled else None

    def close(self) -> None:
        try:
            if self._writeback is not None:
                self._writeback.finish()  # no window is left dirty for the kernel to find
        finally:
            os.close(self._fd)

    def _wait(self) -> None:
        assert self.waiter is not None, "the worker binds a waiter before writing"
        self.waiter.wait_writable(self._fd)


class SocketSink:
    """Writes with ``send``/``sendmsg`` to a connected stream socket (TLS sockets through ``send``)."""

    __slots__ = ("_sock", "_want_read", "_want_write", "key", "kind", "name", "nonblocking",
                 "target", "waiter", "write_many")

    def __init__(self, sock: socket.socket, name: str = "file") -> None:
        if sock.fileno() < 0:
            raise ValueError(f"{name} is a closed socket")
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f"{name} must be a stream socket (SOCK_STREAM), got {sock.type!r}")
        self._sock = sock
        # A timeout > 0 is waited for inside send(); only 0 means "would block".
        self.nonblocking = sock.gettimeout() == 0.0
        self.target: object = sock
        self.key: object = f"file {id(sock)}"
        self.kind: Kind = "bytes"
        self.name = f"socket fd {sock.fileno()}"
        self.waiter: Waiter | None = None
        # sendmsg would bypass the encryption of a TLS socket: plain sockets only.
        self.write_many = self._sendmsg if type(sock) is socket.socket else None
        # A TLS socket means ssl is loaded already; bgio does not load it
        # for everybody else (it takes a while to import).
        ssl = sys.modules.get("ssl")
        self._want_write: tuple[type[BaseException], ...] = (BlockingIOError,)
        self._want_read: tuple[type[BaseException], ...] = ()
        if ssl is not None:
            self._want_write += (ssl.SSLWantWriteError,)
            self._want_read = (ssl.SSLWantReadError,)

    def write(self, block: Block | bytes) -> int:
        try:
            return self._sock.send(cast("memoryview | bytes", block))  # (a bytes sink)
        except self._want_write:
            self._wait()
            return 0
        except self._want_read:  # a TLS renegotiation: the peer must be heard first
            self._wait(select.POLLIN)
            return 0

    def _sendmsg(self, blocks: list[Block | bytes]) -> int:
        try:
            return self._sock.sendmsg(cast("list[memoryview | bytes]", blocks))
        except BlockingIOError:
            self._wait()
            return 0

    def flush(self) -> None:
        """Nothing is buffered in this process."""

    def sync(self) -> None:
        """A socket has nothing to put on disk."""

    def close(self) -> None:
        self._sock.close()

    def _wait(self, events: int = select.POLLOUT) -> None:
        assert self.waiter is not None, "the worker binds a waiter before writing"
        self.waiter.wait_writable(self._sock.fileno(), events)
