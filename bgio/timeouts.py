"""Checking ``timeout=`` arguments in the caller: what the platform can wait, and no more."""

from __future__ import annotations

import math
import numbers
import threading

__all__ = ["check_timeout"]


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """Return ``timeout`` as seconds to wait, or None for no limit.

    ``None`` and ``math.inf`` mean no limit. Anything a thread cannot wait
    for is refused here, in the caller, instead of failing later inside a
    wait (``threading.TIMEOUT_MAX`` is the longest wait the platform takes).

    Raises
    ------
    TypeError
        If ``timeout`` is not a real number (or is a bool).
    ValueError
        If it is negative, NaN, or finite but longer than ``threading.TIMEOUT_MAX``.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, "
                        f"got {type(timeout).__name__}")
    seconds = float(timeout)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{name} must be >= 0 seconds (or None), got {timeout!r}")
    if seconds == math.inf:
        return None
    if seconds > threading.TIMEOUT_MAX:
        raise ValueError(f"{name}={timeout!r} is longer than this platform can wait "
                         f"({threading.TIMEOUT_MAX:.0f} s); pass None or math.inf for no limit")
    return seconds
