"""Sink for a path: the file is opened in the worker, and can be replaced atomically."""

from __future__ import annotations

import errno
import os
import secrets
import stat
import warnings
from typing import TYPE_CHECKING

from ..source import Block, Kind
from ..writeback import Progress
from .fd import FdSink
from .wait import Waiter

if TYPE_CHECKING:
    from .direct import DirectSink

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

    An atomic target is "this path, complete or not at all", and nothing
    else changes: a symbolic link stays a link, and the file it points to
    (through any chain of links; for a dangling link, the file it names)
    is the one replaced, its temporary file beside it; the new file gets
    the old one's permission bits, and its owner and group where the
    process may set them; an existing target that is not a regular file
    (a device, a FIFO, a socket, a directory) is refused in the caller.
    Errors name the target, never the temporary file.

    With ``direct=True`` the file (or the temporary file) is opened with
    ``O_DIRECT`` and written by a :class:`~bgio.sinks.direct.DirectSink`;
    the caller learns at once if the file system refuses it
    (:func:`~bgio.sinks.direct.check_supported`). Appending then writes at
    the file's size when it was opened, so no other program should append
    to it meanwhile.
    """

    __slots__ = ("_atomic", "_direct", "_fd", "_flags", "_path", "_replaced", "_temp",
                 "chunk_multiple", "key", "kind", "name", "nonblocking", "target", "waiter",
                 "write_many")

    def __init__(self, path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
                 mode: str = "wb", atomic: bool = False, name: str = "file",
                 direct: bool = False) -> None:
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
        self._replaced = text
        if atomic:
            # The file a link points to is the one replaced (as editors do).
            self._replaced = os.path.realpath(text)
            _check_replaceable(text, self._replaced, name)
        self._path = text
        self._flags = PATH_MODES[mode] | os.O_CLOEXEC
        self._direct = bool(direct)
        #: Chunks are made multiples of this (see bgio.sinks.fit_chunk_size).
        self.chunk_multiple = 1
        if self._direct:
            # (numpy, which it copies with, is loaded only by those who ask for it)
            from .direct import DIRECT_FLAG, check_supported, chunk_unit

            check_supported(self._replaced, name)
            self.chunk_multiple = chunk_unit(directory)
            # pwrite at explicit offsets: O_APPEND would send every one to the end.
            self._flags = (self._flags & ~os.O_APPEND) | DIRECT_FLAG
        self._atomic = atomic
        self._fd: FdSink | DirectSink | None = None
        self._temp: str | None = None
        self.target: object = None  # a str cannot be weakly referenced: the lane goes when idle
        self.key: object = "path " + (self._replaced if atomic else os.path.join(
            os.path.realpath(directory), os.path.basename(text)))
        self.kind: Kind = "bytes"
        self.name = text
        self.waiter: Waiter | None = None
        self.nonblocking = False  # opened by bgio, blocking
        # A direct write goes block by block, each from an aligned offset.
        self.write_many = None if self._direct else self._write_many

    def _open(self) -> FdSink | DirectSink:
        if self._fd is None:
            if self._atomic:
                fd = self._open_temporary()
            else:
                fd = self._open_path()
            if self._direct:
                from .direct import DirectSink  # loaded by __init__ already

                # Appending starts at the end; a new or truncated file is empty.
                self._fd = DirectSink(fd, self.name, os.fstat(fd).st_size)
            else:
                self._fd = FdSink(fd, self.name)
        self._fd.waiter = self.waiter
        return self._fd

    def _open_path(self) -> int:
        try:
            return os.open(self._path, self._flags, 0o666)
        except OSError as exc:
            if self._direct and exc.errno == errno.EINVAL:
                raise _direct_refused(self._path) from None
            raise

    def _open_temporary(self) -> int:
        """Create the temporary file beside the file replaced, with its permissions and
        (where allowed) its owner; errors name the target."""
        directory, base = os.path.split(self._replaced)
        temp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.bgio-tmp")
        try:
            fd = os.open(temp, self._flags | os.O_EXCL, 0o666)
        except OSError as exc:
            if self._direct and exc.errno == errno.EINVAL:
                raise _direct_refused(self._path) from None
            raise _naming(exc, self._path) from None
        self._temp = temp
        try:
            old = os.stat(self._replaced)
        except FileNotFoundError:
            return fd  # a new file: 0666 less the umask, as usual
        try:
            os.fchmod(fd, stat.S_IMODE(old.st_mode))
            try:
                os.fchown(fd, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # not ours to give away: the file is the writer's, as a new one would be
        except BaseException:
            os.close(fd)
            self.discard()
            raise
        return fd

    def write(self, block: Block | bytes) -> int:
        return self._open().write(block)

    def use_writeback(self, window: int | None) -> Progress | None:
        """Write the file back to the device window by window (see
        :meth:`FdSink.use_writeback`; direct writes need none); opens it, as the
        first write would."""
        return self._open().use_writeback(window)

    def _write_many(self, blocks: list[Block | bytes]) -> int:
        sink = self._open()
        assert isinstance(sink, FdSink), "a direct sink writes one block at a time"
        return sink.write_many(blocks)

    def flush(self) -> None:
        """Hand on what a direct write holds back (nothing is buffered otherwise)."""
        if self._fd is not None:
            self._fd.flush()

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
            os.replace(self._temp, self._replaced)  # type: ignore[arg-type]
        except OSError as exc:
            self.discard()  # the target stays as it was; no temporary is left
            raise _naming(exc, self._path) from None
        except BaseException:
            self.discard()
            raise
        self._temp = None
        _sync_directory(os.path.dirname(self._replaced))

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


#: What a path that is not a regular file is, for the message that refuses it.
_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _check_replaceable(path: str, replaced: str, name: str) -> None:
    """Refuse an atomic target that exists and is not a regular file (in the caller)."""
    directory = os.path.dirname(replaced)
    if not os.path.isdir(directory):
        raise ValueError(f"{name}: {path!r} is a link into directory {directory!r}, which "
                         "does not exist")
    try:
        mode = os.stat(replaced).st_mode
    except FileNotFoundError:
        return
    for test, kind in _KINDS:
        if test(mode):
            raise ValueError(f"{name}: {path!r} is {kind}; atomic=True replaces regular files "
                             "only (write into it without atomic)")


def _direct_refused(path: str) -> OSError:
    from .direct import refused  # loaded already: the sink is a direct one

    return refused(path)


def _naming(exc: OSError, path: str) -> OSError:
    """The same error, naming the target instead of the temporary file."""
    error = OSError(exc.errno, exc.strerror, path) if exc.errno else OSError(str(exc))
    return error


def _sync_directory(directory: str) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
