"""The exit drain: writes pending when the program ends are finished, or abandoned honestly.

At interpreter exit (before non-daemon threads are joined) the engine
waits here for every write still queued or under way. If that takes more
than :data:`QUIET` seconds, one line on standard error says how many
writes and how many MiB are left, and that Ctrl-C abandons them. A Ctrl-C
then (through the handler :func:`arm` installs) cancels every pending
write (a running one stops before its next chunk; an atomic write
removes its temporary file), logs on the
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
import threading
from collections.abc import Callable

from .handle import BackgroundWriteProcess

__all__ = ["ABANDONED_STATUS", "QUIET", "abandon", "abandoning", "arm", "drain",
           "hold_if_abandoning", "say_if_slow"]

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
_abandoning = threading.Event()  # a Ctrl-C handed the pending writes to abandon()


def abandoning() -> bool:
    """True once a Ctrl-C at exit handed the pending writes to :func:`abandon`."""
    return _abandoning.is_set()


def hold_if_abandoning() -> None:
    """If a Ctrl-C is abandoning the writes, wait for it to end the process: the main
    thread must not finish exiting first (with the program's own status)."""
    if _abandoning.is_set():
        threading.Event().wait()


def arm(pending: Pending, wait_all: WaitAll) -> None:
    """From now on a Ctrl-C abandons the pending writes (see :func:`abandon`).

    The handler does not raise KeyboardInterrupt into the waiting code (an
    interrupt that lands in a finalizer is printed as "Exception ignored"
    and lost, and the drain would go on and exit 0): it hands the work to a
    thread of its own, which ends the process, while the main thread keeps
    waiting. Only from the main thread (where signals are handled).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the temporaries must be removed
        _abandoning.set()
        try:
            threading.Thread(target=abandon, args=(pending, wait_all),
                             name="bgio-abandon", daemon=True).start()
        except RuntimeError:  # no new threads any more: do it here
            abandon(pending, wait_all)

    signal.signal(signal.SIGINT, on_interrupt)


def say_if_slow(pending: Pending, wait_all: WaitAll) -> None:
    """Wait :data:`QUIET` seconds for the pending writes; if some are left, print the one
    line (once per process) and :func:`arm` the Ctrl-C handler. A Ctrl-C during the
    wait itself is the caller's to handle (a KeyboardInterrupt)."""
    global _said
    if _said or wait_all(QUIET):
        return
    waiting = pending()
    if waiting:
        _said = True
        arm(pending, wait_all)  # only now: a quick exit leaves the program's handler alone
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
        hold_if_abandoning()
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
