"""``FramePool``: numpy frames in shared memory, handed to writes without a copy.

A pool is one block of shared memory (an anonymous file: ``memfd_create``
on Linux) cut into ``count`` frames of one shape and dtype. A program
acquires a frame, fills it (a camera's buffer, a processing step's output)
and writes it; the write *takes* the frame, and it returns to the pool once
that write is done. Through the writer process (``backend="process"``)
only a reference crosses: the writer process maps the same memory and
writes from it, so neither process copies the frame. Through a thread the
frame is written from where it is, as any array.

The frames' states: *free*, *held* (acquired, not yet written or
released) and *taken* by one or more writes (back to free when the last of
them is done). :func:`take_frames` is how the writes claim them; nothing
else in bgio needs to know a pool exists.
"""

from __future__ import annotations

import functools
import mmap
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import QueueFull
from .handle import BackgroundWriteProcess
from .timeouts import check_timeout

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

    import numpy as np
    import numpy.typing as npt

__all__ = ["FramePool", "check_shared_size", "claim", "claim_handed", "locate",
           "shared_frame_count", "take_frames"]

#: Where the live pools' memory lies, for the writes that look their frames up by
#: address: (start, end, the pool) each; a tuple replaced whole, so a lookup (on every
#: write while pools exist) reads it without a lock.
_spans: tuple[tuple[int, int, weakref.ref[FramePool]], ...] = ()
#: The arrays that acquire() handed out and that are still held, by id(): a write of
#: that very array (the common case) finds its frame without reading its address, a
#: step that costs more than the rest of a write's bookkeeping. (Each entry keeps
#: its array, so its id() stays its own; a pool's go with it.)
_handed_out: dict[int, tuple[np.ndarray, weakref.ref[FramePool], int]] = {}
_ids = iter(range(1, 1 << 62))
_ids_lock = threading.Lock()


#: Bytes of shared frames a writer keeps for copies, unless told otherwise.
DEFAULT_SHARED_BYTES = 64 * 1024 * 1024
#: At least this many shared frames, whatever their size.
MIN_SHARED_FRAMES = 4
#: At most this many (each starts on a page: tiny frames would take a page each).
MAX_SHARED_FRAMES = 1024


def shared_frame_count(frame_bytes: int, budget: int | None = None) -> int:
    """How many shared frames of ``frame_bytes`` a writer keeps: ``budget`` bytes of
    them (:data:`DEFAULT_SHARED_BYTES` if None), from 4 to 1,024."""
    return min(MAX_SHARED_FRAMES, max(
        MIN_SHARED_FRAMES, (budget or DEFAULT_SHARED_BYTES) // max(1, frame_bytes)))


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        import psutil

        return int(psutil.virtual_memory().total)


def _stride(frame_bytes: int) -> int:
    # Frames start on page boundaries: aligned for O_DIRECT and for vector copies.
    return -(-frame_bytes // mmap.PAGESIZE) * mmap.PAGESIZE


def check_shared_size(count: int, frame_bytes: int, name: str = "count") -> int:
    """``count`` if ``count`` frames of ``frame_bytes`` fit in this machine's memory.

    Shared memory is memory: a pool larger than the machine's is a mistake
    that would otherwise show up later, as the writer or the whole machine
    running out of memory. Raises ``ValueError`` naming ``name``.
    """
    size = _stride(frame_bytes) * count
    total = _physical_memory()
    if size > total:
        raise ValueError(f"{name}: {count:,} frames of {frame_bytes:,} bytes take "
                         f"{size / 2 ** 30:,.1f} GiB of shared memory, more than this "
                         f"machine's {total / 2 ** 30:,.1f} GiB")
    return count


def _forget_span(gone: weakref.ref[FramePool]) -> None:
    global _spans
    with _ids_lock:
        _spans = tuple(span for span in _spans if span[2] is not gone)
        for key in [key for key, entry in list(_handed_out.items()) if entry[1] is gone]:
            del _handed_out[key]


def _shared_file(size: int) -> int:
    """An anonymous file of ``size`` bytes (its descriptor)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("bgio-frames", os.MFD_CLOEXEC)
    else:  # pragma: no cover - not Linux
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        with tempfile.TemporaryFile(dir=shm) as file:
            fd = os.dup(file.fileno())
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _close_memory(fd: int, memory: mmap.mmap) -> None:
    try:
        memory.close()
    except BufferError:  # a frame is still referenced somewhere: freed with it
        pass
    os.close(fd)


class FramePool:
    """``count`` numpy frames of ``frame_shape`` and ``dtype`` in shared memory.

    Parameters
    ----------
    frame_shape : int or tuple of int
        The shape of every frame (each dimension >= 1).
    dtype : numpy dtype-like
        Their element type.
    count : int
        How many frames (>= 1).

    Raises
    ------
    TypeError, ValueError
        For a shape, dtype or count that is not one (named in the message).

    Attributes
    ----------
    frame_shape, dtype, count
        As given (``dtype`` as a numpy dtype).
    frame_bytes : int
        The bytes of one frame.
    stride : int
        Bytes from one frame's start to the next's (frames start on pages).
    size : int
        Bytes of the whole shared memory (``stride * count``).
    fd : int
        The shared memory's file descriptor (what another process maps).

    Notes
    -----
    A frame handed to a write (:func:`bgio.bgwrite`, a Writer's
    ``write``) is the write's until it is done, then free again: do not
    touch it after the write call, and do not write it twice unless both
    writes are queued before either ends. One never written goes back with
    :meth:`release` (or by leaving ``with pool.acquired() as frame:``).
    The memory is freed when the pool and all its frames are gone.

    Examples
    --------
    >>> import bgio, io
    >>> pool = bgio.FramePool((2, 3), "uint16", count=4)
    >>> frame = pool.acquire()
    >>> frame[:] = 7
    >>> out = io.BytesIO()
    >>> bgio.bgwrite(out, frame, priority=1).result()
    12
    >>> pool.free
    4
    """

    def __init__(self, frame_shape: int | tuple[int, ...], dtype: npt.DTypeLike,
                 count: int) -> None:
        import numpy as np  # (bgio imports numpy only once it is needed)

        shape = (frame_shape,) if isinstance(frame_shape, int) else frame_shape
        if not isinstance(shape, tuple) or not all(
                isinstance(size, int) and not isinstance(size, bool) for size in shape):
            raise TypeError(f"frame_shape must be an int or a tuple of ints, got {frame_shape!r}")
        if not shape or any(size < 1 for size in shape):
            raise ValueError(f"frame_shape must have dimensions >= 1, got {frame_shape!r}")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype: {exc}") from None
        if self.dtype.hasobject or self.dtype.itemsize == 0:
            raise ValueError(f"dtype must be a fixed-size type without objects, got {self.dtype}")
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"count must be an int, got {type(count).__qualname__}")
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.frame_shape = shape
        self.count = count
        self.frame_bytes = int(np.prod(shape)) * self.dtype.itemsize
        check_shared_size(count, self.frame_bytes)
        self.stride = _stride(self.frame_bytes)
        self.size = self.stride * count
        self.fd = _shared_file(self.size)
        memory = mmap.mmap(self.fd, self.size)
        self._memory = np.frombuffer(memory, dtype=np.uint8)
        self.base = int(self._memory.ctypes.data)
        self._mutex = threading.RLock()
        self._changed = threading.Condition(self._mutex)
        self._free = list(range(count - 1, -1, -1))
        self._taken = [0] * count  # writes that hold each frame
        self._held = [False] * count  # acquired and not yet written or released
        self._turns = [0] * count  # times each frame was handed out (see acquired)
        self._handed_as: list[int | None] = [None] * count  # each slot's key in _handed_out
        self._closed = False
        global _spans
        with _ids_lock:
            self.ident = next(_ids)
            self._ref = weakref.ref(self, _forget_span)
            _spans = (*_spans, (self.base, self.base + self.size, self._ref))
        # What gives each frame back once its write is done, made once (not per write);
        # through the weak reference, so that they keep the pool in no reference cycle.
        self._when_written = [functools.partial(_written, self._ref, slot)
                              for slot in range(count)]
        # Not at exit: frames still being written then need the memory (and its fd).
        weakref.finalize(self, _close_memory, self.fd, memory).atexit = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.free} of {self.count} free"
        return (f"<bgio.FramePool {self.count} x {self.frame_shape} {self.dtype}, {state}>")

    @property
    def free(self) -> int:
        """Frames that :meth:`acquire` can hand out now."""
        return len(self._free)

    def acquire(self, block: bool = True, timeout: float | None = None) -> np.ndarray:
        """A free frame (its contents are what the last user left).

        Parameters
        ----------
        block : bool, default True
            Wait for a frame to come back (True) or raise at once (False).
        timeout : float or None
            Seconds to wait at most.

        Raises
        ------
        bgio.QueueFull
            If no frame is free (``block=False``) or none came back in time.
        ValueError
            If the pool is closed.
        """
        limit = check_timeout(timeout)
        with self._changed:
            if not self._free and not self._closed:
                if not block:
                    raise QueueFull(f"all {self.count} frames of the pool are in use")
                if not self._changed.wait_for(lambda: self._free or self._closed, limit):
                    raise QueueFull(f"no frame of the pool came back after {timeout} s "
                                    f"(all {self.count} in use)")
            if self._closed:
                raise ValueError("acquire from a closed bgio.FramePool")
            slot = self._free.pop()
            self._held[slot] = True
            self._turns[slot] += 1
            start = slot * self.stride
            frame = self._memory[start:start + self.frame_bytes].view(self.dtype).reshape(
                self.frame_shape)
            _handed_out[id(frame)] = (frame, self._ref, slot)
            self._handed_as[slot] = id(frame)
        return frame

    @contextmanager
    def acquired(self, block: bool = True, timeout: float | None = None
                 ) -> Iterator[np.ndarray]:
        """``with pool.acquired() as frame:``: a frame, released at the end unless written."""
        frame = self.acquire(block, timeout)
        slot = self.slot_of(frame)
        assert slot is not None
        turn = self._turns[slot]
        try:
            yield frame
        finally:
            with self._changed:
                # Still this hand-out's (not written, come back and handed out again).
                if self._held[slot] and self._turns[slot] == turn:
                    self._give_back(slot)

    def release(self, frame: np.ndarray) -> None:
        """Give back an acquired frame that will not be written.

        Raises
        ------
        ValueError
            If ``frame`` is not an acquired frame of this pool (not of it,
            free already, or taken by a write: it comes back by itself).
        """
        slot = self.slot_of(frame)
        with self._changed:
            if slot is None or not self._held[slot]:
                raise ValueError("release: not a frame of this pool held by the program "
                                 "(a frame given to a write comes back when it is done)")
            self._give_back(slot)

    def close(self) -> None:
        """No more frames are handed out; a waiting :meth:`acquire` raises ``ValueError``.

        Frames given to writes are written all the same; the memory goes
        once the pool and its frames are no longer referenced.
        """
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def slot_of(self, frame: Any) -> int | None:
        """The frame of this pool that ``frame``'s memory lies in, or None."""
        offset = _address(frame) - self.base
        if not 0 <= offset < self.size:
            return None
        return offset // self.stride

    def _give_back(self, slot: int) -> None:  # (the condition held)
        self._held[slot] = False
        self._forget_handed(slot)
        if not self._taken[slot]:
            self._free.append(slot)
            self._changed.notify()

    def _take(self, slot: int) -> None:
        with self._changed:
            if not self._held[slot] and not self._taken[slot]:
                raise ValueError("data: a frame of a bgio.FramePool that is not acquired (a "
                                 "frame given to a write is back in the pool once it is "
                                 "done: acquire it again)")
            self._held[slot] = False
            self._taken[slot] += 1
            self._forget_handed(slot)

    def _forget_handed(self, slot: int) -> None:  # (the condition held)
        key = self._handed_as[slot]
        if key is not None:
            self._handed_as[slot] = None
            del _handed_out[key]

    def _written(self, slot: int) -> None:
        with self._changed:
            self._taken[slot] -= 1
            if not self._taken[slot] and not self._held[slot]:
                self._free.append(slot)
                self._changed.notify()


def _address(block: Any) -> int:
    """Where a buffer's memory starts (0 when it exposes none)."""
    import numpy as np  # loaded: a pool exists

    try:
        interface = block.__array_interface__
    except AttributeError:
        try:
            interface = np.asarray(memoryview(block)).__array_interface__
        except (TypeError, ValueError):
            return 0
    return int(interface["data"][0])


def locate(block: Any) -> tuple[FramePool, int] | None:
    """The pool whose memory holds ``block`` entirely, and the block's offset in it."""
    spans = _spans
    if not spans:
        return None
    address = _address(block)
    end = address + memoryview(block).nbytes
    for start, stop, pool_ref in spans:
        if start <= address and end <= stop:
            pool = pool_ref()
            if pool is not None:
                return pool, address - start
    return None


def _written(pool_ref: weakref.ref[FramePool], slot: int) -> None:
    pool = pool_ref()
    if pool is not None:  # (else its memory is gone, and the frame with it)
        pool._written(slot)


def claim_handed(block: Any) -> Callable[[], None] | None:
    """:func:`claim` for ``block`` only if it is the very array a pool's ``acquire()``
    handed out (so a whole frame, C-contiguous); else None, without looking further."""
    entry = _handed_out.get(id(block))
    if entry is None or entry[0] is not block:
        return None
    pool = entry[1]()
    if pool is None:
        return None
    slot = entry[2]
    with pool._mutex:  # (the lock itself: nothing to notify, and a step less)
        if pool._handed_as[slot] != id(block):
            return None  # taken or released meanwhile
        pool._handed_as[slot] = None
        del _handed_out[id(block)]
        pool._held[slot] = False
        pool._taken[slot] += 1
    return pool._when_written[slot]


def claim(block: Any) -> Callable[[], None] | None:
    """If ``block`` lies in a pool's frame, take that frame for a write (it is no longer
    the program's to release) and return what gives it back; else None."""
    if not _spans:
        return None
    taken = claim_handed(block)  # as handed out: no address to read
    if taken is not None:
        return taken
    found = locate(block)
    if found is None:
        return None
    pool, offset = found
    slot = offset // pool.stride
    pool._take(slot)
    return functools.partial(pool._written, slot)


def take_frames(blocks: Iterable[Any], handle: BackgroundWriteProcess) -> None:
    """A write of ``blocks`` takes the pool frames among them; each goes back to its
    pool when ``handle`` is done (called where the write is made, in the caller)."""
    if not _spans:
        return
    for block in blocks:
        give_back = claim(block)
        if give_back is not None:
            handle.add_done_callback(functools.partial(_call, give_back))


def _call(action: Callable[[], None], _done: object) -> None:
    action()
