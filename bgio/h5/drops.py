"""Frames lost before they reached a writer: counted, recorded in the file, never silent.

A producer that numbers its frames (a camera's frame counter) gives the
number with each append (``frame_id=``); a :class:`DropCounter` counts the
numbers that never came, and the frames refused by back-pressure, and
:func:`set_dropped` records them beside the data at close, readable by
plain h5py::

    dataset.attrs["dropped_frames"]        # how many frames were lost (int64)
    dataset.attrs["dropped_frame_ids"]     # (n, 2) int64: [first, stop) ranges of their ids

(on a RecordWriter's group). The ranges name only the frames whose ids are
known, up to :data:`RANGES_KEPT` ranges; the count is always complete.
"""

from __future__ import annotations

import logging
import numbers

import h5py
import numpy as np

from ..errors import FramesDropped

__all__ = ["DROPPED_ATTRIBUTE", "DROPPED_IDS_ATTRIBUTE", "RANGES_KEPT", "DropCounter",
           "check_on_drop", "set_dropped"]

logger = logging.getLogger("bgio")

DROPPED_ATTRIBUTE = "dropped_frames"
DROPPED_IDS_ATTRIBUTE = "dropped_frame_ids"
#: Ranges of dropped ids kept for the file (an attribute holds 64 KiB at most).
RANGES_KEPT = 2048


def check_on_drop(value: object) -> str:
    """The ``on_drop`` option, checked."""
    if value not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_drop must be 'warn', 'raise' or 'ignore', got {value!r}")
    return value


def check_frame_id(value: object) -> int:
    """A ``frame_id``: an int >= 0 (numpy ints too, not bools)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"frame_id must be an int, got {type(value).__name__}")
    frame_id = int(value)
    if frame_id < 0:
        raise ValueError(f"frame_id must be an int >= 0, got {frame_id}")
    return frame_id


class DropCounter:
    """The frames a writer lost, as its ``on_drop`` says (the writer's lock held in every
    call: appends are counted in the order they are made)."""

    __slots__ = ("_last", "count", "policy", "ranges", "seen_ids")

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.count = 0
        self.ranges: list[tuple[int, int]] = []  # [first, stop) of dropped ids, oldest first
        self.seen_ids = False  # (a frame_id was given: the file records the count even if 0)
        self._last: int | None = None  # the highest frame_id given so far

    def check(self, frame_id: object, frames: int) -> int | None:
        """Before an append of ``frames`` frames: raise if ``on_drop="raise"`` and frames
        were lost, or ``frame_id`` is not after the last; return it checked."""
        if self.count and self.policy == "raise":
            raise FramesDropped(f"{self.describe()}; this writer was made with on_drop='raise'",
                                self.count)
        if frame_id is None:
            return None
        checked = check_frame_id(frame_id)
        if self._last is not None and checked <= self._last:
            raise ValueError(f"frame_id: {checked} is not after the last one given, "
                             f"{self._last}")
        return checked

    def arrived(self, frame_id: int | None, frames: int) -> int:
        """``frames`` frames from ``frame_id`` on were accepted; returns the frames lost
        before them (a gap in the ids)."""
        if frame_id is None:
            return 0
        self.seen_ids = True
        last = self._last
        gap = 0 if last is None else frame_id - last - 1
        if gap > 0:  # (check() made sure ids only go up, in the same hold of the lock)
            self._add(gap, last + 1)  # type: ignore[operator]
        self._last = frame_id + frames - 1
        return max(gap, 0)

    def refused(self, frame_id: int | None, frames: int) -> int:
        """``frames`` frames (from ``frame_id`` on, if given) were refused (QueueFull):
        they are lost too; returns how many frames that makes lost now."""
        if frame_id is not None and self._last is not None and frame_id <= self._last:
            frame_id = None  # (others' ids passed it while it waited: counted, not placed)
        lost = self.arrived(frame_id, frames)
        self._add(frames, frame_id)
        return lost + frames

    def add(self, frames: int, first_id: int | None) -> None:
        """Frames the producer says it lost (``add_dropped``; 0: none, but the file is to
        say so)."""
        if not frames:
            self.seen_ids = True
            return
        self._add(frames, first_id)

    def _add(self, frames: int, first_id: int | None) -> None:
        self.count += frames
        if first_id is None:
            return
        if self.ranges and self.ranges[-1][1] == first_id:
            self.ranges[-1] = (self.ranges[-1][0], first_id + frames)
        elif len(self.ranges) < RANGES_KEPT:
            self.ranges.append((first_id, first_id + frames))

    def describe(self) -> str:
        return f"{self.count} frame(s) were dropped before they reached the writer"

    def record(self) -> tuple[int, list[tuple[int, int]]] | None:
        """What the file records at close (None: no ids given and nothing lost)."""
        if not self.count and not self.seen_ids:
            return None
        return self.count, list(self.ranges)


def set_dropped(node: h5py.Dataset | h5py.Group, count: int,
                ranges: list[tuple[int, int]]) -> None:
    """Record the frames lost as attributes of ``node`` (see the module); in SWMR mode,
    where some HDF5 versions cannot create attributes, a failure is logged (the writer's
    ``dropped_frames`` and its warning have the count all the same)."""
    try:
        node.attrs[DROPPED_ATTRIBUTE] = np.int64(count)
        node.attrs[DROPPED_IDS_ATTRIBUTE] = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    except Exception as exc:
        if not node.file.swmr_mode:
            raise
        logger.warning("could not record %s on %s in SWMR mode: %r", DROPPED_ATTRIBUTE,
                       node.name, exc)
