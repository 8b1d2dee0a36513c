"""``Writer``: an ordered stream of background writes into one destination, with bounded memory."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from .api import (
    PriorityLike,
    hand_over_frames,
    open_sink,
    prepare,
    uses_writer_process,
)
from .closing import ClosesOnExit, Finish
from .engine import submit_held
from .group import SMALL_WRITE, WriteGroup
from .handle import BackgroundWriteProcess, GroupedWrite, failure_of, raise_root_error
from .lag import check_max_lag
from .objects import local_path
from .priority import resolve_priority, validate_chunk_size
from .protocols import Data, Destination
from .room import wait_for_room
from .sinks import PathSink, fit_chunk_size
from .sinks.objects import ObjectSink
from .source import Source, make_source
from .timeouts import check_timeout
from .worker import Job

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["Writer"]


class Writer(ClosesOnExit):
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
    mode, fsync, atomic, copy, direct, backend : keyword-only
        As for :func:`bgwrite`, for every write. With ``atomic=True`` the
        file appears under its name, complete, when :meth:`close` succeeds;
        after a failure the old file is left as it was.
    storage_options, store, exclusive : keyword-only, object stores only
        As for :func:`bgwrite`. The writes, in order, are one object's
        bytes (sent as the parts of one upload); the object appears when
        :meth:`close` succeeds, and after a failure or a cancel nothing is
        stored. A write's handle is done once the upload has taken its
        bytes (copied once, so the buffer may be reused then); the store
        has them when the close is done.
    max_pending_bytes : int or None, keyword-only
        Bound on bytes accepted but not yet written. A :meth:`write` that
        would exceed it waits for room (or raises :class:`bgio.QueueFull`,
        see :meth:`write`); a single write larger than the bound is
        accepted once nothing else is pending. None means no bound. Data
        of a lazy iterable counts as 0 bytes (its size is unknown).
    max_lag : float or None, keyword-only
        Seconds. While a write called longer ago than this is not yet
        written, pacing is suspended: chunks go back to back, with the
        profile's chunk size and I/O priority, until the Writer catches up;
        then pacing resumes (with no debt to pay for the hurry). So a paced
        Writer whose producer is faster than its profile falls behind by
        about this much at most, as long as the destination keeps up at
        full speed. None, the default: paced throughout (bound the backlog
        with ``max_pending_bytes`` instead). See :attr:`lag` and the "GUI
        programs" page of the manual.
    max_lag_bytes : int or None, keyword-only
        The same, in bytes: pacing is suspended while more than this is
        queued behind the write in hand (:attr:`pending_bytes`, less that
        write). Either or both may be set.

    Raises
    ------
    TypeError, ValueError
        As :func:`bgwrite` does for its arguments; ``max_pending_bytes``
        or ``max_lag_bytes`` below 1, ``max_lag`` not a number > 0; a
        ``max_lag`` or ``max_lag_bytes`` with ``backend="process"``.

    Notes
    -----
    Consecutive small writes (``bytes`` of up to 64 KiB, without
    ``max_pending_bytes``, ``max_lag`` or ``max_lag_bytes``) are gathered in the caller's thread into one
    piece of at most a chunk, written and paced as one: a million 64-byte
    writes cost about ten times a buffered file's loop, not fifty. Each
    still has its own handle. A cancel of a write of a piece under way
    stops the piece where that write begins, if its bytes have not gone
    out; the writes before it finish normally.

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

    def __new__(cls, *args: object, backend: str | None = None, **options: object) -> Self:
        # Writer(..., backend="process") is the writer process's kind of Writer (same
        # methods); Python then runs that class's __init__ with the same arguments.
        if backend is None and cls is not Writer:
            return object.__new__(cls)  # (a subclass was written for threads)
        target = args[0] if args else options.get("file")
        if uses_writer_process(backend, target, options.get("store")):
            if cls is not Writer:
                raise ValueError(f"backend='process' makes a bgio.Writer of its own kind; "
                                 f"{cls.__qualname__} (a subclass) takes backend='thread' only")
            from .process.writer import ProcessWriter  # loaded by those who use it

            return object.__new__(ProcessWriter)  # type: ignore[return-value]
        return object.__new__(cls)

    def __init__(
        self,
        file: Destination,
        priority: PriorityLike = 4,
        close_when_finished: bool = False,
        *,
        mode: str | None = None,
        fsync: bool = False,
        atomic: bool = False,
        copy: bool = False,
        max_pending_bytes: int | None = None,
        direct: bool = False,
        backend: str | None = None,
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        storage_options: dict[str, Any] | None = None,
        store: object = None,
        exclusive: bool = False,
    ) -> None:
        lag_seconds, lag_bytes = check_max_lag(max_lag, max_lag_bytes)
        self._profile = resolve_priority(priority)
        self._sink = open_sink(file, mode, fsync, atomic, direct, profile=self._profile,
                               storage_options=storage_options, store=store,
                               exclusive=exclusive, many=True)
        # A path or an object is opened for the Writer, so it is closed with it too.
        self._close_when_finished = bool(close_when_finished) or isinstance(
            self._sink, (PathSink, ObjectSink))
        if isinstance(self._sink, ObjectSink) or local_path(file) is not None:
            # An object (or a file:// URL, written whole as one) exists only once it is
            # complete: one left open is closed at exit (as a file would hold what was
            # written), and an upload freed unclosed is aborted rather than left as an
            # upload that never ends.
            from .h5.exit import track

            track(self)
            if isinstance(self._sink, ObjectSink):
                weakref.finalize(self, self._sink.drop)
        self._fsync = bool(fsync)
        self._copy = bool(copy)
        self._takes_bytes = self._sink.kind != "text"
        self._chunk_size = fit_chunk_size(self._sink, self._profile.default_chunk_size)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        self._max_pending = max_pending_bytes
        self._keep_up(lag_seconds, lag_bytes, f"bgio.Writer({self._sink.name!r})")
        # Whether the Writer counts pending bytes per write: for a bound, or a max_lag.
        self._counts_pending = max_pending_bytes is not None or self._lag is not None
        # Writes up to this size join a group (bgio.group); none when the
        # Writer counts pending bytes per write.
        self._group_below = -1 if self._counts_pending else min(SMALL_WRITE, self._chunk_size)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # signalled as pending bytes are written
        self._pending = 0
        self._last: BackgroundWriteProcess | None = None
        self._group: WriteGroup | None = None  # the small writes last queued (bgio.group)
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
        """The destination as given (file object, fd, socket), or None for a path or an
        object."""
        return self._sink.target

    @property
    def kind(self) -> str | None:
        """What the destination takes: ``"bytes"``, ``"text"``, or None when it cannot be told."""
        return self._sink.kind

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by :meth:`write` and not yet written (counted only with
        ``max_pending_bytes``, ``max_lag`` or ``max_lag_bytes``: 0 otherwise)."""
        return self._pending

    @property
    def backend(self) -> str:
        """Who writes: ``"thread"`` (a worker thread) or ``"process"`` (the writer process)."""
        return "thread"

    def _backlog_bytes(self) -> int:
        return self._pending  # (the writes queued: counted with a max_lag)

    def write(
        self, data: Data, *, block: bool = True, timeout: float | None = None
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
        if type(data) is bytes and self._takes_bytes:
            if 0 < len(data) <= self._group_below:
                # Joins the group queued last, if it still takes writes: one
                # handle and two appends, no job, no trip through the engine.
                serve = None
                lock = self._lock
                lock.acquire()  # (half the cost of a with-statement)
                try:
                    if self._closed:
                        raise ValueError("write to a closed bgio.Writer")
                    group = self._group
                    member = None if group is None else group.add(data)
                    if member is None:
                        member, serve = self._start_group(data)
                    self._last = member
                    if self._totals is not None:  # (under the lock: before any close)
                        self._count_write(member, len(data))
                finally:
                    lock.release()
                if serve is not None:
                    serve()  # no worker thread for it: this thread writes (see submit_held)
                return member
            # The common case: immutable, so never copied, and its own source.
            source: Source | bytes = data
            total: int | None = len(data)
        else:
            source = make_source(data, self._sink.kind, copy=self._copy)
            total = source.total
        handle = BackgroundWriteProcess(total)
        job = Job(handle, self._sink, source, self._profile, self._chunk_size)
        if self._fsync:
            job.fsync = True
        if self._counts_pending:
            if self._lag is not None:
                job.lag = self._lag
                job.accepted = time.perf_counter()
            handle = self._submit_bounded(job, total or 0, block, timeout)
            self._count_write(handle, total)
            return handle
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            last = self._last
            if last is not None and last.done():
                self._after_failure(job)
            _take_frames(job)  # once nothing can refuse the write
            serve = submit_held(job)
            self._last = handle
            self._count_write(handle, total)
        if serve is not None:
            serve()
        return handle

    def _start_group(self, data: bytes) -> tuple[GroupedWrite, Callable[[], None] | None]:
        # (self._lock held) Queue a new group, with its first write; return its
        # handle, and what the caller must run once the lock is released.
        group = self._group = WriteGroup(self._lock, self._chunk_size)
        handle = group.add(data)
        assert handle is not None
        job = Job(handle, self._sink, b"", self._profile, self._chunk_size)
        job.group = group
        if self._fsync:
            job.fsync = True
        last = self._last
        if last is not None and last.done():
            self._after_failure(job)
        return handle, submit_held(job)

    def _after_failure(self, job: Job) -> None:
        """Chain ``job`` to a failed last write, so the Writer stays failed even when
        the destination's queue has forgotten (a path, an fd): nothing after a gap."""
        last = self._last
        if last is not None and failure_of(last) is not None:
            job.chain_after = last

    def _submit_bounded(self, job: Job, size: int, block: bool,
                        timeout: float | None) -> BackgroundWriteProcess:
        bound = self._max_pending
        timeout = check_timeout(timeout)
        with self._lock:
            if bound is not None:
                def has_room() -> bool:
                    return (self._closed or self._pending == 0
                            or self._pending + size <= bound)

                wait_for_room(self._room, has_room, block, timeout, lambda: self._pending,
                              bound, f"{size} bytes")
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            self._after_failure(job)
            _take_frames(job)  # once nothing can refuse the write
            self._pending += size
            serve = submit_held(job)
            self._last = job.handle
        job.handle.add_done_callback(lambda _: self._written(size))
        if serve is not None:
            serve()
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
        check_timeout(timeout)
        for _ in range(2):
            serve = None
            with self._lock:
                last = self._last
                barrier = last is not None and last.cancelled()
                if barrier:
                    # Cancelled while queued, it is done before the writes ahead
                    # of it: wait for an empty write queued behind them instead.
                    job = Job(BackgroundWriteProcess(0), self._sink, b"", self._profile,
                              chain_after=last)
                    serve = submit_held(job)
                    last = self._last = job.handle
            if serve is not None:
                serve()
            if last is None:
                return
            if not last.wait(timeout):
                raise TimeoutError(f"writes not done after {timeout} s")
            if barrier or not last.cancelled():
                break
            # Cancelled (by another thread) once looked at: wait behind it after all.
        assert last is not None
        raise_root_error(last)

    @overload
    def close(self, timeout: float | None = None, *, wait: Literal[True] = True) -> None: ...

    @overload
    def close(self, timeout: None = None, *, wait: Literal[False]) -> BackgroundWriteProcess: ...

    def close(self, timeout: float | None = None, *,
              wait: bool = True) -> BackgroundWriteProcess | None:
        """Stop accepting writes, wait for the queued ones, and close the file if asked.

        Calling it again waits for the writes and does nothing else (after
        ``close(wait=False)``: waits for that close, and raises its error).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most (with ``wait=True``).
        wait : bool, keyword-only, default True
            False: return at once, with a handle that ends when every write
            is done and the file closed (if asked); its ``result()`` raises
            what ``close()`` would have (and is 0 otherwise). For a GUI
            thread, which must not wait for the backlog.

        Returns
        -------
        None, or with ``wait=False`` the close's handle.

        Raises
        ------
        TimeoutError
            If the writes are not done after ``timeout`` seconds.
        Exception
            The first error of this Writer's writes (the file is closed all
            the same when ``close_when_finished`` is set).
        ValueError
            If ``timeout`` is given with ``wait=False``.
        """
        return self._close(timeout, wait)

    def _begin_close(self) -> Finish:
        serve = None
        with self._lock:
            if self._closed:
                return self._again()  # (waits for the first close)
            self._closed = True
            self._room.notify_all()  # writers waiting for room get their ValueError
            if self._close_when_finished:
                # The close is queued as the last, empty write: it happens in
                # order, after every pending write, and even after a failure.
                empty = b"" if self._sink.kind != "text" else ""
                job = prepare(BackgroundWriteProcess, self._sink, empty, self._profile,
                              close_when_finished=True, fsync=self._fsync)
                self._after_failure(job)
                serve = submit_held(job)
                self._last = job.handle
        if serve is not None:
            serve()
        return self.flush


def _take_frames(job: Job) -> None:
    """The write takes the FramePool frames among its data (see :mod:`bgio.pool`)."""
    if isinstance(job.source, Source):
        hand_over_frames(job.source, job.handle)
