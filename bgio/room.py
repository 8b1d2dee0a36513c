"""Waiting for room under a bound on pending bytes: the back-pressure every bounded writer shares."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import QueueFull
from .timeouts import check_timeout

__all__ = ["wait_for_room"]


def wait_for_room(room: threading.Condition, has_room: Callable[[], bool], block: bool,
                  timeout: float | None, pending: Callable[[], int], bound: int | None,
                  what: str) -> None:
    """Return once ``has_room()`` (the condition's lock held), or raise :class:`bgio.QueueFull`.

    Parameters
    ----------
    room : threading.Condition
        Notified whenever room is freed (or the writer closes).
    has_room : callable returning bool
        True once ``what`` may be accepted.
    block : bool
        Wait (True) or raise at once (False).
    timeout : float or None
        Seconds to wait at most.
    pending, bound, what
        For the message: the bytes pending now, the bound, what is refused.
    """
    limit = check_timeout(timeout)  # refused even when there is room: the call is wrong
    if has_room():
        return
    if not block:
        raise QueueFull(f"{pending()} bytes pending, bound {bound}: no room for {what}")
    if not room.wait_for(has_room, limit):
        raise QueueFull(f"no room for {what} after {timeout} s ({pending()} pending, "
                        f"bound {bound})")
