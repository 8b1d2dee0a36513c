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

The worker writes a group as one piece of its write loop, block ``k``
belonging to ``handles[k]``, exactly as it writes a run of small jobs it
gathered itself (:mod:`bgio.worker`).
"""

from __future__ import annotations

import threading

from .handle import BackgroundWriteProcess, GroupedWrite, GroupState, cancels_so_far
from .pieces import IOV_MAX

__all__ = ["MAX_WRITES", "SMALL_WRITE", "WriteGroup"]

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

    ``handles``, ``blocks`` and ``size`` may be changed only with ``lock``
    held (the Writer's lock) and while ``open`` is true (:meth:`add`);
    :meth:`seal` is how the worker takes them. The handles share one
    :class:`~bgio.handle.GroupState`, ``state``: the worker starts and
    finishes the group in one step each, however many writes it holds.

    Parameters
    ----------
    lock : threading.Lock
        The lock under which the Writer appends.
    limit : int
        Bytes the group takes at most (the Writer's chunk size).
    """

    __slots__ = ("blocks", "cancels", "handles", "limit", "lock", "open", "size", "state")

    def __init__(self, lock: threading.Lock, limit: int) -> None:
        self.lock = lock
        self.limit = limit
        self.open = True
        self.state = GroupState()
        self.cancels = cancels_so_far()  # unchanged when it starts: none was cancelled
        self.handles: list[BackgroundWriteProcess] = []
        self.blocks: list[bytes] = []
        self.size = 0

    def add(self, block: bytes) -> GroupedWrite | None:
        """Add a write of ``block`` and return its handle, or None if the group takes no
        more (call with ``lock`` held)."""
        size = len(block)
        offset = self.size
        count = len(self.blocks)
        if not self.open or offset + size > self.limit or count >= MAX_WRITES or (
                count >= IOV_MAX and offset >= COPY_BELOW * count):
            return None  # (past IOV_MAX blocks, only small ones: those are copied)
        handle = GroupedWrite(self.state, offset, size)
        self.handles.append(handle)
        self.blocks.append(block)
        self.size = offset + size
        return handle

    def seal(self) -> tuple[list[BackgroundWriteProcess], list[bytes]]:
        """Take nothing more; return the handles and blocks, and let go of them."""
        with self.lock:
            self.open = False
            handles, blocks = self.handles, self.blocks
            self.handles, self.blocks = [], []
        return handles, blocks
