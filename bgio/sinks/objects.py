"""Sink for an object in an object store: the writes become one upload, all or nothing.

The upload is one ``obstore.put`` in a thread of its own, fed the worker's
pieces through an iterator: obstore gathers them into parts of
``part_size`` bytes and sends up to ``concurrency`` parts at once (a
multipart upload once there is more than a part; one request otherwise).
The object appears when :meth:`ObjectSink.close` completes the upload; a
failure, a cancel or a ``ChainError`` (the worker then calls
:meth:`ObjectSink.discard`) makes the iterator raise, and obstore aborts
the multipart upload: no object, no parts left behind.

obstore asks for the next piece only when it has room for another part in
flight, so a piece handed over waits there while the store is slow: that
is the worker's busy time, and what its pacing governs. It also bounds how
far the bytes taken can run ahead of the bytes the store has acknowledged:
:attr:`ObjectSink.acknowledged` is ``taken`` less ``concurrency`` parts
while the upload runs (a lower bound; obstore says nothing per part), and
all of it once the object is complete.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Hashable, Iterator

from ..objects import ObjectTarget, describe
from ..source import Block, Kind
from ..writeback import NoWindows
from .wait import Waiter, WriteInterrupted

__all__ = ["DEFAULT_PART_SIZE", "MIN_PART_SIZE", "MIN_PIECE", "ObjectProgress", "ObjectSink", "upload_error"]

logger = logging.getLogger("bgio")

#: The smallest part S3 takes (all but the last part of a multipart upload).
MIN_PART_SIZE = 5 << 20
#: Bytes per part unless the profile's chunks are larger.
DEFAULT_PART_SIZE = 8 << 20
#: The smallest piece an upload with a ``max_rate`` is handed at once.
MIN_PIECE = 64 << 10


class _Abandoned(Exception):
    """Raised inside obstore's read of the pieces to make it abort the upload."""


#: obstore's errors, as the OSError a program would catch for a file.
_ERRORS: dict[str, type[OSError]] = {
    "AlreadyExistsError": FileExistsError, "NotFoundError": FileNotFoundError,
    "PermissionDeniedError": PermissionError, "UnauthenticatedError": PermissionError,
    "PreconditionError": FileExistsError,
}


def upload_error(url: str, exc: BaseException) -> OSError:
    """obstore's failure of an upload as an ``OSError`` naming the object and the HTTP
    status (a ``FileExistsError``, ``FileNotFoundError`` or ``PermissionError`` where
    one fits); the original is its ``__cause__``."""
    kind = _ERRORS.get(type(exc).__name__, OSError)
    for builtin in (FileExistsError, FileNotFoundError, PermissionError):
        if isinstance(exc, builtin):  # (obstore raises some of these itself)
            kind = builtin
    if kind is FileExistsError:
        error: OSError = kind(f"{url}: the object exists (exclusive=True): {describe(exc)}")
    else:
        error = kind(f"{url}: upload failed: {describe(exc)}")
    error.__cause__ = exc
    return error


class ObjectProgress(NoWindows):
    """What the worker reads of an :class:`ObjectSink`'s account, as it reads a file's
    write-back (``written``, ``on_disk``: here the bytes the store has acknowledged)."""

    __slots__ = ("_sink",)

    def __init__(self, sink: ObjectSink) -> None:
        self._sink = sink

    @property
    def written(self) -> int:
        """Bytes handed to the upload."""
        return self._sink.taken

    @property
    def on_disk(self) -> int:
        """Of those, the bytes the store has acknowledged (a lower bound until the end)."""
        return self._sink.acknowledged

    @property
    def settled_by_flush(self) -> bool:
        """True once the object is complete: everything taken is then stored."""
        return self._sink.complete


class ObjectSink:
    """Uploads one object; its writes, in order, are the object's bytes.

    Parameters
    ----------
    target : bgio.objects.ObjectTarget
        The store and key (checked in the caller).
    part_size : int
        Bytes per part (at least :data:`MIN_PART_SIZE`).
    concurrency : int
        Parts in flight at once.
    exclusive : bool
        Refuse to replace an existing object (a conditional create; obstore
        then sends the object in one request, held in its memory until sent).
    piece_size : int or None
        The pieces the worker hands over (None: its chunk size). A
        ``max_rate`` is met a piece at a time, so an upload capped at R bytes
        per second goes in pieces of R / 40 (at least 64 KiB): each second's
        hand-over then lands within 2.5 % of R (parts are still
        ``part_size``). A paced profile hands over whole parts, one in
        flight, and each hand-over waits until the part is sent (obstore
        asks for the next piece only then), so the worker's busy time is the
        network's and its pauses leave the network idle.
    copy : bool
        Copy each piece before the upload takes it. obstore keeps the memory
        it is given until the part is sent, so a piece must stay unchanged
        until then: true of a write whose handle ends with the object (one
        ``bgwrite``), not of a Writer's writes, whose handles end once the
        upload has taken them (and whose buffers may then be reused).
    """

    __slots__ = (
        "_abandon",
        "_asked",
        "_close_later",
        "_concurrency",
        "_cond",
        "_copy",
        "_ending",
        "_error",
        "_exclusive",
        "_offered",
        "_part_size",
        "_signal",
        "_store",
        "_taken_at",
        "_thread",
        "_until_sent",
        "_waiting",
        "acknowledged",
        "complete",
        "key",
        "kind",
        "name",
        "nonblocking",
        "path",
        "piece_size",
        "taken",
        "target",
        "waiter",
        "write_many",
    )

    key: Hashable
    target: object
    kind: Kind | None
    name: str
    write_many: Callable[[list[Block | bytes]], int] | None
    waiter: Waiter | None
    nonblocking: bool

    def __init__(self, target: ObjectTarget, part_size: int, concurrency: int,
                 exclusive: bool = False, copy: bool = False,
                 piece_size: int | None = None) -> None:
        self._store = target.store
        self.path = target.path
        self.name = target.url
        # Writes to one object queue in one lane, in call order. No target: each sink is
        # its own upload, so the writes of two Writers to one object are never gathered.
        self.target = None
        self.key = target.lane
        self.kind = "bytes"
        # (Not a non-blocking fd, but a hand-over a cancel must be able to cut short: the
        # worker then hooks the run's cancels to its waiter, which write() waits with.)
        self.nonblocking = True
        self.write_many = None
        self.waiter = None
        self._part_size = max(MIN_PART_SIZE, part_size)
        self._concurrency = concurrency
        self._exclusive = exclusive
        self._copy = copy
        self.piece_size = piece_size
        # A paced upload (a piece a part, one in flight): a hand-over ends once obstore
        # asks for the next piece, that is once the part is sent.
        self._until_sent = piece_size is not None and piece_size == self._part_size \
            and concurrency == 1
        self._asked = 0  # times obstore asked for a piece
        # Written by the upload thread at every change write() may wait for: write()
        # polls it beside the waiter's wake-up, so a cancel can cut the wait short.
        self._signal = -1  # (made with the upload thread: a sink never used holds no fd)
        self._waiting = 0  # write() calls polling it
        self._close_later = False  # closed by the last of those
        self._taken_at = 0  # the ask that took the last piece
        self._cond = threading.Condition()
        self._offered: memoryview | None = None  # a piece waiting for obstore to take it
        self._ending = False  # no more pieces: complete the object
        self._abandon = False  # make obstore abort the upload
        self._error: BaseException | None = None  # the upload's failure
        self._thread: threading.Thread | None = None
        self.taken = 0
        self.acknowledged = 0
        self.complete = False

    def use_writeback(self, window: int | None) -> ObjectProgress:
        """The account of what the store has acknowledged (no windows: ``window`` unused)."""
        return ObjectProgress(self)

    def _pieces(self) -> Iterator[memoryview]:
        # (A conditional create is one request, sent once obstore has it all: nothing is
        # acknowledged before the end.)
        bound = (1 << 62) if self._exclusive else self._concurrency * self._part_size
        while True:
            with self._cond:
                # Asked for more: at most `concurrency` parts of what was taken are in
                # flight or gathering, the rest is acknowledged.
                self.acknowledged = max(self.acknowledged, self.taken - bound)
                self._asked += 1
                self._notify()
                self._cond.wait_for(lambda: self._offered is not None or self._ending
                                    or self._abandon)
                if self._abandon:
                    raise _Abandoned
                piece = self._offered
                if piece is None:
                    return
                self._offered = None
                self._taken_at = self._asked
                self.taken += len(piece)
                self._notify()
            yield piece

    def _upload(self) -> None:
        import obstore

        try:
            obstore.put(self._store, self.path, self._pieces(), chunk_size=self._part_size,
                        max_concurrency=self._concurrency,
                        mode="create" if self._exclusive else None)
        except _Abandoned:
            with self._cond:
                self._error = _Abandoned()
        except BaseException as exc:  # noqa: BLE001 - the upload's failure, on the handles
            with self._cond:
                self._error = upload_error(self.name, exc)
        else:
            with self._cond:
                self.complete = True
                self.acknowledged = self.taken
        finally:
            with self._cond:
                self._ending = True
                self._notify()

    def _notify(self) -> None:
        """(Lock held.) Wake a write() waiting for the upload."""
        self._cond.notify_all()
        if self._signal >= 0:
            os.eventfd_write(self._signal, 1)

    def _wait(self, ready: Callable[[], bool]) -> None:
        """(Lock held.) Wait until ``ready()``; a cancel cuts it short (WriteInterrupted,
        from the lane's waiter), the lock held again either way."""
        waiter = self.waiter
        while not ready():
            signal = self._signal
            if waiter is None or signal < 0:
                self._cond.wait()
                continue
            # The fd is this wait's until it ends: a close meanwhile (a Writer freed in
            # another thread) is left to the last wait out (see _close_signal).
            self._waiting += 1
            self._cond.release()
            try:
                waiter.wait_for(signal)  # (the store's time: busy, not waited)
                try:
                    os.eventfd_read(signal)
                except BlockingIOError:
                    pass
            finally:
                self._cond.acquire()
                self._waiting -= 1
                if self._close_later and not self._waiting:
                    self._close_later = False
                    os.close(signal)
                    self._signal = -1

    def _start(self) -> None:
        # (Lock held: the check and the start are one step.)
        if self._thread is None:
            self._signal = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._thread = threading.Thread(target=self._upload, daemon=True,
                                            name=f"bgio upload {self.name}")
            self._thread.start()

    def _check_open(self) -> None:
        """(Lock held.) Raise the upload's failure if it ended (or was abandoned)."""
        if self._ending or self._error is not None:
            raise self._failure()

    def _failure(self) -> OSError:
        error = self._error
        if isinstance(error, OSError):
            return error
        return OSError(f"{self.name}: the upload was abandoned")

    def write(self, block: Block) -> int:
        """Hand ``block`` to the upload; return once obstore has taken it."""
        if isinstance(block, str):  # (kind "bytes": the worker hands none)
            raise TypeError("an object takes bytes, not str")
        piece = memoryview(block).cast("B")
        size = len(piece)
        if not size:
            return 0
        if self._copy:  # (see the class: the caller may reuse its buffer once taken)
            piece = memoryview(piece.tobytes())
        with self._cond:
            # Refused before a thread or an fd is made for it; checked and started under
            # one hold of the lock, or a drop() between the two (in the thread freeing
            # the Writer) would see no upload to end, and the one started after leaks.
            self._check_open()
            self._start()
            self._offered = piece
            self._cond.notify_all()
            try:
                self._wait(lambda: self._offered is None or self._ending)
            except WriteInterrupted:
                if self._offered is piece:  # not taken: withdrawn, nothing of it went
                    self._offered = None
                    raise
                return size  # taken: its bytes are the upload's (the cancel is seen next)
            if self._offered is not None:  # the upload ended without it
                self._offered = None
                raise self._failure()
            if self._until_sent:  # (the ask after the one that took it: the part is sent)
                try:
                    self._wait(lambda: self._asked > self._taken_at or self._ending)
                except WriteInterrupted:
                    pass  # (taken already)
        return size

    def flush(self) -> None:
        """Nothing to hand on: pieces are taken by the upload as they are written."""

    def sync(self) -> None:
        """An object is durable when complete: :meth:`close` waits for that."""

    def _end(self, abandon: bool) -> None:
        with self._cond:
            if self._thread is None and (abandon or self._abandon):
                # Nothing was sent: nothing to abort; writes after this one fail.
                self._abandon = self._ending = True
                self._error = self._error or _Abandoned()
                return
            self._start()  # (an empty object is uploaded too)
            if abandon:
                self._abandon = True
            self._ending = True
            self._cond.notify_all()
        assert self._thread is not None
        self._thread.join()
        self._close_signal()

    def close(self) -> None:
        """Complete the object (wait for its last parts); raise the upload's failure."""
        if self.complete:
            return
        self._end(abandon=False)
        if not self.complete:
            raise self._failure()

    def _close_signal(self) -> None:
        with self._cond:
            if self._signal < 0:
                return
            if self._waiting:  # (a write polls it: the last one out closes it)
                self._close_later = True
                os.eventfd_write(self._signal, 1)
                return
            os.close(self._signal)
            self._signal = -1

    def drop(self) -> None:
        """The Writer that owns this upload was freed without a close: abort it (nothing
        is stored; writes still queued fail), and say so."""
        if self.complete or (self._thread is not None and not self._thread.is_alive()):
            return
        logger.warning("a bgio.Writer to %s was freed without close(): its upload is "
                       "aborted, nothing is stored", self.name)
        self.discard()

    def discard(self) -> None:
        """Abandon the upload: obstore aborts it, nothing is stored. Idempotent."""
        if self.complete:
            return
        self._end(abandon=True)
        self.acknowledged = 0  # (the parts sent are gone with the upload)
        if self._error is not None and not isinstance(self._error, _Abandoned):
            logger.debug("abandoned upload of %s had failed: %r", self.name, self._error)
