"""The Zarr writer with ``backend="process"``: the array is written by the writer process.

``bgio.zarr.FrameWriter(path, ..., backend="process")`` opens an ordinary
:class:`bgio.zarr.FrameWriter` in the writer process
(:class:`~bgio.process.parent.RemoteObject`), so tensorstore's calls, the
compression and the record's rewrites never wait for this process's
interpreter lock: a main thread busy in Python does not slow the stores.
This side checks the frames, numbers them and sends them by reference, as
the HDF5 writers of :mod:`bgio.process.h5` do: a frame of a
:class:`bgio.FramePool` as it is; others copied into the writer's own
shared frames (``copy=True``), or read by the writer process from the
caller's array (``copy=False``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..closing import Finish
from ..h5.base import check_on_missing
from ..h5.layout import check_copy, check_count, check_dtype, check_shape
from ..handle import BackgroundWriteProcess, raise_root_error, running_handle
from ..pool import FramePool, claim, shared_frame_count
from ..priority import validate_chunk_size
from ..timeouts import check_timeout
from ..zarr.frames import FrameWriter, report_missing
from ..zarr.spec import kvstore_of
from .h5 import frames_to_send
from .parent import RemoteObject, close_at_exit

__all__ = ["ProcessFrameWriter"]


class ProcessFrameWriter(FrameWriter):
    """A :class:`bgio.zarr.FrameWriter` with ``backend="process"``: the same methods.

    Made by ``bgio.zarr.FrameWriter(store, ..., backend="process")``; the
    parameters are :class:`~bgio.zarr.FrameWriter`'s. Differences: the
    store must be a local path or ``file://`` (a ``memory://`` array would
    live in the writer process, out of this one's reach); frames not in a
    :class:`bgio.FramePool` are copied into shared memory of
    ``max_pending_bytes`` (64 MiB if None; 4 to 1,024 frames), so an append
    waits for room there (``block``/``timeout`` as always), and a call may
    give at most that many frames at once.
    """

    def __init__(
        self,
        store: Any,
        frame_shape: tuple[int, ...],
        dtype: np.dtype | str,
        *,
        max_pending_bytes: int | None = None,
        on_missing: str = "warn",
        copy: bool = True,
        shared: bool = False,
        backend: str | None = "process",
        **options: Any,
    ) -> None:
        kvstore = kvstore_of(store)
        if kvstore["driver"] != "file":
            raise ValueError(f"store: with backend='process' the array is written by the "
                             f"writer process, where this one cannot read a "
                             f"{kvstore['driver']}:// store; give a path")
        path = kvstore["path"].rstrip("/")
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be True or False, got {type(shared).__qualname__}")
        self._frame_shape = check_shape(frame_shape, "frame_shape")
        self._dtype = check_dtype(dtype)
        self._missing_policy = check_on_missing(on_missing)
        self._copy = check_copy(copy)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        self._frame_bytes = math.prod(self._frame_shape) * self._dtype.itemsize
        # Frames gathered into a chunk or shard there are copied into it as they come
        # (their shared frames go back at once: a shard may hold more frames than the
        # shared memory); a chunk per frame is stored from the shared frame itself.
        group = options.get("shard_frames") or options.get("chunk_frames", 1)
        gathering = not shared and group != 1
        self._name = str(path)
        self._lock = threading.RLock()
        self._next = 0  # after the highest frame sent
        self._count = 0
        # A byte per frame index sent: writing one again is refused here, in the caller
        # (the writer process would too, but only on the handle). None while only
        # append() was used: the frames sent are then 0 .. _next - 1.
        self._sent: bytearray | None = None
        self._closed = False
        self._last: BackgroundWriteProcess | None = None
        self.missing: list[int] = []
        # The writer process's FrameWriter: it checks the other arguments and creates
        # the array now, raising here what it raises there.
        self._remote = RemoteObject(
            "zarr-frames", (path, self._frame_shape, self._dtype),
            {**options, "max_pending_bytes": max_pending_bytes, "shared": shared,
             "copy": gathering, "on_missing": "ignore"}, self._name)
        self._pool = FramePool(self._frame_shape, self._dtype,
                               shared_frame_count(self._frame_bytes, max_pending_bytes))
        close_at_exit(self)  # left open, it is closed at exit (its record finished)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"<bgio.zarr.FrameWriter {state} {self._name!r} frames={self._count} "
                f"backend='process'>")

    @property
    def pending_bytes(self) -> int:
        """Bytes of the shared frames holding copies not yet stored."""
        return (self._pool.count - self._pool.free) * self._pool.frame_bytes

    def append(self, frames: object, *, block: bool = True,
               timeout: float | None = None) -> BackgroundWriteProcess:
        """Queue frames after the highest written; see :meth:`bgio.zarr.FrameWriter.append`."""
        return self._send(None, frames, block, timeout)

    def write_at(self, index: int, frames: object, *, block: bool = True,
                 timeout: float | None = None) -> BackgroundWriteProcess:
        """Put frames at ``index`` on; see :meth:`bgio.zarr.FrameWriter.write_at`."""
        index = check_count(index, "index", minimum=0)
        return self._send(index, frames, block, timeout)

    def _send(self, index: int | None, frames: object, block: bool,
              timeout: float | None) -> BackgroundWriteProcess:
        limit = check_timeout(timeout)
        stack = self._checked_frames(index, frames)
        count = len(stack)
        if self._closed:
            raise ValueError("write to a closed bgio.zarr.FrameWriter")
        if not count:  # nothing to store: done at once, as with threads
            empty = running_handle(0)
            empty.set_result(0)
            return empty
        # Outside the lock: a writer waiting for shared memory must not keep the other
        # threads (one may bring the frame a shard waits for) from going on.
        taken = claim(stack)
        if taken is not None:  # frames in a FramePool: they go as they are
            arrays: list[Any] = [stack]
            release: list[Callable[[], None]] = [taken]
        else:
            arrays, release = frames_to_send(self._remote, self._pool, stack, self._copy,
                                             block, limit, timeout)
        handle = running_handle(int(stack.nbytes))  # frames accepted are stored: no cancel
        with self._lock:
            try:
                start = self._claim_slots(index, count)
            except ValueError:
                for give_back in release:  # refused: the frames are back in their pools
                    give_back()
                raise
            self._count += count
            self._last = handle
            self._remote.call(handle, "frames", (start,), arrays, release, cancellable=False)
            self._count_write(handle, count * self._frame_bytes, count)
        return handle

    def _claim_slots(self, index: int | None, count: int) -> int:
        """(lock held) Where ``count`` frames go (``index`` None: after the highest), marked
        sent; ValueError if closed or a slot was sent already."""
        if self._closed:
            raise ValueError("write to a closed bgio.zarr.FrameWriter")
        start = self._next if index is None else index
        end = start + count
        sent = self._sent
        if index is not None:
            if sent is None:  # the first write_at: the appends so far are 0 .. _next - 1
                sent = self._sent = bytearray(b"\x01") * self._next
            if start < len(sent) and any(sent[start:end]):
                raise ValueError(f"index: frame {sent.index(1, start)} was already written")
        if sent is not None:
            if len(sent) < end:  # (grown a page at a time, not per frame)
                sent.extend(bytes(end - len(sent) + 4096))
            sent[start:end] = b"\x01" * count
        self._next = max(self._next, end)
        return start

    def _finish(self, method: str, reply: Callable[[Any], None] | None = None
                ) -> BackgroundWriteProcess:
        """(lock held) Ask the writer process to flush or close the array."""
        handle = running_handle(0)
        self._remote.call(handle, "finish", (method,), reply=reply)
        return handle

    def _wait(self, handles: tuple[BackgroundWriteProcess | None, ...],
              timeout: float | None) -> None:
        """Wait for a flush or close and for the last store sent before it (the writer
        process reports them from different threads: the store's end may come second)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if handle is not None and not handle.wait(left):
                raise TimeoutError(f"frames not stored after {timeout} s")

    def flush(self, timeout: float | None = None) -> None:
        """Store and announce everything so far; see :meth:`bgio.zarr.FrameWriter.flush`."""
        check_timeout(timeout)
        with self._lock:
            last = self._last
            if self._closed:
                if last is not None:
                    self._wait((last,), timeout)
                    raise_root_error(last)
                return
            flushing = self._finish("flush")
        # (Not the last store: frames in a group being filled end with the group.)
        self._wait((flushing,), timeout)
        raise_root_error(flushing)

    def _closed_with(self, outcome: tuple[list[int], int, int | None]) -> None:
        self.missing = list(outcome[0])  # the slots never written, as the close found them

    def _begin_close(self) -> Finish:
        with self._lock:
            if self._closed:
                return self._again()
            self._closed = True
            stored = self._last
            closing = self._last = self._finish("close", self._closed_with)

        def finish(timeout: float | None) -> None:
            self._wait((closing, stored), timeout)
            self._pool.close()
            raise_root_error(closing)
            report_missing(self.missing, self._missing_policy, self._next, self._name)
        return finish
