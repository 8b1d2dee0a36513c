"""The worker's side of a Zarr array: stores issued in order, several in flight at once.

Each store (a whole chunk or shard, or at a flush the runs of a partly
filled one) is handed to tensorstore, which compresses it in its own
threads, outside the interpreter lock, and writes each object whole. When
the profile paces (busy below 100 %, or a ``max_rate``), a store is waited
for before the next is issued, so the worker's busy time is the store's;
unpaced, up to :data:`DEPTH` are in flight, as tensorstore's own examples
write many chunks. A store's handle is done when its objects are written;
the array's length follows in :class:`bgio.zarr.record.Record`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from ..errors import ChainError
from ..handle import BackgroundWriteProcess
from ..sinks import Waiter
from .record import Record

__all__ = ["DEPTH", "ArraySink", "Runs"]

logger = logging.getLogger("bgio")

#: Stores in flight at once when the profile does not pace.
DEPTH = 64


class Runs:
    """One store for the worker: runs of consecutive frames, ``(first index, frames)``,
    the chunks (or shards) they touch, and the handle done when they are stored."""

    __slots__ = ("groups", "handle", "runs", "sequence")

    def __init__(self, runs: list[tuple[int, np.ndarray]], groups: frozenset[int],
                 handle: BackgroundWriteProcess) -> None:
        self.runs = runs
        self.groups = groups
        self.handle = handle
        self.sequence = 0  # its place among the writer's stores (1, 2, ...)

    def __len__(self) -> int:
        # The engine paces and counts in bytes: the frames' (before compression).
        return sum(int(frames.nbytes) for _, frames in self.runs)


class ArraySink:
    """Writes :class:`Runs` into a tensorstore array, ``depth`` stores in flight at most.

    ``chunks`` is the array opened with its metadata assumed at the
    largest length, so stores go past the length ``zarr.json`` states;
    ``record`` raises that length as the frames land. Two stores touching
    one chunk are never in flight together (the later would race the
    earlier). After a store fails, the next store the worker hands in
    fails with :class:`bgio.ChainError` (the lane's later ones with it),
    and :meth:`close` raises the failure if no store was left to.
    """

    kind = None
    nonblocking = False
    write_many = None

    def __init__(self, chunks: Any, record: Record, name: str, depth: int,
                 transaction: Any) -> None:
        self.chunks = chunks
        self.record = record
        self._landing = record.landing  # (one thread follows the stores and the rewrites)
        self.target: object = chunks
        self.key: object = ("zarr", name, id(self))  # (writers of one shared array: a lane each)
        self.name = name
        self.waiter: Waiter | None = None  # the lane's, given when the worker takes the sink
        self.depth = depth
        self._transaction = transaction  # tensorstore.Transaction
        self.failure: BaseException | None = None  # the first store that failed
        self.failed_handle: BackgroundWriteProcess | None = None
        self._told = False  # the failure reached the worker through a write
        self.refusal: BaseException | None = None  # the first store the worker refused
        self._lock = threading.Lock()
        self._landed = threading.Condition(self._lock)
        self._flying: set[int] = set()  # the sequence numbers of the stores in flight
        self._busy: set[int] = set()  # chunks (or shards) of the stores in flight
        # What close() announces: set by the writer before it queues the close.
        self.final_length = 0
        self.final_missing: list[tuple[int, int]] = []

    def write(self, block: Runs) -> int:
        with self._landed:
            self._landing.wait_for(self._landed, lambda: self.failure is not None or (
                len(self._flying) < self.depth and not self._busy.intersection(block.groups)))
            if self.failure is not None:
                self._told = True
                raise ChainError(f"frames not stored in {self.name}: an earlier store failed",
                                 self.failed_handle, self.failure)
            self._flying.add(block.sequence)
            self._busy.update(block.groups)
        flight = _Flight(self, block)
        try:
            if len(block.runs) == 1:
                first, frames = block.runs[0]
                futures = [self.chunks[first : first + len(frames)].write(frames)]
            else:  # one group's runs: committed together, its object written once
                transaction = self._transaction()
                inside = self.chunks.with_transaction(transaction)
                staged = [inside[first : first + len(frames)].write(frames)
                          for first, frames in block.runs]
                for each in staged:  # (copied into the transaction: quick; a commit
                    each.result()    # before that would leave them out)
                futures = [transaction.commit_async()]
        except Exception as exc:  # noqa: BLE001 - tensorstore refused the write at once
            flight.error = _store_error(self.name, exc)
            self.land(flight)
        else:
            flight.left = len(futures)
            for future in futures:
                self._landing.follow(future, flight.landed)
        if self.depth == 1:  # paced: the store's time is the worker's busy time
            with self._landed:
                self._landing.wait_for(self._landed, lambda: flight.settled)
                if flight.error is not None:
                    self._told = True
                    raise flight.error
        return len(block)

    def land(self, flight: _Flight) -> None:
        """A store's objects are written (or one failed): tell the record and its handle,
        then let the next stores in (so a drain after it finds both done)."""
        block, error = flight.block, flight.error
        handle = block.handle
        try:
            if error is None:
                for first, frames in block.runs:
                    self.record.stored(first, first + len(frames))
                handle.bytes_written = handle.total_bytes or 0
                handle.set_result()
            else:
                if self.depth > 1:  # (paced, the worker is told, and logs it)
                    logger.error("storing frames in %s failed", self.name, exc_info=error)
                handle.set_exception(error)
        except BaseException as exc:
            logger.error("after storing frames in %s", self.name, exc_info=exc)
            error = error or exc
            handle.set_exception(exc)
        finally:
            with self._landed:
                self._flying.discard(block.sequence)
                self._busy.difference_update(block.groups)
                if error is not None and self.failure is None:
                    self.failure, self.failed_handle = error, handle
                flight.settled = True
                self._landed.notify_all()

    def refused(self, error: BaseException, handle: BackgroundWriteProcess) -> None:
        """The worker failed (or a cancel stopped) a store before it reached tensorstore,
        told by the writer. The worker fails the stores after it itself; stores before it
        go on, so it is kept apart from :attr:`failure`, for the last announcement."""
        with self._landed:
            if self.refusal is None:
                self.refusal = error

    def drain(self, timeout: float | None, upto: int | None = None) -> bool:
        """Wait until no store is in flight (or none of the first ``upto``); False on
        timeout. The stores to wait for must have been issued."""
        with self._landed:
            return self._landing.wait_for(
                self._landed, lambda: not self._flying if upto is None else
                all(sequence > upto for sequence in self._flying), timeout)

    def flush(self) -> None:
        """Stores are written when their handles say so (nothing buffered here)."""

    def sync(self) -> None:
        """Tensorstore's file store commits each object with ``fsync`` as it writes it."""

    def close(self) -> None:
        """Wait for the stores in flight, announce the last state (finished), and raise a
        store's failure the worker was not told of."""
        self.drain(None)
        try:
            self.record.finish(self.final_length, self.final_missing,
                               self.failure or self.refusal)
        finally:
            self.chunks = self.target = None  # (tensorstore has nothing to close)
        if self.failure is not None and not self._told:
            raise self.failure

    discard = close  # (after a failure: the same, the failure announced)


def _store_error(name: str, exc: Exception) -> OSError:
    """Tensorstore's failure of a store (a ValueError, for an I/O error too), as an OSError."""
    error = OSError(f"{name}: {exc}")
    error.__cause__ = exc
    return error


class _Flight:
    """One store in flight: its futures counted down as they land."""

    __slots__ = ("block", "error", "left", "settled", "sink")

    def __init__(self, sink: ArraySink, block: Runs) -> None:
        self.sink = sink
        self.block = block
        self.left = 0
        self.settled = False  # told the record, the handle and the sink
        self.error: BaseException | None = None

    def landed(self, future: Any) -> None:
        try:
            future.result()
        except Exception as exc:  # noqa: BLE001 - the store's failure, on its handle
            if self.error is None:
                self.error = _store_error(self.sink.name, exc)
        with self.sink._lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.sink.land(self)
