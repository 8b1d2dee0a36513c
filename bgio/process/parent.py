"""The process backend, the caller's side: one long-lived writer process, fed through shared memory.

:func:`submit` queues a write; a *feeder* thread sends it to the writer
process (:mod:`bgio.process.child`) and copies its data into the ring's
segments (:mod:`bgio.process.ring`), one large copy per segment, in call
order; a *reader* thread takes the child's events and drives the handles:
``bytes_written`` as each segment is written, the outcome at the end.
Neither thread does per-chunk work, so a caller whose main thread runs
Python costs the writer one round trip for the interpreter lock per 16 MiB
segment, not one per chunk; the pacing, the system calls and their waits
are the child's.

The writer process is a fresh interpreter (``python -m
bgio.process.child``, so nothing of the program is imported or re-run in
it, as with ``multiprocessing``'s ``spawn``), started on the first write
and ended at exit once its writes are drained, under the same rules as
threads (:mod:`bgio.drain`). If it dies, every write it had fails with a
:class:`~bgio.BgioError` saying so and how far it got; the next write
starts a new one.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from .. import drain, engine
from ..errors import BgioError
from ..handle import BackgroundWriteProcess, WriteTiming, failure_of
from ..lag import LagStatus
from ..pool import FramePool, locate
from ..source import WHOLE, Source
from . import portable, remote
from .destination import Destination
from .refs import RemoteArray, SharedArray
from .ring import SEGMENT, Ring

__all__ = ["RemoteObject", "RemoteWriter", "pending", "submit", "wait_all"]

logger = logging.getLogger("bgio")

#: Seconds to wait for the writer process to end once told to.
EXIT_TIMEOUT = 30.0
#: Buffers at least this large are read by the child from our memory; smaller ones copied.
_BY_ADDRESS = 256 * 1024
#: The writer process must not import what lies in the program's working directory
#: (a numpy.py there would stop every write): ``-P`` where the interpreter has it.
_SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ()


def _bytes_view(block: object) -> memoryview:
    """A binary source's block (a view of unsigned bytes, or bytes) as a view."""
    assert not isinstance(block, str), "a path takes bytes"
    return block if isinstance(block, memoryview) else memoryview(block)  # type: ignore[arg-type]


class _Opening:
    """A :class:`RemoteWriter` to open in the child (queued like the writes: in order)."""

    __slots__ = ("destination", "ident", "options")

    def __init__(self, destination: Destination, options: dict[str, Any]) -> None:
        self.ident = 0
        self.destination = destination
        self.options = options


class _Job:
    """A write for the feeder to send, in call order: its handle, its data until sent,
    where it goes and how.

    ``action`` is the child's command: ``"write"`` (to ``destination``),
    ``"append"`` (a write to the :class:`RemoteWriter` ``writer``, its data
    ``inline`` in the command if small), ``"close-writer"``, or ``"call"``
    (a :class:`RemoteObject`'s: ``call`` is the command and its arguments,
    ``arrays`` the arrays sent by reference after them, ``release`` what to
    run once the child no longer needs them).
    """

    # No __slots__: most fields keep these defaults, and setting only the others
    # is what a job costs the caller (a frame's append, where microseconds count).
    source: Source | None = None
    options: dict[str, Any] | None = None
    chain: BackgroundWriteProcess | None = None
    writer: int = 0
    inline: bytes | None = None
    feed_error: BaseException | None = None
    sent = False
    by_address = False  # the child reads the data from our memory
    stopped_early = False  # the feeder stopped sending for a cancel
    call: tuple[str, tuple[Any, ...]] | None = None
    arrays: list[Any] | None = None
    release: list[Callable[[], None]] | tuple[()] = ()
    # Given the value a call's command ended with (a handle's result is its bytes).
    reply: Callable[[Any], None] | None = None

    def __init__(self, ident: int, action: str, handle: BackgroundWriteProcess,
                 source: Source | None, destination: Destination,
                 options: dict[str, Any] | None = None,
                 chain: BackgroundWriteProcess | None = None, writer: int = 0,
                 inline: bytes | None = None) -> None:
        self.ident = ident
        self.action = action
        self.handle = handle
        self.destination = destination
        if source is not None:
            self.source = source
        if options is not None:
            self.options = options
        if chain is not None:
            self.chain = chain
        if writer:
            self.writer = writer
        if inline is not None:
            self.inline = inline

    def let_go(self) -> None:
        """The child is done with the job's arrays (or will never see them)."""
        release, self.release = self.release, ()
        self.arrays = None
        for action in release:
            action()


class _Backend:
    """A writer process, its ring, and the two threads that talk to it."""

    def __init__(self) -> None:
        self.ring = Ring()
        commands_read, commands_write = os.pipe()
        events_read, events_write = os.pipe()
        # File descriptors go to the child over a socket of their own (SCM_RIGHTS), each
        # just before the write that uses it.
        self._descriptors, descriptors_child = socket.socketpair(socket.AF_UNIX,
                                                                 socket.SOCK_STREAM)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        try:
            self.process = subprocess.Popen(
                [sys.executable, *_SAFE_PATH, "-m", "bgio.process.child", str(commands_read),
                 str(events_write), str(self.ring.fd), str(SEGMENT), str(os.getpid()),
                 str(descriptors_child.fileno())],
                pass_fds=(commands_read, events_write, self.ring.fd,
                          descriptors_child.fileno()), env=env,
                stdin=subprocess.DEVNULL,
                # Not in the terminal's process group: a Ctrl-C is the program's to
                # handle (the exit drain cancels what it abandons), not the writer's.
                start_new_session=True)
        except BaseException:
            for fd in (commands_read, commands_write, events_read, events_write):
                os.close(fd)
            self.ring.close()
            self._descriptors.close()
            raise
        finally:
            descriptors_child.close()
        os.close(commands_read)
        os.close(events_write)
        remote.allow(self.process.pid)
        # Whether the child may read this process's memory (the feeder asks first).
        self.remote = False
        self._probed = threading.Event()
        self._commands = Connection(commands_write, readable=False)
        self._events = Connection(events_read, writable=False)
        self._send_lock = threading.Lock()
        self._new_conditions()
        self._queue: deque[_Job | _Opening] = deque()
        self.jobs: dict[int, _Job] = {}  # not done yet, by id (queued ones too)
        # The HDF5 writers with a max_lag there: their last report (see bgio.lag), by
        # id, until their close has ended (RemoteObject.forget_lag).
        self.lags: dict[int, LagStatus] = {}
        self._next = 0
        self.dead: str | None = None
        self._closing = False
        # Ids the child knows: this backend's writes (by id() of their handle, removed
        # by _forget as the handle goes, so an id() found is that handle's: a plain dict
        # costs a write less than a WeakKeyDictionary), and stand-ins for other handles.
        self._idents: dict[int, int] = {}
        self._stand_ins: weakref.WeakKeyDictionary[BackgroundWriteProcess, int] = (
            weakref.WeakKeyDictionary())
        self._forgotten: deque[int] = deque()  # handles let go of (see _forget)
        self._watching: dict[int, weakref.ref[BackgroundWriteProcess]] = {}
        self._pools: set[int] = set()  # the FramePools the child has mapped
        self._forgotten_pools: deque[int] = deque()  # of those, pools freed here since
        self._forgotten_writers: deque[int] = deque()  # RemoteWriters freed unclosed
        self._feeder = threading.Thread(target=self._feed, name="bgio-process-feed", daemon=True)
        self._reader = threading.Thread(target=self._read, name="bgio-process-events",
                                        daemon=True)
        self._cancels: deque[int] = deque()  # ids of writes to cancel (see _cancel)
        self._cancel_wanted = threading.Event()
        self._canceller = threading.Thread(target=self._send_cancels,
                                           name="bgio-process-cancel", daemon=True)
        self._feeder.start()
        self._reader.start()
        self._canceller.start()

    def _new_conditions(self) -> None:
        self._mutex = threading.RLock()
        self._changed = threading.Condition(self._mutex)  # jobs ended, dead, closing
        # The feeder, with nothing to send, waits for a token: a write made then puts
        # one (a single call into C, where a Condition's notify runs Python code), and
        # one made while it is busy wakes nobody.
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._feeder_waits = False

    def _wake_feeder(self) -> None:  # (the lock held)
        if self._feeder_waits:
            self._feeder_waits = False
            self._tokens.put(None)

    # -- the caller's side --------------------------------------------------------------

    def submit(self, job: _Job | _Opening, cancellable: bool = True) -> bool:
        """Queue ``job`` (its ``ident`` is given here); False if this backend is dead or
        ending (the caller starts a new one, or fails the write). ``cancellable=False``:
        a cancel of its handle is not sent on (the child's command ignores cancels)."""
        with self._mutex:
            if self.dead is not None or self._closing:
                return False
            ident = self._next = self._next + 1
            job.ident = ident
            self._queue.append(job)
            if isinstance(job, _Job):
                self.jobs[ident] = job
                self._idents[id(job.handle)] = ident  # (its weak reference: _feed)
            if self._feeder_waits:
                self._feeder_waits = False
                self._tokens.put(None)
        if cancellable and isinstance(job, _Job):
            own = job
            own.handle.watch_cancel(lambda: self._cancel(own))
        return True

    def _forget(self, ident: int, key: int, _gone: object = None) -> None:
        """(A weak reference's callback: takes no lock) the handle of ``ident`` is gone
        (``key`` was its id())."""
        self._watching.pop(ident, None)
        self._idents.pop(key, None)
        self._forgotten.append(ident)

    def _new_ident(self) -> int:
        self._next += 1
        return self._next

    def _cancel(self, job: _Job) -> None:
        # Called by handle.cancel() under the handles' lock: nothing here may wait. A
        # send could (the pipe full while the child waits for the reader thread, which
        # waits for that lock), so the canceller thread sends it.
        self.ring.wake()
        if job.sent:
            self._cancels.append(job.ident)
            self._cancel_wanted.set()

    def _send_cancels(self) -> None:
        """The canceller thread: sends the cancels asked for, until the backend ends."""
        while True:
            self._cancel_wanted.wait()
            self._cancel_wanted.clear()
            while self._cancels:
                self._send_quietly(("cancel", self._cancels.popleft()))
            if self.dead is not None or self._closing:
                return

    def pending(self, held: bool = True) -> list[tuple[str, BackgroundWriteProcess]]:
        """The writes not done yet; ``held=False``: not those an HDF5 writer there may
        hold until it is closed (see :func:`_held`)."""
        with self._changed:
            return [(job.destination.name, job.handle) for job in self.jobs.values()
                    if not job.handle.done() and (held or not _held(job))]

    def wait_all(self, timeout: float | None, held: bool = True) -> bool:
        with self._changed:
            if held:
                return self._changed.wait_for(lambda: not self.jobs, timeout)
            return self._changed.wait_for(
                lambda: all(_held(job) for job in self.jobs.values()), timeout)

    # -- talking to the child -----------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        payload = pickle.dumps(message)
        with self._send_lock:
            self._commands.send_bytes(payload)

    def _send_quietly(self, message: tuple[Any, ...]) -> None:
        try:
            self._send(message)
        except OSError:
            pass  # the child is gone: the reader says so on every handle

    def _chain_ident(self, chain: BackgroundWriteProcess | None) -> int | None:
        """The id the child knows ``chain`` by; a handle of another backend (or of a
        thread) gets a stand-in, settled when it ends."""
        if chain is None:
            return None
        with self._changed:
            ident = self._idents.get(id(chain))
            if ident is None:
                ident = self._stand_ins.get(chain)
            if ident is not None:
                return ident
            ident = self._stand_ins[chain] = self._new_ident()
        chain.add_done_callback(lambda done: self._settle(ident, done))
        return ident

    def _settle(self, ident: int, done: BackgroundWriteProcess) -> None:
        error = failure_of(done)
        if done.cancelled():
            message: tuple[Any, ...] = ("settle", ident, "cancelled", None)
        elif error is not None:
            message = ("settle", ident, "failed", portable(error, known_only=True))
        else:
            message = ("settle", ident, "ok", done.result())
        self._send_quietly(message)

    # -- the feeder thread --------------------------------------------------------------

    def _probe(self) -> None:
        """Ask the child to read a buffer of ours; from its answer on, data in memory is
        read by the child (:mod:`bgio.process.remote`) or copied into the ring."""
        if not remote.available():
            return
        expected = os.urandom(64)
        buffer = bytearray(expected)  # kept alive until the answer
        self._send(("probe", remote.address_of(memoryview(buffer)), expected))
        self._probed.wait()
        del buffer

    def _feed(self) -> None:
        try:
            self._probe()
        except OSError:
            return
        while True:
            with self._mutex:
                waits = not self._queue and self.dead is None and not self._closing
                self._feeder_waits = waits
            if waits:
                self._tokens.get()
                continue
            with self._mutex:
                if self.dead is not None or not self._queue:
                    return
                job = self._queue.popleft()
            if isinstance(job, _Job):
                # Watched from here (not in submit: the caller's cost), before the job
                # can end; its handle lives at least as long as the job.
                # (A plain weak reference: a finalizer costs ten times as much per write.)
                ident = job.ident
                self._watching[ident] = weakref.ref(
                    job.handle, functools.partial(self._forget, ident, id(job.handle)))
            try:
                self._feed_one(job)
            except OSError:
                return  # the child is gone (the reader fails the handles)

    def forget_writer(self, ident: int) -> None:
        """(A finalizer: takes no lock) the RemoteWriter ``ident`` was freed."""
        self._forgotten_writers.append(ident)

    def _send_descriptor(self, destination: Destination) -> None:
        """Hand the destination's descriptor over (just before the command that uses it:
        the child takes it when it reads that command)."""
        fd = destination.take_fd()
        if fd is not None:
            try:
                socket.send_fds(self._descriptors, [b"d"], [fd])
            finally:
                os.close(fd)

    def _feed_one(self, job: _Job | _Opening) -> None:
        forgotten = []
        while self._forgotten:
            forgotten.append(self._forgotten.popleft())
        if forgotten:
            self._send(("forget", *forgotten))
        while self._forgotten_pools:
            ident = self._forgotten_pools.popleft()
            self._pools.discard(ident)
            self._send(("forget-pool", ident))
        while self._forgotten_writers:
            # A Writer freed without close(): its file is closed there (id 0: no reply).
            self._send(("close-writer", 0, self._forgotten_writers.popleft()))
        destination = job.destination
        if isinstance(job, _Opening):
            self._send_descriptor(destination)
            self._send(("writer", job.ident, destination.path, destination.key, job.options))
            return
        handle = job.handle
        chain = self._chain_ident(job.chain)
        job.chain = None
        if not handle.running() and not handle.set_running_or_notify_cancel():
            if job.action == "append":
                # A Writer's write cancelled while queued: the Writer there must know of
                # the gap (every later write fails, as with threads), so it goes as a
                # write that fails with the cancel.
                job.source = None
                job.let_go()
                self._send(("append_cancelled", job.ident, job.writer))
                job.sent = True
                return
            # Cancelled while queued: nothing was written. The child queues it
            # cancelled (unopened), so the later writes to its destination fail, as
            # with threads, and a later write chained after it is told so.
            job.source = None
            self._send_descriptor(destination)
            self._send(("write_cancelled", job.ident, destination.path, destination.key,
                        job.options))
            self._ended(job.ident)
            job.let_go()
            self.close_after(job)
            return
        if job.action == "close-writer":
            self._send(("close-writer", job.ident, job.writer))
            job.sent = True
            return
        if job.call is not None:
            kind, arguments = job.call
            if job.arrays is not None:
                arguments += ([self._reference(array) for array in job.arrays],)
            self._send((kind, job.ident, *arguments))
            job.sent = True
            return
        if job.action == "append":
            self._send(("append", job.ident, job.writer, job.inline))
        else:
            self._send_descriptor(destination)
            self._send(("write", job.ident, destination.path, destination.key, job.options,
                        chain))
        job.sent = True
        if handle.cancel_requested:
            self._send(("cancel", job.ident))
        if job.inline is not None:
            return  # all of it went with the command
        try:
            assert job.source is not None
            if not job.source.lazy:
                self._feed_in_memory(job)
            else:
                # An iterable's items go as they come, copied into the ring.
                views = map(_bytes_view, job.source.chunks(self.ring.segment, "bytes"))
                self._copy_in(job, views, pack=False)
        except OSError:
            raise
        except BaseException as exc:  # noqa: BLE001 - a lazy iterable's item, say
            # The write fails with it there, after the data sent so far (as a thread's
            # write does when its iterable raises), and is logged there.
            job.feed_error = exc
            self._send(("fail", job.ident, portable(exc, known_only=True)))
        finally:
            if not job.by_address:
                job.source = None  # let go of the caller's data
        if handle.cancel_requested:
            # Stopped for a cancel: the child is told before the data's end, or it
            # would finish the write with what it has, as if that were all of it.
            job.stopped_early = True
            self._send(("cancel", job.ident))
        self._send(("end", job.ident))

    def _feed_in_memory(self, job: _Job) -> None:
        """Send data already in memory: a frame of a :class:`~bgio.FramePool` as a
        reference to memory the child maps too; other buffers of 256 KiB or more by
        address, read by the child from this process's memory (if it may); the rest
        copied into the ring, packed (one message each would cost more)."""
        assert job.source is not None
        copied: list[memoryview] = []
        for block in job.source.chunks(WHOLE, "bytes"):
            view = _bytes_view(block)
            found = locate(view)
            if found is None and (not self.remote or len(view) < _BY_ADDRESS):
                copied.append(view)
                continue
            if copied:
                self._copy_in(job, copied, pack=True)
                copied = []
            if job.handle.cancel_requested or self.dead is not None:
                return
            job.by_address = True  # the data must live until the child is done with it
            if found is not None:
                pool, offset = found
                if pool.ident not in self._pools:
                    self._share(pool)
                self._send(("shared", job.ident, pool.ident, offset, len(view)))
            else:
                self._send(("data", job.ident, -remote.address_of(view), len(view)))
        if copied:
            self._copy_in(job, copied, pack=True)

    def _reference(self, array: Any) -> SharedArray | RemoteArray:
        """How the child finds ``array``: in a pool (shared with it now if need be), or
        at its address here."""
        found = locate(array)
        shape, dtype = tuple(array.shape), array.dtype.str
        if found is None:
            return RemoteArray(int(array.ctypes.data), shape, dtype)
        pool, offset = found
        if pool.ident not in self._pools:
            self._share(pool)
        return SharedArray(pool.ident, offset, shape, dtype)

    def _share(self, pool: FramePool) -> None:
        """Hand a pool's memory to the child (once; it maps it until told to forget it)."""
        socket.send_fds(self._descriptors, [b"p"], [pool.fd])
        self._send(("pool", pool.ident, pool.size))
        self._pools.add(pool.ident)
        weakref.finalize(pool, self._forgotten_pools.append, pool.ident).atexit = False

    def _copy_in(self, job: _Job, views: Iterable[memoryview], pack: bool) -> None:
        """Copy buffers into ring segments and send each segment as it fills; with
        ``pack`` several buffers share a segment, else each buffer's last piece goes at
        once (an iterable's item is written as it comes, as with threads)."""
        ring = self.ring

        def stopped() -> bool:
            return job.handle.cancel_requested or self.dead is not None

        index: int | None = None
        used = 0
        for view in views:
            start = 0
            while start < len(view):
                if index is None:
                    index = None if stopped() else ring.take(stopped)
                    if index is None:
                        return
                    used = 0
                count = min(len(view) - start, ring.segment - used)
                ring.fill(index, view[start:start + count], used)
                used += count
                start += count
                if used == ring.segment or (start == len(view) and not pack):
                    self._send(("data", job.ident, index, used))
                    index = None
        if index is not None:
            self._send(("data", job.ident, index, used))

    def _ended(self, ident: int) -> None:
        with self._changed:
            self.jobs.pop(ident, None)
            self._changed.notify_all()

    # -- the reader thread --------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                event = self._events.recv()
            except (EOFError, OSError):
                break
            except Exception:
                logger.exception("bgio: an event from the writer process could not be read")
                continue
            kind = event[0]
            if kind == "free":
                _, index, ident, written, on_disk, timing = event
                self.ring.give_back(index)
                if written is not None:
                    self._progress(ident, written, on_disk, timing)
            elif kind == "progress":
                self._progress(*event[1:])
            elif kind == "done":
                self._done(*event[1:])
            elif kind == "probe":
                self.remote = bool(event[1])
                if not self.remote:
                    logger.debug("bgio: the writer process cannot read this process's memory "
                                 "(%s); data goes through shared memory", event[2])
                self._probed.set()
            elif kind == "taken":
                job = self.jobs.get(event[1])
                if job is not None:
                    job.let_go()
            elif kind == "log":
                logger.log(event[1], "writer process: %s", event[2])
            elif kind == "lag":
                self.lags[event[1]] = event[2]
        self._gone()

    def _progress(self, ident: int, written: int, on_disk: int | None,
                  timing: tuple[float, float, float, float | None] | None) -> None:
        job = self.jobs.get(ident)
        if job is None:
            return
        handle = job.handle
        handle.bytes_written = max(handle.bytes_written, written)
        if on_disk is not None:
            handle.bytes_on_disk = on_disk
        if timing is not None:
            # A new record each time: readers in other threads see whole figures.
            handle.set_timing(WriteTiming(*timing))
        handle.report_progress()

    def _done(self, ident: int, outcome: str, value: Any, written: int,
              on_disk: int | None, timing: tuple[float, float, float, float | None] | None
              ) -> None:
        job = self.jobs.get(ident)
        if job is None:
            return
        handle = job.handle
        handle.bytes_written = written
        handle.bytes_on_disk = on_disk
        if timing is not None:
            handle.set_timing(WriteTiming(*timing))
        handle.watch_cancel(None)
        job.source = None  # (the child read from it until now)
        job.let_go()  # before the handle is done: its frames are back when result() returns
        if job.reply is not None and outcome == "ok":
            job.reply(value)
        closing_error = self.close_after(job)
        if job.feed_error is not None:
            handle.set_exception(job.feed_error)
        elif outcome == "ok" and closing_error is not None:
            handle.set_exception(closing_error)
        elif outcome == "ok" and not job.stopped_early and not (
                handle.cancel_requested and handle.total_bytes is not None
                and written < handle.total_bytes):
            handle.set_result(value)
        elif outcome in ("ok", "cancelled"):
            handle.set_stopped()
        else:
            handle.set_exception(value)
        self._ended(ident)

    @staticmethod
    def close_after(job: _Job) -> BaseException | None:
        """Close the caller's file object or descriptor (``close_when_finished``), as a
        thread does after the write, whatever its outcome; the error if that failed."""
        closes, job.destination.closes = job.destination.closes, None
        if closes is None:
            return None
        try:
            closes()
        except Exception as exc:  # reported on the handle and the log
            logger.error("bgio: closing %s after its write failed", job.destination.name,
                         exc_info=exc)
            return exc
        return None

    def _gone(self) -> None:
        """The event pipe ended: the child exited as told, or died."""
        code = self.process.wait()
        with self._changed:
            expected = self._closing and code == 0
            if code < 0:
                how = f"killed by signal {-code}"
            else:
                how = f"exit status {code}"
            self.dead = f"bgio's writer process (pid {self.process.pid}) ended ({how})"
            jobs = list(self.jobs.values())
            openings = [job for job in self._queue if isinstance(job, _Opening)]
            self._queue.clear()
            self._changed.notify_all()
            self._wake_feeder()
        self.ring.wake()
        self._probed.set()
        self._cancel_wanted.set()  # the canceller ends
        if jobs or not expected:
            logger.error("%s with %d write(s) unfinished", self.dead, len(jobs))
        for job in jobs:  # failed before wait_all() may say nothing is left
            handle = job.handle
            handle.watch_cancel(None)
            message = (f"{self.dead} before this write to {job.destination.name!r} ended; "
                       f"{handle.bytes_written} bytes of it were written")
            logger.error("bgio: %s: %d of %s bytes written when the writer process ended",
                         job.destination.name, handle.bytes_written,
                         "?" if handle.total_bytes is None else handle.total_bytes)
            job.let_go()  # (nobody reads its frames any more)
            handle.set_exception(BgioError(message))
        with self._changed:
            self.jobs.clear()
            self._changed.notify_all()
        self._feeder.join()  # (it may be inside the program's iterable)
        for job in jobs:
            job.source = None
            job.destination.discard()
            self.close_after(job)
        for opening in openings:
            opening.destination.discard()
        self._descriptors.close()
        self.ring.close()
        self._events.close()
        self._commands.close()

    # -- the end ------------------------------------------------------------------------

    def _wait_everything(self, timeout: float | None, held: bool = True) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.wait_all(left, held):
                return False
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not engine.wait_all(left):
                return False
            if self.wait_all(0, held):
                return True

    def let_go(self) -> None:
        """(In a forked child) close this process's copies of the pipes, the socket and
        the ring; the Writers and HDF5 writers made before the fork fail their writes
        here (their writer process is the parent's, and no thread feeds it here)."""
        self._new_conditions()  # (another thread may have held the lock)
        self.dead = ("bgio's writer process belongs to the process this one was forked "
                     "from")
        for connection in (self._commands, self._events):
            try:
                connection.close()
            except OSError:
                pass
        try:
            os.close(self.ring.fd)
        except OSError:
            pass
        self._descriptors.close()

    def drain(self, held: bool = True) -> None:
        """Wait for every write of both backends, as threads are drained at exit
        (``held=False``: not the frames and records HDF5 writers hold until closed)."""
        # One drain for both backends: the line counts every pending write, and a
        # Ctrl-C abandons the threads' writes too (their own drain then finds none).
        drain.drain(lambda: engine.pending() + self.pending(held),
                    functools.partial(self._wait_everything, held=held))

    def shut_down(self) -> None:
        """Drain, then tell the child to end and wait."""
        self.drain()
        with self._changed:
            self._closing = True
            self._changed.notify_all()
            self._wake_feeder()
        self._feeder.join()
        self._cancel_wanted.set()
        self._canceller.join()
        self._send_quietly(("exit",))
        self._reader.join(EXIT_TIMEOUT)


_lock = threading.Lock()
_backend: _Backend | None = None
_registered = False
#: Set once the writer process has ended at exit: later writes are the threads'.
_exited = False
#: What to close at exit before the writer process ends (see close_at_exit).
_closers: list[weakref.ref[Any]] = []


def _submit_anew(job: _Job | _Opening) -> _Backend:
    """Queue ``job`` on the writer process, starting one if none is running; the backend."""
    global _backend, _registered
    with _lock:
        while True:
            if _backend is None or _backend.dead is not None:
                _backend = _Backend()
                if not _registered:
                    # Drained where the threads are (before non-daemon threads are
                    # joined), ended only after the atexit handlers registered since:
                    # what those write (a file closed there) still goes to it.
                    threading._register_atexit(_drain_at_exit)  # type: ignore[attr-defined]
                    atexit.register(_end_at_exit)
                    _registered = True
            if _backend.submit(job):
                return _backend
            _backend = None


def submit(handle: BackgroundWriteProcess, source: Source, destination: Destination,
           options: dict[str, Any], chain: BackgroundWriteProcess | None) -> None:
    """Queue a write on the writer process, starting one if none is running."""
    _submit_anew(_Job(0, "write", handle, source, destination, options, chain))


class RemoteWriter:
    """A :class:`bgio.Writer` kept in the writer process, for a Writer of this one.

    Made once (the child opens its Writer on ``destination`` with
    ``options``, keyword arguments of :class:`bgio.Writer`); then
    :meth:`write` and :meth:`close` queue in call order with every other
    writer-process write. Its writes belong to the writer process it was
    opened in: if that one ends, they fail (a new one knows nothing of
    this Writer, and its file was closed half written).
    """

    __slots__ = ("_backend", "_destination", "_ident", "_name")

    def __init__(self, destination: Destination, options: dict[str, Any]) -> None:
        opening = _Opening(destination, options)
        self._backend = _submit_anew(opening)
        self._ident = opening.ident
        self._destination = destination  # closes the caller's object (close_when_finished)
        self._name = Destination(destination.name)  # for the writes' messages

    def write(self, handle: BackgroundWriteProcess, source: Source | None,
              inline: bytes | None = None) -> None:
        """Queue a write of ``source``'s data (or of ``inline``, sent with the command)."""
        self._queue(_Job(0, "append", handle, source, self._name, writer=self._ident,
                         inline=inline))

    def forget_when_freed(self, owner: object) -> None:
        """Once ``owner`` is freed, the child closes the Writer (at the next write that
        goes there, or at exit), unless :meth:`close` came first."""
        finalizer = weakref.finalize(owner, self._backend.forget_writer, self._ident)
        finalizer.atexit = False  # at exit it is closed (close_at_exit), not dropped

    def close(self, handle: BackgroundWriteProcess) -> None:
        """Queue the Writer's close; ``handle`` ends with it (and its first error)."""
        self._queue(_Job(0, "close-writer", handle, None, self._destination,
                         writer=self._ident))

    def _queue(self, job: _Job) -> None:
        backend = self._backend
        if backend.submit(job):
            return
        error = BgioError(f"{backend.dead or 'bgio has ended its writer process'}: this "
                          f"Writer's writes to {self._name.name!r} cannot go on")
        logger.error("bgio: a write to %s was refused: %s", self._name.name, error)
        job.handle.set_running_or_notify_cancel()
        job.handle.set_exception(error)
        _Backend.close_after(job)


class RemoteObject:
    """An HDF5 writer kept in the writer process, and the calls queued to it in order.

    Made with the writer's ``kind`` (``"frames"``: :class:`bgio.h5.FrameWriter`,
    ``"records"``: :class:`bgio.h5.RecordWriter`) and constructor arguments;
    the constructor waits until the writer process has opened it, and raises
    what that raised. :meth:`call` queues a command (see
    :mod:`bgio.process.child`) whose arrays go by reference.
    """

    __slots__ = ("_backend", "_ident", "_name")

    def __init__(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 name: str) -> None:
        self._name = Destination(name)
        handle = BackgroundWriteProcess(0)
        job = _Job(0, "call", handle, None, self._name)
        job.call = ("make", (kind, args, kwargs))
        self._backend = _submit_anew(job)
        self._ident = job.ident
        handle.result()  # the writer's own errors, raised here

    def lag(self) -> LagStatus | None:
        """The writer process's last report of this writer's ``max_lag`` (see
        :meth:`bgio.lag.KeepsUp.report_lag`), or None before the first. A writer
        process that died reports no more: its last episode is then over."""
        status = self._backend.lags.get(self._ident)
        if status is not None and status.behind and self._backend.dead:
            return dataclasses.replace(status, behind=False)
        return status

    def forget_lag(self) -> LagStatus | None:
        """The last report, let go of (the writer is closed: the caller keeps it)."""
        return self._backend.lags.pop(self._ident, None)

    @property
    def reads_caller_memory(self) -> bool:
        """Whether the writer process reads this process's memory (else arrays not in
        a pool must be copied into one)."""
        return self._backend.remote

    def call(self, handle: BackgroundWriteProcess, kind: str, arguments: tuple[Any, ...],
             arrays: list[Any] | None = None, release: Iterable[Callable[[], None]] = (),
             reply: Callable[[Any], None] | None = None, cancellable: bool = True) -> None:
        """Queue ``(kind, id, writer, *arguments[, refs])``; ``handle`` ends as it does,
        ``release`` runs once the child is done with ``arrays``, and ``reply`` is given
        the value the command ended with, if it succeeded. ``cancellable=False``: the
        command ignores cancels, so the handle's are not sent."""
        job = _Job(0, "call", handle, None, self._name)
        job.call = (kind, (self._ident, *arguments))
        if arrays is not None:
            job.arrays = arrays
        if release:
            job.release = list(release)
        if reply is not None:
            job.reply = reply
        self._submit(job, cancellable)

    @property
    def ident(self) -> int:
        """The id the writer process knows this object by (a command's first argument)."""
        return self._ident

    def send(self, handle: BackgroundWriteProcess, command: tuple[str, tuple[Any, ...]],
             arrays: list[Any], release: list[Callable[[], None]]) -> None:
        """:meth:`call` for a command that ignores cancels and gives no reply, made as
        ``(kind, (ident, *arguments))``, its lists taken as they are (a frame's append:
        the fewest steps)."""
        job = _Job.__new__(_Job)  # (the fields __init__ would set, and no others)
        job.action = "call"
        job.handle = handle
        job.destination = self._name
        job.call = command
        job.arrays = arrays
        job.release = release
        self._submit(job, False)

    def _submit(self, job: _Job, cancellable: bool) -> None:
        backend = self._backend
        if backend.submit(job, cancellable):
            return
        handle = job.handle
        job.let_go()
        error = BgioError(f"{backend.dead or 'bgio has ended its writer process'}: the "
                          f"writes to {self._name.name!r} cannot go on")
        logger.error("bgio: a write to %s was refused: %s", self._name.name, error)
        if handle.running() or handle.set_running_or_notify_cancel():
            handle.set_exception(error)


def pending() -> list[tuple[str, BackgroundWriteProcess]]:
    """The writer process's writes not done yet: (destination, handle)."""
    backend = _backend
    return [] if backend is None else backend.pending()


def wait_all(timeout: float | None = None) -> bool:
    """Wait until the writer process's writes are done; True if none is left."""
    backend = _backend
    return True if backend is None else backend.wait_all(timeout)


def close_at_exit(thing: Any) -> None:
    """Have ``thing.close()`` called at exit, before the writer process ends (a Writer,
    a file or an HDF5 writer whose writes it does; the latest first)."""
    _closers.append(weakref.ref(thing))


def exited() -> bool:
    """True once the writer process has ended at exit (later writes are the threads')."""
    return _exited


def _held(job: _Job) -> bool:
    """True for frames or records sent to an HDF5 writer there: it may hold them (a chunk
    being filled) until it is closed, so a drain before the close must not wait for
    them (as the threads' drain does not wait for what an HDF5 writer holds)."""
    return job.call is not None and job.call[0] in ("frames", "records")


def _drain_at_exit() -> None:
    # Before the HDF5 writers left open are closed (_end_at_exit, which drains all).
    backend = _backend
    if backend is not None and backend.dead is None:
        backend.drain(held=False)


def _end_at_exit() -> None:
    """Close what is still open on the writer process, drain, and end it."""
    global _exited
    for ref in reversed(_closers):
        thing = ref()
        if thing is None:
            continue
        try:
            thing.close()
        except Exception:
            if not drain.abandoning():
                logger.exception("bgio: closing %r at exit failed", thing)
    _closers.clear()
    _exited = True
    backend = _backend
    if backend is not None and backend.dead is None:
        backend.shut_down()


def _after_fork_in_child() -> None:
    """A forked child does not own the parent's writer process: it starts without one, and
    lets go of the pipes (the writer process must see the parent's end when it ends)."""
    global _backend, _lock
    backend, _backend = _backend, None
    _lock = threading.Lock()
    _closers.clear()  # the parent's to close
    if backend is not None:
        backend.let_go()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
