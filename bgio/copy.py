"""``bgio copy``: a file (or standard input) copied by the background engine, paced like ``pv -L``.

The calling thread reads blocks and hands them to a :class:`bgio.Writer`;
the engine writes them, paced by the priority profile and ``max_rate``.
Memory stays bounded: the reader waits while ``max_pending_bytes`` are
queued.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import queue
import re
import threading
from collections import deque
from collections.abc import Callable

from .handle import BackgroundWriteProcess
from .priority import BackgroundIOPriority
from .writer import Writer

__all__ = ["BLOCK_SIZE", "MAX_PENDING", "copy_stream", "format_size", "parse_rate"]

logger = logging.getLogger("bgio")

#: Bytes read at a time.
BLOCK_SIZE = 4 * 1024 * 1024
#: Bytes read ahead of the writes at most.
MAX_PENDING = 64 * 1024 * 1024

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(ib|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: The units :func:`format_size` prints, each 1024 times the one before.
_PRINTED = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_rate(text: str) -> int:
    """Bytes per second from ``"50M"`` and the like: suffixes K, M, G, T are powers of 1024.

    The one rule for sizes in ``bgio copy``, as for ``pv -L``: ``100M`` is
    100 MiB/s. ``KiB``, ``MiB``, ``GiB`` and ``TiB`` say the same thing
    (and are what the progress bar prints, see :func:`format_size`); the
    suffix letter may be lower case, and ``B`` alone means bytes. ``50MB``
    is refused: it reads as 50,000,000 to some and 50 MiB to others.

    Examples
    --------
    >>> parse_rate("100M"), parse_rate("1.5k"), parse_rate("512"), parse_rate("2GiB")
    (104857600, 1536, 512, 2147483648)

    Raises
    ------
    ValueError
        If ``text`` is not a positive number with an optional suffix, or
        its suffix is a decimal-looking ``KB``, ``MB``, ``GB`` or ``TB``.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r} (a number, optionally with K, M, G or T)")
    number, prefix, unit = match.groups()
    if prefix and unit is not None and unit.lower() == "b":
        # dd reads 50MB as 50,000,000 and pv -L refuses it; tqdm's own bar
        # printed 50 MiB as 50.0MB but 50 MiB/s as 52.4MB/s. No reading is safe.
        raise ValueError(
            f"ambiguous rate: {text!r} (write {number}{prefix.upper()} or "
            f"{number}{prefix.upper()}iB for powers of 1024; 1000-based units are not taken)")
    if unit is not None and unit.lower() == "ib" and not prefix:
        raise ValueError(f"not a rate: {text!r} (a number, optionally with K, M, G or T)")
    value = float(number) * _UNITS[prefix.lower()]
    if not math.isfinite(value):
        raise ValueError(f"not a rate: {text!r} (too large)")
    rate = int(value)
    if rate < 1:
        raise ValueError(f"not a rate: {text!r} (below one byte per second)")
    return rate


def format_size(size: float) -> str:
    """A byte count as the progress bar shows it: powers of 1024, named KiB, MiB, GiB.

    Three significant digits, as ``pv`` and ``tqdm`` print; what it prints
    :func:`parse_rate` reads back as the same number (to its rounding).

    Examples
    --------
    >>> format_size(512), format_size(1536), format_size(50 * 2**20), format_size(3 * 2**30)
    ('512B', '1.50KiB', '50.0MiB', '3.00GiB')
    """
    if abs(size) < 1024:
        return f"{size:.0f}B"
    for unit in _PRINTED[1:]:
        size /= 1024
        if abs(size) < 1024 or unit == _PRINTED[-1]:
            break
    if abs(size) < 9.995:
        return f"{size:.2f}{unit}"
    if abs(size) < 99.95:
        return f"{size:.1f}{unit}"
    return f"{size:.0f}{unit}"


def copy_stream(
    source: io.RawIOBase | io.BufferedIOBase,
    destination: str | os.PathLike[str] | int,
    profile: BackgroundIOPriority,
    *,
    fsync: bool = False,
    atomic: bool = False,
    on_progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Copy everything ``source`` holds to ``destination`` through the engine; return the bytes.

    Parameters
    ----------
    source : binary file object
        Read with ``readinto`` until it is exhausted.
    destination : path or int file descriptor
        A path is created (or truncated); ``atomic`` applies to paths.
    profile : bgio.BackgroundIOPriority
        Pacing, ``max_rate`` included.
    fsync, atomic : bool, keyword-only
        As for :class:`bgio.Writer`.
    on_progress : callable taking an int, or None
        Called from the worker with the size of each block once written.
    stop : threading.Event or None
        Set by another thread to stop early: queued blocks are cancelled
        (an atomic copy leaves the old file), and ``KeyboardInterrupt`` is raised.

    Raises
    ------
    OSError
        Reading the source, or writing (the first error of the writes).
    KeyboardInterrupt
        If interrupted (or ``stop`` set); writes queued then are cancelled.
    """
    failed = threading.Event()
    writer = Writer(destination, priority=profile, fsync=fsync, atomic=atomic,
                    max_pending_bytes=MAX_PENDING, close_when_finished=not isinstance(destination, int))
    pending: deque[BackgroundWriteProcess] = deque()
    # Buffers go back here once written and are read into again: a new
    # buffer each time would be zeroed and paged in while holding the GIL,
    # which makes the worker wait for it at every chunk (milliseconds each).
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()

    def written(handle: BackgroundWriteProcess, block: bytearray) -> None:
        free.put(block)
        if handle.cancelled() or handle.exception() is not None:
            failed.set()
        elif on_progress is not None:
            on_progress(handle.bytes_written)

    total = 0
    try:
        while not failed.is_set():
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            try:
                block = free.get_nowait()
            except queue.Empty:
                block = bytearray(BLOCK_SIZE)  # at most MAX_PENDING / BLOCK_SIZE + 1 of them
            size = source.readinto(block)
            if not size:
                break
            handle = writer.write(memoryview(block)[:size])
            handle.add_done_callback(functools.partial(written, block=block))
            pending.append(handle)
            while pending and pending[0].done():
                pending.popleft()
            total += size
        writer.close()  # waits; raises the first error of the writes
    except BaseException:
        # Interrupted or failed: cancel what is queued (the first cancel
        # fails the rest in order) and close; an atomic copy is discarded.
        for handle in pending:
            if handle.cancel():
                break
        try:
            writer.close()
        except BaseException as exc:  # noqa: BLE001 - the error being raised matters more
            logger.debug("closing %s after the copy stopped: %r", destination, exc)
        raise
    return total
