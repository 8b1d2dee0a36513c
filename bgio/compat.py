"""Drop-in replacement for ``nonblock``: its names and camelCase keywords.

Replace ``from nonblock import bgwrite`` (or ``from nonblock.BackgroundWrite
import ...``) with ``from bgio.compat import ...``; the readers
(``nonblock_read``, ``bgread``, ``BackgroundReadData``) are here too, from
:mod:`bgio.compat_read`, which lists their differences. The writes behave
as before, with these differences, each a fix:

* ``bandwidthPct`` means what it says: at 20 the writer is busy 20 % of the
  time (the older module's arithmetic gave 56 %).
* Data is never copied or sliced in the caller; ``bgwrite`` returns at once.
* Chained writes wait on an event instead of polling every ``chainPollTime``
  (the value is still accepted and stored).
* Errors are kept on the handle: ``result()`` re-raises them, ``finished``
  becomes True, and chained writes fail with :class:`bgio.ChainError`
  instead of waiting forever.
* Writes to one file object are ordered even without ``chainAfter``.
* The handle is a :class:`threading.Thread` as before (``start()``,
  ``join()``, ``is_alive()``, ``isAlive()``, ``name``, ``daemon``,
  ``ident``, ``startedWriting``, ``finished``), but no OS thread is started
  per write: bgio's workers write it, and ``ident`` is the worker's once
  the write has started. ``remainingData`` is not kept (the data is not
  split up front); use ``bytes_written`` and ``total_bytes``.
* Once a write is done, the handle lets go of the file object
  (``fileObj`` becomes None), so nothing keeps a file alive that the
  program has dropped.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

from .api import prepare
from .compat_read import BackgroundReadData, bgread, nonblock_read
from .engine import submit
from .handle import BackgroundWriteProcess as _Handle
from .priority import PRESETS, resolve_priority, validate_chunk_size
from .priority import BackgroundIOPriority as _Profile
from .sinks import sink_for
from .source import Block
from .source import chunk_data as _chunk_data

if TYPE_CHECKING:
    from .worker import Job

__all__ = [
    "BG_IO_PRIOS",
    "BackgroundIOPriority",
    "BackgroundReadData",
    "BackgroundWriteProcess",
    "bgread",
    "bgwrite",
    "bgwrite_chunk",
    "chunk_data",
    "nonblock_read",
]

_FIELDS = ("chainPollTime", "defaultChunkSize", "bandwidthPct", "numChunksRateSmoothing")


class BackgroundIOPriority:
    """A priority profile with the older module's camelCase fields (mutable, item access too).

    Values are validated like :class:`bgio.BackgroundIOPriority` when the
    profile is created and again when a write uses it.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        chainPollTime: float,
        defaultChunkSize: float,
        bandwidthPct: float,
        numChunksRateSmoothing: int = 5,
    ) -> None:
        self.chainPollTime = chainPollTime
        self.defaultChunkSize = defaultChunkSize
        self.bandwidthPct = bandwidthPct
        self.numChunksRateSmoothing = numChunksRateSmoothing
        self.to_profile()

    def to_profile(self) -> _Profile:
        """The equivalent :class:`bgio.BackgroundIOPriority` (raises if a field is invalid)."""
        return _Profile(self.chainPollTime, self.defaultChunkSize, self.bandwidthPct,
                        self.numChunksRateSmoothing)

    def __getitem__(self, key: str) -> Any:
        if key in _FIELDS:
            return getattr(self, key)
        raise KeyError(f"Unknown key: {key}")

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _FIELDS:
            setattr(self, key, value)
            return
        raise KeyError(f"Unknown key: {key}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"BackgroundIOPriority({fields})"


#: The ten presets under the older module's name (camelCase profiles).
BG_IO_PRIOS = {
    level: BackgroundIOPriority(p.chain_poll_time, p.default_chunk_size, p.bandwidth_pct,
                                p.num_chunks_rate_smoothing)
    for level, p in PRESETS.items()
}


def _profile(ioPrio: object) -> _Profile:
    if isinstance(ioPrio, BackgroundIOPriority):
        return ioPrio.to_profile()
    return resolve_priority(ioPrio, "ioPrio")


class BackgroundWriteProcess(_Handle, threading.Thread):
    """A background write created but not started, as in the older module.

    ``bgwrite`` and ``bgwrite_chunk`` return one already started. Created
    directly, it starts with :meth:`start`. All of :class:`bgio.BackgroundWriteProcess`
    is available too (``result()``, ``cancel()``, progress, ...).

    It is a :class:`threading.Thread` instance, as the older module's was,
    without an OS thread of its own: :meth:`start` queues the write for
    bgio's workers, :meth:`join` and :meth:`is_alive` follow the write, and
    :attr:`ident` is the identifier of the worker thread writing it.

    Parameters
    ----------
    fileObj, dataBlocks, closeWhenFinished, chainAfter, ioPrio
        As ``file``, ``data``, ``close_when_finished``, ``chain_after`` and
        ``priority`` of :func:`bgio.bgwrite`.
    """

    #: threading.Thread's own (set by its start(); typeshed leaves it out).
    _started: threading.Event

    def __init__(
        self,
        fileObj: object,
        dataBlocks: object,
        closeWhenFinished: bool = False,
        chainAfter: _Handle | None = None,
        ioPrio: object = 4,
        *,
        _chunkSize: int | None = None,
    ) -> None:
        _Handle.__init__(self)
        threading.Thread.__init__(self, name=f"bgio-write-{next(_numbers)}", daemon=False)
        sink = sink_for(fileObj, "fileObj")
        profile = _profile(ioPrio)
        self.fileObj = fileObj
        self.closeWhenFinished = bool(closeWhenFinished)
        self.chainAfter = chainAfter
        self.startedWriting = False
        self._job: Job | None = prepare(self, sink, dataBlocks, profile, _chunkSize,
                                        closeWhenFinished, chainAfter)
        # Let go of the file once done: the handle may outlive it in a list,
        # and the file's queue must be free to go with the file.
        self.add_done_callback(_release)

    @property
    def finished(self) -> bool:
        """True once the write is done: written (and closed if asked), failed or cancelled."""
        return self.done()

    def start(self) -> None:
        """Queue the write (once).

        Raises
        ------
        RuntimeError
            If called more than once, as :meth:`threading.Thread.start` does.
        """
        job, self._job = self._job, None
        if job is None:
            raise RuntimeError("BackgroundWriteProcess can only be started once")
        # What threading.Thread consults to refuse a later daemon= (its
        # own start() is not called: there is no OS thread).
        self._started.set()
        submit(job)

    def run(self) -> None:
        """Nothing: the write is done by bgio's workers, not by a thread of its own."""

    def join(self, timeout: float | None = None) -> None:
        """Wait until the write is done, or ``timeout`` seconds (as :meth:`threading.Thread.join`).

        Raises
        ------
        RuntimeError
            If the write was never started, as :meth:`threading.Thread.join` does.
        """
        if self._job is not None:
            raise RuntimeError("cannot join thread before it is started")
        # As threading.Thread.join: a negative timeout waits not at all.
        self.wait(None if timeout is None else max(timeout, 0))

    def is_alive(self) -> bool:
        """True from :meth:`start` until the write is done."""
        return self._job is None and not self.done()

    def isAlive(self) -> bool:
        """Alias of :meth:`is_alive`."""
        return self.is_alive()

    @property
    def ident(self) -> int | None:
        """The identifier of the worker thread writing this data, None until it starts."""
        return self._writer_ident

    @property
    def native_id(self) -> int | None:
        """The native identifier of the worker thread writing this data, None until it starts."""
        return self._writer_native_id

    _writer_ident: int | None = None
    _writer_native_id: int | None = None

    def set_running_or_notify_cancel(self) -> bool:
        started = super().set_running_or_notify_cancel()
        if started:
            self.startedWriting = True
            self._writer_ident = threading.get_ident()
            self._writer_native_id = threading.get_native_id()
        return started

    def __repr__(self) -> str:
        return _Handle.__repr__(self)


_numbers = itertools.count(1)


def _release(handle: _Handle) -> None:
    handle.fileObj = None  # type: ignore[attr-defined]


def bgwrite(
    fileObj: object,
    data: object,
    closeWhenFinished: bool = False,
    chainAfter: _Handle | None = None,
    ioPrio: object = 4,
) -> BackgroundWriteProcess:
    """Start a background write; see :func:`bgio.bgwrite`."""
    process = BackgroundWriteProcess(fileObj, data, closeWhenFinished, chainAfter, ioPrio)
    process.start()
    return process


def bgwrite_chunk(
    fileObj: object,
    data: object,
    chunkSize: int,
    closeWhenFinished: bool = False,
    chainAfter: _Handle | None = None,
    ioPrio: object = 4,
) -> BackgroundWriteProcess:
    """Start a background write in chunks of ``chunkSize``; see :func:`bgio.bgwrite_chunk`."""
    size = validate_chunk_size("chunkSize", chunkSize)
    process = BackgroundWriteProcess(fileObj, data, closeWhenFinished, chainAfter, ioPrio,
                                     _chunkSize=size)
    process.start()
    return process


def chunk_data(data: object, chunkSize: int) -> list[Block]:
    """Split ``data`` into chunks of at most ``chunkSize`` without copying; see :func:`bgio.chunk_data`."""
    return _chunk_data(data, chunkSize)
