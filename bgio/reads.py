"""``bgio.bgread``: a read in the background, paced like a write, into a new or given buffer.

A read is a *task* on its source's lane: reads of one file descriptor,
file object or socket run in call order, one after the other, in a thread
that lives while the lane has work (a path's read has a lane of its own).
The loop is the write loop's, read the other way round: one chunk of the
profile's size at a time, a pause after it as the profile's busy fraction
and ``max_rate`` ask (:class:`bgio.throttle.Throttle`), the profile's I/O
priority on the thread, progress on the handle after every chunk. Waiting
for a pipe or a socket to have data is not busy time, as waiting for a
slow reader is not for a write.

Reads change nothing, so a read still running when the program exits is
simply left (its thread is a daemon): nothing is lost.
"""

from __future__ import annotations

import logging
import numbers
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, SupportsIndex

from . import ioprio
from .errors import ShortRead
from .handle import BackgroundWriteProcess, WriteTiming
from .priority import (
    BackgroundIOPriority,
    PriorityLike,
    resolve_priority,
    validate_chunk_size,
)
from .protocols import ReadSource
from .readers import Reader, make_reader
from .runqueue import run_delay
from .sinks.wait import Waiter, WriteInterrupted
from .throttle import Throttle

__all__ = ["BackgroundRead", "ChunkTimer", "bgread", "pause_cancellably"]

logger = logging.getLogger("bgio")


class BackgroundRead(BackgroundWriteProcess):
    """The handle of one background read (returned by :func:`bgio.bgread`).

    A :class:`concurrent.futures.Future` like a write's handle, with the
    same progress attributes, callbacks, ``rate``, ``duty_cycle`` and
    :meth:`cancel`; only :meth:`result` differs: it gives the data read
    (a ``bytearray``, or a str from a text stream), or, with ``into=``,
    the number of bytes read into it.

    Attributes
    ----------
    bytes_read : int
        Bytes (characters from a text stream) read so far; the same as
        :attr:`bytes_written`, which the progress records call it.
    total_bytes : int or None
        The bytes the read will take: ``size``, the size of ``into``, or
        what a regular file holds from where the read starts; None where
        it is not known before the end (a pipe, a socket).
    """

    _what = "read"
    _data: object = None  # what result() gives without ``into=``

    def result_data(self) -> object:
        """(For the reader) The data set so far with :meth:`set_data`."""
        return self._data

    def set_data(self, data: object) -> None:
        """(For the reader) What :meth:`result` gives instead of the count: the data read
        into a buffer of bgio's own."""
        self._data = data

    @property
    def bytes_read(self) -> int:
        """Bytes (characters) read so far."""
        return self.bytes_written

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the read; return the data read, or the count read into ``into=``.

        Raises
        ------
        bgio.ShortRead
            If the source ended before the ``size`` asked (what was read
            is on the exception).
        concurrent.futures.CancelledError
            If the read was cancelled.
        TimeoutError
            If it is not done after ``timeout`` seconds.
        OSError
            What the source raised.
        """
        count = super().result(timeout)
        return count if self._data is None else self._data


class _Task:
    """One read: where from, into what, how fast."""

    __slots__ = (
        "chunk_size",
        "close_source",
        "drop_cache",
        "handle",
        "into",
        "on_block",
        "profile",
        "reader",
        "size",
    )

    def __init__(self, handle: BackgroundRead, reader: Reader, size: int | None,
                 into: memoryview | None, profile: BackgroundIOPriority, chunk_size: int,
                 close_source: bool, drop_cache: bool,
                 on_block: Callable[[Any], None] | None = None) -> None:
        self.handle = handle
        self.reader = reader
        self.size = size
        self.into = into
        self.profile = profile
        self.chunk_size = chunk_size
        self.close_source = close_source
        self.drop_cache = drop_cache
        # (bgio.compat.bgread) Each read's bytes as a block of their own, kept nowhere else.
        self.on_block = on_block


class _Lane:
    """The reads of one source, in call order, and the pacing they share."""

    __slots__ = ("key", "tasks", "throttle", "waiter", "wake")

    def __init__(self, key: Hashable, profile: BackgroundIOPriority) -> None:
        self.key = key
        self.tasks: deque[_Task] = deque()
        self.throttle = Throttle(profile)
        self.waiter: Waiter | None = None  # made when a source first needs waiting on
        self.wake = threading.Event()  # a cancel during a pause

    def interrupt(self) -> None:
        self.wake.set()
        if self.waiter is not None:
            self.waiter.interrupt()


_lock = threading.Lock()
_lanes: dict[Hashable, _Lane] = {}  # lanes with a thread serving them
_thread_count = 0


def _count_or_none(name: str, value: object) -> int | None:
    """``size=`` and ``offset=``: None, or an int >= 0 (numpy's ints too)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int or None, got {type(value).__name__}")
    count = int(value)
    if count < 0:
        raise ValueError(f"{name}: must be >= 0, got {count}")
    return count


def _writable_view(into: object) -> memoryview:
    """``into`` as a flat writable byte view (no copy)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(into, numpy.ndarray):
        if into.dtype.hasobject:
            raise TypeError("into: a numpy array of Python objects cannot be read into")
        if not into.flags.c_contiguous:
            raise ValueError("into: the numpy array is not C-contiguous (a strided view or "
                             "Fortran order); read into a contiguous array")
        if not into.flags.writeable:
            raise ValueError("into: the numpy array is read-only")
        return memoryview(into.reshape(-1).view(numpy.uint8))
    try:
        view = memoryview(into)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"into: expected a writable buffer (bytearray, numpy array, "
                        f"memoryview, mmap, ...), got {type(into).__qualname__}") from None
    if view.readonly:
        raise TypeError(f"into: {type(into).__qualname__} is read-only; pass a writable "
                        f"buffer (bytearray, numpy array, ...)")
    if not view.c_contiguous:
        raise ValueError("into: the buffer is not C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def bgread(
    source: ReadSource,
    size: SupportsIndex | None = None,
    *,
    into: object = None,
    offset: SupportsIndex | None = None,
    priority: PriorityLike = 4,
    chunk_size: int | None = None,
    close_when_finished: bool = False,
    drop_cache: bool = False,
) -> BackgroundRead:
    """Read from ``source`` in the background; return a handle at once.

    The read goes chunk by chunk, paced by the priority profile as a write
    is (busy fraction, ``max_rate``, I/O priority), so a big read leaves the
    program, and the disk, to the rest of the program. Reads of one file
    descriptor, file object or socket run in call order.

    Parameters
    ----------
    source : path, int file descriptor, file object or socket
        A path (``str``, ``bytes`` or ``os.PathLike``), opened by the
        worker and closed when the read ends; a file descriptor (a file, a
        pipe, a FIFO, blocking or not); a binary or text file object (with
        ``readinto``/``read``); or a connected stream socket. A pipe or a
        socket with nothing to read is waited on, never polled.
    size : int or None
        Bytes (characters from a text stream) to read. The source ending
        before is an error, :class:`bgio.ShortRead` (what was read is on
        it). None: to the end of the source, or as much as ``into`` holds.
    into : writable buffer, optional
        A ``bytearray``, numpy array (C-contiguous, any dtype), memoryview,
        mmap, ...: the bytes are read straight into it, no copy; keep it
        alive and unused until the read is done. Not for text streams.
    offset : int, optional
        For a path or a file descriptor of a regular file: read from this
        byte with ``pread``, leaving a descriptor's position as it was.
        A path is otherwise read from its start, a descriptor or file
        object from where it stands.
    priority : int 1..10 or bgio.BackgroundIOPriority, default 4
        The pacing profile, as for :func:`bgio.bgwrite`.
    chunk_size : int, optional
        Bytes per read; the profile's ``default_chunk_size`` by default.
    close_when_finished : bool, default False
        Close the file descriptor, file object or socket once the read ends
        (a path's own descriptor is always closed).
    drop_cache : bool, default False
        For regular files read through their descriptor (paths and file
        descriptors): drop what was read from the page cache as the read
        goes (``posix_fadvise(DONTNEED)``), so a read of a file bigger than
        memory does not push the rest of the machine's cache out.

    Returns
    -------
    BackgroundRead
        Its :meth:`~BackgroundRead.result` is the data: a new ``bytearray``
        (a str from a text stream), or, with ``into``, the number of bytes
        read into it.

    Raises
    ------
    TypeError
        If ``source`` or ``into`` is of a kind that cannot be read from or
        into, or a number argument is not an int.
    ValueError
        If ``source`` is closed or not readable, a number is out of range,
        ``size`` exceeds ``into``, or ``offset`` is given for a source read
        where it stands.

    Examples
    --------
    >>> import bgio, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.bin")
    >>> with open(path, "wb") as file:
    ...     _ = file.write(b"0123456789")
    >>> bytes(bgio.bgread(path).result())
    b'0123456789'
    >>> buffer = bytearray(4)
    >>> bgio.bgread(path, into=buffer, offset=3).result(), buffer
    (4, bytearray(b'3456'))
    """
    asked = _count_or_none("size", size)
    count = asked
    start = _count_or_none("offset", offset)
    profile = resolve_priority(priority)
    chunk = (profile.default_chunk_size if chunk_size is None
             else validate_chunk_size("chunk_size", chunk_size))
    reader = make_reader(source, start)
    view = None
    if into is not None:
        if reader.kind == "text":
            raise TypeError("into: a text stream's characters are not read into a buffer; "
                            "read it without into=, or read its binary buffer")
        view = _writable_view(into)
        if count is None:
            count = len(view)
        elif count > len(view):
            raise ValueError(f"size: {count} bytes do not fit in into= ({len(view)} bytes)")
        view = view[:count]
    handle = BackgroundRead(count)
    _submit(_Task(handle, reader, asked, view, profile, chunk,
                  bool(close_when_finished), bool(drop_cache)))
    return handle


def submit_blocks(reader: Reader, profile: BackgroundIOPriority, chunk_size: int,
                  close_source: bool, on_block: Callable[[Any], None]) -> BackgroundRead:
    """Read ``reader`` to its end, each read's data handed to ``on_block`` as a block of
    its own (bytes, or str from a text stream): :func:`bgio.compat.bgread`'s reads."""
    handle = BackgroundRead(None)
    _submit(_Task(handle, reader, None, None, profile, chunk_size, close_source, False,
                  on_block))
    return handle


def _submit(task: _Task) -> None:
    global _thread_count
    key = task.reader.key
    with _lock:
        lane = _lanes.get(key)
        if lane is not None:
            lane.tasks.append(task)
            return
        lane = _lanes[key] = _Lane(key, task.profile)
        lane.tasks.append(task)
        _thread_count += 1
        name = f"bgio-read-{_thread_count}"
    ioprio.load()  # here, not in the new thread (see bgio.ioprio.load)
    thread = threading.Thread(target=_serve, args=(lane, True), name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads during interpreter shutdown: read here
        _serve(lane, False)


def _serve(lane: _Lane, own_thread: bool) -> None:
    """Run a lane's reads in order; forget the lane once it is empty."""
    if own_thread:
        ioprio.adopt()
    try:
        while True:
            with _lock:
                if not lane.tasks:
                    del _lanes[lane.key]
                    return
                task = lane.tasks.popleft()
            try:
                _read(lane, task)
            except BaseException as exc:  # a bug in bgio: fail the read, not hang it
                logger.exception("bgio read of %s failed", task.reader.name)
                if not task.handle.done():
                    task.handle.set_exception(RuntimeError(
                        f"bgio read of {task.reader.name} failed: {exc!r}; see the bgio log"))
    finally:
        if lane.waiter is not None:
            lane.waiter.close()
            lane.waiter = None


def _read(lane: _Lane, task: _Task) -> None:
    """One read, start to end: its handle is done when this returns."""
    handle, reader = task.handle, task.reader
    if not handle.set_running_or_notify_cancel():  # cancelled while queued
        if task.close_source:
            _close(reader, True, handle)
        return
    error: BaseException | None = None
    stopped = False
    try:
        if lane.waiter is None:  # (its eventfd lets a cancel wake a wait for data)
            lane.waiter = Waiter()
        reader.waiter = lane.waiter
        lane.waiter.clear()
        lane.wake.clear()
        handle.watch_cancel(lane.interrupt)
        reader.paced = task.profile.bandwidth_pct < 100 or task.profile.max_rate is not None
        reader.open()
        stopped = _pace_chunks(lane, task)
    except WriteInterrupted:
        stopped = True
    except BaseException as exc:  # noqa: BLE001 - on the handle, logged
        error = exc
    finally:
        handle.watch_cancel(None)
        closing_error = _close(reader, task.close_source, handle)
        if error is None:
            error = closing_error
    if error is not None:
        if not isinstance(error, ShortRead):
            error = _with_name(error, reader.name)
        logger.error("background read of %s failed after %d bytes", reader.name,
                     handle.bytes_written, exc_info=error)
        handle.set_exception(error)
    elif stopped:  # (a cancel after the last byte was read: the read is done)
        handle.set_stopped()
    else:
        handle.set_result()


def _with_name(error: BaseException, name: str) -> BaseException:
    # (An OSError of a descriptor read names no file: give it the source's.)
    if isinstance(error, OSError) and error.filename is None and error.errno is not None:
        named = type(error)(error.errno, error.strerror, name)
        named.__cause__ = error
        return named
    return error


def _close(reader: Reader, close_source: bool, handle: BackgroundRead) -> BaseException | None:
    try:
        reader.close(close_source)
    except Exception as exc:  # noqa: BLE001 - the read's failure, unless it failed first
        return exc
    return None


class _Target:
    """Where the read's bytes go: the caller's buffer, or a ``bytearray`` (a list of
    text pieces) bgio makes and grows."""

    def __init__(self, task: _Task, known: int | None) -> None:
        self.into = task.into
        self.text = task.reader.kind == "text"
        self.pieces: list[str] = []
        # Without into=: a regular file's size (one more byte, to see the end without
        # growing), or a chunk to start with, doubled as it fills.
        self.buffer = bytearray(0) if self.into is not None or self.text else bytearray(
            (known + 1) if known is not None else task.chunk_size)

    def fill(self, reader: Reader, done: int, want: int) -> int:
        if self.text:
            text = reader.read_text(want)
            if text:
                self.pieces.append(text)
            return len(text)
        if self.into is not None:
            return reader.readinto(self.into[done : done + want])
        buffer = self.buffer
        if len(buffer) < done + want:
            buffer.extend(bytes(max(done + want, 2 * len(buffer)) - len(buffer)))
        with memoryview(buffer) as view:
            return reader.readinto(view[done : done + want])

    def result(self, done: int) -> bytearray | str | None:
        if self.text:
            return "".join(self.pieces)
        if self.into is not None:
            return None
        del self.buffer[done:]
        return self.buffer


class ChunkTimer:
    """Times each chunk of a read and tells the throttle and the handle (``rate``,
    ``duty_cycle``): the write loop's accounting, for the read loops (this module's and
    :mod:`bgio.h5.reading`'s).

    Busy is the chunk's wall time less what was not reading: time runnable but
    waiting for a CPU (the run queue tells), and ``waited``, the seconds spent
    waiting for a pipe or a socket to have data.
    """

    def __init__(self, throttle: Throttle, handle: BackgroundWriteProcess) -> None:
        self.throttle = throttle
        self.timing = WriteTiming(-1.0, -1.0, 0.0, None)
        handle.set_timing(self.timing)
        self._last_seen = run_delay()
        self._before = self._cpu = self._started = 0.0

    def start(self) -> None:
        """A chunk's read begins."""
        self._before = run_delay()
        self._cpu = time.thread_time()
        self._started = time.perf_counter()

    def end(self, nbytes: int, waited: float = 0.0) -> None:
        """The chunk begun by :meth:`start` took ``nbytes``."""
        finished = time.perf_counter()
        cpu = time.thread_time() - self._cpu
        throttle, started = self.throttle, self._started
        wall = finished - started
        queued = 0.0
        seen = self._before
        if wall - cpu > throttle.latency:
            seen = run_delay()
            queued = max(0.0, seen - self._before)
        busy = throttle.busy_of(wall, cpu, waited, queued)
        throttle.record(nbytes, started, finished, busy, max(0.0, seen - self._last_seen))
        self._last_seen = seen
        timing = self.timing
        if timing.first_start < 0:
            timing.first_start = started
        timing.busy += busy
        timing.last_end = finished
        timing.rate = throttle.rate(timing.first_start)


class _Blocks:
    """Where :func:`bgio.compat.bgread`'s bytes go: each read's data, a block of its own,
    handed to ``on_block`` (one copy, out of a buffer reused for every read)."""

    def __init__(self, on_block: Callable[[Any], None]) -> None:
        self.on_block = on_block
        self.buffer = bytearray(0)

    def fill(self, reader: Reader, done: int, want: int) -> int:
        if reader.kind == "text":
            text = reader.read_text(want)
            if text:
                self.on_block(text)
            return len(text)
        if len(self.buffer) < want:
            self.buffer = bytearray(want)
        with memoryview(self.buffer) as view:
            got = reader.readinto(view[:want])
            if got:
                self.on_block(bytes(view[:got]))
        return got

    def result(self, done: int) -> None:
        """(Nothing kept: the blocks are the caller's.)"""


def _pace_chunks(lane: _Lane, task: _Task) -> bool:
    """The read loop; True if a cancel stopped it."""
    handle, reader = task.handle, task.reader
    throttle = lane.throttle
    throttle.profile = task.profile
    ioprio.apply(task.profile.io_priority)
    size = task.size if task.into is None else len(task.into)
    known = size
    if known is None and task.on_block is None and reader.kind == "bytes":
        known = reader.size_left()
        if handle.total_bytes is None and known is not None:
            handle.total_bytes = known
    target = _Target(task, known) if task.on_block is None else _Blocks(task.on_block)
    chunk = task.chunk_size
    waiter = reader.waiter
    assert waiter is not None
    timer = ChunkTimer(throttle, handle)
    done = 0
    dropped = 0  # bytes dropped from the page cache so far
    while size is None or done < size:
        if handle.cancel_requested:
            return True
        pause = throttle.delay()
        if pause and pause_cancellably(lane.wake, handle, throttle, pause):
            return True
        want = chunk if size is None else min(chunk, size - done)
        timer.start()
        got = target.fill(reader, done, want)
        if not got:
            break  # the end of the source
        done += got
        handle.bytes_written = done
        if task.drop_cache and done - dropped >= chunk:
            reader.done_with(dropped, done)
            dropped = done
        timer.end(got, waiter.take_waited())
        handle.report_progress()
    if task.drop_cache and done > dropped:
        reader.done_with(dropped, done)
    handle.set_data(target.result(done))
    if task.size is not None and done < task.size:
        data = handle.result_data() if task.into is None else task.into[:done]
        handle.set_data(None)
        raise ShortRead(f"{reader.name}: the source ended after {done} of the {task.size} "
                        f"{'characters' if reader.kind == 'text' else 'bytes'} asked",
                        done, task.size, data)
    if handle.total_bytes is None or task.size is None:
        handle.total_bytes = done  # (what there was, now known)
    return False


def pause_cancellably(wake: threading.Event, handle: BackgroundWriteProcess,
                      throttle: Throttle, seconds: float) -> bool:
    """Sleep ``seconds`` for pacing, cut short by ``handle``'s cancel (which sets
    ``wake``); True if cancelled. The read loops' pause (this module's and
    :mod:`bgio.h5.reading`'s)."""
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        if handle.cancel_requested:
            return True
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        wake.wait(min(remaining, threading.TIMEOUT_MAX))
        wake.clear()
    throttle.note_wake(seconds, time.perf_counter() - started)
    return False

