"""The order of a benchmark's measurements: discarded warm-ups, interleaved rounds, progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

__all__ = ["interleave", "progress", "warm_up"]

_T = TypeVar("_T")


def progress(on_step: Callable[[str], None] | None) -> Callable[[str], None]:
    """``on_step`` itself, or a callback that ignores every step when it is None.

    Parameters
    ----------
    on_step : callable taking a str, or None
        The caller's progress callback.

    Returns
    -------
    callable taking a str
    """
    return on_step or (lambda _label: None)


def warm_up(sides: Iterable[tuple[str, Callable[[], object]]], step: Callable[[str], None]) -> None:
    """Run and discard one measurement of each side, calling ``step("warm-up NAME")`` after each.

    The first write of a process pays for page allocation and thread
    start-up; discarding it keeps that cost out of whichever side happens to
    run first.

    Parameters
    ----------
    sides : iterable of (name, callable)
        Each side's name and one measurement of it.
    step : callable taking a str
        Progress callback.
    """
    for name, run in sides:
        run()
        step(f"warm-up {name}")


def interleave(arms: Sequence[_T], repeat: int) -> Iterator[_T]:
    """Yield ``arms`` ``repeat`` times: in order on even rounds, reversed on odd ones.

    Alternating the order makes slow drift of the machine (page cache
    filling, clock scaling) hit every arm alike instead of always the last.

    Parameters
    ----------
    arms : sequence
        What is measured, one item per arm.
    repeat : int
        Rounds.

    Yields
    ------
    One arm at a time.
    """
    for round_ in range(repeat):
        yield from (arms if round_ % 2 == 0 else arms[::-1])
