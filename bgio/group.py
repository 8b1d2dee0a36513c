"""Small writes gathered in the caller's thread: one queued job for many writes.

A :class:`bgio.Writer` issuing many small writes would pay, per write, for a
job and a trip through the engine's lock, and its worker for taking each
job apart again. Instead, the Writer appends consecutive small writes to
the *open* group at the end of its destination's queue: one handle and one
block each, nothing else. The group is queued as one job when it is made,
and is *sealed* (takes nothing more) as soon as

- anything else is queued on the destination behind it (by this Writer or
  any other caller: order is call order, see :func:`bgio.engine.submit`), or
- the worker takes it to write it (:meth:`WriteGroup.seal`), or
- it holds a chunk's worth of bytes, or :data:`MAX_WRITES` writes.

The worker writes a group as one piece of its write loop, as it writes a
run of small jobs it gathered itself (:mod:`bgio.worker`), and settles it
in one step: each write's handle derives its outcome from the group's
(:class:`~bgio.handle.GroupState`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import overload

from .handle import GroupedWrite, GroupState
from .pieces import IOV_MAX, Owner
from .source import Block

__all__ = ["MAX_WRITES", "SMALL_WRITE", "GroupOwners", "WriteGroup"]

#: Writes of at most this many bytes join a group; larger ones are jobs of their own.
SMALL_WRITE = 65536

#: A group of more than IOV_MAX blocks (one gather write's worth) goes on
#: taking writes only while they average less than this: the worker copies
#: such blocks together, and copying larger ones costs more than it saves.
COPY_BELOW = 1024

#: Most writes one group takes.
MAX_WRITES = 65536


class WriteGroup:
    """Consecutive small writes of one Writer, queued as one job.

    ``blocks`` and ``size`` may be changed only with ``lock`` held (the
    Writer's lock) and while ``open`` is true (:meth:`add`); :meth:`seal` is
    how the worker takes them. The group keeps no handle: its writes' handles
    share one :class:`~bgio.handle.GroupState`, ``state``, from which each
    derives its own progress and outcome, so the worker starts and finishes
    the group in one step each, however many writes it holds, and a handle
    the caller drops is freed at once.

    Parameters
    ----------
    lock : threading.Lock
        The lock under which the Writer appends.
    limit : int
        Bytes the group takes at most (the Writer's chunk size).
    """

    __slots__ = ("blocks", "limit", "lock", "open", "size", "state")

    def __init__(self, lock: threading.Lock, limit: int) -> None:
        self.lock = lock
        self.limit = limit
        self.open = True
        self.state = GroupState()
        self.blocks: list[bytes] = []
        self.size = 0

    def add(self, block: bytes) -> GroupedWrite | None:
        """Add a write of ``block`` (not empty) and return its handle, or None if the
        group takes no more (call with ``lock`` held)."""
        size = len(block)
        offset = self.size
        count = len(self.blocks)
        if not self.open or offset + size > self.limit or count >= MAX_WRITES or (
                count >= IOV_MAX and offset >= COPY_BELOW * count):
            return None  # (past IOV_MAX blocks, only small ones: those are copied)
        self.blocks.append(block)
        self.size = offset + size
        return GroupedWrite(self.state, offset, size)

    def seal(self) -> list[bytes]:
        """Take nothing more; return the blocks, and let go of them."""
        with self.lock:
            self.open = False
            blocks, self.blocks = self.blocks, []
        return blocks


class _BlockOwner:
    """The owner of one block of a group's piece, as the write loop sees it."""

    __slots__ = ("group", "offset")

    def __init__(self, group: GroupState, offset: int) -> None:
        self.group = group
        self.offset = offset

    @property
    def cancel_requested(self) -> bool:
        return self.group.cancel_asked(self.offset)

    @property
    def bytes_written(self) -> int:
        return 0  # what is credited is added to the group's count

    @bytes_written.setter
    def bytes_written(self, count: int) -> None:
        self.group.bytes_written += count

    def watch_cancel(self, wake: Callable[[], None] | None) -> bool:
        self.group.watch_cancel(wake)
        return self.cancel_requested


class GroupOwners(Sequence[Owner]):
    """The owners of a group's blocks, for the write loop (:mod:`bgio.pieces`): block
    ``k`` is the write at its offset in the group. Made on demand (the loop asks for
    any but the first only after a cancel or a failure): a group keeps no handles."""

    def __init__(self, group: GroupState, blocks: list[Block | bytes]) -> None:
        self._group = group
        self._blocks = blocks
        self._offsets: list[int] | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    @overload
    def __getitem__(self, index: int) -> Owner: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Owner]: ...

    def __getitem__(self, index: int | slice) -> Owner | Sequence[Owner]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index == 0:  # the run's leader, asked for in every pass
            return _BlockOwner(self._group, 0)
        if self._offsets is None:
            self._offsets = list(accumulate(map(len, self._blocks), initial=0))
        if index < 0:
            index += len(self._blocks)
        return _BlockOwner(self._group, self._offsets[index])

    def offset(self, index: int) -> int:
        """Where block ``index`` begins in the group's bytes."""
        return sum(map(len, self._blocks[:index]))
