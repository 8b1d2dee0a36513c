"""How well bgio keeps to a pace it is given: requested duty cycles and a ``max_rate`` cap."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..api import PriorityLike
from ..priority import PRESETS, BackgroundIOPriority
from .compare import Comparison, compare_writes
from .data import MIB, nbytes
from .writes import WriteRun, priority_label

__all__ = ["RateRun", "duty_cycles", "max_rate"]


@dataclass
class RateRun:
    """A write capped by ``max_rate``: the requested and the achieved rate.

    Attributes
    ----------
    target_rate : float
        The profile's ``max_rate``, bytes per second.
    achieved_rate : float
        ``size_bytes / seconds``, median over the runs.
    size_bytes : int
        Bytes written per run.
    seconds : float
        Median wall time of one write.
    chunk_size : int
        The chunk size used.
    runs : list of WriteRun
        Every run.
    """

    target_rate: float
    achieved_rate: float
    size_bytes: int
    seconds: float
    chunk_size: int
    runs: list[WriteRun] = field(default_factory=list)

    @property
    def error_pct(self) -> float:
        """Deviation of the achieved rate from the target, in percent."""
        return 100.0 * (self.achieved_rate / self.target_rate - 1.0)


def _profiles_only(
    data: object,
    profiles: Sequence[PriorityLike],
    repeat: int,
    directory: str | os.PathLike[str] | None,
    warmup: bool,
    on_step: Callable[[str], None] | None,
) -> Comparison:
    """:func:`compare_writes` of ``profiles`` alone: no synchronous arm, no idle baseline.

    What is measured here is bgio against its own settings, so neither
    reference arm would add a figure, only time.
    """
    return compare_writes(
        data, profiles, repeat, directory=directory, sync=False, idle_seconds=None,
        warmup=warmup, on_step=on_step,
    )


def duty_cycles(
    data: object,
    percents: Sequence[float] = (20, 50, 80),
    chunk_size: int = MIB,
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> Comparison:
    """Measured duty cycle of writes at custom ``bandwidth_pct`` profiles.

    Each profile is ``BackgroundIOPriority(0.001, chunk_size, pct)``; the
    profiles are interleaved as in :func:`compare_writes` (without the
    synchronous arm or the idle baseline).

    Parameters
    ----------
    data : bytes-like or numpy array
        The buffer written by every run.
    percents : sequence of float, default (20, 50, 80)
        Requested ``bandwidth_pct`` values.
    chunk_size : int, default 1 MiB
        ``default_chunk_size`` of the profiles.
    repeat : int, default 1
        Rounds (medians reported).
    directory : path-like or None
        Where the files are written; None uses a temporary directory.
    warmup : bool, default False
        Discard one write first (the process is usually warm already).
    on_step : callable or None
        Progress callback, as in :func:`compare_writes`.

    Returns
    -------
    Comparison
        ``bgio`` holds the median run per profile, in the order of
        ``percents``; each run's ``requested_duty_pct`` and
        ``measured_duty_pct`` are the figures. ``sync`` and ``idle`` are None.
    """
    profiles = [BackgroundIOPriority(0.001, chunk_size, pct) for pct in percents]
    return _profiles_only(data, profiles, repeat, directory, warmup, on_step)


def max_rate(
    data: object,
    rate: float = 50e6,
    chunk_size: int = MIB,
    repeat: int = 1,
    *,
    directory: str | os.PathLike[str] | None = None,
    warmup: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> RateRun:
    """Achieved rate of a write capped at ``rate`` bytes per second.

    The profile is preset 1 (no duty-cycle pacing) with ``max_rate=rate``
    and ``default_chunk_size=chunk_size``. The token bucket spaces the
    starts of ``n`` chunks ``n - 1`` intervals apart, so the achieved rate
    is about ``rate * n / (n - 1)``: write a hundred chunks or more (for
    example 100 MB in 1 MiB chunks, 2 s at 50 MB/s) for a figure within 1 %.

    Parameters
    ----------
    data : bytes-like or numpy array
        The buffer; pick its size for the duration wanted (``size / rate``).
    rate : float, default 50e6
        ``max_rate`` in bytes per second.
    chunk_size : int, default 1 MiB
        Chunk size of the profile.
    repeat : int, default 1
        Runs (medians reported).
    directory : path-like or None
        Where the file is written; None uses a temporary directory.
    warmup : bool, default False
        Discard one write first.
    on_step : callable or None
        Progress callback, as in :func:`compare_writes`.

    Returns
    -------
    RateRun
    """
    profile = PRESETS[1].replace(max_rate=rate, default_chunk_size=chunk_size)
    result = _profiles_only(data, [profile], repeat, directory, warmup, on_step)
    runs = result.runs[priority_label(profile)]
    rates = [run.rate for run in runs]
    return RateRun(
        target_rate=float(rate),
        achieved_rate=statistics.median(rates),
        size_bytes=nbytes(data),
        seconds=statistics.median(run.seconds for run in runs),
        chunk_size=chunk_size,
        runs=runs,
    )
