"""Sink for a path: the file is opened in the worker, and can be replaced atomically."""

from __future__ import annotations

import os
import secrets
import warnings

from ..source import Block
from ..writeback import Writeback
from .fd import FdSink

__all__ = ["PATH_MODES", "PathSink"]

#: Modes a path may be opened with: truncate, append, or create (fail if it exists).
PATH_MODES = {
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


class PathSink:
    """Writes to a path, opened on first use by the worker and closed when the write ends.

    With ``atomic=True`` the data goes to a temporary file in the same
    directory; :meth:`close` makes it durable (fsync), renames it over the
    target with ``os.replace`` and fsyncs the directory, so a crash leaves
    either the old file or the whole new one. :meth:`discard` (after a
    failure or cancel) removes the temporary file and leaves the target as
    it was. New files get the usual permissions (0666 less the umask).
    """

    __slots__ = ("_atomic", "_fd", "_flags", "_path", "_temp", "key", "kind", "name",
                 "nonblocking", "target", "waiter", "write_many")

    def __init__(self, path: str | os.PathLike[str], mode: str = "wb", atomic: bool = False,
                 name: str = "file") -> None:
        if mode not in PATH_MODES:
            raise ValueError(f"mode must be one of {', '.join(PATH_MODES)} for a path, got {mode!r}")
        if atomic and mode != "wb":
            raise ValueError(f"atomic=True replaces the whole file: it needs mode 'wb', not {mode!r}")
        text = os.fspath(path)
        if not isinstance(text, str):
            text = os.fsdecode(text)
        if not text:
            raise ValueError(f"{name} is an empty path")
        if "\0" in text:
            raise ValueError(f"{name}: the path contains a NUL byte: {text!r}")
        directory = os.path.dirname(os.path.abspath(text))
        if not os.path.isdir(directory):
            raise ValueError(f"{name}: directory {directory!r} does not exist")
        if os.path.isdir(text):
            raise ValueError(f"{name}: {text!r} is a directory")
        self._path = text
        self._flags = PATH_MODES[mode] | os.O_CLOEXEC
        self._atomic = atomic
        self._fd: FdSink | None = None
        self._temp: str | None = None
        self.target: object = None  # a str cannot be weakly referenced: the lane goes when idle
        self.key: object = "path " + os.path.join(os.path.realpath(directory),
                                                  os.path.basename(text))
        self.kind = "bytes"
        self.name = text
        self.waiter = None
        self.nonblocking = False  # opened by bgio, blocking
        self.write_many = self._write_many

    def _open(self) -> FdSink:
        if self._fd is None:
            if self._atomic:
                directory, base = os.path.split(os.path.abspath(self._path))
                self._temp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.bgio-tmp")
                fd = os.open(self._temp, self._flags | os.O_EXCL, 0o666)
            else:
                fd = os.open(self._path, self._flags, 0o666)
            self._fd = FdSink(fd, self.name)
        self._fd.waiter = self.waiter
        return self._fd

    def write(self, block: Block | bytes) -> int:
        return self._open().write(block)

    def use_writeback(self, window: int | None) -> Writeback | None:
        """Write the file back to the device window by window (see
        :meth:`FdSink.use_writeback`); opens it, as the first write would."""
        return self._open().use_writeback(window)

    def _write_many(self, blocks: list[Block | bytes]) -> int:
        return self._open().write_many(blocks)

    def flush(self) -> None:
        """Nothing is buffered in this process."""

    def sync(self) -> None:
        self._open().sync()

    def close(self) -> None:
        """Close the file; an atomic write is made durable and renamed over the target."""
        sink = self._open()  # an empty write still creates (or replaces) the file
        if not self._atomic:
            self._fd = None
            sink.close()
            return
        try:
            sink.sync()  # the data must be on disk before the name points at it
            self._fd = None
            sink.close()
            os.replace(self._temp, self._path)  # type: ignore[arg-type]
        except BaseException:
            self.discard()  # the target stays as it was; no temporary is left
            raise
        self._temp = None
        _sync_directory(os.path.dirname(os.path.abspath(self._path)))

    def __del__(self) -> None:
        # A Writer dropped without close(): like an unclosed file, warn and
        # release the fd; an unfinished atomic write leaves no temporary file.
        # (getattr: __init__ may have refused its arguments before setting these)
        if getattr(self, "_fd", None) is not None or getattr(self, "_temp", None) is not None:
            warnings.warn(f"bgio: {self.name!r} was never closed", ResourceWarning, stacklevel=1)
            try:
                self.discard()
            except OSError as exc:
                warnings.warn(f"bgio: could not clean up {self.name!r}: {exc}", ResourceWarning,
                              stacklevel=1)

    def discard(self) -> None:
        """Close after a failure or cancel; an atomic write leaves no trace and the target intact."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fd.close()
        if self._temp is not None:
            temp, self._temp = self._temp, None
            os.unlink(temp)


def _sync_directory(directory: str) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
