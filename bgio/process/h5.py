"""The HDF5 writers with ``backend="process"``: the file is open in the writer process only.

``FrameWriter(path, ..., backend="process")`` opens an ordinary
:class:`bgio.h5.FrameWriter` in the writer process
(:class:`~bgio.process.parent.RemoteObject`), so compression, h5py's
process-wide lock and HDF5's own work never touch the caller's process:
its h5py calls on other files never wait for bgio's. This side checks the
frames in the caller, numbers them, and sends them by reference: a frame
of a :class:`bgio.FramePool` as it is, others copied into the writer's own
pool of shared frames (the copy that ``copy=True`` asks for anyway), or
with ``copy=False`` read by the writer process from the caller's array.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..closing import Finish
from ..copying import copy_frames
from ..errors import FramesDropped, QueueFull
from ..h5.base import H5Writer, check_on_missing, check_space
from ..h5.drops import DropCounter, check_frame_id, check_on_drop
from ..h5.frames import FrameWriter
from ..h5.layout import (
    MAX_ELEMENTS,
    as_frames,
    check_copy,
    check_count,
    check_dtype,
    check_extent,
    check_frame_index,
    check_shape,
)
from ..h5.record_layout import check_features
from ..h5.records import RecordWriter
from ..h5.stats import WriterStats
from ..handle import BackgroundWriteProcess, raise_root_error, running_handle
from ..lag import LagStatus, check_max_lag, reported
from ..pool import FramePool, claim, claim_handed, shared_frame_count
from ..priority import resolve_priority, validate_chunk_size
from ..room import wait_for_room
from ..timeouts import check_timeout
from .parent import RemoteObject, close_at_exit

if TYPE_CHECKING:
    from ..h5.producers import FrameProducer

__all__ = ["ProcessFrameWriter", "ProcessRecordWriter", "frames_to_send"]


def _check_path(target: object) -> str:
    if not isinstance(target, (str, bytes, os.PathLike)):
        raise ValueError(  # noqa: TRY004 - a valid target, just not for this backend
            f"target: backend='process' opens the file in the writer process; pass a path, "
            f"not {type(target).__qualname__}")
    return os.path.abspath(os.fsdecode(os.fspath(target)))


def frames_to_send(remote: RemoteObject, shared: FramePool, stack: np.ndarray, copy: bool,
                   block: bool, limit: float | None, timeout: float | None,
                   ) -> tuple[list[Any], list[Callable[[], None]]]:
    """The arrays to send to ``remote`` for ``stack`` (frames not in a FramePool): the
    stack itself where the writer process reads this process's memory and ``copy`` is
    False, else copies in ``shared`` frames; and what gives those back."""
    if not copy and remote.reads_caller_memory:
        return [stack], []  # read by the writer process from here: keep it unchanged
    if len(stack) > shared.count:
        raise ValueError(f"frames: {len(stack)} frames at once are more than the "
                         f"{shared.count} this writer's shared memory holds; append them "
                         "in parts or raise max_pending_bytes")
    copies: list[np.ndarray] = []
    release: list[Callable[[], None]] = []
    try:
        for frame in stack:
            copy_of = shared.acquire(block, limit)
            copies.append(copy_of)
            copy_frames(copy_of, frame)
    except QueueFull:
        for copy_of in copies:
            shared.release(copy_of)
        if block:
            raise QueueFull(f"no room for {len(stack)} frame(s) after {timeout} s") from None
        raise QueueFull(f"no room for {len(stack)} frame(s): all {shared.count} shared "
                        "frames hold frames not yet stored") from None
    for copy_of in copies:
        give_back = claim(copy_of)
        assert give_back is not None
        release.append(give_back)
    return [copy_of.reshape(1, *shared.frame_shape) for copy_of in copies], release


class _InWriterProcess:
    """What both HDF5 writers do the same with ``backend="process"``: flush, close (the
    slots never written reported here, under ``on_missing``), and their repr."""

    _remote: RemoteObject
    _lag_bounds: tuple[float | None, int | None]
    #: The last report of the writer process, kept once the close has ended.
    _final_lag: LagStatus | None = None
    _drops: DropCounter
    _lock: threading.RLock
    _closed: bool
    _last: BackgroundWriteProcess | None
    _missing_policy: str
    _name: str
    _what: str
    _kind: str  # the public class's name
    missing: list[int]
    _missing_message: Callable[[], str]  # the thread writer's own

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bgio.h5.{self._kind} {state} {self._name!r} backend='process'>"

    @property
    def _label(self) -> str:
        return self._name

    @property
    def lag(self) -> LagStatus | None:
        """The ``max_lag`` and its episodes, as the writer process last reported them (as
        each episode begins and ends, and at the close); None without a ``max_lag``."""
        final = self._final_lag
        return reported(self._lag_bounds, final if final is not None else self._remote.lag())

    def stats(self) -> WriterStats:
        """See :meth:`bgio.h5.FrameWriter.stats` (the unpaced figures as the writer
        process last reported them)."""
        stats = H5Writer.stats(self)  # type: ignore[arg-type]
        lag = self.lag
        if lag is None:
            return stats
        return dataclasses.replace(stats, unpaced_bytes=lag.unpaced_bytes,
                                   unpaced_seconds=lag.unpaced_seconds,
                                   unpaced_episodes=lag.episodes)

    def _closing(self) -> None:
        """What else a close lets go of (called once the writes are done)."""

    def _closed_with(self, outcome: tuple[list[int], int, int | None]) -> None:
        missing, _, _ = outcome
        self.missing = list(missing)  # the slots never written, as the close found them

    def _wait(self, finishing: BackgroundWriteProcess, stored: BackgroundWriteProcess | None,
              timeout: float | None) -> None:
        """Wait for a flush or close, and for the last store before a close: the writer
        process reports them from different threads, so the store's end may come second."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for handle in (finishing, stored):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if handle is not None and not handle.wait(left):
                raise TimeoutError(f"{self._what} not stored after {timeout} s")

    def flush(self, timeout: float | None = None) -> None:
        """Store everything so far and flush the file (as with threads)."""
        check_timeout(timeout)
        handle = BackgroundWriteProcess(0)
        handle.set_running_or_notify_cancel()
        with self._lock:
            if self._closed:
                last = self._last
                if last is not None:
                    self._wait(last, None, timeout)
                    raise_root_error(last)
                return
            self._remote.call(handle, "finish", ("flush",))
        # (A chunk flushed while partly filled stays open: its handles end with it.)
        self._wait(handle, None, timeout)
        raise_root_error(handle)

    def _begin_close(self) -> Finish:
        # (close() is H5Writer's: the same meaning as with threads, wait=False too)
        with self._lock:
            closed_before, last = self._closed, self._last
            stored = None
            if not closed_before:
                self._closed = True
                self._stop_producers()  # type: ignore[attr-defined]
                stored = last
                dropped = self._drops.record()
                if dropped is not None:  # (the writer process records them in the file)
                    self._remote.call(running_handle(0), "dropped", dropped)
                last = self._last = BackgroundWriteProcess(0)
                last.set_running_or_notify_cancel()
                self._remote.call(last, "finish", ("close",), reply=self._closed_with)
        if closed_before:
            return self._again()  # type: ignore[attr-defined,no-any-return]
        assert last is not None
        closing = last

        def finish(timeout: float | None) -> None:
            self._wait(closing, stored, timeout)
            self._final_lag = self._remote.forget_lag() or self._final_lag
            self._closing()
            raise_root_error(closing)
            self._report_missing()  # type: ignore[attr-defined]
            self._report_dropped()  # type: ignore[attr-defined]
        return finish


class _Kept:
    """A frame sent, as the latest (see :class:`_Latest`); called once its store is done
    (in place of what gives its shared frame back)."""

    __slots__ = ("frame", "give_back", "index", "latest")

    def __init__(self, latest: _Latest, index: int, frame: np.ndarray,
                 give_back: Callable[[], None] | None) -> None:
        self.latest = latest
        self.index = index
        self.frame = frame
        self.give_back = give_back  # None once given back

    def __call__(self) -> None:
        latest = self.latest
        with latest.lock:
            release, self.give_back = self.give_back, None
            if self is latest.current:
                self.frame = self.frame.copy()  # (the shared frame is refilled once back)
        if release is not None:
            release()


class _Latest:
    """The frame sent last, kept readable for ``latest()``: its shared frame is read
    from while its store is under way; once stored, the latest frame is copied out and
    its shared frame goes back (a shared frame is never held for it after its store:
    a pool of one frame, or a stack as large as the writer's shared memory, goes on)."""

    __slots__ = ("current", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: _Kept | None = None

    def hold(self, index: int, frame: np.ndarray,
             give_back: Callable[[], None] | None) -> Callable[[], None] | None:
        """``frame`` (at ``index``) is the latest; returns what its store's end calls in
        place of ``give_back`` (None: the frame is the caller's, ``copy=False``)."""
        kept = _Kept(self, index, frame, give_back)
        # (No lock: the assignment is atomic, and a _Kept copes with no longer being
        # the current one at any point.)
        self.current = kept
        return None if give_back is None else kept

    def copy(self) -> tuple[int, np.ndarray] | None:
        """The latest frame, copied (its shared frame is refilled once let go)."""
        with self.lock:
            kept = self.current
            if kept is None:
                return None
            index, frame = kept.index, kept.frame.copy()
        frame.flags.writeable = False
        return index, frame


class ProcessFrameWriter(_InWriterProcess, FrameWriter):
    """A :class:`bgio.h5.FrameWriter` with ``backend="process"``: the same methods.

    Made by ``bgio.h5.FrameWriter(path, ..., backend="process")``; the
    parameters are :class:`~bgio.h5.FrameWriter`'s. Differences: ``target``
    must be a path; :attr:`dataset` is not available (the file is open in
    the writer process: read it once closed, or follow it live with
    ``swmr=True``); frames are copied into shared memory of
    ``max_pending_bytes`` (64 MiB if None; 4 to 1,024 frames), so
    :meth:`append` waits for room there (``block``/``timeout`` as always).
    """

    _kind = "FrameWriter"

    def __init__(
        self,
        target: str | os.PathLike[str],
        name: str,
        frame_shape: tuple[int, ...],
        dtype: np.dtype | str,
        *,
        max_pending_bytes: int | None = None,
        copy: bool = True,
        on_missing: str = "warn",
        on_drop: str = "warn",
        backend: str | None = "process",
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        **options: Any,
    ) -> None:
        self._lag_bounds = check_max_lag(max_lag, max_lag_bytes)
        # (Applied there, as checked here: plain float and int, which any process reads.)
        options.update(max_lag=self._lag_bounds[0], max_lag_bytes=self._lag_bounds[1])
        path = _check_path(target)
        self._missing_policy = check_on_missing(on_missing)
        self._drops = DropCounter(check_on_drop(on_drop))
        self._opened_at = time.monotonic()
        self._peak_backlog = None  # (not looked at by the appends here: see WriterStats)
        self._copy = check_copy(copy)
        self._dtype = check_dtype(dtype)
        self._frame_shape = check_shape(frame_shape, "frame_shape")
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        if "priority" in options:
            options["priority"] = resolve_priority(options["priority"])
        self._frame_elements = math.prod(self._frame_shape)
        # Frames an HDF5 dataset can hold (check_extent words the error beyond that).
        self._frames_held = MAX_ELEMENTS // max(self._frame_elements, 1)
        frame_bytes = self._frame_elements * self._dtype.itemsize
        # The disk is checked here (a warning is the caller's), and again, for min_free
        # only, where the file is opened.
        expected = options.pop("expected_frames", None)
        if expected is not None:
            expected = check_count(expected, "expected_frames") * frame_bytes
        options["min_free"] = check_space(path, expected, options.get("min_free"),
                                          options.get("compression") is not None,
                                          f"FrameWriter {name!r}")
        count = shared_frame_count(frame_bytes, max_pending_bytes)
        self._name = f"{path}:{name}"
        self._lock = threading.RLock()
        self._next = 0
        self._count = 0
        # A byte per frame index this process has sent: writing one again is refused
        # here, in the caller, as with threads (the writer process would refuse it
        # too, but only on the handle). None while only append() was used: then the
        # frames sent are 0 .. _next - 1.
        self._sent: bytearray | None = None
        self._closed = False
        self._last: BackgroundWriteProcess | None = None
        self._producer: FrameProducer | None = None
        self.missing: list[int] = []
        # The writer process's FrameWriter: it checks the other arguments and creates
        # the dataset now, raising here what it raises there.
        self._remote = RemoteObject(
            "frames", (path, name, self._frame_shape, self._dtype),
            {**options, "copy": False, "on_missing": "ignore", "on_drop": "ignore"}, self._name)
        self._shared = FramePool(self._frame_shape, self._dtype, count)
        self._kept = _Latest()
        close_at_exit(self)  # left open, it is closed at exit (its file made whole)

    @property
    def dataset(self) -> Any:
        """Not available: the dataset is open in the writer process only."""
        raise AttributeError("dataset: with backend='process' the file is open in the writer "
                             "process only; read it once the writer is closed")

    @property
    def frames_written(self) -> int:
        """Frames accepted by :meth:`append` and :meth:`write_at` so far (with
        :meth:`producer`, their frames are counted once the writer is closed)."""
        return self._count

    @property
    def extent(self) -> int:
        """Frames the dataset holds once closed: one after the highest frame written
        (with :meth:`producer`, theirs are known once the writer is closed)."""
        return self._next

    def _closed_with(self, outcome: tuple[list[int], int, int | None]) -> None:
        missing, written, extent = outcome
        self.missing = list(missing)
        self._count = max(self._count, written)  # the producers' frames too
        self._next = max(self._next, extent or 0)

    def producer(self, *, shared_frames: int | None = None) -> FrameProducer:
        """A picklable stand-in for this writer, for producers in other processes (see
        :meth:`bgio.h5.FrameWriter.producer`).

        With ``backend="process"`` the producers talk to the writer process
        itself, so a main thread busy in Python here does not slow them;
        :meth:`append` here then goes after the highest frame written there.
        """
        if shared_frames is not None:
            shared_frames = check_count(shared_frames, "shared_frames")
        with self._lock:
            if self._closed:
                raise ValueError("producer() of a closed FrameWriter")
            if self._producer is None:
                handle = BackgroundWriteProcess(0)
                handle.set_running_or_notify_cancel()
                made: list[FrameProducer] = []
                self._remote.call(handle, "producer", (shared_frames,), reply=made.append)
                handle.result()  # raises what the writer process raised
                self._producer = made[0]
            return self._producer

    @property
    def pending_bytes(self) -> int:
        """Bytes of the shared frames holding copies not yet stored."""
        return (self._shared.count - self._shared.free) * self._shared.frame_bytes

    def append(self, frames: object, *, block: bool = True, timeout: float | None = None,
               copy: bool | None = None, frame_id: int | None = None) -> BackgroundWriteProcess:
        """Queue frames after the highest written; see :meth:`bgio.h5.FrameWriter.append`."""
        # The caller's cost of an append is what this backend is for: the common case,
        # one frame of a FramePool as it was handed out, takes the fewest steps (each
        # costs a microsecond or more when the caller comes back to it cold, as between
        # a camera's frames). The other arguments, if given, are checked on the way.
        if (type(frames) is np.ndarray and timeout is None and copy is None
                and frames.shape == self._frame_shape
                and (frames.dtype is self._dtype or frames.dtype == self._dtype)
                and not self._closed):
            if frame_id is not None or self._drops.count:
                with self._lock:  # (refused before the frame is taken: it stays the caller's)
                    self._drops.check(frame_id, 1)
            taken = claim_handed(frames)
            if taken is not None:
                return self._append_handed(frames, taken, frame_id)
        return self._queue_frames(None, frames, block, timeout, copy, frame_id)

    def _append_handed(self, frame: np.ndarray, give_back: Callable[[], None],
                       frame_id: int | None) -> BackgroundWriteProcess:
        """:meth:`_send` for one frame of a FramePool appended (the same steps, fewer
        of them)."""
        handle = running_handle(frame.nbytes)  # frames accepted are stored: no cancel
        with self._lock:
            if self._closed:
                give_back()
                raise ValueError("write to a closed FrameWriter")
            drops = self._drops
            if frame_id is not None or drops.count:  # (the common case: neither)
                try:
                    frame_id = drops.check(frame_id, 1)
                except BaseException:
                    give_back()
                    raise
                self._note_dropped(drops.arrived(frame_id, 1))
            start = None
            if self._producer is None:  # (else the writer process places it)
                start = self._next
                if start >= self._frames_held:
                    give_back()
                    check_extent(start, 1, self._frame_elements, "frames")
                self._next = start + 1
                sent = self._sent
                if sent is not None:
                    if len(sent) <= start:  # (grown a page at a time, not per frame)
                        sent.extend(bytes(start - len(sent) + 4097))
                    sent[start] = 1
            self._count += 1
            self._last = handle
            kept = self._kept.hold(-1 if start is None else start, frame, give_back)
            assert kept is not None  # (a shared frame: given back through it)
            self._remote.send(handle, ("frames", (self._remote.ident, start)), [frame], [kept])
            if self._totals is not None:  # (under the lock: counted before any close)
                self._count_write(handle, frame.nbytes, 1)
        return handle

    def write_at(self, index: int, frames: object, *, block: bool = True,
                 timeout: float | None = None, copy: bool | None = None,
                 ) -> BackgroundWriteProcess:
        """Put frames at ``index`` on; see :meth:`bgio.h5.FrameWriter.write_at`."""
        index = check_count(index, "index", minimum=0)
        return self._queue_frames(index, frames, block, timeout, copy)

    def _queue_frames(self, index: int | None, frames: object, block: bool, timeout: float | None,
             copy: bool | None, frame_id: int | None = None) -> BackgroundWriteProcess:
        limit = None if timeout is None else check_timeout(timeout)
        copy = self._copy if copy is None else check_copy(copy)
        if frame_id is not None:
            frame_id = check_frame_id(frame_id)
        if index is None and (frame_id is not None or self._drops.count):
            with self._lock:  # (refused before any frame is taken: they stay the caller's)
                self._drops.check(frame_id, 1)
        taken = None
        if (type(frames) is np.ndarray and frames.shape == self._frame_shape
                and frames.dtype == self._dtype):
            if self._closed:
                raise ValueError("write to a closed FrameWriter")
            taken = claim_handed(frames)
        if taken is not None:
            # A frame as a FramePool handed it out (whole, contiguous): it goes as it is,
            # and the writer process reads it as one frame.
            stack: np.ndarray = frames  # type: ignore[assignment]
            count = 1
            arrays: list[Any] = [stack]
            release: list[Callable[[], None]] = [taken]
        else:
            stack = as_frames(frames, self._frame_shape, self._dtype)
            if self._closed:
                raise ValueError("write to a closed FrameWriter")
            count = len(stack)
            if not count:  # nothing to store: done at once, as with threads
                empty = BackgroundWriteProcess(0)
                empty.set_running_or_notify_cancel()
                empty.set_result(0)
                return empty
            # Outside the lock: a producer waiting for shared memory must not keep the
            # others (one of them may bring the frame a chunk waits for) from going on.
            taken = claim(stack)
            if taken is not None:  # frames in a FramePool (a view of one, a stack)
                arrays, release = [stack], [taken]
            else:
                try:
                    arrays, release = self._references(stack, copy, block, limit, timeout)
                except QueueFull:
                    if index is None:  # (an append refused: its frames are lost)
                        with self._lock:
                            self._note_dropped(self._drops.refused(frame_id, count))
                    raise
        return self._send(index, count, arrays, release, int(stack.nbytes), frame_id)

    def _send(self, index: int | None, count: int, arrays: list[Any],
              release: list[Callable[[], None]], nbytes: int,
              frame_id: int | None = None) -> BackgroundWriteProcess:
        """Send ``count`` frames (in ``arrays``) to ``index`` (None: append them); the
        caller's claims on shared frames are given back if they are refused."""
        handle = running_handle(nbytes)  # frames accepted are stored: no cancel
        with self._lock:
            # With producers writing there too, the writer process knows where an
            # append goes (and checks its extent).
            start = None if index is None and self._producer is not None else (
                self._next if index is None else index)
            try:
                if self._closed:
                    raise ValueError("write to a closed FrameWriter")
                if index is None:
                    self._drops.check(frame_id, count)  # (again: other appends meanwhile)
                if start is not None:
                    end = start + count
                    if end > self._frames_held:
                        check_extent(start, count, self._frame_elements,
                                     "frames" if index is None else "index")
                    if index is not None:  # (an append goes after every frame sent)
                        sent = self._sent
                        if sent is None:  # the first write_at: appends so far are 0.._next
                            sent = self._sent = bytearray(b"\x01") * self._next
                        if start < len(sent) and any(sent[start:end]):
                            raise ValueError(f"index: frame {sent.index(1, start)} was "
                                             "already written")
            except (ValueError, FramesDropped):
                for give_back in release:  # refused: the frames are back in their pools
                    give_back()
                raise
            if index is None:
                self._note_dropped(self._drops.arrived(frame_id, count))
            if start is not None:
                self._next = max(self._next, end)
                sent = self._sent
                if sent is not None:
                    if len(sent) < end:  # (grown a page at a time, not per frame)
                        sent.extend(bytes(end - len(sent) + 4096))
                    sent[start:end] = b"\x01" * count
            self._count += count
            self._last = handle
            # The last frame stays readable for latest() until a newer one comes.
            sent = arrays[-1]
            kept = self._kept.hold(
                -1 if start is None else start + count - 1,  # (-1: placed there)
                sent[-1] if sent.ndim > len(self._frame_shape) else sent,
                release[-1] if release else None)
            if kept is not None:
                release[-1] = kept  # (the list is this call's own)
            # (No cancel: frames accepted are stored, as with threads.)
            self._remote.call(handle, "frames", (start,), arrays, release, cancellable=False)
            self._count_write(handle, nbytes, count)
        return handle

    def _references(self, stack: np.ndarray, copy: bool, block: bool, limit: float | None,
                    timeout: float | None) -> tuple[list[Any], list[Callable[[], None]]]:
        return frames_to_send(self._remote, self._shared, stack, copy, block, limit, timeout)

    def _closing(self) -> None:
        self._shared.close()

    def latest(self) -> tuple[int, np.ndarray] | None:
        """The frame this process gave last, copied (see :meth:`bgio.h5.FrameWriter.latest`);
        producers' frames are not among them. Its index is -1 when the writer process
        placed it (an append while producers write there)."""
        return self._kept.copy()


class ProcessRecordWriter(_InWriterProcess, RecordWriter):
    """A :class:`bgio.h5.RecordWriter` with ``backend="process"``: the same methods.

    Made by ``bgio.h5.RecordWriter(path, ..., backend="process")``; the
    parameters are :class:`~bgio.h5.RecordWriter`'s. Differences: ``target``
    must be a path; :attr:`group` is not available (the file is open in the
    writer process); each frame's events are checked here and copied into
    their command (pickled: one copy, made by the call), so a program may
    refill its arrays at once whatever ``copy`` says.
    """

    _kind = "RecordWriter"

    def __init__(
        self,
        target: str | os.PathLike[str],
        group: str,
        features: Mapping[str, tuple[object, object]],
        *,
        max_pending_bytes: int | None = 64 * 1024 * 1024,
        copy: bool = True,
        on_missing: str = "warn",
        on_drop: str = "warn",
        backend: str | None = "process",
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        **options: Any,
    ) -> None:
        self._lag_bounds = check_max_lag(max_lag, max_lag_bytes)
        # (Applied there, as checked here: plain float and int, which any process reads.)
        options.update(max_lag=self._lag_bounds[0], max_lag_bytes=self._lag_bounds[1])
        path = _check_path(target)
        self._missing_policy = check_on_missing(on_missing)
        self._drops = DropCounter(check_on_drop(on_drop))
        self._opened_at = time.monotonic()
        self._peak_backlog = None  # (not looked at by the appends here: see WriterStats)
        self._copy = check_copy(copy)
        self._features = check_features(features)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        # The disk is checked here (a warning is the caller's), and again, for min_free
        # only, where the file is opened.
        expected = options.pop("expected_bytes", None)
        if expected is not None:
            expected = check_count(expected, "expected_bytes")
        own_options = options.get("dataset_options") or {}
        compressed = options.get("compression") is not None or any(
            isinstance(each, Mapping) and each.get("compression") is not None
            or not isinstance(each, Mapping) for each in own_options.values())
        options["min_free"] = check_space(path, expected, options.get("min_free"), compressed,
                                          f"RecordWriter {group!r}")
        if "priority" in options:
            options["priority"] = resolve_priority(options["priority"])
        self._bound = max_pending_bytes
        self._name = f"{path}:{group}"
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._pending = 0  # bytes of events sent and not yet stored
        self._lowest = 0  # the lowest frame not appended yet
        self._waiting: dict[int, int] = {}  # frames appended above it: their events
        self._events = 0  # events of the frames below it
        self._next = 0  # after the highest frame appended (for the message at close)
        self._closed = False
        self._last: BackgroundWriteProcess | None = None
        self.missing: list[int] = []
        # The writer process keeps no bound of its own: waiting there for room would
        # stop its commands, the one that brings the missing frame among them.
        self._remote = RemoteObject(
            "records", (path, group, features),
            {**options, "copy": False, "on_missing": "ignore", "on_drop": "ignore",
             "max_pending_bytes": None},
            self._name)
        close_at_exit(self)  # left open, it is closed at exit (its file made whole)

    @property
    def group(self) -> Any:
        """Not available: the group is open in the writer process only."""
        raise AttributeError("group: with backend='process' the file is open in the writer "
                             "process only; read it once the writer is closed")

    @property
    def frames_written(self) -> int:
        """Frames appended in order so far (not counting those after a missing one)."""
        return self._lowest

    @property
    def events_written(self) -> int:
        """Events of the frames appended in order so far."""
        return self._events

    @property
    def pending_bytes(self) -> int:
        """Bytes of events accepted and not yet stored."""
        return self._pending

    def append(self, frame_index: int, events: Mapping[str, object], *, block: bool = True,
               timeout: float | None = None, copy: bool | None = None,
               frame_id: int | None = None) -> BackgroundWriteProcess:
        """Accept the events of frame ``frame_index``; see :meth:`bgio.h5.RecordWriter.append`."""
        frame_index = check_frame_index(frame_index)
        if copy is not None:
            check_copy(copy)
        limit = check_timeout(timeout)
        arrays, count = self._check_events(events)
        size = sum(int(array.nbytes) for array in arrays.values())
        handle = BackgroundWriteProcess(size)
        handle.set_running_or_notify_cancel()  # events accepted are stored: no cancel
        with self._lock:
            drops = self._drops
            first_id = drops.check(frame_id, 1)
            self._check_appendable(frame_index)
            bound = self._bound
            if bound is not None:
                def has_room() -> bool:
                    # The frame the others wait for always goes in.
                    return (self._closed or frame_index == self._lowest or self._pending == 0
                            or self._pending + size <= bound)

                try:
                    wait_for_room(self._room, has_room, block, limit, lambda: self._pending,
                                  bound, f"frame {frame_index} ({size} bytes)")
                except QueueFull:
                    self._note_dropped(drops.refused(first_id, 1))
                    raise
                self._check_appendable(frame_index)
                first_id = drops.check(frame_id, 1)  # (other appends' ids may have passed it)
            self._note_dropped(drops.arrived(first_id, 1))
            self._pending += size
            self._waiting[frame_index] = count
            while self._lowest in self._waiting:
                self._events += self._waiting.pop(self._lowest)
                self._lowest += 1
            self._next = max(self._next, frame_index + 1)
            self._last = handle
            self._remote.call(handle, "records", (frame_index, arrays))
            self._count_write(handle, size, 1)
        handle.add_done_callback(lambda _: self._events_stored(size))
        return handle

    def _check_appendable(self, frame_index: int) -> None:
        if self._closed:
            raise ValueError("append to a closed RecordWriter")
        if frame_index < self._lowest or frame_index in self._waiting:
            raise ValueError(f"frame_index: frame {frame_index} was already appended")

    def _events_stored(self, size: int) -> None:
        with self._lock:
            self._pending -= size
            self._room.notify_all()
