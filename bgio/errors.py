"""The exceptions bgio raises of its own; each says what happened and what to do next."""

from __future__ import annotations

import errno

__all__ = ["BgioError", "ChainError", "DiskFull", "FramesDropped", "QueueFull", "ShortRead"]


class BgioError(Exception):
    """Base class of bgio's own exceptions."""


class ChainError(BgioError):
    """A write that did not run because an earlier one failed or was cancelled.

    Nothing of this write was written, so the destination has no gap after
    the failed write's last byte. ``__cause__`` is the earlier write's
    exception (a :class:`concurrent.futures.CancelledError` if it was
    cancelled), :attr:`predecessor` is its handle (None if that was a small
    write a :class:`bgio.Writer` gathered with others, whose group keeps no
    handles), and :attr:`root_cause` is the error that started the run of
    failures (the same as ``__cause__`` unless that is a ChainError too).

    Writes to one file object stay failed after an error: open a new file
    object (or a new :class:`bgio.Writer`) to write again once the cause is
    dealt with.
    """

    def __init__(
        self, message: str, predecessor: object = None, root_cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.predecessor = predecessor
        self.root_cause = root_cause


class QueueFull(BgioError):
    """A :class:`bgio.Writer` with ``max_pending_bytes`` has no room for a write.

    Raised by ``write(..., block=False)`` at once, or by a blocking write
    after its ``timeout``. Nothing was queued: retry later, or wait for the
    writes in flight (``Writer.flush()``).
    """


class FramesDropped(BgioError):
    """Frames were lost before they reached an HDF5 writer made with ``on_drop="raise"``.

    A gap in the producer's ``frame_id`` counter, a frame refused by
    back-pressure (:class:`QueueFull`), or frames counted with
    ``add_dropped``. Raised by the writer's next ``append`` (which then
    accepts nothing) and by its ``close()`` (once the file is complete and
    closed). :attr:`dropped` is how many frames were lost so far.
    """

    def __init__(self, message: str, dropped: int) -> None:
        super().__init__(message)
        self.dropped = dropped

    def __reduce__(self) -> tuple[type[FramesDropped], tuple[str, int]]:
        # (Pickled to the producers in other processes with its count.)
        return type(self), (str(self), self.dropped)


class DiskFull(BgioError, OSError):
    """An HDF5 writer stopped because the disk is (nearly) full: ``errno`` is ``ENOSPC``.

    Raised at the start when the disk has less than the writer's
    ``min_free`` free (or too little for its ``expected_frames`` /
    ``expected_bytes``), and during a run by the store that would have
    left less than ``min_free`` (it is not made): that store's handle and
    :meth:`close` raise it, the later stores fail with
    :class:`ChainError`, and the file is left valid, holding what was
    stored. :attr:`stored` is how many frames (events, for a
    RecordWriter's group) were stored; :attr:`free` the bytes free when it
    stopped (None if unknown).
    """

    def __init__(self, message: str, stored: int, free: int | None) -> None:
        super().__init__(errno.ENOSPC, message)
        self.stored = stored
        self.free = free

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type[DiskFull], tuple[str, int, int | None]]:
        # (Pickled from the writer process with its counts.)
        return type(self), (str(self.strerror), self.stored, self.free)



class ShortRead(BgioError, EOFError):
    """A background read of ``size`` bytes met the end of its source first.

    What was read is kept: :attr:`bytes_read` bytes (characters for a text
    stream) of the :attr:`expected`, and :attr:`data`, the data read (the
    buffer passed as ``into``, filled that far, or a ``bytearray`` / str
    of what was read). Being an :class:`EOFError`, it is caught where
    the end of the data is.
    """

    def __init__(self, message: str, bytes_read: int, expected: int,
                 data: object = None) -> None:
        super().__init__(message)
        self.bytes_read = bytes_read
        self.expected = expected
        self.data = data
