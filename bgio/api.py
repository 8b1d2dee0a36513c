"""The public calls: check everything in the caller's thread, then hand the write to the engine."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import ChainError
from .handle import BackgroundWriteProcess
from .jobs import Job
from .priority import BackgroundIOPriority, resolve_priority, validate_chunk_size
from .sinks import Sink, sink_for
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
) -> Job:
    """Check ``data`` and ``chain_after`` in the caller and build the job (not queued yet).

    ``handle`` is a handle class to instantiate, or an instance whose
    ``total_bytes`` is filled in (the compatibility layer's thread-like handle).
    """
    source = make_source(data, sink.kind)
    chain = _check_chain_after(chain_after)
    if isinstance(handle, type):
        handle = handle(source.total)
    else:
        handle.total_bytes = source.total
    return Job(handle, sink, source, profile, chunk_size, bool(close_when_finished), chain)


def bgwrite(
    file: object,
    data: object,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
) -> BackgroundWriteProcess:
    """Write ``data`` to ``file`` in the background; return a handle at once.

    The data is not copied: it is written through a view of its memory, so
    leave it unchanged until the write is done. Writes to one file object
    are written in call order, never interleaved.

    Parameters
    ----------
    file : writable file object
        A binary or text stream (anything with a ``write`` method), open and
        writable.
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
        ``file`` is closed or not writable; ``priority`` is out of range; a
        buffer is not contiguous.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.BytesIO()
    >>> bgio.bgwrite(out, b"hello " * 3, priority=7).result()
    18
    """
    sink = sink_for(file)
    profile = resolve_priority(priority)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, None, close_when_finished,
                          chain_after))


def bgwrite_chunk(
    file: object,
    data: object,
    chunk_size: int,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
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
    sink = sink_for(file)
    size = validate_chunk_size("chunk_size", chunk_size)
    profile = resolve_priority(priority)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, size, close_when_finished,
                          chain_after))


class Writer:
    """An ordered stream of background writes into one file object.

    Every :meth:`write` returns at once with a handle; the data are written
    in call order by one worker thread, however many writes are queued. If
    one write fails (or is cancelled), every later one fails with
    :class:`bgio.ChainError` and :meth:`flush` and :meth:`close` raise the
    first error, so nothing is written after a gap.

    Parameters
    ----------
    file : writable file object
        The destination, as for :func:`bgwrite`.
    priority : int 1..10 or BackgroundIOPriority, default 4
        Pacing of every write of this Writer.
    close_when_finished : bool, default False
        Close ``file`` when the Writer is closed, after the last write.

    Raises
    ------
    TypeError, ValueError
        As :func:`bgwrite` does for ``file`` and ``priority``.

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

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bgio.Writer {state} file={self._sink.name!r}>"

    def __init__(
        self,
        file: object,
        priority: PriorityLike = 4,
        close_when_finished: bool = False,
    ) -> None:
        self._sink = sink_for(file)
        self._profile = resolve_priority(priority)
        self._close_when_finished = bool(close_when_finished)
        self._lock = threading.Lock()
        self._last: BackgroundWriteProcess | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def file(self) -> object:
        """The destination file object."""
        return self._sink.target

    def write(self, data: object) -> BackgroundWriteProcess:
        """Queue ``data`` after everything written so far; return its handle at once.

        Raises
        ------
        ValueError
            If the Writer is closed (or as :func:`bgwrite` does for ``data``).
        TypeError
            As :func:`bgwrite` does for ``data``.
        """
        # Kept lean (no prepare(): no chain, no close to check): a Writer is
        # how programs issue many small writes, and this is their whole cost.
        source = make_source(data, self._sink.kind)
        return self._submit(Job(BackgroundWriteProcess(source.total), self._sink, source,
                                self._profile))

    def _submit(self, job: Job) -> BackgroundWriteProcess:
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            if job.close:
                self._closed = True
            self._last = submit(job)
        return job.handle

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is in the file (flushed), or raise.

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
        while isinstance(error, ChainError) and isinstance(error.predecessor, BackgroundWriteProcess):
            earlier = error.predecessor
            if earlier.cancelled():
                earlier.result(0)
            error = earlier._exception
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
            if not self._close_when_finished:
                self._closed = True
        if self._close_when_finished:
            # The close is queued as the last, empty write: it happens in
            # order, after every pending write, and even after a failure.
            self._submit(prepare(BackgroundWriteProcess, self._sink, b"" if self._sink.kind != "text"
                                 else "", self._profile, close_when_finished=True))
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
