"""Writers still open when the program ends are closed, so the frames they accepted are stored.

The engine finishes every queued store at exit, but a writer also holds
frames of its own: chunks being filled, records waiting for a missing
frame. Each writer registers here; at interpreter exit (before the engine
stops, and before ``atexit`` handlers run) those still open are closed.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Protocol

from .. import drain, engine

__all__ = ["track", "untrack"]

logger = logging.getLogger("bgio")


class _Closable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closable] = weakref.WeakSet()


def track(writer: _Closable) -> None:
    """Close ``writer`` at exit if it is still open then (it is only weakly referenced)."""
    _open.add(writer)


def untrack(writer: _Closable) -> None:
    """Forget ``writer``: something that closes it is tracked instead."""
    _open.discard(writer)


def _close_all() -> None:
    try:
        if len(_open):
            # The writers' stores queued so far may take a while: say so first.
            drain.say_if_slow(engine.pending, engine.wait_all)
        for writer in list(_open):
            try:
                writer.close()
            except Exception:
                if not drain.abandoning():  # (else cancelled, and said per destination)
                    logger.exception("closing %r at exit failed", writer)
        drain.hold_if_abandoning()
    except KeyboardInterrupt:
        # Ctrl-C while the writers store what they hold: abandon it all, as
        # the engine's drain would (it logs, and ends the process, status 130).
        drain.abandon(engine.pending, engine.wait_all)


def _forget_all() -> None:
    """In a forked child: the parent's writers are the parent's to close. Closing the
    child's copies at its exit (``multiprocessing`` runs the threads' exit hooks
    there) would write the child's stale view of the file's metadata into the
    parent's file, truncating or corrupting it."""
    _open.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)

try:
    threading._register_atexit(_close_all)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - very old interpreters
    import atexit

    atexit.register(_close_all)
