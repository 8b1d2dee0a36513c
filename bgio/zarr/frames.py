"""``bgio.zarr.FrameWriter``: frames appended to a Zarr v3 array in the background, paced."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ..api import PriorityLike
from ..closing import ClosesOnExit, Finish
from ..copying import copy_frames
from ..engine import submit_held
from ..h5.base import check_on_missing
from ..h5.exit import track
from ..h5.gaps import Gaps
from ..h5.layout import as_frames, check_count, check_dtype, check_shape
from ..h5.live import DEFAULT_FLUSH_INTERVAL, check_flush_options
from ..handle import (
    BackgroundWriteProcess,
    all_of,
    failure_of,
    raise_root_error,
    running_handle,
)
from ..priority import resolve_priority, validate_chunk_size
from ..process import check_backend
from ..room import wait_for_room
from ..source import Source
from ..timeouts import check_timeout
from ..worker import Job
from .record import Record, SharedRecord
from .sink import DEPTH, ArraySink, Runs
from .spec import array_spec, check_codec, check_ome, kvstore_of, ome_group, store_name

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["MAX_FRAMES", "FrameWriter", "context", "report_missing"]

#: The most frames a Zarr array holds through tensorstore (its largest index, plus 1).
MAX_FRAMES = 2**62 - 1
#: Bytes of stored groups' buffers kept for the next ones (fresh memory costs a page
#: fault per page as it is first filled: half the cost of the copy).
_SPARE_BYTES = 64 << 20

_context: Any = None
_context_lock = threading.Lock()


def context() -> Any:
    """The ``tensorstore.Context`` bgio opens its arrays in: a ``memory://`` store lives
    in it, so a reader of one opens it with this context too."""
    global _context
    with _context_lock:
        if _context is None:
            import tensorstore

            _context = tensorstore.Context()
        return _context


def _tensorstore() -> Any:
    try:
        import tensorstore
    except ImportError as exc:  # (the zarr extra)
        raise ImportError("bgio.zarr needs tensorstore: pip install 'bgio[zarr]'") from exc
    return tensorstore


class _Open:
    """A chunk (or shard) being filled, frame by frame, in any order: into a buffer of
    its own (``frames``), or, without copies, as the caller's arrays (``parts``)."""

    __slots__ = ("filled", "frames", "handle", "parts")

    def __init__(self, frames: np.ndarray | None, nbytes: int) -> None:
        self.frames = frames
        self.parts: list[tuple[int, np.ndarray]] = []  # (first position, frames), no copy
        self.filled: set[int] = set()
        self.handle = running_handle(nbytes)  # done when the group is stored

    def runs(self, first: int) -> list[tuple[int, np.ndarray]]:
        """The frames it has, as runs of ``(index, frames)``; frame ``first`` is its first."""
        if self.frames is None:
            return [(first + position, frames) for position, frames in sorted(
                self.parts, key=lambda part: part[0])]
        runs: list[tuple[int, np.ndarray]] = []
        for position in sorted(self.filled):
            if runs and runs[-1][0] + len(runs[-1][1]) == first + position:
                start, _ = runs[-1]
                runs[-1] = (start, self.frames[start - first : position + 1])
            else:
                runs.append((first + position, self.frames[position : position + 1]))
        # (Views: a slot is written once, so what they show does not change.)
        return runs


class FrameWriter(ClosesOnExit):
    """Append frames to a Zarr v3 array from a background thread, chunk by chunk.

    The array has shape ``(n, *frame_shape)`` and grows along axis 0 as
    frames are stored: it starts empty, and its length (in ``zarr.json``)
    is raised only to frames stored without a gap, every
    ``flush_interval``, with the ``"bgio"`` attribute announcing them (see
    :mod:`bgio.zarr.record`), so a reader finds no rows of fill values
    past the frames written. Frames are copied into the chunk (or, with
    ``shard_frames``, the shard) being filled (``copy=False``: kept as
    given); a full one is stored by bgio's worker through tensorstore,
    paced by ``priority``, issued in order, one object written whole per
    store (a reader sees a shard whole or not at all). Errors are raised
    by the handles and by :meth:`close`; after one, every later store
    fails with :class:`bgio.ChainError`.

    Parameters
    ----------
    store : path, str or dict
        Where the array goes: a local folder (created), ``file://PATH``,
        ``memory://NAME`` (in :func:`context`), ``s3://BUCKET/PATH`` or
        ``gs://BUCKET/PATH``, or a tensorstore kvstore spec (a dict: for S3
        ``{"driver": "s3", "bucket": ..., "path": ..., "endpoint": ...,
        "aws_region": ..., "aws_credentials": {"type": "environment"}}``).
        It must not hold an array already.
    frame_shape : tuple of int
        Shape of one frame.
    dtype : numpy dtype
        Stored exactly; frames that would lose values in it are refused.
    codec : {"zstd", "lz4", "gzip", None}, keyword-only, default "zstd"
        How chunks are compressed (``"lz4"``: Blosc's LZ4 with byte
        shuffle); None (or ``"none"``) stores them raw.
    level : int or None, keyword-only
        The codec's level (None: zstd 3, lz4 5, gzip 4).
    chunk_frames : int, keyword-only, default 1
        Frames per chunk.
    shard_frames : int or None, keyword-only
        Frames per shard (a multiple of ``chunk_frames``): that many frames'
        chunks go in one object, written when the shard is full (or at
        :meth:`flush` and :meth:`close`). None: a chunk per object.
    priority : int 1..10 or bgio.BackgroundIOPriority, keyword-only, default 4
        Pacing of the stores (compressing and writing each object).
    max_pending_bytes : int or None, keyword-only
        Bound on the bytes held for frames not yet stored (chunks or shards
        being filled count whole); an append that would exceed it waits for
        room (or raises :class:`bgio.QueueFull`). None: no bound.
    on_missing : {"warn", "raise", "ignore"}, keyword-only
        What :meth:`close` does about slots below the last frame never
        written (:meth:`write_at`): listed in :attr:`missing` in every case
        (they read as 0); "warn" warns, "raise" raises ``ValueError``.
    copy : bool, keyword-only, default True
        Copy frames into the chunk being filled, so the caller may reuse
        its buffer at once. False keeps the caller's arrays until their
        handle is done (do not change them before; a chunk's frames are
        then committed together in one tensorstore transaction): no copy
        in the caller's thread.
    flush_interval : float or None, keyword-only, default 0.25
        Announce the frames stored (raise the length) at most this often,
        in seconds; None: by ``flush_every`` only.
    flush_every : int or None, keyword-only
        Announce, too, once this many more frames are stored.
    shared : bool, keyword-only, default False
        The array is written by several writers (threads, processes,
        machines sharing the store), each its own slots with
        :meth:`write_at`: it is created if it does not exist, else joined
        (its layout is then the array's, whatever ``codec`` and the grid
        arguments say); each call's frames are stored at once (into a
        shard others fill: a read, merge and rewrite of the shard); the
        record merges every writer's frames (:class:`bgio.zarr.record.SharedRecord`).
        ``missing`` stays empty: the record lists the slots no writer wrote.
    ome : dict, True or None, keyword-only
        Write an OME-Zarr 0.5 image: ``store`` becomes a group whose
        ``ome`` attributes describe the axes (names, types, units) and the
        scale, and the array is its level ``"0"``. A dict may give
        ``axes``, ``scale`` and ``name`` (see
        :func:`bgio.zarr.spec.check_ome`); True takes the defaults (``t``
        in seconds, then ``y``, ``x`` in micrometers, scale 1).
    backend : {"thread", "process"} or None, keyword-only
        Where tensorstore is called from: bgio's threads here, or the
        writer process (see :ref:`process-backend` and
        :class:`bgio.process.zarr.ProcessFrameWriter`), which a main thread
        busy in Python does not slow. None: threads, or for a path what
        :func:`bgio.set_default_backend` set.

    Raises
    ------
    TypeError, ValueError
        For a bad argument (naming it), a store that holds an array (unless
        ``shared``), or a shared array of other frames.
    ImportError
        Without tensorstore (``pip install 'bgio[zarr]'``).

    Examples
    --------
    >>> import bgio.zarr, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.zarr")
    >>> with bgio.zarr.FrameWriter(path, (4, 4), "uint16", codec="lz4") as w:
    ...     for i in range(3):
    ...         _ = w.append(np.full((4, 4), i, dtype="uint16"))
    >>> w.frames_written, w.extent
    (3, 3)
    """

    _counts_frames = True

    def __new__(cls, *args: object, backend: str | None = None, **options: object) -> Self:
        # FrameWriter(..., backend="process") is the writer process's kind (same
        # methods); Python then runs that class's __init__ with the same arguments.
        store = args[0] if args else options.get("store")
        if isinstance(store, str) and "://" in store and not store.startswith("file://"):
            store = None  # (a memory:// array is this process's: the default is threads)
        if cls is FrameWriter and check_backend(backend, store) == "process":
            from ..process.zarr import ProcessFrameWriter  # loaded by those who use it

            return object.__new__(ProcessFrameWriter)  # type: ignore[return-value]
        return object.__new__(cls)

    def __init__(
        self,
        store: str | os.PathLike[str] | dict[str, Any],
        frame_shape: tuple[int, ...],
        dtype: np.dtype | str,
        *,
        codec: str | None = "zstd",
        level: int | None = None,
        chunk_frames: int = 1,
        shard_frames: int | None = None,
        priority: PriorityLike = 4,
        max_pending_bytes: int | None = None,
        on_missing: str = "warn",
        copy: bool = True,
        flush_interval: float | None = DEFAULT_FLUSH_INTERVAL,
        flush_every: int | None = None,
        shared: bool = False,
        ome: dict[str, Any] | bool | None = None,
        backend: str | None = None,
    ) -> None:
        kvstore = kvstore_of(store)
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be True or False, got {type(shared).__qualname__}")
        self._shared = shared
        if not shared and kvstore["driver"] == "file" and any(
                os.path.exists(os.path.join(kvstore["path"], name))
                for name in (".zarray", ".zgroup", "zarr.json")):
            raise ValueError(f"store: {store_name(store, kvstore)!r} holds a Zarr array or group "
                             f"already")
        self._frame_shape = check_shape(frame_shape, "frame_shape")
        self._dtype = check_dtype(dtype)
        if self._dtype.kind not in "biufc" or self._dtype.itemsize > 8 * (
                1 + (self._dtype.kind == "c")):
            raise TypeError(f"dtype: Zarr stores booleans, integers, floats and complex "
                            f"numbers of up to 64 bits, not {self._dtype}")
        codec, level = check_codec(codec, level)
        chunk_frames = check_count(chunk_frames, "chunk_frames")
        if shard_frames is not None:
            shard_frames = check_count(shard_frames, "shard_frames")
            if shard_frames % chunk_frames:
                raise ValueError(f"shard_frames must be a multiple of chunk_frames "
                                 f"({chunk_frames}), got {shard_frames}")
        self._missing_policy = check_on_missing(on_missing)
        if not isinstance(copy, bool):
            raise TypeError(f"copy must be True or False, got {type(copy).__qualname__}")
        self._copy = copy
        self._spare: list[np.ndarray] = []
        flush_interval, flush_every = check_flush_options(flush_interval, flush_every)
        self._profile = resolve_priority(priority)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        self._bound = max_pending_bytes
        tensorstore = _tensorstore()
        self._ome = check_ome(ome, len(self._frame_shape))
        root = kvstore
        if self._ome is not None:  # an image group; the array is its level "0"
            kvstore = {**kvstore, "path": kvstore["path"] + "0/"}
        spec = array_spec(kvstore, self._frame_shape, self._dtype, codec, level, chunk_frames,
                          shard_frames, None if self._ome is None else
                          [axis["name"] for axis in self._ome["axes"]])
        self._name = store_name(store, kvstore)
        self._group = shard_frames or chunk_frames  # frames per store
        try:
            keys = tensorstore.KvStore.open(kvstore, context=context()).result()
            if self._ome is not None:
                group = tensorstore.KvStore.open(root, context=context()).result()
                if group.read("zarr.json").result().state != "value":
                    group.write("zarr.json",
                                json.dumps(ome_group(self._ome), indent=2).encode()).result()
            metadata = self._create_or_join(tensorstore, spec, keys)
            # The same array, its metadata assumed at the largest length: the stores
            # write their chunks through it before the length is raised (see ArraySink).
            # Every frame gets its object, a dark one too (tensorstore leaves out chunks
            # equal to the fill value by default): recover() finds frames by their objects.
            assumed = {"driver": "zarr3", "kvstore": kvstore, "assume_metadata": True,
                       "store_data_equal_to_fill_value": True,
                       "metadata": {**metadata, "shape": [MAX_FRAMES, *self._frame_shape]}}
            chunks = tensorstore.open(assumed, context=context()).result()
            if shared:
                record: Record = SharedRecord(keys, self._name, flush_interval, flush_every,
                                              f"{socket.gethostname()}:{os.getpid()}:"
                                              f"{uuid.uuid4().hex[:8]}")
            else:
                record = Record(keys, self._name, flush_interval, flush_every)
            try:
                record.start()
            except BaseException:
                record.abandon()
                raise
        except ValueError as exc:
            if "ALREADY_EXISTS" in str(exc):
                raise ValueError(f"store: {self._name!r} holds an array already") from None
            raise ValueError(f"store: {self._name!r}: {exc}") from None
        paced = self._profile.bandwidth_pct < 100 or self._profile.max_rate is not None
        self._sink = ArraySink(chunks, record, self._name, 1 if paced else DEPTH,
                               tensorstore.Transaction)
        self._frame_bytes = math.prod(self._frame_shape) * self._dtype.itemsize
        # Reentrant: a store submitted at interpreter exit runs in the submitting thread,
        # and its done callback takes the lock again.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._pending = 0  # bytes of groups being filled and of stores not yet done
        self._open: dict[int, _Open] = {}
        self._next = 0  # after the highest frame written
        self._count = 0
        self._holes = Gaps()  # slots below _next not written (yet)
        self._last: BackgroundWriteProcess | None = None
        self._held: list[Any] = []  # stores this thread must write itself (see _queue)
        self._stores = 0  # stores made so far (their sequence numbers)
        self._closed = False
        self.missing: list[int] = []  # after close(): slots never written
        track(self)  # closed at exit if the program does not

    def _create_or_join(self, tensorstore: Any, spec: dict[str, Any], keys: Any
                        ) -> dict[str, Any]:
        """Create the array (0 frames long); shared, join it if it exists. Return its
        metadata (a joined array's layout is its own)."""
        try:
            tensorstore.open(spec, context=context()).result()
            return dict(spec["metadata"])
        except ValueError as exc:
            if not self._shared or "ALREADY_EXISTS" not in str(exc):
                raise
        document = json.loads(keys.read("zarr.json").result().value)
        if document.get("node_type") != "array" or document.get("data_type") != \
                self._dtype.name or tuple(document["shape"][1:]) != self._frame_shape:
            raise ValueError(
                f"store: {self._name!r} holds an array of {document.get('data_type')} frames "
                f"of shape {tuple(document.get('shape', [0])[1:])}, not {self._dtype} "
                f"{self._frame_shape}") from None
        self._group = int(document["chunk_grid"]["configuration"]["chunk_shape"][0])
        return {key: value for key, value in document.items() if key != "attributes"}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bgio.zarr.FrameWriter {state} {self._name!r} frames={self._count}>"

    @property
    def frames_written(self) -> int:
        """Frames accepted by :meth:`append` and :meth:`write_at` so far."""
        return self._count

    @property
    def extent(self) -> int:
        """Frames the array holds once closed: one after the highest frame written."""
        return self._next

    @property
    def pending_bytes(self) -> int:
        """Bytes held for frames not yet stored: chunks being filled, and stores queued."""
        return self._pending

    def append(self, frames: object, *, block: bool = True,
               timeout: float | None = None) -> BackgroundWriteProcess:
        """Queue one frame (``frame_shape``) or a stack of frames after the highest written.

        Returns a handle done once every chunk (or shard) holding the frames
        is stored (or failed with the first error).

        Raises
        ------
        ValueError
            If the writer is closed, or the frames do not have ``frame_shape``.
        TypeError
            If the frames would lose values in ``dtype`` (see
            :func:`bgio.h5.layout.as_frames`).
        bgio.QueueFull
            No room under ``max_pending_bytes`` (``block=False``, or ``timeout``).
        """
        return self._put(None, frames, block, timeout)

    def write_at(self, index: int, frames: object, *, block: bool = True,
                 timeout: float | None = None) -> BackgroundWriteProcess:
        """Put frames at ``index`` on, in any order (several threads may); each slot is
        written once. See :meth:`append` for the rest."""
        index = check_count(index, "index", minimum=0)
        return self._put(index, frames, block, timeout)

    def _put(self, index: int | None, frames: object, block: bool,
             timeout: float | None) -> BackgroundWriteProcess:
        try:
            return self._accept(index, frames, block, timeout)
        finally:
            self._serve_held()

    def _checked_frames(self, index: int | None, frames: object) -> np.ndarray:
        """``frames`` as a stack of this writer's frames, checked to fit from ``index``
        (in the caller: TypeError/ValueError naming the argument)."""
        stack = as_frames(frames, self._frame_shape, self._dtype)
        if index is not None and index + len(stack) > MAX_FRAMES:
            raise ValueError(f"index: frames up to {MAX_FRAMES - 1} fit in a Zarr array "
                             f"through tensorstore, not {index + len(stack) - 1}")
        return stack

    def _accept(self, index: int | None, frames: object, block: bool,
                timeout: float | None) -> BackgroundWriteProcess:
        limit = check_timeout(timeout)
        stack = self._checked_frames(index, frames)
        count = len(stack)
        with self._lock:
            if self._closed:
                raise ValueError("write to a closed bgio.zarr.FrameWriter")
            if not count:
                empty = running_handle(0)
                empty.set_result(0)
                return empty  # (nothing placed: the append point stays)
            start = self._check_slots(index, count)
            if self._bound is not None:
                bound = self._bound

                def has_room() -> bool:
                    first = self._next if index is None else index
                    cost, touched = self._cost(first, count)
                    # (Room freed only by this call's own frames, completing a group it
                    # touches, would never come: the held bytes of those do not count.)
                    return (self._closed or cost == 0 or self._pending <= touched
                            or self._pending + cost <= bound)

                wait_for_room(self._room, has_room, block, limit, lambda: self._pending,
                              bound, f"{count} frames")
                if self._closed:
                    raise ValueError("write to a closed bgio.zarr.FrameWriter")
                # Others may have written meanwhile: where an append goes, and whether the
                # slots are still free, is decided now.
                start = self._check_slots(index, count)
            if start > self._next:
                self._holes.add(self._next, start)
            if self._shared:  # (others fill the rest of the groups: store the frames now)
                handle = self._store_now(start, stack)
                self._next = max(self._next, start + count)
                self._count += count
                self._count_write(handle, count * self._frame_bytes, count)
                return handle
            handles: list[BackgroundWriteProcess] = []
            offset = 0
            while offset < count:  # the frames going into each group, in turn
                take = min(count - offset, self._group - (start + offset) % self._group)
                handles.append(self._place(start + offset, stack[offset : offset + take]))
                offset += take
            self._next = max(self._next, start + count)
            self._count += count
            # (A group's handle counts the group's bytes: the call's handle, its own.)
            handle = handles[0] if len(handles) == 1 and self._group == 1 else all_of(
                handles, count * self._frame_bytes)
            self._count_write(handle, count * self._frame_bytes, count)
        return handle

    def _check_slots(self, index: int | None, count: int) -> int:
        # (lock held) Where the frames go; ValueError if a slot was written already.
        start = self._next if index is None else index
        for slot in range(start, min(start + count, self._next)):
            if slot not in self._holes:
                raise ValueError(f"index: frame {slot} was already written")
        return start

    def _cost(self, start: int, count: int) -> tuple[int, int]:
        """Bytes the frames ``start..start+count-1`` would add (the groups they open), and
        the bytes held now for the open groups they go into."""
        size = self._group * self._frame_bytes
        groups = range(start // self._group, (start + count - 1) // self._group + 1)
        touched = sum(size for group in groups if group in self._open)
        return len(groups) * size - touched, touched

    def _place(self, slot: int, frames: np.ndarray) -> BackgroundWriteProcess:
        # (lock held) Put frames (all in one group) into their group, copied or not; store
        # the group once it is full.
        number, position = divmod(slot, self._group)
        group = self._open.get(number)
        if group is None:
            held = self._group * self._frame_bytes
            buffer = None
            if self._copy:
                buffer = self._spare.pop() if self._spare else np.empty(
                    (self._group, *self._frame_shape), self._dtype)
            group = self._open[number] = _Open(buffer, held)
            self._pending += held
            group.handle.add_done_callback(lambda _: self._stored(held, buffer))
        if group.frames is not None:
            copy_frames(group.frames[position : position + len(frames)], frames)
        else:
            group.parts.append((position, frames))
        for index in range(slot, slot + len(frames)):
            self._holes.discard(index)
        group.filled.update(range(position, position + len(frames)))
        if len(group.filled) == self._group:
            del self._open[number]
            self._submit(Runs(group.runs(number * self._group), frozenset((number,)),
                              group.handle))
        return group.handle

    def _store_now(self, start: int, stack: np.ndarray) -> BackgroundWriteProcess:
        # (lock held) A shared array's frames: one store of their own, copied if asked.
        for index in range(start, start + len(stack)):
            self._holes.discard(index)
        frames = stack
        if self._copy:
            frames = np.empty_like(stack)
            copy_frames(frames, stack)
        held = frames.nbytes
        handle = running_handle(held)
        self._pending += held
        handle.add_done_callback(lambda _: self._stored(held, None))
        groups = frozenset(range(start // self._group, (start + len(stack) - 1) // self._group + 1))
        self._submit(Runs([(start, frames)], groups, handle))
        return handle

    def _stored(self, size: int, buffer: np.ndarray | None) -> None:
        with self._lock:
            self._pending -= size
            # (Tensorstore is done with it; after a failure a flushed part of the group
            # may still be in flight, reading it.)
            if (buffer is not None and (len(self._spare) + 1) * buffer.nbytes <= _SPARE_BYTES
                    and self._sink.failure is None):
                self._spare.append(buffer)
            self._room.notify_all()

    def _submit(self, runs: Runs) -> None:
        # (lock held) One store, issued in order after the others. The worker's handle is
        # done once the store is issued; the store's own (runs.handle) once it is stored.
        size = len(runs)
        runs.handle.total_bytes = size
        self._stores += 1
        runs.sequence = self._stores
        issued = BackgroundWriteProcess(size)
        stored, sink = runs.handle, self._sink

        def not_issued(done: BackgroundWriteProcess) -> None:
            error = failure_of(done)
            if error is not None:  # (the store never got to tensorstore)
                sink.refused(error, stored)
                if done.cancelled():
                    stored.set_stopped()
                else:
                    stored.set_exception(error)

        issued.add_done_callback(not_issued)
        # A cancel of the store's handle cancels its job, if the worker has not issued it.
        def cancel_job() -> None:
            issued.cancel()

        stored._on_cancel = cancel_job
        source = Source((runs,), None, size, False, size)
        self._queue(Job(issued, self._sink, source, self._profile,  # type: ignore[arg-type]
                        chunk_size=max(size, 1)))

    def _queue(self, job: Job) -> None:
        # (lock held) Queued in order now; if no worker can take it (the interpreter is
        # shutting down), this thread writes it once the lock is released (_serve_held):
        # the stores' callbacks, on tensorstore's threads, take the lock.
        self._last = job.handle
        serve = submit_held(job)
        if serve is not None:
            self._held.append(serve)

    def _serve_held(self) -> None:
        # (lock released) Write what _queue left to this thread, in order.
        while True:
            with self._lock:
                if not self._held:
                    return
                serve = self._held.pop(0)
            serve()

    def _store_open(self, closing: bool) -> None:
        # (lock held) Store the groups being filled, as runs of the frames they have: at a
        # flush as a store of its own (the group stays open, and is stored whole once
        # full), at the close as the group's last.
        for number in sorted(self._open):
            group = self._open.pop(number) if closing else self._open[number]
            runs = group.runs(number * self._group)
            self._submit(Runs(runs, frozenset((number,)),
                              group.handle if closing else running_handle(0)))

    def flush(self, timeout: float | None = None) -> None:
        """Store everything accepted so far (chunks being filled too, as far as they are
        filled) and wait for it, or raise the first error.

        Raises
        ------
        TimeoutError
            If the stores are not done after ``timeout`` seconds.
        """
        check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        with self._lock:
            if not self._closed:
                self._store_open(closing=False)
            last = self._last
            mark = self._stores
        self._serve_held()
        if last is not None:
            if not last.wait(timeout):  # (every store issued)
                raise TimeoutError(f"frames not stored after {timeout} s")
            raise_root_error(last)
        sink = self._sink
        if not sink.drain(left(), mark):  # (every store accepted so far landed)
            raise TimeoutError(f"frames not stored after {timeout} s")
        if sink.failure is not None:
            raise sink.failure
        ticket = sink.record.announce_now()
        if not sink.record.settle(left(), ticket):
            raise TimeoutError(f"frames not announced after {timeout} s")

    @overload
    def close(self, timeout: float | None = None, *, wait: Literal[True] = True) -> None: ...

    @overload
    def close(self, timeout: None = None, *, wait: Literal[False]) -> BackgroundWriteProcess: ...

    def close(self, timeout: float | None = None, *,
              wait: bool = True) -> BackgroundWriteProcess | None:
        """Store what is left and wait for the stores (``wait=False``: return at once, with
        a handle that ends when they are done; its ``result()`` raises what ``close()``
        would have).

        Raises
        ------
        TimeoutError
            If the stores are not done after ``timeout`` seconds.
        Exception
            The first error of the stores.
        ValueError
            With ``on_missing="raise"``, if slots were never written.
        """
        return self._close(timeout, wait)

    def _begin_close(self) -> Finish:
        with self._lock:
            if self._closed:
                return self._again()
            self._closed = True
            self._room.notify_all()
            self._store_open(closing=True)
            # (Shared: the slots this writer skipped are others'; the record tells.)
            self.missing = [] if self._shared else self._holes.indices()
            self._sink.final_length = self._next
            self._sink.final_missing = [] if self._shared else self._holes.ranges()
            closing = BackgroundWriteProcess(0)
            # Queued last on the array's lane: it runs after every store, even a failed one.
            self._queue(Job(closing, self._sink,  # type: ignore[arg-type]
                            Source((), None, 0, False, 0), self._profile, close=True))
        self._serve_held()
        return self._finish_close

    def _finish_close(self, timeout: float | None) -> None:
        last = self._last
        assert last is not None
        if not last.wait(timeout):
            raise TimeoutError(f"frames not stored after {timeout} s")
        raise_root_error(last)
        report_missing(self.missing, self._missing_policy, self._next, self._name)


def report_missing(missing: list[int], policy: str, extent: int, name: str) -> None:
    """What a close does about the slots below ``extent`` never written, by ``on_missing``
    (``policy``): warn, raise ``ValueError``, or nothing."""
    if missing and policy != "ignore":
        message = (f"{len(missing)} slot(s) below frame {extent} of {name!r} were never "
                   f"written (they read as 0)")
        if policy == "raise":
            raise ValueError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=7)
