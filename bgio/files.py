"""``bgio.open``: a file object whose writes return at once and are written in the background."""

from __future__ import annotations

import io
import os
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from .api import PriorityLike
from .engine import in_worker_thread
from .handle import BackgroundWriteProcess, failure_of
from .objects import is_object_url, local_path
from .protocols import BufferLike, Destination
from .writer import Writer

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

__all__ = ["DEFAULT_MAX_PENDING", "BackgroundFile", "open"]

#: Default bound on bytes written but not yet on their way to the file.
DEFAULT_MAX_PENDING = 64 * 1024 * 1024
#: Small writes are gathered into blocks of this size before being queued.
BUFFER_SIZE = 256 * 1024
#: Writes of at most this many bytes take no lock: they are appended to a
#: deque (one atomic step, whichever thread), moved into the block by batches.
SMALL_WRITE = 256
#: Small writes let wait in the deque at most (so at most BUFFER_SIZE bytes).
SMALL_BATCH = BUFFER_SIZE // SMALL_WRITE

_BINARY = {"wb": "wb", "ab": "ab", "xb": "xb", "w": "wb", "a": "ab", "x": "xb"}


class BackgroundFile(io.BufferedIOBase):
    """A write-only binary file object over a :class:`bgio.Writer`.

    Made by :func:`bgio.open`. :meth:`write` copies what it is given, as a
    buffered file does (bytes objects, being immutable, are not copied),
    returns its length at once, and the data is written in order by a
    worker thread, paced by the priority. Small writes are gathered into
    blocks of :data:`BUFFER_SIZE` bytes first. Memory stays bounded:
    :meth:`write` waits when ``max_pending_bytes`` are still on their way.

    An error in the background is raised by the next :meth:`write`,
    :meth:`flush` or :meth:`close` (and the file writes nothing more).

    It may be written from several threads at once: every byte given to
    :meth:`write` is written exactly once, and each call's bytes are
    contiguous in the file (calls from different threads are ordered as
    they take the file's lock). A text file made by :func:`bgio.open`
    (an :class:`io.TextIOWrapper`) is as thread-safe as Python's own.
    """

    def __init__(self, writer: Writer, name: object, mode: str = "wb") -> None:
        super().__init__()
        self._writer = writer
        self._name = name
        self._mode = mode
        self._buffer: bytearray | None = bytearray()
        # Small writes, in call order, not yet moved into the buffer. The
        # deque is never replaced, so a thread that appends to it can never
        # append to one already handed on (the lock-free part of write()).
        self._small: deque[bytes] = deque()
        self._queued = 0  # bytes handed to the Writer so far
        # One lock for the buffer and the queue: a block is queued and a new
        # one started while nobody appends to it; small writes are moved in
        # under it, in order.
        self._lock = threading.Lock()
        self._failed: BackgroundWriteProcess | None = None
        # One flag for "open and nothing failed": the only check a small write makes.
        self._ok = True

    @property
    def name(self) -> object:
        """The path, file object or descriptor this file writes to."""
        return self._name

    @property
    def mode(self) -> str:
        """The binary mode it was opened with: ``"wb"``, ``"ab"`` or ``"xb"``."""
        return self._mode

    def __repr__(self) -> str:
        return f"<bgio.BackgroundFile name={self._name!r}{' closed' if self.closed else ''}>"

    def writable(self) -> bool:
        """True: the file is open for writing (``ValueError`` once closed)."""
        self._check_open()
        return True

    def readable(self) -> bool:
        """False: the file is write-only."""
        return False

    def seekable(self) -> bool:
        """False: writes go out in order; there is no seeking back."""
        return False

    def tell(self) -> int:
        """Bytes accepted by :meth:`write` so far."""
        self._check_open()
        with self._lock:
            self._take_small()
            return self._queued + len(self._buffer or b"")

    def write(self, data: BufferLike) -> int:
        """Accept ``data`` for writing; return its length at once.

        Raises
        ------
        ValueError
            If the file is closed.
        TypeError
            If ``data`` is not a bytes-like object.
        Exception
            An error of an earlier background write.
        """
        if not self._ok:
            self._check_open()
            self._raise_failure()
        if type(data) is bytes:
            size = len(data)
        else:
            data = memoryview(cast("Buffer", data)).cast("B")
            size = len(data)
            if size <= SMALL_WRITE:
                data = data.tobytes()  # the caller may change it once write() returns
        if size <= SMALL_WRITE:
            # The common case, kept short and lock-free: the lock would cost
            # more than the rest of the call. Another thread's small write
            # lands before or after this one, never inside it.
            small = self._small
            small.append(data)  # type: ignore[arg-type]
            if not self._ok:
                self._after_close(data)  # type: ignore[arg-type]
            elif len(small) >= SMALL_BATCH:
                with self._lock:
                    if self._buffer is not None:
                        self._take_small()
            return size
        if size < BUFFER_SIZE:
            with self._lock:
                if self._buffer is None:  # close() began in another thread
                    raise ValueError("I/O operation on closed bgio file")
                self._take_small()  # what came first goes first (and may start a new buffer)
                buffer = self._buffer
                buffer += data
                if len(buffer) >= BUFFER_SIZE:
                    self._queue_buffer()
            return size
        with self._lock:
            if self._buffer is None:
                raise ValueError("I/O operation on closed bgio file")
            self._take_small()
            self._queue_buffer()
            # Large: queued as is when immutable, else snapshotted (one copy).
            self._queue(data if isinstance(data, bytes) else data.tobytes())
        return size

    def flush(self) -> None:
        """Wait until everything written so far is in the file (on disk with ``fsync``), or raise."""
        if self.closed:
            return
        with self._lock:
            if self._buffer is not None:  # (None: another thread is closing it)
                self._take_small()
                self._queue_buffer()
        self._writer.flush()

    def close(self) -> None:
        """Write what is left, wait for it, and close the file; raise an earlier error if any.

        A write from another thread once close() has begun raises ``ValueError``.
        """
        with self._lock:
            if self.closed or self._buffer is None:
                return  # closed, or being closed by another thread
            self._ok = False
            self._take_small()
            self._queue_buffer()
            self._buffer = None  # what a write finds under the lock from now on
        try:
            self._writer.close()
        finally:
            super().close()

    def __del__(self) -> None:
        # Freed in a worker thread (a write's done-callback held the last reference): a
        # close that waits would wait for the very thread it runs in. The rest is queued
        # and the Writer closed without waiting (close(wait=False) ends in a thread).
        if not self.closed and self._buffer is not None and in_worker_thread():
            with self._lock:
                self._ok = False
                self._take_small()
                self._queue_buffer()
                self._buffer = None
            self._writer.close(wait=False)
            return
        super().__del__()

    def fileno(self) -> int:
        """Not available: the file is written by a worker thread."""
        raise io.UnsupportedOperation("a bgio file has no file descriptor of its own")

    def detach(self) -> io.RawIOBase:
        """Not available: a bgio file has no raw stream."""
        raise io.UnsupportedOperation("a bgio file cannot be detached")


    def _check_open(self) -> None:
        if self.closed or self._buffer is None:
            raise ValueError("I/O operation on closed bgio file")

    def _take_small(self) -> None:
        # (self._lock held) Move the small writes queued so far into the
        # buffer, in order; those appended meanwhile wait for the next time.
        small = self._small
        if small:
            buffer = self._buffer
            assert buffer is not None
            popleft = small.popleft
            buffer += b"".join([popleft() for _ in range(len(small))])
            if len(buffer) >= BUFFER_SIZE:
                self._queue_buffer()

    def _after_close(self, data: bytes) -> None:
        # A small write that found the file closing, or failed, once its bytes
        # were in the deque. Still there, they are taken back and refused;
        # taken by close() already, they are written like any before it.
        with self._lock:
            small = self._small
            for index, queued in enumerate(small):
                if queued is data:
                    del small[index]
                    break
            else:
                if self._buffer is None:
                    return
            self._check_open()
            self._raise_failure()

    def _queue_buffer(self) -> None:
        # (self._lock held)
        if self._buffer:
            # The bytearray itself is queued (no second copy) and a new one
            # started; the worker's view keeps it from being resized.
            buffer, self._buffer = self._buffer, bytearray()
            self._queue(buffer)

    def _queue(self, block: bytes | bytearray) -> None:
        self._queued += len(block)
        handle = self._writer.write(block)
        handle.add_done_callback(self._note_failure)

    def _note_failure(self, handle: BackgroundWriteProcess) -> None:
        if self._failed is None and failure_of(handle) is not None:
            self._failed = handle
            self._ok = False  # (set last: a write that sees it finds _failed set)

    def _raise_failure(self) -> None:
        if self._failed is not None:
            self._writer.flush()  # raises the first error of the writes


# bgio.open is the background counterpart of the builtin, and named so on purpose.
@overload
def open(
    file: Destination,
    mode: Literal["wb", "ab", "xb"] = "wb",
    *,
    priority: PriorityLike = 4,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING,
    fsync: bool = False,
    atomic: bool = False,
    direct: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> BackgroundFile: ...


@overload
def open(
    file: Destination,
    mode: Literal["w", "a", "x"],
    *,
    priority: PriorityLike = 4,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING,
    fsync: bool = False,
    atomic: bool = False,
    direct: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> io.TextIOWrapper: ...


@overload
def open(
    file: Destination,
    mode: str,
    *,
    priority: PriorityLike = 4,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING,
    fsync: bool = False,
    atomic: bool = False,
    direct: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> BackgroundFile | io.TextIOWrapper: ...


def open(
    file: Destination,
    mode: str = "wb",
    *,
    priority: PriorityLike = 4,
    max_pending_bytes: int | None = DEFAULT_MAX_PENDING,
    fsync: bool = False,
    atomic: bool = False,
    direct: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> BackgroundFile | io.TextIOWrapper:
    """Open a file for writing in the background: ``write`` returns at once.

    Parameters
    ----------
    file : path, int file descriptor, socket, or writable file object
        As for :func:`bgio.bgwrite`. The file is closed by :meth:`close`.
    mode : {"wb", "ab", "xb", "w", "a", "x"}, default "wb"
        Truncate, append or create; without ``b`` the file is a text file
        (an :class:`io.TextIOWrapper` over the binary one). Append and
        create apply to paths.
    priority : int 1..10 or BackgroundIOPriority, keyword-only, default 4
        Pacing of the background writes.
    max_pending_bytes : int or None, keyword-only, default 64 MiB
        Bound on bytes accepted and not yet written: ``write`` waits for
        room beyond it. None means no bound.
    fsync, atomic, direct : bool, keyword-only
        As for :func:`bgio.bgwrite`; ``atomic`` makes the whole file appear
        at :meth:`close`; ``direct`` writes a path past the page cache.
    encoding, errors, newline : keyword-only
        For text mode, as for :func:`open` (the encoding defaults to UTF-8).
    backend : {"thread", "process"} or None, keyword-only
        (None: threads, or for a path what :func:`bgio.set_default_backend`
        set.)
        As for :func:`bgio.bgwrite`: with ``"process"`` bgio's writer process
        holds the file open and writes it (see :ref:`process-backend`).
    storage_options, store, exclusive : keyword-only, object stores only
        As for :func:`bgio.bgwrite`: ``file`` may be an object-store URL
        (``s3://bucket/key``); the object appears, complete, when
        :meth:`~BackgroundFile.close` succeeds (mode ``"wb"``/``"w"``, or
        ``"xb"``/``"x"`` to refuse an existing object).

    Returns
    -------
    BackgroundFile or io.TextIOWrapper

    Raises
    ------
    ValueError
        An unknown ``mode``, text options in binary mode, or as
        :func:`bgio.bgwrite` does for ``file`` and the options.
    TypeError
        As :func:`bgio.bgwrite` does.

    Examples
    --------
    >>> import bgio, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp(), "log.txt")
    >>> with bgio.open(path, "w", encoding="utf-8") as f:
    ...     _ = f.write("written in the background\\n")
    >>> print(path.read_text(encoding="utf-8"), end="")
    written in the background
    """
    if mode not in _BINARY:
        raise ValueError(f"mode must be one of {', '.join(_BINARY)}, got {mode!r}")
    text = "b" not in mode
    if not text and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("encoding, errors and newline apply to text mode only")
    is_object = store is not None or is_object_url(file)
    is_path = isinstance(file, (str, bytes, os.PathLike)) and not is_object
    if is_object and mode[0] == "a":
        raise ValueError(f"mode {mode!r}: an object is written whole; use 'w', 'wb', "
                         "'x' or 'xb'")
    if not is_path and not is_object and mode[0] != "w":
        raise ValueError(f"mode {mode!r} applies to paths only; use 'w' or 'wb'")
    writer = Writer(
        file,
        priority,
        close_when_finished=True,
        mode=_BINARY[mode] if is_path or is_object else None,
        fsync=fsync,
        atomic=atomic,
        max_pending_bytes=max_pending_bytes,
        direct=direct,
        backend=backend,
        storage_options=storage_options,
        store=store,
        exclusive=exclusive,
    )
    if writer.kind == "text":
        raise TypeError("bgio.open needs a binary destination; for a text stream pass its .buffer")
    binary = BackgroundFile(writer, file, _BINARY[mode])
    opened: BackgroundFile | io.TextIOWrapper = binary
    if text:
        opened = io.TextIOWrapper(binary, encoding=encoding or "utf-8", errors=errors,
                                  newline=newline)
    if is_object or local_path(file) is not None:
        from .h5.exit import track, untrack

        # The file (its buffer first), not its Writer, is what is closed at exit.
        untrack(writer)
        track(opened)
    if writer.backend == "process":
        from .process.parent import close_at_exit

        # Closed at exit before the writer process ends (it would be closed later,
        # when it is freed, with the writer process gone).
        close_at_exit(opened)
    return opened
