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
import os
import pickle
import queue
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

import bgio
from bgio.handle import BackgroundWriteProcess
from bgio.process import FeedCancelled, portable, remote
from bgio.process.ring import Attached

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
        # (segment, size), None at the end, "cancel", or the error the data's source raised.
        self.segments: queue.SimpleQueue[tuple[int, int] | str | BaseException | None] = (
            queue.SimpleQueue())
        self.lock = threading.Lock()
        self.closed = False
        self.current: int | None = None  # the segment being written
        self.written = 0
        self.handle: BackgroundWriteProcess | None = None
        self.cancelled = False
        self.parent = parent
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None  # (see buffers)

    def blocks(self) -> Iterator[memoryview]:
        while True:
            item = self.segments.get()
            if item is None:
                return
            if isinstance(item, str):  # cancelled while waiting for data
                raise FeedCancelled("cancelled")
            if isinstance(item, BaseException):  # the parent's data source failed
                raise item
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
        the device need not wait for it)."""
        free: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        ready: queue.SimpleQueue[tuple[np.ndarray, int] | BaseException | None] = (
            queue.SimpleQueue())
        for buffer in self.buffers():
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
                handle = self.handle
                self.events.send(("progress", self.ident, self.written,
                                  None if handle is None else handle.bytes_on_disk,
                                  _timing_of(handle)))
        finally:
            free.put(None)  # a fetcher still reading stops at its next piece
            fetcher.join()

    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """Two buffers for reads from the parent: one written while the other fills."""
        if self._buffers is None:
            self._buffers = (np.empty(READ_PIECE, dtype=np.uint8),
                             np.empty(READ_PIECE, dtype=np.uint8))
        return self._buffers

    def _put(self, item: tuple[int, int] | str | BaseException | None) -> bool:
        """Queue ``item`` for the write, unless it is done already; True if queued."""
        with self.lock:
            if not self.closed:
                self.segments.put(item)
                return True
        return False

    def add(self, index: int, size: int) -> None:
        if not self._put((index, size)) and index >= 0:
            self.events.send(("free", index, self.ident, None, None, None))  # not needed

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


def _report(feed: _Feed, events: _Events, handle: BackgroundWriteProcess) -> None:
    feed.close()
    error = None if handle.cancelled() else handle.exception()
    outcome: str
    value: Any
    if handle.cancelled() or isinstance(error, FeedCancelled):
        outcome, value = "cancelled", None
    elif error is not None:
        outcome, value = "failed", error
    else:
        outcome, value = "ok", handle.result()
    events.send(("done", feed.ident, outcome, value, handle.bytes_written, handle.bytes_on_disk,
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


def serve(commands: Connection, events: _Events, ring: Attached, parent: int,
          descriptors: socket.socket) -> None:
    """Read and carry out commands until told to exit or the parent goes away."""
    held = _Descriptors()
    feeds: dict[int, _Feed] = {}
    handles: dict[int, BackgroundWriteProcess] = {}  # by id: writes here, parent stand-ins
    waiting: dict[int, BackgroundWriteProcess] = {}  # stand-ins not settled yet
    feed: _Feed | None
    while True:
        try:
            message = commands.recv()
        except (EOFError, OSError):
            # The parent is gone: nobody will feed or collect these writes.
            for handle in list(handles.values()):
                handle.cancel()
            for feed in list(feeds.values()):
                feed.cancel()  # a worker waiting for data stops now
            return
        except Exception:
            logging.getLogger("bgio").exception("a command could not be read; ignored")
            continue
        kind = message[0]
        if kind == "data":
            _, ident, index, size = message
            feed = feeds.get(ident)
            if feed is not None:
                feed.add(index, size)
            elif index >= 0:  # the write ended already (failed, cancelled): not needed
                events.send(("free", index, ident, None, None, None))
        elif kind == "write":
            _, ident, path, key, options, chain = message
            file: str | int = path
            if path is None:
                _, received, _, _ = socket.recv_fds(descriptors, 1, 1)
                file = held.take(key, received[0])
            feed = feeds[ident] = _Feed(ident, ring, events, parent)
            after = None
            if chain is not None:
                after = handles.get(chain)
                if after is None:  # a parent-side write, settled later
                    after = waiting[chain] = BackgroundWriteProcess(0)
                    after.set_running_or_notify_cancel()
                    handles[chain] = after
            chunk_size = options.pop("chunk_size", None)
            try:
                if chunk_size is None:
                    handle = bgio.bgwrite(file, feed.blocks(), chain_after=after, **options)
                else:
                    handle = bgio.bgwrite_chunk(file, feed.blocks(), chunk_size,
                                                chain_after=after, **options)
            except Exception as exc:  # noqa: BLE001 - e.g. the directory went since the check
                # Refused here after the caller's checks passed: the write fails, the
                # writer process goes on.
                handle = BackgroundWriteProcess(0)
                handle.set_running_or_notify_cancel()
                handle.set_exception(exc)
            if path is None:
                handle.add_done_callback(functools.partial(held.release, key))
            feed.handle = handles[ident] = handle
            handle.add_done_callback(functools.partial(_finished, feed, events, feeds=feeds,
                                                       handles=handles))
            events.send(("start", ident))
        elif kind == "end":
            feed = feeds.get(message[1])
            if feed is not None:
                feed.end()
        elif kind == "cancel":
            cancelled = handles.get(message[1])
            if cancelled is not None:
                cancelled.cancel()
            feed = feeds.get(message[1])
            if feed is not None:
                feed.cancel()
        elif kind == "settle":
            _, ident, outcome, value = message
            stand_in = waiting.pop(ident, None)
            if stand_in is None:
                handles[ident] = _stand_in(outcome, value)
            elif outcome == "cancelled":
                stand_in.set_stopped()
            elif outcome == "ok":
                stand_in.set_result(value)
            else:
                stand_in.set_exception(value)
        elif kind == "probe":
            # May this process read the parent's memory? (see bgio.process.remote)
            _, address, expected = message
            probe = np.empty(len(expected), dtype=np.uint8)
            try:
                remote.read_into(parent, address, probe)
                events.send(("probe", probe.tobytes() == expected, ""))
            except OSError as exc:
                events.send(("probe", False, str(exc)))
        elif kind == "fail":
            feed = feeds.get(message[1])
            if feed is not None:
                feed.fail(message[2])
        elif kind == "forget":
            for ident in message[1:]:
                handles.pop(ident, None)
        elif kind == "exit":
            return


def _finished(feed: _Feed, events: _Events, handle: BackgroundWriteProcess, *,
              feeds: dict[int, _Feed], handles: dict[int, BackgroundWriteProcess]) -> None:
    _report(feed, events, handle)
    feeds.pop(feed.ident, None)
    # A later write may still be chained after it: its handle stays (it is small).


def main(argv: list[str]) -> int:
    """``COMMANDS EVENTS RING SEGMENT PARENT DESCRIPTORS``: the descriptors inherited from
    the parent, the ring's segment size, the parent's pid, and the socket its file
    descriptors come through."""
    # A Ctrl-C is the parent's to handle (it cancels what it abandons): one that reached
    # this process too (a terminal's, to the whole group) must not kill the writes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    serve(commands, events, ring, parent, descriptors)
    bgio.wait_all()  # every write ends (the exit drain would wait too)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
