"""Waiting for a full destination to drain, without spinning, and so that cancel() can cut it short."""

from __future__ import annotations

import os
import select
import time

__all__ = ["Waiter", "WriteInterrupted"]


class WriteInterrupted(Exception):
    """The write was cancelled while it waited for its destination (internal to bgio).

    ``taken`` is what the interrupted call had taken before it waited (a
    buffered writer may take part of a block, then report that it would block).
    """

    taken = 0


class Waiter:
    """Blocks in ``poll()`` until an fd is writable or :meth:`interrupt` is called.

    One per lane (a destination's queue), made by its worker. The wake-up fd
    is an eventfd: :meth:`interrupt` may be called from any thread, before
    or during a wait, and the wait then raises :class:`WriteInterrupted`.
    :attr:`waited` adds up the seconds spent waiting: that is back-pressure
    from a slow reader, not time spent writing, and pacing must not count it.
    """

    __slots__ = ("_wake_fd", "waited")

    def __init__(self) -> None:
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.waited = 0.0

    def wait_writable(self, fd: int, events: int = select.POLLOUT) -> None:
        """Return once ``fd`` can take more (or has failed: the next write says how).

        ``events`` is what to wait for: ``POLLOUT``, or ``POLLIN`` for a TLS
        socket that must read before it can write again.

        Raises
        ------
        WriteInterrupted
            If :meth:`interrupt` was called.
        """
        started = time.perf_counter()
        try:
            self.wait_for(fd, events)
        finally:
            self.waited += time.perf_counter() - started

    def wait_for(self, fd: int, events: int = select.POLLIN) -> None:
        """Return once ``fd`` is ready for ``events``, as :meth:`wait_writable`, but the
        time is not counted in :attr:`waited`: for a sink whose wait is its own work (an
        upload waiting for the store), which pacing counts as busy.

        Raises
        ------
        WriteInterrupted
            If :meth:`interrupt` was called.
        """
        poller = select.poll()
        poller.register(fd, events)
        poller.register(self._wake_fd, select.POLLIN)
        ready = poller.poll()
        if any(which == self._wake_fd for which, _ in ready):
            self.clear()
            raise WriteInterrupted

    def take_waited(self) -> float:
        """Seconds waited since the last call."""
        waited, self.waited = self.waited, 0.0
        return waited

    def interrupt(self) -> None:
        """Make the current or next wait raise :class:`WriteInterrupted` (thread-safe).

        Called by a handle's cancel() only while the worker has it hooked up,
        so never after :meth:`close`.
        """
        os.eventfd_write(self._wake_fd, 1)

    def clear(self) -> None:
        """Forget an interrupt that came when nothing was waiting."""
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self._wake_fd)
