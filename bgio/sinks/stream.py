"""Sink for file objects: binary and text streams, buffered or raw."""

from __future__ import annotations

import io
import os
import stat

from ..source import Block, Kind
from ..writeback import Writeback, follow
from .wait import Waiter, WriteInterrupted

__all__ = ["StreamSink"]


def _stream_kind(file: object) -> Kind | None:
    if isinstance(file, io.TextIOBase):
        return "text"
    if isinstance(file, (io.RawIOBase, io.BufferedIOBase)):
        return "bytes"
    mode = getattr(file, "mode", None)
    if isinstance(mode, str) and mode:
        return "bytes" if "b" in mode else "text"
    return None


def _fileno(file: object) -> int:
    """The object's file descriptor, or -1 if it has none (BytesIO, custom writers)."""
    fileno = getattr(file, "fileno", None)
    if not callable(fileno):
        return -1
    try:
        return int(fileno())
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return -1


class StreamSink:
    """Writes into any object with a ``write`` method.

    ``write`` may take part of a chunk (raw streams) or report that it
    would block (non-blocking raw streams return None; a buffered writer
    over a non-blocking fd raises :class:`BlockingIOError` with
    ``characters_written``): the sink then waits until the fd is writable
    and reports what was taken, so the worker resumes exactly there.
    """

    __slots__ = ("_direct", "_flush", "_raw", "_write", "_writeback", "fd", "file", "key", "kind",
                 "name", "nonblocking", "target", "waiter", "write_many")

    def __init__(self, file: object, name: str = "file") -> None:
        write = getattr(file, "write", None)
        if not callable(write):
            raise TypeError(
                f"{name} must be a writable file object (with a write method), "
                f"got {type(file).__qualname__}"
            )
        if getattr(file, "closed", False) is True:
            raise ValueError(f"{name} is closed")
        writable = getattr(file, "writable", None)
        if callable(writable):
            try:
                ok = writable()
            except ValueError as exc:  # io raises ValueError on a closed file
                raise ValueError(f"{name} is closed or unusable: {exc}") from None
            if not ok:
                raise ValueError(f"{name} is not writable (opened for reading?)")
        self.file = self.target = file
        # A str: its hash is cached, and the key is looked up at every write.
        self.key = f"file {id(file)}"
        self.kind = _stream_kind(file)
        self.name = getattr(file, "name", None) or repr(file)
        if not isinstance(self.name, str):
            self.name = str(self.name)
        self._write = write
        flush = getattr(file, "flush", None)
        self._flush = flush if callable(flush) else None
        # Only a raw stream's None means "would block"; other objects return None for "all".
        self._raw = isinstance(file, io.RawIOBase)
        # Many small blocks go out in one writev() straight to the fd of a
        # plain binary file (after its buffer is flushed, so order holds):
        # no copy into the buffer, one system call instead of hundreds.
        self.waiter: Waiter | None = None
        self.fd = _fileno(file)  # read once: it is consulted on every wait and sync
        self.nonblocking = self.fd >= 0 and not os.get_blocking(self.fd)
        self.write_many = None
        # A plain binary file is written straight to its fd (after its buffer
        # is flushed, so what the program wrote through it before goes
        # first): the count the OS returns is what reached the file, which a
        # buffered write that fails cannot tell.
        self._direct = self.fd >= 0 and type(file) in (io.BufferedWriter, io.FileIO)
        if self._direct:
            self.write_many = self._writev
        self._writeback: Writeback | None = None

    def write(self, block: Block) -> int:
        if self._direct:
            return self._write_fd(block)
        try:
            taken: int | None = self._write(block)  # (a file's write: a count, or None)
        except BlockingIOError as exc:
            # Part of the block may be in the buffer already: say so even
            # if the wait is cut short, or it would be written twice.
            try:
                self._wait_writable()
            except WriteInterrupted as interrupted:
                interrupted.taken = exc.characters_written
                raise
            return exc.characters_written
        if taken is None:
            if self._raw:
                self._wait_writable()
                return 0
            return len(block)
        return taken

    def _write_fd(self, block: Block) -> int:
        """Write as much of ``block`` as the fd takes; return the byte count.

        The file's buffer is flushed first (nothing to do when it is empty):
        bytes the program wrote through the file go first, and a file the
        program has closed says so here (``ValueError``) instead of its fd
        number, maybe reused by another file, being written.
        """
        self.flush()
        try:
            taken = os.write(self.fd, block)  # type: ignore[arg-type]
        except BlockingIOError:
            self._wait_writable()
            return 0
        if self._writeback is not None:
            self._writeback.wrote(taken)
        return taken

    def _writev(self, blocks: list[Block | bytes]) -> int:
        """Write as much of ``blocks`` as the fd takes in one call; return the byte count."""
        self.flush()  # as in _write_fd
        try:
            taken = os.writev(self.fd, blocks)  # type: ignore[arg-type]
        except BlockingIOError:
            self._wait_writable()
            return 0
        if self._writeback is not None:
            self._writeback.wrote(taken)
        return taken

    def use_writeback(self, window: int | None) -> Writeback | None:
        """Write back each ``window`` bytes as they are written (None: stop), for a plain
        binary file on a regular file, which bgio writes through its fd; others keep the
        page cache's behaviour (None). Bytes the program writes through the file itself
        are written back by the kernel as usual."""
        if not self._direct:
            return None
        if window is not None:
            self.flush()  # the windows start where the file's own bytes end
        writeback = self._writeback = follow(self._writeback, self.fd, window)
        return writeback if writeback is not None and writeback.enabled else None

    def flush(self) -> None:
        if self._flush is not None:
            while True:
                try:
                    self._flush()
                    return
                except BlockingIOError:
                    self._wait_writable()

    def sync(self) -> None:
        self.flush()
        fd = self.fd
        # Pipes and sockets have nothing to put on disk (fdatasync says EINVAL).
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fdatasync(fd)
            if self._writeback is not None:
                self._writeback.synced()

    def close(self) -> None:
        try:
            if self._writeback is not None:
                self._writeback.finish()
        finally:
            self.file.close()  # type: ignore[attr-defined]

    def _wait_writable(self) -> None:
        # A non-blocking destination is full: block in poll() until it drains
        # (never spin, never copy the unwritten rest).
        assert self.waiter is not None, "the worker binds a waiter before writing"
        self.waiter.wait_writable(self.fd)
