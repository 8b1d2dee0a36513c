"""The exit drain: writes pending when the program ends are finished, or abandoned honestly.

At interpreter exit (before non-daemon threads are joined) the engine
waits here for every write still queued or under way. If that takes more
than :data:`QUIET` seconds, one line on standard error says how many
writes and how many MiB are left, and that Ctrl-C abandons them. A Ctrl-C
during the wait cancels every pending write (a running one stops before its
next chunk; an atomic write removes its temporary file), logs on the
``bgio`` logger, per destination, how far it got, and ends the process
with status 130 (``os._exit``, after flushing the log and the standard
streams: the interpreter would otherwise report the interrupt as an
"Exception ignored" and exit 0, as if nothing had been lost). A drain that
completes leaves the program's own exit status as it was.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from .handle import BackgroundWriteProcess

__all__ = ["ABANDONED_STATUS", "QUIET", "abandon", "drain", "say_if_slow"]

logger = logging.getLogger("bgio")

#: Seconds the drain waits silently before it says what it is waiting for.
QUIET = 0.5
#: The exit status after abandoning writes (128 + SIGINT, as a shell reports it).
ABANDONED_STATUS = 130
#: Seconds to wait for the workers to stop after their writes are cancelled.
STOP_TIMEOUT = 10.0

_MIB = 1024 * 1024

Pending = Callable[[], list[tuple[str, BackgroundWriteProcess]]]
WaitAll = Callable[[float | None], bool]


def _left(handles: list[tuple[str, BackgroundWriteProcess]]) -> int:
    return sum(max(0, (handle.total_bytes or 0) - handle.bytes_written)
               for _, handle in handles)


_said = False  # the line was printed already (HDF5 writers closed at exit come first)


def say_if_slow(pending: Pending, wait_all: WaitAll) -> None:
    """Wait :data:`QUIET` seconds for the pending writes; if some are left, print the one
    line (once per process). A Ctrl-C during the wait is the caller's to handle."""
    global _said
    if _said or wait_all(QUIET):
        return
    waiting = pending()
    if waiting:
        _said = True
        sys.stderr.write(f"bgio: finishing {len(waiting)} pending write(s), "
                         f"{_left(waiting) / _MIB:.1f} MiB left; press Ctrl-C to abandon "
                         "them\n")
        sys.stderr.flush()


def drain(pending: Pending, wait_all: WaitAll) -> None:
    """Wait for every pending write; on Ctrl-C, :func:`abandon` them (the process ends).

    Parameters
    ----------
    pending : callable
        Returns the pending writes, ``(destination name, handle)``.
    wait_all : callable
        Waits up to a timeout (None: no limit) for all of them; True when none is left.
    """
    try:
        say_if_slow(pending, wait_all)
        wait_all(None)
    except KeyboardInterrupt:
        abandon(pending, wait_all)


def abandon(pending: Pending, wait_all: WaitAll) -> None:
    """Cancel every pending write, log how far each got, and end the process (status 130).

    Further Ctrl-C are ignored meanwhile: the temporary files of atomic
    writes must be removed.
    """
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to ignore there
        pass
    waiting = pending()
    for _, handle in waiting:
        handle.cancel()
    wait_all(STOP_TIMEOUT)
    by_destination: dict[str, list[BackgroundWriteProcess]] = {}
    for name, handle in waiting:
        by_destination.setdefault(name, []).append(handle)
    for name, handles in by_destination.items():
        written = sum(handle.bytes_written for handle in handles)
        total = sum(handle.total_bytes or handle.bytes_written for handle in handles)
        logger.error("abandoned at exit: %s: %d of %d bytes written (%d write(s) cancelled)",
                     name, written, total, len(handles))
    sys.stderr.write(f"bgio: abandoned {len(waiting)} write(s); "
                     f"{_left(waiting) / _MIB:.1f} MiB not written\n")
    for handler in logging.getLogger().handlers + logger.handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - exiting: a handler that cannot flush is moot
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - as above
            pass
    os._exit(ABANDONED_STATUS)
