"""Producers in other processes: picklable stand-ins that feed a writer of this process.

``writer.producer()`` (:class:`~bgio.h5.FrameWriter`,
:class:`~bgio.h5.RecordWriter`, either backend) starts a
:class:`ProducerService` for the writer and returns a
:class:`FrameProducer` or :class:`RecordProducer`. Pickled into a worker
process (``multiprocessing`` with ``spawn`` or ``fork``, a
``ProcessPoolExecutor``), it connects to the writer's process over a
private Unix socket (:mod:`bgio.channel`), one connection per thread that
uses it, and each call becomes the writer's own call there: the same
checks, order rules, back-pressure and errors. (A
``FrameWriter(..., backend="process")`` starts its service in the writer
process, beside its FrameWriter: the program's own process takes no part.)

Frames travel through shared memory: the service keeps a
:class:`bgio.FramePool` that every producer maps. A frame the worker got
from :meth:`FrameProducer.acquire` goes as a reference to its slot; other
frames are copied into free slots first (one copy in the worker, none
here). The writer stores each slot's frame by reference and the slot is
free again once stored, so the pool's size is the back-pressure. Events
(:class:`RecordProducer`) are pickled into the request (one copy).

Errors: a call that the writer refuses raises the writer's exception in
the worker; a store that fails later is reported by the producer's next
call and by :meth:`flush`, as a :class:`bgio.BgioError` naming the first
failure (chained to it).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from ..channel import Channel, Service, connect
from ..copying import copy_frames
from ..errors import BgioError
from ..handle import BackgroundWriteProcess, failure_of
from ..pool import FramePool, check_shared_size, claim, shared_frame_count
from ..process import portable
from ..timeouts import check_timeout
from .layout import as_frames, check_count

if TYPE_CHECKING:
    import mmap

    from .base import H5Writer

__all__ = ["FrameProducer", "ProducerService", "RecordProducer"]


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class _Session:
    """One producer in one process (one connection per thread that uses it): the slots
    it holds and the first failure of its writes."""

    def __init__(self, service: ProducerService) -> None:
        self._service = service
        self.connections = 0
        self._held: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._reported = False

    def hold(self, slot: int, frame: np.ndarray) -> None:
        with self._lock:
            self._held[slot] = frame

    def take(self, slots: list[int]) -> list[np.ndarray]:
        """The frames of slots this producer holds, no longer held (all or none)."""
        with self._lock:
            for slot in slots:
                if slot not in self._held:
                    raise ValueError(f"slot {slot} is not a shared frame this producer holds")
            return [self._held.pop(slot) for slot in slots]

    def failed(self, handle: BackgroundWriteProcess) -> None:
        error = failure_of(handle)
        if error is not None and not handle.cancelled():
            with self._lock:
                if self._failure is None:
                    self._failure = error

    def news(self) -> BaseException | None:
        """The first failure of this producer's writes, once."""
        with self._lock:
            if self._failure is None or self._reported:
                return None
            self._reported = True
            return portable(self._failure)

    def end(self) -> None:
        """The producer's last connection closed: what it held is free again."""
        with self._lock:
            frames, self._held = list(self._held.values()), {}
        pool = self._service.pool
        if pool is not None:
            for frame in frames:
                pool.release(frame)


class ProducerService:
    """What answers the producers of one writer, in the writer's process.

    Made by ``writer.producer()``; closed with the writer (producers
    connected then get the writer's "closed" errors, new ones cannot
    connect).
    """

    def __init__(self, writer: H5Writer, kind: str,
                 frame_shape: tuple[int, ...] | None = None, dtype: np.dtype | None = None,
                 shared_frames: int | None = None) -> None:
        self._writer: Any = writer  # (a FrameWriter or RecordWriter, either backend)
        self.kind = kind
        self.pool: FramePool | None = None
        if kind == "frames":
            assert frame_shape is not None and dtype is not None
            frame_bytes = math.prod(frame_shape) * dtype.itemsize
            if shared_frames is None:
                shared_frames = shared_frame_count(frame_bytes)
            else:  # (here for both backends: the error names the producer's argument)
                check_shared_size(shared_frames, frame_bytes, "shared_frames")
            self.pool = FramePool(frame_shape, dtype, shared_frames)
        self._sessions: dict[bytes, _Session] = {}
        self._sessions_lock = threading.Lock()
        self._service = Service(self._serve, "producers")

    def producer(self, name: str) -> FrameProducer | RecordProducer:
        address, token = self._service.address, self._service.token
        if self.pool is not None:
            return FrameProducer(address, token, name)
        return RecordProducer(address, token, name)

    def close(self) -> None:
        self._service.close()
        if self.pool is not None:
            self.pool.close()  # producers waiting for a slot get their ValueError

    # -- the service's side of a connection -----------------------------------------------

    def _join(self, producer: bytes) -> _Session:
        with self._sessions_lock:
            session = self._sessions.get(producer)
            if session is None:
                session = self._sessions[producer] = _Session(self)
            session.connections += 1
        return session

    def _leave(self, producer: bytes, session: _Session) -> None:
        with self._sessions_lock:
            session.connections -= 1
            if session.connections:
                return
            del self._sessions[producer]
        session.end()

    def _serve(self, channel: Channel) -> None:
        pool = self.pool
        if pool is None:
            channel.send({"kind": "records"})
        else:
            channel.send({"kind": "frames", "frame_shape": pool.frame_shape,
                          "dtype": pool.dtype.str, "count": pool.count, "stride": pool.stride,
                          "size": pool.size})
            channel.send_descriptors([pool.fd])
        producer = channel.receive()  # which producer (of which process) this thread is
        if not isinstance(producer, bytes):
            raise ConnectionError("a producer's connection that does not say whose it is")
        session = self._join(producer)
        try:
            while True:
                request = channel.receive()
                try:
                    value = self._answer(session, request)
                except Exception as exc:  # noqa: BLE001 - the producer's to raise
                    channel.send(("error", portable(exc), session.news()))
                else:
                    channel.send(("ok", value, session.news()))
        finally:
            self._leave(producer, session)

    def _answer(self, session: _Session, request: tuple[Any, ...]) -> object:
        command, *arguments = request
        if command == "acquire":
            return self._acquire(session, *arguments)
        if command == "release":
            assert self.pool is not None
            for frame in session.take(arguments[0]):
                self.pool.release(frame)
            return None
        if command == "frames":
            self._frames(session, *arguments)
            return None
        if command == "records":
            frame_index, events, block, timeout = arguments
            writer = self._writer
            handle = writer.append(frame_index, events, block=block, timeout=timeout,
                                   copy=False)  # (unpickled here: nobody else has them)
            handle.add_done_callback(session.failed)
            return None
        if command == "flush":
            self._writer.flush(arguments[0])
            return None
        raise ValueError(f"unknown request {command!r}")

    def _acquire(self, session: _Session, count: int, block: bool, timeout: float | None,
                 ) -> list[int]:
        pool = self.pool
        assert pool is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        frames: list[np.ndarray] = []
        try:
            for _ in range(count):
                # (The first waits ``timeout`` as given: its message names it.)
                frames.append(pool.acquire(block, _remaining(deadline) if frames else timeout))
        except BaseException:
            for frame in frames:
                pool.release(frame)
            raise
        slots = []
        for frame in frames:
            slot = pool.slot_of(frame)
            assert slot is not None
            session.hold(slot, frame)
            slots.append(slot)
        return slots

    def _frames(self, session: _Session, index: int | None, slots: list[int], block: bool,
                timeout: float | None) -> None:
        pool = self.pool
        assert pool is not None
        writer = self._writer
        frames = session.take(slots)
        deadline = None if timeout is None else time.monotonic() + timeout
        for position, frame in enumerate(frames):
            # Held for the call: the writer takes the frame for as long as it needs it
            # (both backends give pool frames back once copied or stored), and it cannot
            # be handed to another producer while this call decides.
            give_back = claim(frame)
            assert give_back is not None
            try:
                if index is None:
                    handle = writer.append(frame, block=block, timeout=_remaining(deadline),
                                           copy=False)
                else:
                    handle = writer.write_at(index + position, frame, block=block,
                                             timeout=_remaining(deadline), copy=False)
            except BaseException as exc:
                for rest in frames[position + 1:]:
                    pool.release(rest)
                if position:
                    exc.add_note(f"(the {position} frame(s) before it in this call were "
                                 "accepted)")
                raise
            finally:
                give_back()
            handle.add_done_callback(session.failed)


class _Connection:
    """A thread's connection, kept in that thread's local storage only: when the thread
    ends, its storage goes, and with it the connection (closed, so the writer lets go of
    the thread's side too). A producer used from many short-lived threads keeps no
    connection per dead thread."""

    __slots__ = ("__weakref__", "channel")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        weakref.finalize(self, _let_go, channel, os.getpid())


def _let_go(channel: Channel, pid: int) -> None:
    if os.getpid() == pid:
        channel.close()
    else:  # a forked copy's: the parent's connection goes on
        channel.forget()


class _Producer:
    """What both producers share: a connection per thread of each process that uses
    them, the requests, and the errors."""

    _kind = ""

    def __init__(self, address: str | bytes, token: bytes, name: str) -> None:
        self._address = address
        self._token = token
        self._name = name
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._identity = secrets.token_bytes(16)  # this producer in this process
        self._local = threading.local()
        # Every live thread's connection, for close(); weak, so a thread's end frees it.
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._failure: BaseException | None = None
        self._memory: tuple[mmap.mmap, np.ndarray, dict[str, Any]] | None = None
        self._held: set[int] = set()

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._address, self._token, self._name))

    def __repr__(self) -> str:
        return f"<bgio.h5.{type(self).__name__} for {self._name!r}>"

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _channel(self) -> Channel:
        if os.getpid() != self._pid:
            # Forked: the connections are the parent's (shared sockets); leave them be.
            with self._lock:
                if os.getpid() != self._pid:
                    self._reset()
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection.channel
        try:
            channel = connect(self._address, self._token)
            hello = channel.receive()
            if hello["kind"] != self._kind:
                raise BgioError(f"a {type(self).__name__} connected to a {hello['kind']} writer")
            if hello["kind"] == "frames":
                (fd,) = channel.receive_descriptors(1)
                self._map(fd, hello)
            channel.send(self._identity)
        except (ConnectionError, OSError) as exc:
            raise BgioError(f"{self._name}: cannot reach the writer (closed, or its process "
                            f"has ended): {exc}") from exc
        connection = _Connection(channel)
        self._local.connection = connection
        with self._lock:
            self._connections.add(connection)
        return channel

    def _map(self, fd: int, hello: dict[str, Any]) -> None:
        import mmap

        try:
            with self._lock:
                if self._memory is None:
                    memory = mmap.mmap(fd, hello["size"])
                    self._memory = (memory, np.frombuffer(memory, dtype=np.uint8), hello)
        finally:
            os.close(fd)

    def _raise_failure(self) -> None:
        failure = self._failure
        if failure is not None:
            raise BgioError(f"{self._name}: a write of this producer failed: "
                            f"{type(failure).__name__}: {failure}") from failure

    def _ask(self, *request: object) -> Any:
        self._raise_failure()
        return self._request(request)

    def _request(self, request: tuple[object, ...]) -> Any:
        """Send ``request`` and return the answer's value (raising its error)."""
        channel = self._channel()
        try:
            channel.send(request)
            outcome, value, news = channel.receive()
        except (ConnectionError, OSError) as exc:
            raise BgioError(f"{self._name}: the writer's process closed the connection: "
                            f"{exc}") from exc
        if news is not None and self._failure is None:
            self._failure = news
        if outcome == "error":
            raise value
        return value

    def flush(self, timeout: float | None = None) -> None:
        """Have the writer store everything accepted so far (its ``flush()``), and raise
        the first failure of this producer's writes, if any.

        Raises
        ------
        bgio.BgioError
            If a write of this producer failed, or the writer cannot be reached.
        TimeoutError
            If the writer's flush took longer than ``timeout`` seconds.
        """
        self._ask("flush", check_timeout(timeout))
        self._raise_failure()

    def close(self) -> None:
        """Disconnect this process's connections (writes accepted are the writer's)."""
        with self._lock:
            if os.getpid() != self._pid:
                self._reset()
                return
            connections, self._connections = list(self._connections), weakref.WeakSet()
            self._local = threading.local()
        for connection in connections:
            connection.channel.close()


class FrameProducer(_Producer):
    """Feeds a :class:`bgio.h5.FrameWriter` from another process (``writer.producer()``).

    Picklable: hand it to worker processes. Its frames go through shared
    memory; a frame from :meth:`acquire` is sent as a reference, others
    are copied into a free slot first. Each call is the writer's own call
    in the writer's process: :meth:`write_at` blocks while no slot is free
    (or for the writer's ``max_pending_bytes``), and raises what the
    writer raises.

    Examples
    --------
    In a worker process (``producer`` came as an argument)::

        with producer.acquired() as frame:   # a slot of shared memory
            camera.read_into(frame)
            producer.write_at(index, frame)  # sent as a reference
        producer.flush()                     # stored? raises the first failure
    """

    _kind = "frames"

    def _info(self) -> dict[str, Any]:
        self._channel()
        assert self._memory is not None
        return self._memory[2]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame."""
        return tuple(self._info()["frame_shape"])

    @property
    def dtype(self) -> np.dtype:
        """The frames' element type."""
        dtype: np.dtype = np.dtype(self._info()["dtype"])
        return dtype

    def _frame(self, slot: int) -> np.ndarray:
        assert self._memory is not None
        _, memory, info = self._memory
        start = slot * info["stride"]
        dtype = np.dtype(info["dtype"])
        size = math.prod(info["frame_shape"]) * dtype.itemsize
        frame: np.ndarray = memory[start:start + size].view(dtype)
        return frame.reshape(info["frame_shape"])

    def _slot_of(self, frame: np.ndarray) -> int | None:
        """The slot held by this process that ``frame`` is exactly, or None."""
        if self._memory is None:
            return None
        _, memory, info = self._memory
        offset = int(frame.__array_interface__["data"][0]) - int(memory.ctypes.data)
        stride = info["stride"]
        if offset < 0 or offset % stride or not frame.flags.c_contiguous:
            return None
        slot = offset // stride
        return slot if slot in self._held else None

    def acquire(self, block: bool = True, timeout: float | None = None) -> np.ndarray:
        """A frame of shared memory to fill and pass to :meth:`write_at` (no copy).

        Raises
        ------
        bgio.QueueFull
            If no slot is free (``block=False``) or none came free in time.
        ValueError
            If the writer is closed.
        """
        (slot,) = self._ask("acquire", 1, bool(block), check_timeout(timeout))
        with self._lock:
            self._held.add(slot)
        return self._frame(slot)

    def release(self, frame: np.ndarray) -> None:
        """Give back an acquired frame that will not be written."""
        slot = self._slot_of(frame) if isinstance(frame, np.ndarray) else None
        if slot is None:
            raise ValueError("release: not a frame this producer acquired and still holds")
        with self._lock:
            self._held.discard(slot)
        self._ask("release", [slot])

    @contextmanager
    def acquired(self, block: bool = True, timeout: float | None = None
                 ) -> Iterator[np.ndarray]:
        """``with producer.acquired() as frame:`` — released at the end unless written."""
        frame = self.acquire(block, timeout)
        try:
            yield frame
        finally:
            if self._slot_of(frame) is not None:  # (not written)
                self.release(frame)

    def write_at(self, index: int, frames: object, *, block: bool = True,
                 timeout: float | None = None) -> None:
        """Put frames at ``index`` on (see :meth:`bgio.h5.FrameWriter.write_at`).

        ``frames`` is one frame or a stack; frames from :meth:`acquire` are
        the writer's once passed here (whatever the outcome), others are
        copied into shared memory and may be reused at once.

        Raises
        ------
        TypeError, ValueError
            As the writer does (shape, dtype, index, closed).
        bgio.QueueFull
            No slot or no room (``block=False``, or after ``timeout``).
        bgio.BgioError
            An earlier write of this producer failed, or the writer is gone.
        """
        index = check_count(index, "index", minimum=0)
        self._send_frames(index, frames, block, timeout)

    def append(self, frames: object, *, block: bool = True, timeout: float | None = None,
               ) -> None:
        """Queue frames after the highest written (see :meth:`bgio.h5.FrameWriter.append`):
        from several producers, in the order the writer gets them."""
        self._send_frames(None, frames, block, timeout)

    def _send_frames(self, index: int | None, frames: object, block: bool,
                     timeout: float | None) -> None:
        limit = check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        info = self._info()
        stack = as_frames(frames, tuple(info["frame_shape"]), np.dtype(info["dtype"]))
        slots: list[int | None] = [self._slot_of(frame) for frame in stack]
        wanted = slots.count(None)
        if wanted > info["count"]:
            raise ValueError(f"frames: {wanted} frames at once are more than the "
                             f"{info['count']} shared frames; write them in parts")
        if wanted:
            fresh = iter(self._ask("acquire", wanted, bool(block), _remaining(deadline)))
            for position, slot in enumerate(slots):
                if slot is None:
                    slot = slots[position] = next(fresh)
                    copy_frames(self._frame(slot), stack[position])
        with self._lock:  # from here on the writer's, whatever the outcome
            self._held.difference_update(slots)
        if self._failure is not None:
            # Refused here, unsent: the writer's service still holds the slots for us.
            with contextlib.suppress(Exception):  # the failure below is the one to raise
                self._request(("release", slots))
            self._raise_failure()
        self._ask("frames", index, slots, bool(block), _remaining(deadline))


class RecordProducer(_Producer):
    """Feeds a :class:`bgio.h5.RecordWriter` from another process (``writer.producer()``).

    Picklable: hand it to worker processes; each appends the events of the
    frames it has, in any order (the writer puts them in frame order). The
    events are pickled into the request (one copy), so the arrays may be
    refilled at once.
    """

    _kind = "records"

    def append(self, frame_index: int, events: Mapping[str, object], *, block: bool = True,
               timeout: float | None = None) -> None:
        """Accept the events of frame ``frame_index`` (see :meth:`bgio.h5.RecordWriter.append`).

        Raises
        ------
        TypeError, ValueError
            As the writer does (features, lengths, an index appended already, closed).
        bgio.QueueFull
            No room under the writer's ``max_pending_bytes``.
        bgio.BgioError
            An earlier append of this producer failed to be stored, or the writer is gone.
        """
        frame_index = check_count(frame_index, "frame_index", minimum=0)
        if not isinstance(events, Mapping):
            raise TypeError(f"events must be a mapping of feature name to array, got "
                            f"{type(events).__qualname__}")
        self._ask("records", frame_index, {name: np.asarray(value)
                                           for name, value in events.items()},
                  bool(block), check_timeout(timeout))
