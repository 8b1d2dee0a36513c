"""The public calls: check everything in the caller's thread, then hand the write to the engine."""

from __future__ import annotations

import logging
import os
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import ChainError, QueueFull
from .handle import BackgroundWriteProcess
from .jobs import Job, failed
from .priority import BackgroundIOPriority, resolve_priority, validate_chunk_size
from .sinks import PathSink, Sink, sink_can_sync, sink_for
from .source import make_source
from .writer import submit

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["PriorityLike", "Writer", "bgwrite", "bgwrite_chunk", "prepare"]

logger = logging.getLogger("bgio")

#: A preset number 1..10 or a profile.
PriorityLike = int | BackgroundIOPriority


def _check_chain_after(chain_after: object) -> BackgroundWriteProcess | None:
    if chain_after is None or isinstance(chain_after, BackgroundWriteProcess):
        return chain_after
    raise TypeError(
        f"chain_after must be a BackgroundWriteProcess (a handle from bgwrite) or None, "
        f"got {type(chain_after).__qualname__}"
    )


def prepare(
    handle: BackgroundWriteProcess | type[BackgroundWriteProcess],
    sink: Sink,
    data: object,
    profile: BackgroundIOPriority,
    chunk_size: int | None = None,
    close_when_finished: bool = False,
    chain_after: object = None,
    *,
    fsync: bool = False,
    copy: bool = False,
) -> Job:
    """Check ``data`` and ``chain_after`` in the caller and build the job (not queued yet).

    ``handle`` is a handle class to instantiate, or an instance whose
    ``total_bytes`` is filled in (the compatibility layer's thread-like handle).
    """
    source = make_source(data, sink.kind, copy=copy)
    chain = _check_chain_after(chain_after)
    if isinstance(handle, type):
        handle = handle(source.total)
    else:
        handle.total_bytes = source.total
    # A path is opened for the write, so it is closed after it too.
    close = bool(close_when_finished) or isinstance(sink, PathSink)
    return Job(handle, sink, source, profile, chunk_size, close, chain, fsync)


def open_sink(file: object, mode: str | None, fsync: bool, atomic: bool) -> Sink:
    """The sink for ``file`` with the path-only options checked (in the caller)."""
    if isinstance(file, (str, bytes, os.PathLike)):
        return PathSink(file, "wb" if mode is None else mode, bool(atomic))
    if mode is not None:
        raise ValueError(f"mode applies to paths only; got {mode!r} with {type(file).__qualname__}")
    if atomic:
        raise ValueError(f"atomic=True applies to paths only, not to {type(file).__qualname__}")
    sink = sink_for(file)
    if fsync and not sink_can_sync(sink):
        raise ValueError("fsync=True needs a destination with a file descriptor "
                         f"({type(file).__qualname__} has none)")
    return sink


def bgwrite(
    file: object,
    data: object,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
    *,
    mode: str | None = None,
    fsync: bool = False,
    atomic: bool = False,
    copy: bool = False,
) -> BackgroundWriteProcess:
    """Write ``data`` to ``file`` in the background; return a handle at once.

    The data is not copied: it is written through a view of its memory, so
    leave it unchanged until the write is done. Writes to one file object
    are written in call order, never interleaved.

    Parameters
    ----------
    file : file object, path, int file descriptor or socket
        A binary or text stream (anything with a ``write`` method), open and
        writable; a path (``str`` or ``os.PathLike``), opened by the worker
        and closed when the write ends; an int file descriptor (a file, a
        pipe end, blocking or not); or a connected stream socket. A full
        non-blocking destination is waited for, never spun on.
    data : bytes-like, numpy array, str, list of those, or iterable of those
        Buffers are written as their raw bytes (numpy arrays in C order; a
        non-contiguous array is refused). str goes to text streams only,
        bytes to binary streams only. A list or tuple is checked now; any
        other iterable (a generator, say) is consumed lazily by the worker.
    close_when_finished : bool, default False
        Close ``file`` when the write ends, whether it succeeded, failed or
        was cancelled.
    chain_after : BackgroundWriteProcess or None
        Start only after this write (to any destination) is done; if it
        failed or was cancelled, this write writes nothing and fails with
        :class:`bgio.ChainError`.
    priority : int 1..10 or BackgroundIOPriority, default 4
        A preset of :data:`bgio.PRESETS` (1 fastest, 10 gentlest) or a profile.
    mode : {"wb", "ab", "xb"}, keyword-only, paths only
        Truncate (the default), append, or create a new file.
    fsync : bool, keyword-only, default False
        Make the data durable (flush and ``fdatasync``) before the handle
        completes. Pipes and sockets have nothing to sync.
    atomic : bool, keyword-only, default False, paths only
        Write a temporary file in the same directory and rename it over the
        target once complete and synced: a crash leaves the old file or the
        new one, never a part; a failure or cancel leaves the old one and no
        temporary file.
    copy : bool, keyword-only, default False
        Snapshot the data now (one copy), for programs that reuse their
        buffers; a lazy iterable is then consumed at once. Without it the
        buffer must stay unchanged until the write is done.

    Returns
    -------
    BackgroundWriteProcess
        The handle: ``result()`` waits and returns the bytes written or
        raises the write's error.

    Raises
    ------
    TypeError
        ``file`` has no ``write``; ``data`` is of an unsupported type or the
        wrong kind for the stream (str to binary, bytes to text);
        ``priority`` or ``chain_after`` has the wrong type.
    ValueError
        ``file`` is closed or not writable (or a path in a missing
        directory); ``priority`` is out of range; a buffer is not contiguous;
        ``mode`` or ``atomic`` given for something that is not a path;
        ``fsync`` for a destination without a file descriptor.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.BytesIO()
    >>> bgio.bgwrite(out, b"hello " * 3, priority=7).result()
    18
    """
    sink = open_sink(file, mode, fsync, atomic)
    profile = resolve_priority(priority)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, None, close_when_finished,
                          chain_after, fsync=bool(fsync), copy=bool(copy)))


def bgwrite_chunk(
    file: object,
    data: object,
    chunk_size: int,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
    *,
    mode: str | None = None,
    fsync: bool = False,
    atomic: bool = False,
    copy: bool = False,
) -> BackgroundWriteProcess:
    """Like :func:`bgwrite`, with chunks of ``chunk_size`` bytes instead of the profile's.

    Parameters
    ----------
    chunk_size : int
        Bytes (characters for text) per chunk, >= 1. Smaller chunks pace
        more finely; larger ones cost fewer system calls.

    Notes
    -----
    See :func:`bgwrite` for the other parameters, the return value and the
    errors; a ``chunk_size`` below 1 is a ``ValueError``.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.StringIO()
    >>> bgio.bgwrite_chunk(out, "abcdef", 4).result(), out.getvalue()
    (6, 'abcdef')
    """
    sink = open_sink(file, mode, fsync, atomic)
    size = validate_chunk_size("chunk_size", chunk_size)
    profile = resolve_priority(priority)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, size, close_when_finished,
                          chain_after, fsync=bool(fsync), copy=bool(copy)))


class Writer:
    """An ordered stream of background writes into one destination.

    Every :meth:`write` returns at once with a handle; the data are written
    in call order by one worker thread, however many writes are queued. If
    one write fails (or is cancelled), every later one fails with
    :class:`bgio.ChainError` and :meth:`flush` and :meth:`close` raise the
    first error, so nothing is written after a gap.

    Parameters
    ----------
    file : file object, path, int file descriptor or socket
        The destination, as for :func:`bgwrite`. A path is opened on the
        first write and closed by :meth:`close`.
    priority : int 1..10 or BackgroundIOPriority, default 4
        Pacing of every write of this Writer.
    close_when_finished : bool, default False
        Close ``file`` when the Writer is closed, after the last write
        (always done for a path, which the Writer opened itself).
    mode, fsync, atomic, copy : keyword-only
        As for :func:`bgwrite`, for every write. With ``atomic=True`` the
        file appears under its name, complete, when :meth:`close` succeeds;
        after a failure the old file is left as it was.
    max_pending_bytes : int or None, keyword-only
        Bound on bytes accepted but not yet written. A :meth:`write` that
        would exceed it waits for room (or raises :class:`bgio.QueueFull`,
        see :meth:`write`); a single write larger than the bound is
        accepted once nothing else is pending. None means no bound. Data
        of a lazy iterable counts as 0 bytes (its size is unknown).

    Raises
    ------
    TypeError, ValueError
        As :func:`bgwrite` does for its arguments; ``max_pending_bytes``
        below 1.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.BytesIO()
    >>> with bgio.Writer(out, priority=1) as w:
    ...     for i in range(3):
    ...         _ = w.write(b"line %d\\n" % i)
    >>> out.getvalue()
    b'line 0\\nline 1\\nline 2\\n'
    """

    def __init__(
        self,
        file: object,
        priority: PriorityLike = 4,
        close_when_finished: bool = False,
        *,
        mode: str | None = None,
        fsync: bool = False,
        atomic: bool = False,
        copy: bool = False,
        max_pending_bytes: int | None = None,
    ) -> None:
        self._sink = open_sink(file, mode, fsync, atomic)
        self._profile = resolve_priority(priority)
        self._close_when_finished = bool(close_when_finished) or isinstance(self._sink, PathSink)
        self._fsync = bool(fsync)
        self._copy = bool(copy)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        self._max_pending = max_pending_bytes
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # signalled as pending bytes are written
        self._pending = 0
        self._last: BackgroundWriteProcess | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bgio.Writer {state} file={self._sink.name!r}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def file(self) -> object:
        """The destination as given (file object, fd, socket), or None for a path."""
        return self._sink.target

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by :meth:`write` and not yet written."""
        return self._pending

    def write(
        self, data: object, *, block: bool = True, timeout: float | None = None
    ) -> BackgroundWriteProcess:
        """Queue ``data`` after everything written so far; return its handle at once.

        Parameters
        ----------
        data : as for :func:`bgwrite`
        block : bool, keyword-only, default True
            With ``max_pending_bytes`` set and no room: wait for room (True)
            or raise :class:`bgio.QueueFull` at once (False).
        timeout : float or None, keyword-only
            Seconds to wait for room at most; then :class:`bgio.QueueFull`.

        Raises
        ------
        ValueError
            If the Writer is closed (or as :func:`bgwrite` does for ``data``).
        TypeError
            As :func:`bgwrite` does for ``data``.
        bgio.QueueFull
            If there is no room for ``data`` (``block=False``, or ``timeout``).
        """
        # Kept lean (no prepare(): no chain, no close to check): a Writer is
        # how programs issue many small writes, and this is their whole cost.
        source = make_source(data, self._sink.kind, copy=self._copy)
        job = Job(BackgroundWriteProcess(source.total), self._sink, source, self._profile,
                  fsync=self._fsync)
        if self._max_pending is None:
            return self._submit(job)
        return self._submit_bounded(job, source.total or 0, block, timeout)

    def _after_failure(self, job: Job) -> None:
        """Chain ``job`` to a failed last write, so the Writer stays failed even when
        the destination's queue has forgotten (a path, an fd): nothing after a gap."""
        last = self._last
        if last is not None and last.done() and failed(last):
            job.chain_after = last

    def _submit(self, job: Job) -> BackgroundWriteProcess:
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            self._after_failure(job)
            self._last = submit(job)
        return job.handle

    def _submit_bounded(self, job: Job, size: int, block: bool,
                        timeout: float | None) -> BackgroundWriteProcess:
        bound = self._max_pending
        assert bound is not None
        with self._lock:
            def has_room() -> bool:
                return self._closed or self._pending == 0 or self._pending + size <= bound

            if not has_room():
                if not block:
                    raise QueueFull(f"{self._pending} bytes pending, bound {bound}: no room for "
                                    f"{size} more")
                if not self._room.wait_for(has_room, timeout):
                    raise QueueFull(f"no room for {size} bytes after {timeout} s "
                                    f"({self._pending} pending, bound {bound})")
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            self._after_failure(job)
            self._pending += size
            self._last = submit(job)
        job.handle.add_done_callback(lambda _: self._written(size))
        return job.handle

    def _written(self, size: int) -> None:
        with self._lock:
            self._pending -= size
            self._room.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is in the file, or raise.

        With ``fsync=True`` that means on disk.

        Raises
        ------
        TimeoutError
            If the writes are not done after ``timeout`` seconds.
        Exception
            The first error of this Writer's writes, or
            :class:`concurrent.futures.CancelledError` if one was cancelled.
        """
        last = self._last
        if last is not None:
            if not last.wait(timeout):
                raise TimeoutError(f"writes not done after {timeout} s")
            self._raise_error(last)

    @staticmethod
    def _raise_error(last: BackgroundWriteProcess) -> None:
        """Raise the error that started the failure (not the ChainErrors after it)."""
        if last.cancelled():
            last.result(0)  # raises CancelledError
        error = last._exception
        if isinstance(error, ChainError) and error.root_cause is not None:
            error = error.root_cause
        if error is not None:
            raise error

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting writes, wait for the queued ones, and close the file if asked.

        Calling it again does nothing.

        Raises
        ------
        TimeoutError
            If the writes are not done after ``timeout`` seconds.
        Exception
            The first error of this Writer's writes (the file is closed all
            the same when ``close_when_finished`` is set).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()  # writers waiting for room get their ValueError
            if self._close_when_finished:
                # The close is queued as the last, empty write: it happens in
                # order, after every pending write, and even after a failure.
                empty = b"" if self._sink.kind != "text" else ""
                job = prepare(BackgroundWriteProcess, self._sink, empty, self._profile,
                              close_when_finished=True, fsync=self._fsync)
                self._after_failure(job)
                self._last = submit(job)
        self.flush(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_error:  # noqa: BLE001 - already on the handle and logged
            # The body's exception is the one to propagate; the write's own
            # error was logged by the worker when it happened.
            logger.debug("closing %r after an exception in its block: %r", self, close_error)
