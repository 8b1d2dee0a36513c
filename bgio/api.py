"""The public calls: check everything in the caller's thread, then hand the write to the engine."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from .engine import submit
from .engine import wait_all as wait_threads
from .handle import BackgroundWriteProcess
from .objects import is_object_url, local_path, object_target
from .pool import take_frames
from .priority import (
    BackgroundIOPriority,
    PriorityLike,
    resolve_priority,
    validate_chunk_size,
)
from .process import check_backend
from .protocols import Data, Destination
from .sinks import (
    PathSink,
    Sink,
    check_path_options,
    fit_chunk_size,
    sink_can_sync,
    sink_for,
)
from .sinks.objects import DEFAULT_PART_SIZE, MIN_PART_SIZE, MIN_PIECE, ObjectSink
from .source import WHOLE, Source, make_source
from .timeouts import check_timeout
from .worker import Job

__all__ = ["PriorityLike", "bgwrite", "bgwrite_chunk", "hand_over_frames", "open_sink", "prepare",
           "uses_writer_process", "wait_all", "writer_process_ended"]


def _check_chain_after(chain_after: object) -> BackgroundWriteProcess | None:
    if chain_after is None or isinstance(chain_after, BackgroundWriteProcess):
        return chain_after
    raise TypeError(
        f"chain_after must be a BackgroundWriteProcess (a handle from bgwrite) or None, "
        f"got {type(chain_after).__qualname__}"
    )


def prepare(
    handle: BackgroundWriteProcess | type[BackgroundWriteProcess],
    sink: Sink,
    data: object,
    profile: BackgroundIOPriority,
    chunk_size: int | None = None,
    close_when_finished: bool = False,
    chain_after: object = None,
    *,
    fsync: bool = False,
    copy: bool = False,
) -> Job:
    """Check ``data`` and ``chain_after`` in the caller and build the job (not queued yet).

    ``handle`` is a handle class to instantiate, or an instance whose
    ``total_bytes`` is filled in (the compatibility layer's thread-like handle).
    """
    source = make_source(data, sink.kind, copy=copy)
    chain = _check_chain_after(chain_after)
    if isinstance(handle, type):
        handle = handle(source.total)
    else:
        handle.total_bytes = source.total
    # A path is opened for the write, so it is closed after it too.
    close = bool(close_when_finished) or isinstance(sink, (PathSink, ObjectSink))
    size = fit_chunk_size(sink, chunk_size or profile.default_chunk_size)
    hand_over_frames(source, handle)
    return Job(handle, sink, source, profile, size, close, chain, fsync)


def hand_over_frames(source: Source, handle: BackgroundWriteProcess) -> None:
    """The write of ``source`` takes the :class:`~bgio.FramePool` frames among its data,
    each back in its pool once ``handle`` is done."""
    if not source.lazy and source.kind != "text":
        take_frames(source.chunks(WHOLE), handle)


def open_sink(file: object, mode: str | None, fsync: bool, atomic: bool,
              direct: bool = False, *, profile: BackgroundIOPriority | None = None,
              storage_options: object = None, store: object = None,
              exclusive: bool = False, many: bool = False) -> Sink:
    """The sink for ``file`` with the path-only and object-only options checked (in
    the caller). ``profile`` sets an upload's parts in flight (preset 4's if None);
    ``many``: the sink serves several writes (a Writer's), each done before the last."""
    path = local_path(file) if store is None else None
    if path is not None:  # file:///dir/name: a path, written whole as an object is
        if storage_options is not None:
            raise ValueError("storage_options do not apply to file:// URLs")
        if mode not in (None, "wb", "xb"):
            raise ValueError(f"mode: a file:// URL is written whole ('wb', or 'xb' to "
                             f"create it only if it does not exist), not {mode!r}")
        atomic = not (exclusive or mode == "xb")  # (exclusive: created, or refused)
        file, mode, exclusive = path, "wb" if atomic else "xb", False
    elif store is not None or is_object_url(file):
        if fsync:
            raise ValueError("fsync does not apply to an object store: an object is stored "
                             "durably once complete, when its write (or close) is done")
        return _object_sink(file, mode, atomic, direct, profile or resolve_priority(4),
                            storage_options, store, exclusive, many)
    if storage_options is not None:
        raise ValueError(f"storage_options apply to object-store URLs only, not "
                         f"{type(file).__qualname__}")
    if exclusive:
        raise ValueError("exclusive applies to object-store URLs only (for a path, "
                         "mode='xb' creates the file or fails)")
    if isinstance(file, (str, bytes, os.PathLike)):
        return PathSink(file, "wb" if mode is None else mode, bool(atomic), direct=bool(direct))
    check_path_options(file, mode, atomic, direct)
    sink = sink_for(file)
    if fsync and not sink_can_sync(sink):
        raise ValueError("fsync=True needs a destination with a file descriptor "
                         f"({type(file).__qualname__} has none)")
    return sink


def _object_sink(file: object, mode: str | None, atomic: bool, direct: bool,
                 profile: BackgroundIOPriority, storage_options: object, store: object,
                 exclusive: object, many: bool) -> ObjectSink:
    """The sink of an object-store destination, checked in the caller."""
    if not isinstance(exclusive, bool):
        raise TypeError(f"exclusive must be True or False, got {type(exclusive).__qualname__}")
    if mode not in (None, "wb", "xb"):
        raise ValueError(f"mode: an object is written whole ('wb', or 'xb' to create it "
                         f"only if it does not exist), not {mode!r}")
    if direct:
        raise ValueError("direct applies to paths only, not to an object store")
    del atomic  # (an object is complete or absent: atomic=True is what it always is)
    target = object_target(file, storage_options, store)
    chunk = profile.default_chunk_size
    piece: int | None = None  # (None: the chunk size)
    if profile.max_rate is not None:  # a 40th of a second's worth at a time
        part_size = max(DEFAULT_PART_SIZE, chunk)
        piece = min(chunk, max(MIN_PIECE, int(profile.max_rate / 40)))
    elif profile.bandwidth_pct < 100:
        # A piece is a part, one in flight: handing a piece over waits for the part
        # before it to be sent, so the worker's busy time is the network's.
        part_size = piece = max(MIN_PART_SIZE, chunk)
    else:
        part_size = max(DEFAULT_PART_SIZE, chunk)
    return ObjectSink(target, part_size, profile.upload_concurrency,
                      exclusive=exclusive or mode == "xb", copy=many, piece_size=piece)


def bgwrite(
    file: Destination,
    data: Data,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
    *,
    mode: str | None = None,
    fsync: bool = False,
    atomic: bool = False,
    copy: bool = False,
    offset: int | None = None,
    direct: bool = False,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> BackgroundWriteProcess:
    """Write ``data`` to ``file`` in the background; return a handle at once.

    The data is not copied: it is written through a view of its memory, so
    leave it unchanged until the write is done. Writes to one file object
    are written in call order, never interleaved.

    Parameters
    ----------
    file : file object, path, int file descriptor, socket or object-store URL
        A binary or text stream (anything with a ``write`` method), open and
        writable; a path (``str`` or ``os.PathLike``), opened by the worker
        and closed when the write ends; an int file descriptor (a file, a
        pipe end, blocking or not); a connected stream socket; or an object
        in an object store, ``s3://bucket/key`` or ``gs://bucket/key``
        (through obstore, the ``s3`` extra), uploaded whole: the object
        appears complete when the handle is done, or not at all (see
        :ref:`object-stores`; ``file:///dir/name`` is that path, written
        the same way). A full non-blocking destination is waited for,
        never spun on.
    data : bytes-like, numpy array, str, list of those, or iterable of those
        Buffers are written as their raw bytes (numpy arrays in C order; a
        non-contiguous array is refused). str goes to text streams only,
        bytes to binary streams only. A list or tuple is checked now; any
        other iterable (a generator, say) is consumed lazily by the worker.
    close_when_finished : bool, default False
        Close ``file`` when the write ends, whether it succeeded, failed or
        was cancelled.
    chain_after : BackgroundWriteProcess or None
        Start only after this write (to any destination) is done; if it
        failed or was cancelled, this write writes nothing and fails with
        :class:`bgio.ChainError`.
    priority : int 1..10 or BackgroundIOPriority, default 4
        A preset of :data:`bgio.PRESETS` (1 fastest, 10 gentlest) or a profile.
    mode : {"wb", "ab", "xb"}, keyword-only, paths only
        Truncate (the default), append, or create a new file.
    fsync : bool, keyword-only, default False
        Make the data durable (flush and ``fdatasync``) before the handle
        completes. Pipes and sockets have nothing to sync.
    atomic : bool, keyword-only, default False, paths only
        Write a temporary file in the same directory and rename it over the
        target once complete and synced: a crash leaves the old file or the
        new one, never a part; a failure or cancel leaves the old one and no
        temporary file.
    copy : bool, keyword-only, default False
        Snapshot the data now (one copy), for programs that reuse their
        buffers; a lazy iterable is then consumed at once. Without it the
        buffer must stay unchanged until the write is done.
    offset : int or None, keyword-only, h5py datasets only
        ``file`` may be an ``h5py.Dataset``: ``data`` is one frame
        (``dataset.shape[1:]``) or a stack of frames, appended along axis 0
        (the dataset must be able to grow) or written from frame ``offset``.
        A dtype that would lose values is a ``TypeError``; a wrong frame
        shape a ``ValueError``.
    direct : bool, keyword-only, default False, paths only
        Write past the page cache (``O_DIRECT``): each chunk goes from
        memory to the device, so pacing and the worker's I/O priority govern
        the disk itself and nothing of the file is left in the cache. Data
        not aligned in memory is copied chunk by chunk into an aligned
        buffer of bgio's (one copy); the unaligned end of a write is written
        through the cache and sent to the device at once. Refused with a
        ``ValueError`` where the platform or the file system has no direct
        I/O. See :ref:`direct-io`.
    backend : {"thread", "process"} or None, keyword-only
        (None: threads, or for a path what :func:`bgio.set_default_backend`
        set.)
        Who writes: a worker thread of this process, or bgio's writer
        process, whose throughput a main thread busy in Python cannot
        starve. It writes paths, file descriptors, plain sockets and binary
        file objects with a ``fileno()`` (flushed first, then written
        through their descriptor); a ``BytesIO``, a text stream or a TLS
        socket is a ``ValueError``. Large buffers are read by the writer
        process from this one's memory, small ones and iterables copied
        into shared memory. See :ref:`process-backend`. An object-store
        upload is written by threads.
    storage_options : dict or None, keyword-only, object stores only
        The store's options, as obstore's ``from_url`` takes them (for S3:
        ``endpoint``, ``region``, ``access_key_id``, ``secret_access_key``,
        ``client_options``, ``retry_config``, ...). Without a
        ``retry_config`` an unreachable store fails the upload after 3
        retries within 30 s.
    store : obstore store or None, keyword-only
        A store made already (``obstore.store.S3Store``, ``MemoryStore``,
        ...); ``file`` is then the object's key in it.
    exclusive : bool, keyword-only, default False, object stores only
        Refuse to replace an existing object: the write fails with
        ``FileExistsError`` and the object is left as it was (a conditional
        create, sent in one request; ``mode="xb"`` says the same).

    Returns
    -------
    BackgroundWriteProcess
        The handle: ``result()`` waits and returns the bytes written or
        raises the write's error.

    Raises
    ------
    TypeError
        ``file`` has no ``write``; ``data`` is of an unsupported type or the
        wrong kind for the stream (str to binary, bytes to text);
        ``priority`` or ``chain_after`` has the wrong type.
    ValueError
        ``file`` is closed or not writable (or a path in a missing
        directory); ``priority`` is out of range; a buffer is not contiguous;
        ``mode``, ``atomic`` or ``direct`` given for something that is not
        a path; ``fsync`` for a destination without a file descriptor;
        ``direct`` where the file system does not support it; an
        object-store URL without a bucket or key, options the store
        refuses, ``storage_options``, ``store`` or ``exclusive`` for
        something that is not an object.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.BytesIO()
    >>> bgio.bgwrite(out, b"hello " * 3, priority=7).result()
    18
    """
    h5py = sys.modules.get("h5py")  # a Dataset cannot exist unless h5py is imported
    if h5py is not None and isinstance(file, h5py.Dataset):
        return _bgwrite_dataset(file, data, close_when_finished, chain_after, priority, mode,
                                fsync, atomic or direct, copy, offset)
    if offset is not None:
        raise ValueError("offset applies to h5py datasets only")
    if uses_writer_process(backend, file, store):
        return _bgwrite_process(file, data, close_when_finished, chain_after, priority, None,
                                mode=mode, fsync=fsync,
                                atomic=atomic, copy=copy, direct=direct)
    profile = resolve_priority(priority)
    sink = open_sink(file, mode, fsync, atomic, direct, profile=profile,
                     storage_options=storage_options, store=store, exclusive=exclusive)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, None, close_when_finished,
                          chain_after, fsync=bool(fsync), copy=bool(copy)))


def uses_writer_process(backend: object, file: object, store: object = None) -> bool:
    """Whether a write of ``file`` goes to bgio's writer process (``backend`` checked).

    An object-store destination (a URL, or a key with ``store``) is uploaded by threads,
    whatever :func:`bgio.set_default_backend` says; ``backend="process"`` for one is a
    ``ValueError``.
    """
    objects = store is not None or is_object_url(file)
    if objects and backend is None:
        backend = "thread"  # (uploads are written by threads, whatever the default)
    if check_backend(backend, file) != "process" or writer_process_ended():
        return False
    if objects:
        raise ValueError("backend='process' writes files; an object-store upload is "
                         "written by threads (backend='thread')")
    return True


def writer_process_ended() -> bool:
    """True once bgio's writer process has ended at exit: ``backend="process"`` then
    means the threads (which write in the caller's thread by then), not a loss."""
    parent = sys.modules.get("bgio.process.parent")
    return parent is not None and parent.exited()


def _bgwrite_process(file: object, data: object, close_when_finished: bool, chain_after: object,
                     priority: PriorityLike, chunk_size: int | None, *, mode: str | None,
                     fsync: bool, atomic: bool, copy: bool,
                     direct: bool) -> BackgroundWriteProcess:
    """A write done by the writer process (:mod:`bgio.process`), checked here first."""
    from .process import parent  # loaded by those who use it
    from .process.destination import destination_for

    profile = resolve_priority(priority)
    chain = _check_chain_after(chain_after)
    source = make_source(data, "bytes", copy=bool(copy))
    destination = destination_for(file, mode, bool(atomic), bool(direct),
                                  bool(close_when_finished))
    handle = BackgroundWriteProcess(source.total)
    options = {"mode": mode, "fsync": bool(fsync), "atomic": bool(atomic),
               "direct": bool(direct), "priority": profile, "chunk_size": chunk_size}
    try:
        hand_over_frames(source, handle)
        parent.submit(handle, source, destination, options, chain)
    except BaseException:
        destination.discard()
        raise
    return handle


def _bgwrite_dataset(dataset: object, data: object, close_when_finished: bool,
                     chain_after: object, priority: PriorityLike, mode: str | None,
                     fsync: bool, atomic: bool, copy: bool,
                     offset: int | None) -> BackgroundWriteProcess:
    if mode is not None or atomic or close_when_finished:
        raise ValueError("mode, atomic, direct and close_when_finished do not apply to an h5py "
                         "dataset")
    from .h5.dataset import write_dataset  # h5py is loaded already if we are here

    profile = resolve_priority(priority)
    return write_dataset(dataset, data, profile, offset=offset,
                         chain_after=_check_chain_after(chain_after), fsync=bool(fsync),
                         copy=bool(copy))


def bgwrite_chunk(
    file: Destination,
    data: Data,
    chunk_size: int,
    close_when_finished: bool = False,
    chain_after: BackgroundWriteProcess | None = None,
    priority: PriorityLike = 4,
    *,
    mode: str | None = None,
    fsync: bool = False,
    atomic: bool = False,
    copy: bool = False,
    direct: bool = False,
    backend: str | None = None,
    storage_options: dict[str, Any] | None = None,
    store: object = None,
    exclusive: bool = False,
) -> BackgroundWriteProcess:
    """Like :func:`bgwrite`, with chunks of ``chunk_size`` bytes instead of the profile's.

    Parameters
    ----------
    chunk_size : int
        Bytes (characters for text) per chunk, >= 1. Smaller chunks pace
        more finely; larger ones cost fewer system calls. With
        ``direct=True`` choose a multiple of 4096: a chunk that ends
        unaligned costs two small synchronous device writes.

    Notes
    -----
    See :func:`bgwrite` for the other parameters, the return value and the
    errors; a ``chunk_size`` below 1 is a ``ValueError``.

    Examples
    --------
    >>> import bgio, io
    >>> out = io.StringIO()
    >>> bgio.bgwrite_chunk(out, "abcdef", 4).result(), out.getvalue()
    (6, 'abcdef')
    """
    size = validate_chunk_size("chunk_size", chunk_size)
    if uses_writer_process(backend, file, store):
        return _bgwrite_process(file, data, close_when_finished, chain_after, priority, size,
                                mode=mode, fsync=fsync,
                                atomic=atomic, copy=copy, direct=direct)
    profile = resolve_priority(priority)
    sink = open_sink(file, mode, fsync, atomic, direct, profile=profile,
                     storage_options=storage_options, store=store, exclusive=exclusive)
    return submit(prepare(BackgroundWriteProcess, sink, data, profile, size, close_when_finished,
                          chain_after, fsync=bool(fsync), copy=bool(copy)))


def wait_all(timeout: float | None = None) -> bool:
    """Wait until every background write started so far is done, the writer process's too.

    Parameters
    ----------
    timeout : float or None
        Seconds to wait at most; None waits as long as it takes.

    Returns
    -------
    bool
        True if nothing is pending any more, False on timeout.

    Raises
    ------
    ValueError, TypeError
        If ``timeout`` is negative, NaN, longer than the platform can wait
        (``math.inf`` means no limit), or not a number.
    """
    limit = check_timeout(timeout)
    deadline = None if limit is None else time.monotonic() + limit
    parent = sys.modules.get("bgio.process.parent")  # none if no write asked for a process
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not wait_threads(left):
            return False
        if parent is None:
            return True
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not parent.wait_all(left):
            return False
        # A thread's write chained after one of the writer process's may have begun.
        if wait_threads(0):
            return True
