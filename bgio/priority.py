"""Priority profiles: how big each chunk is and how hard a background write may push."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .ioprio import check_io_priority

__all__ = ["DEFAULT_WRITEBACK_WINDOW", "MAX_CONCURRENCY", "PRESETS", "BackgroundIOPriority", "PriorityLike",
           "resolve_priority", "validate_chunk_size"]

_MIB = 1024 * 1024

#: The gentlest busy fraction a profile may ask for, in percent: pauses of
#: 10,000 times the write time. Below it a pause outgrows any wait the
#: platform can make, so it is refused when the profile is made.
MIN_BANDWIDTH_PCT = 0.01
#: The lowest ``max_rate``, bytes per second.
MIN_RATE = 1.0
#: The smallest write-back window: below it the calls per window cost more than they save.
MIN_WRITEBACK_WINDOW = 64 * 1024
#: The most parts an object-store upload may keep in flight (``concurrency``).
MAX_CONCURRENCY = 64
#: The presets' write-back window (2 to 10): see "Pacing the disk" in the manual.
DEFAULT_WRITEBACK_WINDOW = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BackgroundIOPriority:
    """A pacing profile for background writes.

    Parameters
    ----------
    chain_poll_time : float
        Seconds. Kept for compatibility with the older ``nonblock`` module,
        where it was the polling interval of a chained write. bgio never
        polls (a chained write waits on an event), so this value is only
        validated and stored.
    default_chunk_size : int
        Bytes (characters for text streams) written per chunk when the data
        is not chunked by the caller. Larger chunks mean fewer system calls
        and higher throughput; smaller chunks mean finer pacing. Floats are
        truncated, as the older module did.
    bandwidth_pct : float
        Share of wall time, in percent (0.01 <= p <= 100), that the worker may
        spend writing. After each chunk it sleeps so that, over the last
        ``num_chunks_rate_smoothing`` chunks, ``busy / (busy + idle)`` equals
        ``p / 100``. 100 means no duty-cycle pacing.
    num_chunks_rate_smoothing : int, default 5
        The smoothing window, in chunks, over which the duty cycle and the
        reported rate are averaged.
    max_rate : float or None, keyword-only
        An absolute cap in bytes per second (characters per second for text
        streams), at least 1, applied on top of ``bandwidth_pct``.
        ``None`` means no cap.
    writeback_window : int or None, keyword-only
        Bytes per write-back window for regular files (paths and file
        descriptors; see :mod:`bgio.writeback`): each window is written to
        the device as the next one fills, and dropped from the page cache
        once there, so about two windows per destination are dirty and the
        pacing counts the device's time. At least 64 KiB. ``None`` (preset
        1, and a profile made without it) leaves the data in the page cache
        for the kernel to write back when it chooses.
    io_priority : (str, int) or "idle" or None, keyword-only
        The I/O priority the worker thread gives itself while it writes
        with this profile (Linux; see :mod:`bgio.ioprio`): ``("best-effort",
        0..7)`` (0 first; an ordinary process is at 4), ``("realtime",
        0..7)`` (needs privileges), or ``"idle"`` (``("idle", 0)``: served
        when the disk is otherwise idle). None (a profile made without it)
        leaves the thread's own. It governs what the worker submits itself,
        the write-back of its windows included (``writeback_window``).
    concurrency : int or None, keyword-only
        Parts in flight at once in an upload to an object store (1 to
        :data:`MAX_CONCURRENCY`). None (the presets): 8 for a profile that
        does not pace (``bandwidth_pct`` 100, no ``max_rate``), else 1 (the
        next part is handed over once the one before is sent, so the
        worker's busy time is the network's and the busy fraction paces it).

    Raises
    ------
    TypeError
        If a value has the wrong type (names the parameter).
    ValueError
        If a value is out of range (names the parameter).

    Examples
    --------
    >>> import bgio
    >>> gentle = bgio.BackgroundIOPriority(0.002, 512 * 1024, 30, max_rate=50e6)
    >>> gentle.bandwidth_pct
    30.0
    """

    chain_poll_time: float
    default_chunk_size: int
    bandwidth_pct: float
    num_chunks_rate_smoothing: int = 5
    max_rate: float | None = None
    writeback_window: int | None = None
    io_priority: tuple[str, int] | None = None
    concurrency: int | None = None

    def __init__(
        self,
        chain_poll_time: float,
        default_chunk_size: float,
        bandwidth_pct: float,
        num_chunks_rate_smoothing: int = 5,
        *,
        max_rate: float | None = None,
        writeback_window: int | None = None,
        io_priority: tuple[str, int] | str | None = None,
        concurrency: int | None = None,
    ) -> None:
        # The dataclass is frozen (profiles are shared by many writes), so
        # validated values are stored with object.__setattr__.
        setter = object.__setattr__
        setter(self, "chain_poll_time", _non_negative_real("chain_poll_time", chain_poll_time))
        setter(self, "default_chunk_size", validate_chunk_size("default_chunk_size", default_chunk_size))
        pct = _real("bandwidth_pct", bandwidth_pct)
        if not MIN_BANDWIDTH_PCT <= pct <= 100:
            raise ValueError(f"bandwidth_pct must be {MIN_BANDWIDTH_PCT} to 100 (percent), "
                             f"got {bandwidth_pct!r}")
        setter(self, "bandwidth_pct", pct)
        setter(
            self,
            "num_chunks_rate_smoothing",
            _positive_int("num_chunks_rate_smoothing", num_chunks_rate_smoothing),
        )
        if max_rate is not None:
            rate = _real("max_rate", max_rate)
            if rate < MIN_RATE:
                raise ValueError(f"max_rate must be >= {MIN_RATE:g} byte per second or None, "
                                 f"got {max_rate!r}")
            max_rate = rate
        setter(self, "max_rate", max_rate)
        if writeback_window is not None:
            writeback_window = validate_chunk_size("writeback_window", writeback_window)
            if writeback_window < MIN_WRITEBACK_WINDOW:
                raise ValueError(f"writeback_window must be >= {MIN_WRITEBACK_WINDOW} bytes "
                                 f"or None, got {writeback_window!r}")
        setter(self, "writeback_window", writeback_window)
        setter(self, "io_priority", check_io_priority(io_priority))
        if concurrency is not None:
            concurrency = _positive_int("concurrency", concurrency)
            if concurrency > MAX_CONCURRENCY:
                raise ValueError(f"concurrency must be 1 to {MAX_CONCURRENCY} or None, "
                                 f"got {concurrency!r}")
        setter(self, "concurrency", concurrency)

    @property
    def upload_concurrency(self) -> int:
        """Parts an object-store upload keeps in flight with this profile:
        :attr:`concurrency`, or its default (8 unpaced, else 1)."""
        if self.concurrency is not None:
            return self.concurrency
        return 8 if self.bandwidth_pct >= 100 and self.max_rate is None else 1

    def replace(self, **changes: object) -> BackgroundIOPriority:
        """Return a copy of this profile with some fields changed (validated again).

        Examples
        --------
        >>> import bgio
        >>> bgio.PRESETS[1].replace(max_rate=10e6).max_rate
        10000000.0
        """
        fields: dict[str, object] = {
            "chain_poll_time": self.chain_poll_time,
            "default_chunk_size": self.default_chunk_size,
            "bandwidth_pct": self.bandwidth_pct,
            "num_chunks_rate_smoothing": self.num_chunks_rate_smoothing,
            "max_rate": self.max_rate,
            "writeback_window": self.writeback_window,
            "io_priority": self.io_priority,
            "concurrency": self.concurrency,
        }
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"replace() got unknown field(s): {', '.join(sorted(unknown))}")
        fields.update(changes)
        keywords = {name: fields.pop(name)
                    for name in ("max_rate", "writeback_window", "io_priority", "concurrency")}
        return BackgroundIOPriority(**fields, **keywords)  # type: ignore[arg-type]


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    result = float(value)
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _non_negative_real(name: str, value: object) -> float:
    result = _real(name, value)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return result


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def validate_chunk_size(name: str, value: object) -> int:
    """Check a chunk size named ``name``; return it in bytes (floats truncated, as 1.6 MiB is).

    Raises
    ------
    TypeError
        If it is not a number.
    ValueError
        If it is below 1.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        truncated = _real(name, value)
        if truncated < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
        return int(truncated)
    return _positive_int(name, value)


def _preset(poll: float, mib: float, pct: float, io_priority: tuple[str, int] | str,
            window: int | None = DEFAULT_WRITEBACK_WINDOW) -> BackgroundIOPriority:
    return BackgroundIOPriority(poll, int(_MIB * mib), pct, writeback_window=window,
                                io_priority=io_priority)


#: The ten presets of the older ``nonblock`` module, same knobs. 1 favours
#: throughput (5 MiB chunks, no pacing, the page cache's speed); 10 favours
#: the rest of the program (256 KiB chunks, busy 20 % of the time). 2 to 10
#: write files back to the device window by window (``writeback_window``).
#: I/O priorities: best-effort from 0 (before ordinary processes) at 1, 4
#: (theirs) at the default 4, down to 7, then idle at 10.
PRESETS: dict[int, BackgroundIOPriority] = {
    1: _preset(0.0009, 5, 100, ("best-effort", 0), None),
    2: _preset(0.0009, 4, 90, ("best-effort", 2)),
    3: _preset(0.0015, 3, 78, ("best-effort", 3)),
    4: _preset(0.0015, 2, 72, ("best-effort", 4)),
    5: _preset(0.0019, 1.6, 65, ("best-effort", 5)),
    6: _preset(0.0019, 0.75, 55, ("best-effort", 6)),
    7: _preset(0.0024, 0.69, 45, ("best-effort", 7)),
    8: _preset(0.0024, 0.5, 35, ("best-effort", 7)),
    9: _preset(0.0031, 0.3, 30, ("best-effort", 7)),
    10: _preset(0.0100, 0.25, 20, "idle"),
}


#: A preset number 1..10 or a profile.
PriorityLike = int | BackgroundIOPriority


def resolve_priority(priority: object, name: str = "priority") -> BackgroundIOPriority:
    """Turn a preset number (1..10) or a profile into a profile.

    Raises
    ------
    TypeError
        If ``priority`` is neither an int nor a :class:`BackgroundIOPriority`.
    ValueError
        If it is an int outside 1..10.
    """
    if isinstance(priority, BackgroundIOPriority):
        return priority
    if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
        raise TypeError(
            f"{name} must be an int 1..10 or a BackgroundIOPriority, got {type(priority).__name__}"
        )
    try:
        return PRESETS[int(priority)]
    except KeyError:
        raise ValueError(f"{name} must be 1..10 (a preset), got {priority!r}") from None
