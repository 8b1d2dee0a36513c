"""HDF5 filter pipelines bgio reproduces byte for byte: shuffle and deflate (gzip), and the
plugin codecs of :mod:`bgio.h5.codecs` (Zstd, LZ4, Blosc, Bitshuffle), in any order; and the
pool that encodes chunks ahead of the worker."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import h5py
import numpy as np

from .. import cores
from ..lag import LagGauge
from ..priority import BackgroundIOPriority
from ..throttle import Throttle
from ..worker import MIN_PAUSE
from . import codecs, deflate
from .codecs import BITSHUFFLE, BLOSC, LZ4, ZSTD

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

__all__ = [
    "BITSHUFFLE",
    "BLOSC",
    "DEFLATE",
    "FLETCHER32",
    "LEAD_PER_THREAD",
    "LZ4",
    "MAX_POOL",
    "SHUFFLE",
    "SUPPORTED",
    "ZSTD",
    "ChunkPipeline",
    "Encoding",
    "EncodingPool",
    "encoding_pool",
    "fletcher32",
    "pipeline_of",
]

logger = logging.getLogger("bgio")

#: HDF5's filter ids (H5Z_FILTER_DEFLATE, H5Z_FILTER_SHUFFLE).
DEFLATE = 1
SHUFFLE = 2
FLETCHER32 = 3
#: The filters bgio applies itself; a dataset with any other takes h5py's own path. The plugin
#: codecs count only when their package is installed (see :mod:`bgio.h5.codecs`).
SUPPORTED = frozenset({DEFLATE, SHUFFLE, ZSTD, LZ4, BLOSC, BITSHUFFLE})
#: The filters whose work is worth doing on the pool (all but the byte shuffle).
_HEAVY = frozenset({DEFLATE, ZSTD, LZ4, BLOSC, BITSHUFFLE})
#: Most pool threads compressing chunks ahead of the worker (which compresses too).
MAX_POOL = 4

#: Encoded chunks per encoding thread (the pool's and the worker) that may wait for the
#: worker (see :func:`encoding_pool`).
LEAD_PER_THREAD = 4

_T = TypeVar("_T")


@dataclass(frozen=True)
class ChunkPipeline:
    """The filters of a chunked dataset, in HDF5's order, as bgio applies them.

    Attributes
    ----------
    steps : tuple of (filter id, client data)
        What HDF5 would apply to each chunk on writing, first to last.
    itemsize : int
        Bytes per element of the dataset's dtype.
    """

    steps: tuple[tuple[int, tuple[int, ...]], ...]
    itemsize: int

    @property
    def compresses(self) -> bool:
        """True if a chunk is compressed or bit-shuffled: work worth doing ahead, on the pool."""
        return any(step in _HEAVY for step, _ in self.steps)

    def encode(self, chunk: np.ndarray) -> bytes | memoryview:
        """Filter one whole chunk as HDF5 would, for ``write_direct_chunk``.

        Runs without h5py's lock: numpy's byte shuffle, deflate (zlib-ng or
        zlib, see :mod:`bgio.h5.deflate`) and the codec
        packages (which release the GIL) do the work, so several chunks can
        be encoded in parallel while other threads use h5py.

        Parameters
        ----------
        chunk : numpy.ndarray
            Exactly one chunk (the dataset's chunk shape and dtype), C-contiguous.

        Returns
        -------
        bytes or memoryview
            The stored form of the chunk; a view of ``chunk`` itself when
            there is no filter to apply.
        """
        if not chunk.flags.c_contiguous:
            raise ValueError("chunk: must be C-contiguous")
        data: bytes | memoryview = memoryview(cast("Buffer", chunk.reshape(-1).view(np.uint8)))
        for step, options in self.steps:
            if step == SHUFFLE:
                data = _shuffle(data, self.itemsize)
            elif step == DEFLATE:
                data = deflate.compress(data, options[0] if options else 6)
            else:
                data = codecs.encode_step(step, options, self.itemsize, data)
        return data  # with no filter, the chunk's own memory: stored without a copy


def _shuffle(data: bytes | memoryview, itemsize: int) -> bytes | memoryview:
    # Byte k of every element, then byte k + 1, ...: HDF5's shuffle filter.
    if itemsize <= 1:
        return data
    grid = np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize)
    # copyto into a new array releases the GIL while it transposes (tobytes()
    # would hold it, a millisecond per MiB, stalling the program's threads).
    shuffled = np.empty((itemsize, len(grid)), dtype=np.uint8)
    np.copyto(shuffled, grid.T)
    return memoryview(cast("Buffer", shuffled.reshape(-1)))


def fletcher32(data: bytes | memoryview) -> bytes:
    """The 4 bytes HDF5's fletcher32 filter appends to a chunk's ``data``.

    Fletcher's checksum over the data as big-endian 16-bit words (an odd
    last byte padded with a zero), each sum folded modulo 65535 as HDF5
    folds it (0 only for no data at all), stored little-endian.

    Examples
    --------
    >>> fletcher32(b"abcde").hex()
    'c729f04f'
    """
    octets = np.frombuffer(data, dtype=np.uint8)
    if len(octets) % 2:
        octets = np.concatenate([octets, np.zeros(1, np.uint8)])
    words = (octets[0::2].astype(np.uint64) << np.uint64(8)) | octets[1::2]
    # Word i is added into the running sum once and into the sum of sums n - i
    # times; weights reduced modulo 65535 first keep every product below 2**32.
    weights = np.arange(len(words), 0, -1, dtype=np.uint64) % np.uint64(65535)
    low = _fold(int(words.sum()))
    high = _fold(int((weights * words).sum()))
    return ((high << 16) | low).to_bytes(4, "little")


def _fold(total: int) -> int:
    # HDF5 folds carries back in (end-around), so a non-zero multiple of
    # 65535 ends as 0xFFFF, not 0.
    return 0 if total == 0 else (total - 1) % 65535 + 1


def pipeline_of(dataset: h5py.Dataset) -> ChunkPipeline | None:
    """The pipeline bgio can apply for ``dataset``, or None if it must leave filtering to HDF5.

    None for contiguous (unchunked) datasets, for any filter outside
    :data:`SUPPORTED` (lzf, szip, fletcher32, scale-offset, other plugins),
    and for a plugin codec whose package is not installed or whose options
    bgio cannot reproduce exactly (the reason is logged on the ``bgio``
    logger at debug level).
    """
    if dataset.chunks is None:
        return None
    plist = dataset.id.get_create_plist()
    steps = []
    itemsize = dataset.dtype.itemsize
    for index in range(plist.get_nfilters()):
        filter_id, _flags, raw_options = plist.get_filter(index)[:3]
        filter_id = int(filter_id)
        options = tuple(int(value) for value in raw_options)
        if filter_id not in SUPPORTED:
            return None
        if filter_id not in (DEFLATE, SHUFFLE):
            reason = codecs.unsupported_reason(filter_id, options, itemsize)
            if reason is not None:
                logger.debug("%s: filtered by HDF5 under h5py's lock: %s", dataset.name, reason)
                return None
        elif filter_id == DEFLATE:
            # Chosen (zlib-ng imported) here, in the caller's thread: an
            # import running in a pool thread when the program forks leaves
            # the child with the import lock held, and its next import hangs.
            deflate.implementation()
        steps.append((filter_id, options))
    return ChunkPipeline(tuple(steps), itemsize)


class Encoding(Future[_T]):
    """A chunk being encoded on an :class:`EncodingPool`: a Future the worker takes the result of.

    On a pool with a lead bound, the worker must take the result
    (:meth:`take`), or the chunk's store give it up (:meth:`drop`:
    cancelled, or failed before it got there), before the pool starts a
    chunk ``lead`` or more places after it.
    """

    def __init__(self, lead: _Lead | None, pool: EncodingPool | None = None) -> None:
        super().__init__()
        self._lead = lead
        self._pool = pool
        self.number = -1 if lead is None else lead.number()  # (the lead's) in submission order
        self.released = False  # (the lead's lock) taken or dropped

    def take(self) -> _T:
        """The encoded chunk (waiting for it); the pool may go on past it."""
        try:
            return self.result()
        finally:
            self.drop()

    def drop(self) -> None:
        """Let the pool go on past this chunk without taking it (idempotent)."""
        if self._lead is not None:
            self._lead.release(self)

    def wait_helping(self) -> float:
        """Wait until the chunk is encoded, encoding the pool's queued chunks meanwhile.

        The calling thread (the worker, waiting for the chunk it stores
        next) takes the oldest chunk no pool thread has started yet, as one
        of the pool's threads would, instead of idling: on two cores the
        pool then needs one thread beside it, not two competing with it.

        Returns
        -------
        float
            The seconds spent waiting, not encoding.
        """
        waited = 0.0
        while not self.done():
            if self._pool is not None and self._pool.encode_one():
                continue
            started = time.perf_counter()
            wait((self,))
            waited += time.perf_counter() - started
        return waited


@dataclass(frozen=True)
class _Job(Generic[_T]):
    """A chunk waiting for a thread to encode it."""

    encode: Callable[[np.ndarray], _T]
    chunk: np.ndarray
    encoding: Encoding[_T]


class _Lead:
    """How far ahead of the worker a pool encodes: the chunk numbered ``n`` (in submission
    order) is started only once every chunk numbered ``n - limit`` or lower is taken or
    dropped (the first chunk not taken and the ``limit - 1`` after it may be encoded).

    Unbounded, the pool encodes every queued chunk as fast as the cores
    allow while the worker, which stores them one at a time in order, gets
    a third of a CPU on two cores; the stores it still owes at the end then
    run alone. Bounded, both go on side by side to the end. The bound is
    on chunk numbers, not on a count of chunks ready: the chunk the worker
    waits for is always the lowest not released, and may always start
    (a count would let later chunks take the room while it waits).
    """

    def __init__(self, limit: int, stopping: threading.Event) -> None:
        self.limit = limit
        self._numbered = 0  # chunks numbered so far
        self._lowest = 0  # the lowest number not released
        self._released: set[int] = set()  # numbers above _lowest released already
        self._room = threading.Condition(threading.Lock())
        self._stopping = stopping

    def number(self) -> int:
        with self._room:
            self._numbered += 1
            return self._numbered - 1

    def has_room(self, encoding: Encoding[Any]) -> bool:
        """True if ``encoding``'s chunk may start now."""
        with self._room:
            return encoding.number < self._lowest + self.limit

    def wait_for_room(self, encoding: Encoding[Any]) -> None:
        with self._room:
            while (encoding.number >= self._lowest + self.limit
                   and not self._stopping.is_set()):
                self._room.wait()

    def release(self, encoding: Encoding[Any]) -> None:
        with self._room:
            if encoding.released:
                return
            encoding.released = True
            self._released.add(encoding.number)
            if encoding.number != self._lowest:
                return
            while self._lowest in self._released:
                self._released.discard(self._lowest)
                self._lowest += 1
            self._room.notify_all()  # the one that may start now is a given thread's

    @property
    def outstanding(self) -> int:
        with self._room:
            return self._numbered - self._lowest - len(self._released)

    def open(self) -> None:
        """Let every waiting thread go (the pool shuts down)."""
        with self._room:
            self._room.notify_all()


class EncodingPool:
    """Threads that encode chunks ahead of the worker, each paced to a profile's busy fraction.

    Every thread keeps its own schedule (a :class:`bgio.throttle.Throttle`
    of the profile, without ``max_rate``, which the worker applies to the
    bytes stored): after encoding a chunk for ``b`` seconds it takes no
    other before ``b * 100 / bandwidth_pct`` seconds have passed, so the
    pool's combined work is at most ``bandwidth_pct`` % of its threads'
    time. The result is handed over at once; the thread rests before its
    next chunk, and time it had nothing to do counts as rest. Chunks are
    taken oldest first, when a thread's turn comes (after its rest), by a
    pool thread or by a thread waiting for one of them
    (:meth:`Encoding.wait_helping`, through :meth:`encode_one`).

    With ``lead``, a thread starts a chunk only when it is fewer than
    ``lead`` chunks (in submission order) past the first one the worker
    has not taken yet: each must then be taken (:meth:`Encoding.take`) or dropped
    (:meth:`Encoding.drop`), or the pool stops there (until
    :meth:`shutdown`).

    Parameters
    ----------
    threads : int
        Number of threads.
    profile : bgio.BackgroundIOPriority
        The writer's pacing profile.
    lead : int or None, default None
        How many chunks, from the worker's on, the pool may encode; None: no bound.
    clock, rest : callables, optional
        The clock, and how a thread waits ``seconds`` (returning early once
        the pool shuts down); tests pass fakes.
    """

    def __init__(self, threads: int, profile: BackgroundIOPriority, lead: int | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 rest: Callable[[float], object] | None = None) -> None:
        if lead is not None and lead < 1:
            raise ValueError(f"lead must be at least 1 or None, got {lead}")
        self.threads = threads
        self.profile = profile.replace(max_rate=None)
        self._clock = clock
        self._stopping = threading.Event()
        self._rest = rest if rest is not None else self._stopping.wait
        self._lead = None if lead is None else _Lead(lead, self._stopping)
        self._schedules = threading.local()  # each thread's Throttle
        # Chunks no thread has started, oldest first: a pool thread takes
        # the oldest when its turn comes, and so does a worker waiting for
        # its next chunk (Encoding.wait_helping).
        self._queued: deque[_Job[Any]] = deque()
        self._queued_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="bgio-h5-filter")
        #: Whether the writer is behind its max_lag now (see hurry_when): no rest then.
        self._behind: Callable[[], bool] | None = None

    def hurry_when(self, gauge: LagGauge) -> None:
        """Rest between chunks only while the writer's ``gauge`` says it is not behind
        its ``max_lag`` (:mod:`bgio.lag`): its threads suspend their pacing with the
        worker's."""
        self._behind = lambda: gauge.active

    def submit(self, encode: Callable[[np.ndarray], _T], chunk: np.ndarray) -> Encoding[_T]:
        """Encode ``chunk`` with ``encode`` on the pool; the :class:`Encoding` holds the result."""
        encoding: Encoding[_T] = Encoding(self._lead, self)
        with self._queued_lock:
            self._queued.append(_Job(encode, chunk, encoding))
        try:
            self._executor.submit(self._paced)  # a turn for whichever chunk is oldest then
        except BaseException:
            with self._queued_lock:
                if self._queued and self._queued[-1].encoding is encoding:
                    self._queued.pop()
            encoding.cancel()
            encoding.drop()  # its number must not hold the lead bound (no caller can drop it)
            raise
        return encoding

    def _claim(self, only_with_room: bool) -> _Job[Any] | None:
        """The oldest chunk no thread has started, now marked running; None if there is
        none (or, ``only_with_room``, if the lead bound does not let it start yet)."""
        with self._queued_lock:
            while self._queued:
                job = self._queued[0]
                if only_with_room and self._lead is not None and not self._lead.has_room(
                        job.encoding):
                    return None
                self._queued.popleft()
                if job.encoding.released:
                    job.encoding.cancel()  # its store gave it up: nobody will take it
                    continue
                if job.encoding.set_running_or_notify_cancel():
                    return job
        return None

    def _paced(self) -> None:
        throttle = getattr(self._schedules, "throttle", None)
        if throttle is None:
            throttle = self._schedules.throttle = Throttle(self.profile, self._clock, MIN_PAUSE)
        # Rest first, then take the chunk: meanwhile the worker may take it.
        failed: BaseException | None = None
        behind = self._behind
        hurried = behind is not None and behind()
        try:
            pause = 0.0 if hurried else throttle.delay()
            if pause and not self._stopping.is_set():
                self._rest(pause)
        except BaseException as exc:  # noqa: BLE001 - it fails the chunk, below
            failed = exc
        job = self._claim(only_with_room=False)
        if job is None:
            # The worker encoded it while this thread waited its turn. No
            # chunk followed the pause: a chunk after an idle gap must not
            # be taken for a late one (and given credit to catch up).
            throttle.forget_pause()
            if failed is not None:
                logger.error("bgio: pacing an encoding thread failed", exc_info=failed)
            return
        try:
            if failed is not None:
                raise failed
            if self._lead is not None:
                self._lead.wait_for_room(job.encoding)
            started = self._clock()
            try:
                value = job.encode(job.chunk)
            finally:
                finished = self._clock()
                throttle.record(job.chunk.nbytes, started, finished, finished - started,
                                hurried=hurried)
        except BaseException as exc:  # noqa: BLE001 - the worker raises it with the chunk's store
            # Whatever failed (the encoding, or the pacing around it), the
            # Encoding says so: the worker waits on it, never on this thread.
            job.encoding.set_exception(exc)
        else:
            job.encoding.set_result(value)

    def encode_one(self) -> bool:
        """Encode the oldest chunk no thread has started, in the calling thread, if the lead
        bound lets it start now; False if none was encoded (none queued, none allowed to
        start yet, or the pool shut down).

        The worker calls it (through :meth:`Encoding.wait_helping`) while
        the chunk it stores next is not ready: its own pacing counts the
        time as busy.
        """
        if self._stopping.is_set():
            return False
        job = self._claim(only_with_room=True)
        if job is None:
            return False
        try:
            value = job.encode(job.chunk)
        except BaseException as exc:  # noqa: BLE001 - raised with that chunk's store
            job.encoding.set_exception(exc)
        else:
            job.encoding.set_result(value)
        return True

    @property
    def outstanding(self) -> int:
        """Chunks submitted and neither taken nor dropped yet (0 without a lead bound)."""
        return 0 if self._lead is None else self._lead.outstanding

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking chunks; resting and waiting threads go at once (queued chunks are
        still encoded)."""
        self._stopping.set()
        if self._lead is not None:
            self._lead.open()
        self._executor.shutdown(wait=wait)


def encoding_pool(profile: BackgroundIOPriority, lead: bool = False) -> EncodingPool | None:
    """Threads that compress chunks ahead of the worker, as ``profile`` allows, or None.

    One thread per usable core but one (:func:`bgio.cores.usable`: every
    core, or in the writer process one fewer), at most :data:`MAX_POOL`, at
    every preset: the codecs release the GIL, so chunks are compressed in
    parallel while the worker stores them in order, and the worker
    compresses queued chunks too whenever the one it stores next is not
    ready (:meth:`Encoding.wait_helping`): the pool and the worker together
    are one thread per core. (A pool of one per core measured slower: the
    worker, whose stores are serial, then shared its core and waited in
    the run queue, while the pool ran ahead and idled at its lead bound.)
    Each thread is paced to the profile's ``bandwidth_pct`` (see
    :class:`EncodingPool`), and the worker's pacing counts the chunks it
    compresses as its busy time: compressing takes at most that share of
    the cores, e.g. at preset 4 (72 %) on two cores 1.44 cores at most, at
    preset 10 (20 %) 0.4; at preset 1 all of them. A single usable core
    gains nothing from a pool (None: the worker compresses each chunk itself,
    inside the busy time its pacing governs).

    With ``lead``, at most :data:`LEAD_PER_THREAD` encoded chunks per
    encoding thread (the pool's and the worker) wait for the worker (the
    caller takes or drops every :class:`Encoding`).
    """
    usable = cores.usable()
    if usable < 2:
        return None
    threads = min(MAX_POOL, usable - 1)
    return EncodingPool(threads, profile, (threads + 1) * LEAD_PER_THREAD if lead else None)
