"""The writer process: bgio's own thread engine, fed by the parent through shared memory.

Started by :mod:`bgio.process.parent` as ``python -m bgio.process.child
COMMANDS EVENTS RING SEGMENT PARENT DESCRIPTORS`` (a fresh interpreter:
nothing of the parent's program is imported or re-run). Its main thread only reads
commands, so its worker threads never wait for a busy interpreter lock;
each write is an ordinary :func:`bgio.bgwrite` of a lazy iterable whose
blocks are the ring segments the parent filled, so order per destination,
pacing, ``chain_after``, ``atomic``, ``fsync``, write-back windows and the
exit drain are the thread engine's own.

Commands (parent to child), pickled tuples:

- ``("write", id, path, key, options, chain)``: start a write to ``path``,
  or (``path`` None) to the file descriptor that came over the DESCRIPTORS
  socket just before, of the open file ``key`` (see :class:`_Descriptors`);
  ``options`` are keyword arguments of :func:`bgio.bgwrite` (``chunk_size``
  among them), ``chain`` None or the id of the write (or of a parent-side
  handle's stand-in) to wait for;
- ``("writer", id, path, key, options)``: open a :class:`bgio.Writer` (``id``
  names it) on ``path`` or on the descriptor that came just before (as for
  ``write``); ``options`` are its keyword arguments;
- ``("append", id, writer, inline)``: a write ``id`` to that Writer, its
  data ``inline`` (bytes) or, when None, sent as for ``write``;
- ``("append_cancelled", id, writer)``: a write to that Writer cancelled
  before it was sent: it fails there with the cancel, so the later ones do;
- ``("write_cancelled", id, path, key, options)``: a write (as for
  ``write``) cancelled before it was sent: queued here already cancelled, so
  the writes to its destination queued after it fail, as with threads; the
  destination is not opened, and nothing is reported (the parent's handle
  is settled);
- ``("close-writer", id, writer)``: close that Writer (in a thread of its
  own, as it waits for the writes); ``id`` ends with it, or its first error;
- ``("pool", pool, size)``: map a :class:`bgio.FramePool`'s memory, whose
  descriptor came just before; ``("shared", id, pool, offset, size)``: the
  write's next data is there; ``("forget-pool", pool)``: the parent freed it;
- ``("make", id, kind, args, kwargs)``: open a :class:`bgio.h5.FrameWriter`
  (``kind`` "frames"), :class:`bgio.h5.RecordWriter` ("records") or
  :class:`bgio.zarr.FrameWriter` ("zarr-frames") with these arguments; ``id`` names it and is done (None) once it is open;
- ``("frames", id, writer, index, refs)``: store frames at ``index`` on,
  ``refs`` the stacks (:mod:`bgio.process.refs`); a ``("taken", id)`` event
  says they are copied and no longer needed; ``("records", id, writer,
  frame_index, events)``: append a frame's events;
- ``("dropped", id, writer, count, ranges)``: frames the parent counted
  lost, for the writer here to record in the file at its close;
- ``("finish", id, writer, method)``: ``flush`` or ``close`` it (``id`` is
  done with the slots never written and the frames written, for a close);
- ``("producer", id, writer, shared_frames)``: a FrameWriter's producer for
  other processes, answered here (``id`` is done with the pickled
  :class:`bgio.h5.producers.FrameProducer`); ``index`` None in ``frames``
  appends after the highest frame written here;
- ``("data", id, segment, size)``, ``("end", id)``: the write's data, in order;
  a negative ``segment`` is minus the address of a buffer of ``size`` bytes in
  the parent's memory, read from there (:mod:`bgio.process.remote`);
- ``("probe", address, expected)``: may the parent's memory be read? (answered
  with a ``("probe", ok, reason)`` event);
- ``("cancel", id)``;
- ``("settle", id, outcome, value)``: a parent-side write that a write here
  is chained after has ended (``"ok"`` and its result, ``"failed"`` and its
  exception, or ``"cancelled"``);
- ``("fail", id, error)``: the data's source raised ``error``: the write fails
  with it, after the data sent so far;
- ``("forget", id, ...)``: the parent let go of these writes' handles, so no
  later write can be chained after them;
- ``("exit",)``: finish every write, then end.

Events (child to parent), each with the write's timing record last (see
:func:`_timing_of`): ``("start", id)``; ``("free", segment, id,
bytes_written, bytes_on_disk, timing)`` once a segment is written (or will
not be); ``("progress", id, bytes_written, bytes_on_disk, timing)`` as a
buffer read from the parent's memory is written; ``("done", id, outcome,
value, bytes_written, bytes_on_disk, timing)``; ``("log",
level, message)`` for records of the ``bgio`` logger. If the parent goes
away (the command pipe ends), every write is cancelled and the process ends.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import pickle
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import bgio
from bgio import cores
from bgio.api import open_sink, prepare
from bgio.engine import submit
from bgio.errors import BgioError
from bgio.handle import BackgroundWriteProcess, all_of
from bgio.process import FeedCancelled, portable, remote
from bgio.process.refs import RemoteArray, SharedArray, resolve
from bgio.process.ring import Attached

logger = logging.getLogger("bgio")

#: Bytes read from the parent's memory at a time (two buffers per write being written).
READ_PIECE = 8 * 1024 * 1024

__all__ = ["main"]


class _Events:
    """The event pipe, shared by the main thread and the workers' callbacks."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, event: tuple[Any, ...]) -> None:
        if event[0] == "done" and isinstance(event[3], BaseException):
            event = event[:3] + (portable(event[3]),) + event[4:]
        payload = pickle.dumps(event)
        with self._lock:
            try:
                self._connection.send_bytes(payload)
            except OSError:
                pass  # the parent is gone: nobody to tell


class _Forward(logging.Handler):
    """Hands the ``bgio`` logger's records to the parent, which logs them on its own."""

    def __init__(self, events: _Events) -> None:
        super().__init__()
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._events.send(("log", record.levelno, text))


class _Feed:
    """One write's segments, as the parent sends them, and what became of them."""

    def __init__(self, ident: int, ring: Attached, events: _Events, parent: int) -> None:
        self.ident = ident
        self.ring = ring
        self.events = events
        # (segment, size), a view of a shared pool's frame, None at the end, "cancel", or
        # the error the data's source raised.
        self.segments: queue.SimpleQueue[
            tuple[int, int] | memoryview | str | BaseException | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.closed = False
        self.current: int | None = None  # the segment being written
        self.written = 0
        self.handle: BackgroundWriteProcess | None = None
        self.cancelled = False
        self.parent = parent
        self._buffers: list[np.ndarray] = []  # (see buffers)

    def blocks(self) -> Iterator[memoryview]:
        while True:
            item = self.segments.get()
            if item is None:
                return
            if isinstance(item, str):  # cancelled while waiting for data
                raise FeedCancelled("cancelled")
            if isinstance(item, BaseException):  # the parent's data source failed
                raise item
            if isinstance(item, memoryview):  # a FramePool's frame: memory both processes map
                yield item
                self.written += len(item)
                self._progress()
                continue
            index, size = item
            if index < 0:  # -address: a buffer of the parent's, read from its memory
                yield from self._remote(-index, size)
                continue
            self.current = index
            yield self.ring.view(index, size)
            # Asked for the next block: this one is written.
            self.current = None
            self.written += size
            handle = self.handle
            self.events.send(("free", index, self.ident, self.written,
                              None if handle is None else handle.bytes_on_disk,
                              _timing_of(handle)))

    def _remote(self, address: int, size: int) -> Iterator[memoryview]:
        """The parent's buffer, piece by piece: a thread of its own reads the next piece
        while the worker writes this one (the read is not the worker's busy time, and
        the device need not wait for it), when this process may keep two cores busy
        (:mod:`bgio.cores`); otherwise the worker reads each piece itself."""
        if cores.usable() < 2:
            yield from self._remote_inline(address, size)
            return
        free: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        ready: queue.SimpleQueue[tuple[np.ndarray, int] | BaseException | None] = (
            queue.SimpleQueue())
        for buffer in self.buffers(2):
            free.put(buffer)

        def fetch() -> None:
            done = 0
            try:
                while done < size:
                    buffer = free.get()
                    if buffer is None:
                        return  # the write stopped
                    count = min(size - done, buffer.size)
                    remote.read_into(self.parent, address + done, buffer[:count])
                    ready.put((buffer, count))
                    done += count
                ready.put(None)
            except BaseException as exc:  # noqa: BLE001 - raised in the worker
                ready.put(exc)

        fetcher = threading.Thread(target=fetch, name="bgio-child-read", daemon=True)
        fetcher.start()
        try:
            while True:
                if self.cancelled:
                    raise FeedCancelled("cancelled")
                item = ready.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                buffer, count = item
                yield memoryview(buffer[:count])  # type: ignore[arg-type]
                free.put(buffer)  # written: it may take the next piece
                self.written += count
                self._progress()
        finally:
            free.put(None)  # a fetcher still reading stops at its next piece
            fetcher.join()

    def _remote_inline(self, address: int, size: int) -> Iterator[memoryview]:
        """The parent's buffer, piece by piece, each read by the worker before it is
        written: one busy thread (the read counts in the worker's busy time)."""
        buffer, = self.buffers(1)
        done = 0
        while done < size:
            if self.cancelled:
                raise FeedCancelled("cancelled")
            count = min(size - done, buffer.size)
            remote.read_into(self.parent, address + done, buffer[:count])
            yield memoryview(buffer[:count])  # type: ignore[arg-type]
            done += count
            self.written += count
            self._progress()

    def _progress(self) -> None:
        handle = self.handle
        self.events.send(("progress", self.ident, self.written,
                          None if handle is None else handle.bytes_on_disk, _timing_of(handle)))

    def buffers(self, count: int) -> list[np.ndarray]:
        """``count`` buffers (1 or 2) for reads from the parent, kept for the write's
        later buffers: with two, one is written while the other fills."""
        while len(self._buffers) < count:
            self._buffers.append(np.empty(READ_PIECE, dtype=np.uint8))
        return self._buffers[:count]

    def _put(self, item: tuple[int, int] | memoryview | str | BaseException | None) -> bool:
        """Queue ``item`` for the write, unless it is done already; True if queued."""
        with self.lock:
            if not self.closed:
                self.segments.put(item)
                return True
        return False

    def add(self, index: int, size: int) -> None:
        if not self._put((index, size)) and index >= 0:
            self.events.send(("free", index, self.ident, None, None, None))  # not needed

    def add_view(self, view: memoryview) -> None:
        self._put(view)

    def end(self) -> None:
        self._put(None)

    def fail(self, error: BaseException) -> None:
        """The parent could not produce the rest of the data: the write fails with this."""
        self._put(error)

    def cancel(self) -> None:
        self.cancelled = True
        self._put("cancel")

    def close(self) -> None:
        """The write is done: give back every segment it still holds."""
        with self.lock:
            self.closed = True
            held = [] if self.current is None else [self.current]
            self.current = None
            while True:
                try:
                    item = self.segments.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple) and item[0] >= 0:
                    held.append(item[0])
        for index in held:
            self.events.send(("free", index, self.ident, None, None, None))


class _Descriptors:
    """The parent's descriptors: one duplicate per open file while writes to it are pending.

    Every write to a descriptor brings a fresh duplicate; the writes to one
    open file (the parent's number, device and inode: ``key``) must share
    one, since bgio orders the writes to a descriptor by its number. So the
    first is kept, later ones are closed, and the kept one is closed when its
    last write ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[int]] = {}  # key: [fd, writes pending]

    def take(self, key: str, received: int) -> int:
        """The descriptor a new write to ``key`` uses (``received`` is closed if unneeded)."""
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                self._held[key] = [received, 1]
                return received
            entry[1] += 1
        os.close(received)
        return entry[0]

    def release(self, key: str, _ended: object = None) -> None:
        """A write to ``key`` ended (a done callback: ``_ended`` is its handle)."""
        with self._lock:
            entry = self._held[key]
            entry[1] -= 1
            if entry[1]:
                return
            del self._held[key]
        os.close(entry[0])


def _report(ident: int, events: _Events, handle: BackgroundWriteProcess) -> None:
    """Tell the parent how the write ``ident`` ended."""
    error = None if handle.cancelled() else handle.exception()
    outcome: str
    value: Any
    if handle.cancelled() or isinstance(error, FeedCancelled):
        outcome, value = "cancelled", None
    elif error is not None:
        outcome, value = "failed", error
    else:
        outcome, value = "ok", handle.result()
    events.send(("done", ident, outcome, value, handle.bytes_written, handle.bytes_on_disk,
                 _timing_of(handle)))


def _timing_of(handle: BackgroundWriteProcess | None) -> tuple[float, float, float,
                                                                 float | None] | None:
    """A write's timing record as plain numbers (the clocks of both processes agree:
    ``perf_counter`` is the system's monotonic clock)."""
    timing = None if handle is None else handle.timing
    if timing is None or timing.first_start < 0:
        return None
    return timing.first_start, timing.last_end, timing.busy, timing.rate


def _stand_in(outcome: str, value: Any) -> BackgroundWriteProcess:
    """A handle standing for a parent-side write, ended as it ended."""
    handle = BackgroundWriteProcess(0)
    if outcome == "cancelled":
        handle.cancel()
        return handle
    handle.set_running_or_notify_cancel()
    if outcome == "ok":
        handle.set_result(value)
    else:
        handle.set_exception(value)
    return handle


def _failed(error: BaseException) -> BackgroundWriteProcess:
    """A handle for a write refused here after the caller's checks passed (the directory
    went meanwhile, say): it fails, and the writer process goes on."""
    handle = BackgroundWriteProcess(0)
    handle.set_running_or_notify_cancel()
    handle.set_exception(error)
    return handle


def _cancelled() -> Iterator[bytes]:
    """Data whose first block is a cancel (see :meth:`_Server.append_cancelled`)."""
    raise CancelledError("cancelled before it was sent to the writer process")
    yield b""  # pragma: no cover - a generator


class _Server:
    """The commands' state: one method per command (see the module's docstring)."""

    def __init__(self, events: _Events, ring: Attached, parent: int,
                 descriptors: socket.socket) -> None:
        self.events = events
        self.ring = ring
        self.parent = parent
        self.descriptors = descriptors
        self.held = _Descriptors()
        self.feeds: dict[int, _Feed] = {}
        # By id: writes here, and stand-ins for parent-side writes chained after.
        self.handles: dict[int, BackgroundWriteProcess] = {}
        self.waiting: dict[int, BackgroundWriteProcess] = {}  # stand-ins not settled yet
        # Writers by id (or why one could not be made), and the descriptor key of each.
        self.writers: dict[int, bgio.Writer | BaseException] = {}
        self.writer_keys: dict[int, str | None] = {}
        self.pools: dict[int, mmap.mmap] = {}  # FramePools' memory, by the parent's id
        # HDF5 writers by id (or why one could not be made), and whether each copies
        # frames into chunks of several (then a frame is not needed once accepted).
        self.objects: dict[int, Any] = {}
        self.gathers: dict[int, bool] = {}
        self.frame_dims: dict[int, int] = {}  # each FrameWriter's frame dimensions
        # What each FrameWriter's append and write_at are given besides the frames: an
        # HDF5 writer copy=False (the frames stay in shared memory until stored, or it
        # copies them into the chunk it fills); a Zarr writer's copy is its own.
        self.frame_options: dict[int, dict[str, Any]] = {}

    def _file(self, path: str | None, key: str | None) -> str | int:
        """The path, or the descriptor for ``key`` that came with this command."""
        if path is not None:
            return path
        assert key is not None
        _, received, _, _ = socket.recv_fds(self.descriptors, 1, 1)
        return self.held.take(key, received[0])

    def _started(self, ident: int, handle: BackgroundWriteProcess,
                 feed: _Feed | None) -> None:
        if feed is not None:
            feed.handle = handle
        self.handles[ident] = handle
        handle.add_done_callback(functools.partial(_finished, ident, self.events,
                                                   feeds=self.feeds))
        self.events.send(("start", ident))

    def _new_feed(self, ident: int) -> _Feed:
        feed = self.feeds[ident] = _Feed(ident, self.ring, self.events, self.parent)
        return feed

    def write(self, ident: int, path: str | None, key: str | None, options: dict[str, Any],
              chain: int | None) -> None:
        file = self._file(path, key)
        feed = self._new_feed(ident)
        after = None
        if chain is not None:
            after = self.handles.get(chain)
            if after is None:  # a parent-side write, settled later
                after = self.waiting[chain] = BackgroundWriteProcess(0)
                after.set_running_or_notify_cancel()
                self.handles[chain] = after
        chunk_size = options.pop("chunk_size", None)
        try:
            if chunk_size is None:
                handle = bgio.bgwrite(file, feed.blocks(), chain_after=after, **options)
            else:
                handle = bgio.bgwrite_chunk(file, feed.blocks(), chunk_size, chain_after=after,
                                            **options)
        except Exception as exc:  # noqa: BLE001 - reported on the handle
            handle = _failed(exc)
        if key is not None:
            handle.add_done_callback(functools.partial(self.held.release, key))
        self._started(ident, handle, feed)

    def write_cancelled(self, ident: int, path: str | None, key: str | None,
                        options: dict[str, Any]) -> None:
        file = self._file(path, key)
        try:
            sink = open_sink(file, options["mode"], options["fsync"], options["atomic"],
                             options["direct"])
            job = prepare(BackgroundWriteProcess, sink, b"", options["priority"])
        except Exception as exc:  # noqa: BLE001 - refused in the parent already, or not at all
            logger.debug("bgio: a cancelled write's destination: %s", exc)
            if key is not None:
                self.held.release(key)
            return
        handle = job.handle
        handle.cancel()  # before its lane sees it: its lane fails the writes after it
        if key is not None:
            handle.add_done_callback(functools.partial(self.held.release, key))
        self.handles[ident] = handle  # for a write here chained after it
        submit(job)

    def writer(self, ident: int, path: str | None, key: str | None,
               options: dict[str, Any]) -> None:
        file = self._file(path, key)
        self.writer_keys[ident] = key
        try:
            self.writers[ident] = bgio.Writer(file, **options)
        except Exception as exc:  # noqa: BLE001 - each of its writes fails with it
            logging.getLogger("bgio").error("opening a Writer on %s failed: %s", file, exc)
            self.writers[ident] = exc

    def append(self, ident: int, writer: int, inline: bytes | None) -> None:
        feed = None if inline is not None else self._new_feed(ident)
        target = self.writers.get(writer)
        try:
            if isinstance(target, BaseException):
                raise target  # the Writer could not be opened: each write fails with that
            if target is None:
                raise BgioError("the Writer is not open in the writer process")
            if inline is not None:
                handle = target.write(inline)
            else:
                assert feed is not None
                handle = target.write(feed.blocks())
        except Exception as exc:  # noqa: BLE001 - reported on the handle
            handle = _failed(exc)
        self._started(ident, handle, feed)

    def append_cancelled(self, ident: int, writer: int) -> None:
        """A write to the Writer cancelled before it was sent: it fails there with the
        cancel, so the writes after it fail too (nothing is written after a gap)."""
        target = self.writers.get(writer)
        if isinstance(target, bgio.Writer):
            handle = target.write(_cancelled())
        else:
            handle = _failed(CancelledError())
        self._started(ident, handle, None)

    def close_writer(self, ident: int, writer: int) -> None:
        if writer not in self.writers:  # closed already (freed there: then no reply)
            if ident:
                self._done_now(ident, "failed", BgioError("the Writer was closed already"))
            return
        target = self.writers.pop(writer, None)
        key = self.writer_keys.pop(writer, None)
        handle = BackgroundWriteProcess(0)
        handle.set_running_or_notify_cancel()
        self._started(ident, handle, None)

        def close() -> None:
            try:
                if isinstance(target, BaseException):
                    raise target  # it was never opened: close says why, as with threads
                if isinstance(target, bgio.Writer):
                    target.close()  # waits for its writes
                handle.set_result(0)
            except BaseException as exc:  # noqa: BLE001 - the Writer's first error
                handle.set_exception(exc)
            finally:
                if key is not None:
                    self.held.release(key)

        # Not here: the commands go on being read while the writes drain.
        threading.Thread(target=close, name="bgio-child-close").start()

    def _done_now(self, ident: int, outcome: str, value: Any) -> None:
        self.events.send(("done", ident, outcome, value, 0, None, None))

    def make(self, ident: int, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]
             ) -> None:
        """Open a writer (``kind`` "frames", "records" or "zarr-frames"); ``ident``
        names it."""
        try:
            from bgio import h5

            if kind == "frames":
                writer: Any = h5.FrameWriter(*args, **kwargs)
                self.frame_dims[ident] = len(args[2])  # (path, name, frame_shape, dtype)
                chunks = writer.dataset.chunks
                self.gathers[ident] = chunks is not None and chunks[0] > 1
                self.frame_options[ident] = {"copy": False}
            elif kind == "zarr-frames":
                from bgio import zarr

                # (store, frame_shape, dtype); the parent chose copy: True where frames
                # are gathered into a chunk or shard (their shared frames go back at once)
                writer = zarr.FrameWriter(*args, **kwargs)
                self.frame_dims[ident] = len(args[1])
                self.gathers[ident] = bool(kwargs.get("copy"))
                self.frame_options[ident] = {}
            else:
                writer = h5.RecordWriter(*args, **kwargs)
                self.gathers[ident] = False
        except Exception as exc:  # noqa: BLE001 - raised by the parent's constructor
            self._done_now(ident, "failed", exc)
            return
        self.objects[ident] = self._reporting(ident, writer)
        self._done_now(ident, "ok", None)

    def _reporting(self, ident: int, writer: Any) -> Any:
        """An HDF5 ``writer``, made to report its ``max_lag`` episodes to the parent (if
        it has one): ``("lag", ident, status)`` events."""
        events = self.events
        if hasattr(writer, "report_lag"):  # (a Zarr writer has no max_lag)
            writer.report_lag(lambda status: events.send(("lag", ident, status)))
        return writer

    def _last_lag(self, ident: int, writer: Any) -> None:
        """A writer with a ``max_lag`` is closed: its final figures to the parent."""
        status = getattr(writer, "lag", None)
        if status is not None:
            self.events.send(("lag", ident, status))

    def _target(self, writer: int) -> Any:
        target = self.objects.get(writer)
        if target is None:
            raise BgioError("the writer is not open in the writer process")
        return target

    def frames(self, ident: int, writer: int, index: int | None,
               refs: list[SharedArray | RemoteArray]) -> None:
        """Store frames at ``index`` on: each ref a stack of them."""
        try:
            target = self._target(writer)
            options = self.frame_options[writer]
            handles = []
            for ref in refs:
                stack = resolve(ref, self.pools, self.parent)
                if stack.ndim == self.frame_dims[writer]:  # one frame, sent as it is
                    stack = stack[np.newaxis]
                if index is None:  # (producers write here too: the highest is known here)
                    handles.append(target.append(stack, **options))
                    continue
                handles.append(target.write_at(index, stack, **options))
                index += len(stack)
            # (Frames copied into shared memory come one per ref: the call is done, with
            # all their bytes, once every one is stored.)
            handle = handles[0] if len(handles) == 1 else all_of(handles)
        except Exception as exc:  # noqa: BLE001 - reported on the handle
            handle = _failed(exc)
        else:
            if self.gathers.get(writer):
                self.events.send(("taken", ident))  # copied into the chunks being filled
        self._started(ident, handle, None)

    def records(self, ident: int, writer: int, frame_index: int,
                events: dict[str, Any]) -> None:
        try:
            handle = self._target(writer).append(frame_index, events, copy=False)
        except Exception as exc:  # noqa: BLE001 - reported on the handle
            handle = _failed(exc)
        self._started(ident, handle, None)

    def finish(self, ident: int, writer: int, method: str) -> None:
        """``flush`` or ``close`` an HDF5 writer, in a thread (it waits for the stores);
        a close reports the slots never written."""
        target = self.objects.get(writer) if method == "flush" else self.objects.pop(writer, None)
        if method == "close":  # (its frames came before: nothing more is sent to it)
            for kept in (self.frame_dims, self.gathers, self.frame_options):
                kept.pop(writer, None)

        def run() -> None:
            try:
                if target is None:
                    raise BgioError("the writer is not open in the writer process")
                try:
                    getattr(target, method)()
                finally:
                    if method == "close" and target is not None:
                        self._last_lag(writer, target)
                value = ((list(target.missing), target.frames_written,
                          getattr(target, "extent", None)) if method == "close" else None)
            except BaseException as exc:  # noqa: BLE001 - raised by the parent's call
                self._done_now(ident, "failed", exc)
            else:
                self._done_now(ident, "ok", value)

        threading.Thread(target=run, name=f"bgio-child-{method}").start()

    def dropped(self, ident: int, writer: int, count: int,
                ranges: list[tuple[int, int]]) -> None:
        """The frames the parent counted lost: recorded in the file by the writer here."""
        try:
            target = self._target(writer)
            for first, stop in ranges:
                target.add_dropped(stop - first, first_id=first)
            unknown = count - sum(stop - first for first, stop in ranges)
            if unknown or not count:  # (ids not known; or none lost, for the file to say)
                target.add_dropped(unknown)
        except Exception as exc:  # noqa: BLE001 - raised by the parent's call
            self._done_now(ident, "failed", exc)
            return
        self._done_now(ident, "ok", None)

    def producer(self, ident: int, writer: int, shared_frames: int | None) -> None:
        """Start the FrameWriter's service for producers in other processes, here: they
        talk to this process, whatever the parent's main thread is doing."""
        try:
            made = self._target(writer).producer(shared_frames=shared_frames)
        except Exception as exc:  # noqa: BLE001 - raised by the parent's call
            self._done_now(ident, "failed", exc)
            return
        self._done_now(ident, "ok", made)

    def data(self, ident: int, index: int, size: int) -> None:
        feed = self.feeds.get(ident)
        if feed is not None:
            feed.add(index, size)
        elif index >= 0:  # the write ended already (failed, cancelled): not needed
            self.events.send(("free", index, ident, None, None, None))

    def pool(self, ident: int, size: int) -> None:
        _, received, _, _ = socket.recv_fds(self.descriptors, 1, 1)
        try:
            self.pools[ident] = mmap.mmap(received[0], size)
        finally:
            os.close(received[0])

    def shared(self, ident: int, pool: int, offset: int, size: int) -> None:
        feed = self.feeds.get(ident)
        if feed is not None:
            feed.add_view(memoryview(self.pools[pool])[offset:offset + size])

    def forget_pool(self, ident: int) -> None:
        # Unmapped once no write holds a view of it (the views keep the mapping).
        self.pools.pop(ident, None)

    def end(self, ident: int) -> None:
        feed = self.feeds.get(ident)
        if feed is not None:
            feed.end()

    def fail(self, ident: int, error: BaseException) -> None:
        feed = self.feeds.get(ident)
        if feed is not None:
            feed.fail(error)

    def cancel(self, ident: int) -> None:
        cancelled = self.handles.get(ident)
        if cancelled is not None:
            cancelled.cancel()
        feed = self.feeds.get(ident)
        if feed is not None:
            feed.cancel()

    def settle(self, ident: int, outcome: str, value: Any) -> None:
        stand_in = self.waiting.pop(ident, None)
        if stand_in is None:
            self.handles[ident] = _stand_in(outcome, value)
        elif outcome == "cancelled":
            stand_in.set_stopped()
        elif outcome == "ok":
            stand_in.set_result(value)
        else:
            stand_in.set_exception(value)

    def probe(self, address: int, expected: bytes) -> None:
        """May this process read the parent's memory? (see :mod:`bgio.process.remote`)"""
        probe = np.empty(len(expected), dtype=np.uint8)
        try:
            remote.read_into(self.parent, address, probe)
            self.events.send(("probe", probe.tobytes() == expected, ""))
        except OSError as exc:
            self.events.send(("probe", False, str(exc)))

    def forget(self, *idents: int) -> None:
        for ident in idents:
            self.handles.pop(ident, None)

    def abandon(self) -> None:
        """The parent is gone: nobody will feed or collect these writes."""
        for handle in list(self.handles.values()):
            handle.cancel()
        for feed in list(self.feeds.values()):
            feed.cancel()  # a worker waiting for data stops now


#: Seconds the writes cancelled when the parent went away have to end before this
#: process ends without them: one blocked in the kernel (opening a FIFO nobody will
#: read, a hung network file system) ignores the cancel, and nobody is left to wait for.
ABANDONED_WAIT = 10.0


def serve(commands: Connection, events: _Events, ring: Attached, parent: int,
          descriptors: socket.socket) -> bool:
    """Read and carry out commands until told to exit (False) or the parent goes away
    (True: its writes are cancelled)."""
    server = _Server(events, ring, parent, descriptors)
    methods: dict[str, Callable[..., None]] = {
        "write": server.write, "writer": server.writer, "append": server.append,
        "append_cancelled": server.append_cancelled, "close-writer": server.close_writer,
        "write_cancelled": server.write_cancelled,
        "data": server.data, "end": server.end, "fail": server.fail, "cancel": server.cancel,
        "settle": server.settle, "probe": server.probe, "forget": server.forget,
        "pool": server.pool, "shared": server.shared, "forget-pool": server.forget_pool,
        "make": server.make, "frames": server.frames, "records": server.records,
        "finish": server.finish, "producer": server.producer, "dropped": server.dropped}
    while True:
        try:
            message = commands.recv()
        except (EOFError, OSError):
            server.abandon()
            return True
        except Exception:
            logging.getLogger("bgio").exception("a command could not be read; ignored")
            continue
        if message[0] == "exit":
            return False
        methods[message[0]](*message[1:])


def _finished(ident: int, events: _Events, handle: BackgroundWriteProcess, *,
              feeds: dict[int, _Feed]) -> None:
    feed = feeds.pop(ident, None)
    if feed is not None:
        feed.close()
    _report(ident, events, handle)
    # A later write may still be chained after it: its handle stays (it is small).


def main(argv: list[str]) -> int:
    """``COMMANDS EVENTS RING SEGMENT PARENT DESCRIPTORS``: the descriptors inherited from
    the parent, the ring's segment size, the parent's pid, and the socket its file
    descriptors come through."""
    # A Ctrl-C is the parent's to handle (it cancels what it abandons): one that reached
    # this process too (a terminal's, to the whole group) must not kill the writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The caller's program keeps a core of its own: its main thread is the reason for
    # this process (bgio.cores).
    cores.reserve(1)
    commands_fd, events_fd, ring_fd, segment, parent, descriptors_fd = (
        int(value) for value in argv)
    commands = Connection(commands_fd, writable=False)
    events = _Events(Connection(events_fd, readable=False))
    ring = Attached(ring_fd, segment)
    logger = logging.getLogger("bgio")
    logger.addHandler(_Forward(events))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the parent's logging decides what is shown
    descriptors = socket.socket(fileno=descriptors_fd)
    if serve(commands, events, ring, parent, descriptors):
        if not bgio.wait_all(ABANDONED_WAIT):
            os._exit(1)  # (not the exit drain: it would wait for them for ever)
        return 1
    bgio.wait_all()  # every write ends (the exit drain would wait too)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
