"""Writing one piece of a run into a sink: gather writes, partial writes, cancels, credit.

A *piece* is what one pass of the worker's write loop hands to the sink at
once: one chunk of a write, or the blocks of a run of small writes (block
``k`` belongs to ``owners[k]``). :func:`put_piece` writes it and says how far
it got; the worker (:mod:`bgio.worker`) paces and settles.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol

from .handle import GroupState, cancels_so_far
from .sinks import Sink, WriteInterrupted
from .source import Block

__all__ = ["IOV_MAX", "Owner", "put_piece"]

#: Buffers one gather write takes at most (the system's IOV_MAX).
IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if hasattr(os, "sysconf") else 1024


class Owner(Protocol):
    """What a piece's block belongs to: a write's handle, or the state of a Writer's
    group (:class:`~bgio.handle.GroupState`), which owns all the group's blocks."""

    bytes_written: int

    @property
    def cancel_requested(self) -> bool: ...

    def watch_cancel(self, wake: Callable[[], None] | None) -> bool: ...


def put_piece(sink: Sink, owners: Sequence[Owner], piece: list[Block | bytes],
              cancels: int = -1, shared: GroupState | None = None
              ) -> tuple[int, int, BaseException | None]:
    """Write one piece (block ``k`` is ``owners[k]``'s); return (bytes written, index in
    ``owners`` where it stopped or -1, error).

    Partial writes resume exactly where the destination stopped. A piece of
    several blocks goes out in one gather write where the sink has one;
    beyond the system's limit of buffers per call, runs of small blocks are
    first gathered into one (a copy of those small blocks only), so that a
    thousand queued 64-byte writes cost one system call, not many: each
    call releases the interpreter lock, and getting it back may take 5 ms
    when the program is busy.

    A write cancelled before its bytes went out is not written, and the
    piece stops there; one cancelled while its bytes were going out (the
    destination full) stops where it stands. The bytes written are
    credited to the handles once the piece is through. ``cancels`` is
    :func:`~bgio.handle.cancels_so_far` when the run began: while it is
    unchanged, no write of the run can have been cancelled. ``shared``, the
    state of a Writer's group whose writes the piece holds, is credited
    at once when the whole piece is written (its handles read it).
    """
    count = len(piece)
    per = 1  # blocks per buffer
    buffers = piece
    if count > IOV_MAX and sink.write_many is not None:
        per = -(-count // IOV_MAX)
        buffers = [b"".join(piece[start:start + per])  # type: ignore[arg-type]
                   for start in range(0, count, per)]
    written = 0  # bytes of the piece written
    error: BaseException | None = None
    stop = -1  # the write the piece stopped in (cancelled or failed)
    limit = -1  # with a cancelled write ahead: the piece's offset it must stop at
    owner, owner_end = 0, len(piece[0])  # the write whose block holds byte `written`
    buffer_index = 0
    rest: Block | bytes = buffers[0]  # what is left of the current buffer
    interrupted = False  # a wait was cut short: the write at `written` may be cancelled
    if len(buffers) > 1 and sink.write_many is not None and (
            cancels_so_far() == cancels or not _any_cancel(owners, 1, count)):
        try:
            taken = sink.write_many(buffers)
        except WriteInterrupted as cut_short:
            taken = cut_short.taken  # whose cancel it was is seen below
            interrupted = True
        except BaseException as exc:  # noqa: BLE001 - the first block's write failed
            error, taken = exc, 0
        written = taken
        while buffer_index < len(buffers) and taken >= len(buffers[buffer_index]):
            taken -= len(buffers[buffer_index])
            buffer_index += 1
        if buffer_index < len(buffers):
            rest = memoryview(buffers[buffer_index])[taken:]  # type: ignore[arg-type]
    write = sink.write
    while error is None and buffer_index < len(buffers):
        while written >= owner_end and owner + 1 < count:
            owner += 1
            owner_end += len(piece[owner])
        if interrupted:
            interrupted = False
            if owners[owner].cancel_requested:
                stop = owner  # it stops where it stands
                break
        if limit < 0 and cancels_so_far() != cancels:
            # A write whose bytes are in what is left of this buffer, cancelled?
            end = min((buffer_index + 1) * per, count)
            first = owner + 1 if written > owner_end - len(piece[owner]) else owner
            cancelled = _first_cancel(owners, max(first, 1 if buffer_index == 0 else 0), end)
            if cancelled >= 0:
                stop = cancelled
                limit = owner_end - len(piece[owner]) + sum(
                    len(piece[index]) for index in range(owner, cancelled))
        if limit >= 0 and written >= limit:
            break
        if limit >= 0 and written + len(rest) > limit:
            rest = rest[:limit - written] if isinstance(rest, str) \
                else memoryview(rest)[:limit - written]
        try:
            taken = write(rest)  # type: ignore[arg-type]
            while taken < len(rest):
                written += taken
                if type(rest) is bytes:
                    rest = memoryview(rest)  # slicing bytes would copy
                rest = rest[taken:]
                taken = write(rest)  # type: ignore[arg-type]
        except WriteInterrupted as cut_short:
            # cancel() was asked while the destination was full: the write
            # whose bytes are going out stops where it stands if it was its
            # cancel; a later write's cancel stops the piece before it.
            written += cut_short.taken
            rest = rest[cut_short.taken:]
            while written >= owner_end and owner + 1 < count:
                owner += 1
                owner_end += len(piece[owner])
            if owners[owner].cancel_requested:
                stop = owner
                break
            continue
        except BaseException as exc:  # noqa: BLE001 - goes to the write it stopped in
            error = exc
            break
        written += taken
        if limit >= 0 and written >= limit:
            break
        buffer_index += 1
        if buffer_index < len(buffers):
            rest = buffers[buffer_index]
    if shared is not None and error is None and stop < 0:
        shared.bytes_written += written
        return written, -1, None
    # Credit every write with its bytes; the one the piece stopped in gets
    # what reached the destination.
    remaining = written
    stopped_in = -1
    for index, block in enumerate(piece):
        size = len(block)
        if remaining >= size and (stop < 0 or index < stop):
            owners[index].bytes_written += size
            remaining -= size
            continue
        owners[index].bytes_written += remaining
        stopped_in = index
        break
    if error is None and stop < 0:
        return written, -1, None
    return written, stopped_in, error


def _first_cancel(owners: Sequence[Owner], start: int, end: int) -> int:
    """The first of ``owners[start:end]`` whose cancel was asked, or -1."""
    for index in range(start, end):
        if owners[index].cancel_requested:
            return index
    return -1


def _any_cancel(owners: Sequence[Owner], start: int, end: int) -> bool:
    return _first_cancel(owners, start, end) >= 0
