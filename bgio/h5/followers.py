"""Following a live file: frames (or records) yielded in order as a SWMR writer completes them.

A frame is complete when its key is non-zero; frames are yielded while the
keys from the last one yielded on are non-zero, so a frame never written
stops the follower there. It ends when the writer sets the finished flag
(after yielding every frame announced before it) or after ``timeout``
seconds without progress. Between looks it sleeps, twice as long each time
up to ``max_poll``: an idle follower costs a fraction of a percent of a core.

Several key datasets may announce the same frames (one per detector, as
swmr_tools reads them): a frame is complete when every one is non-zero.
Keys of a scan have the scan's shape (``scan_shape`` or ``scan_shape + (1,
1)``); their points are followed in C order, the first axis the only one
that grows.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, cast

import h5py
import numpy as np

from ..errors import BgioError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["FollowTimeout", "Follower", "RecordFollower", "check_follow_options", "follow",
           "follow_records"]

#: First pause after a look that found nothing new, in seconds.
FIRST_POLL = 0.002
#: Longest pause between looks, in seconds.
MAX_POLL = 0.05
#: Keys read per look at most.
KEY_WINDOW = 4096


class FollowTimeout(BgioError, TimeoutError):
    """No new frame for ``timeout`` seconds, and the file is not finished.

    Raised by a follower made with ``on_timeout="raise"``; by default it
    just stops, with ``timed_out`` set.
    """


def check_follow_options(timeout: object, poll: object, max_poll: object,
                         on_timeout: object) -> tuple[float, float, float, bool]:
    """A follower's ``timeout``, ``poll`` and ``max_poll`` (seconds > 0; ``max_poll`` at
    least ``poll``) and whether ``on_timeout`` is "raise"; ``TypeError``/``ValueError``
    naming the argument."""
    if on_timeout not in ("stop", "raise"):
        raise ValueError(f"on_timeout must be 'stop' or 'raise', got {on_timeout!r}")
    checked = []
    for label, value in (("timeout", timeout), ("poll", poll), ("max_poll", max_poll)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{label} must be seconds, got {type(value).__name__}")
        if not 0 < value < float("inf"):
            raise ValueError(f"{label} must be seconds > 0, got {value!r}")
        checked.append(float(value))
    return checked[0], checked[1], max(checked[2], checked[1]), on_timeout == "raise"


class _Following:
    """What both followers share: opening the file, the keys, the finished flag, the pacing."""

    def __init__(self, source: str | os.PathLike[str] | h5py.File, *, timeout: float,
                 poll: float, max_poll: float, on_timeout: str) -> None:
        self.timeout, self._poll, self._max_poll, self._raise = check_follow_options(
            timeout, poll, max_poll, on_timeout)
        #: True once iteration stopped because nothing came for ``timeout`` seconds.
        self.timed_out = False
        #: True once iteration stopped because the writer set the finished flag.
        self.finished = False
        self._own = not isinstance(source, h5py.File)
        self.file = _open_swmr(source, self.timeout) if self._own else cast(h5py.File, source)
        self._filename = self.file.filename
        self._done = False
        self._last_progress = time.monotonic()

    def _wait(self, look: Callable[[], int]) -> int:
        """Look until some frames are complete; return how many (0: the end, flags set)."""
        delay = self._poll
        while True:
            ready = look()
            if ready:
                self._last_progress = time.monotonic()
                return ready
            if self._is_finished():
                ready = look()  # keys set just before the flag
                if ready:
                    return ready
                self.finished = True
                return 0
            remaining = self._last_progress + self.timeout - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                return 0
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self._max_poll)

    def _is_finished(self) -> bool:
        flag = self._finished_flag
        if flag is None:
            return False
        flag.refresh()
        return bool(flag[0])

    _finished_flag: h5py.Dataset | None = None

    def _end(self) -> None:
        self.close()
        if self.timed_out and self._raise:
            raise FollowTimeout(f"no new frame for {self.timeout} s and the file "
                                f"{self._filename!r} is not finished")
        raise StopIteration

    def close(self) -> None:
        """Stop following; close the file if the follower opened it."""
        self._done = True
        if self._own and self.file:
            self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _KeySet:
    """The key datasets a follower watches, as one: a frame (a scan point) is complete
    when every one of them is non-zero there.

    Each has the shape ``scan_shape`` followed by any number of axes of
    size 1 (swmr_tools' layout, ``(3, 4, 1, 1)`` for a 3 x 4 grid): the
    scan's rank is that of the maxshape without its trailing 1s. Points are
    numbered in C order, which stays the same while only the first axis
    grows; the other scan axes must keep their size, and all key datasets
    must agree on it.
    """

    def __init__(self, datasets: list[h5py.Dataset]) -> None:
        self.datasets = datasets
        first = datasets[0]
        self.rank, self.inner = _scan_shape(first)
        for other in datasets[1:]:
            rank, inner = _scan_shape(other)
            if (rank, inner) != (self.rank, self.inner):
                raise ValueError(
                    f"keys: {first.name!r} and {other.name!r} do not have the same scan shape "
                    f"({_scan_text(self.rank, self.inner)} and {_scan_text(rank, inner)})")
        self.points_per_row = math.prod(self.inner)

    def point(self, index: int) -> int | tuple[int, ...]:
        """The frame index (1-D keys), or the scan point of the ``index``-th point in order."""
        if self.rank == 1:
            return index
        row, rest = divmod(index, self.points_per_row)
        return (row, *(int(n) for n in np.unravel_index(rest, self.inner)))

    def ready(self, position: int) -> int:
        """How many points from ``position`` on are complete (every key non-zero).

        Reads at most about :data:`KEY_WINDOW` keys of each: a writer may size
        its key datasets for the whole acquisition up front (the convention
        allows it), and an idle look must not read them all.
        """
        ready = None
        per_row = self.points_per_row
        for keys in self.datasets:
            keys.refresh()
            inner = tuple(int(n) for n in keys.shape[1 : self.rank])
            if inner != self.inner:
                # The points seen so far would no longer come first in order.
                raise ValueError(
                    f"keys: the scan shape of {keys.name!r} changed from "
                    f"{_scan_text(self.rank, self.inner)} to {_scan_text(self.rank, inner)} "
                    f"while it was followed; the follower stops rather than yield an "
                    f"incomplete scan (only the first scan axis may grow)")
            first_row = position // per_row
            rows = min(keys.shape[0], (position + KEY_WINDOW) // per_row + 1)
            if rows <= first_row:
                return 0
            values = keys[first_row:rows].reshape(-1)[position - first_row * per_row:]
            values = values[:KEY_WINDOW]
            # NaN (float keys) is no more "complete" than 0.
            zeros = np.flatnonzero((values == 0) | np.isnan(values)) if values.dtype.kind == "f" \
                else np.flatnonzero(values == 0)
            count = int(zeros[0]) if len(zeros) else len(values)
            ready = count if ready is None else min(ready, count)
            if not ready:
                return 0
        return ready or 0


def _scan_shape(keys: h5py.Dataset) -> tuple[int, tuple[int, ...]]:
    """A key dataset's scan rank (its maxshape's, less the trailing axes of size 1) and
    the sizes of its scan axes after the first."""
    if keys.dtype.kind not in "biuf":
        raise TypeError(f"keys: {keys.name!r} holds {keys.dtype}, not numbers: a key is a "
                        f"number, 0 until its frame is complete")
    maxshape = keys.maxshape or keys.shape
    rank = len(maxshape)
    while rank > 1 and maxshape[rank - 1] == 1:
        rank -= 1
    if rank == 0:
        raise ValueError(f"keys: {keys.name!r} is a scalar dataset, not one key per frame")
    inner = tuple(int(n) for n in keys.shape[1:rank])
    if any(n == 0 for n in inner):
        raise ValueError(f"keys: {keys.name!r} has shape {keys.shape}: a scan axis after the "
                         f"first is empty, so the order of its points is not known")
    return rank, inner


def _scan_text(rank: int, inner: tuple[int, ...]) -> str:
    return "(n)" if rank == 1 else f"(n, {', '.join(str(n) for n in inner)})"


class Follower(_Following):
    """Yields ``(index, frame)`` of a live dataset in order, as frames become complete.

    Made by :func:`follow`, which documents the parameters. With the keys of
    a scan (rank 2 or more), ``index`` is the scan point, a tuple.

    Attributes
    ----------
    file : h5py.File
        The file, opened for SWMR reading.
    dataset : h5py.Dataset
    keys : list of h5py.Dataset
        The key datasets followed (one, or as many as given).
    scan_shape : tuple of int
        The scan axes after the first (``()`` for a stack of frames).
    frames_read : int
        Frames (scan points) yielded so far: the position in order of the next one.
    timed_out, finished : bool
        Why iteration stopped: no progress for ``timeout`` seconds, or the
        writer's finished flag.
    """

    def __init__(self, source: str | os.PathLike[str] | h5py.File, name: str, *,
                 timeout: float = 10.0, keys: str | Sequence[str] | None = None,
                 finished: str | None = "finished", poll: float = FIRST_POLL,
                 max_poll: float = MAX_POLL, on_timeout: str = "stop") -> None:
        key_names = _key_names(keys)
        _check_names(name=name, finished=finished)
        super().__init__(source, timeout=timeout, poll=poll, max_poll=max_poll,
                         on_timeout=on_timeout)
        try:
            self.dataset = _dataset(self.file, name, "name")
            parent = self.dataset.parent
            if key_names is None:
                key_names = [f"{self.dataset.name.rsplit('/', 1)[-1]}_keys"]
            self.keys = [_dataset(parent, key, "keys") for key in key_names]
            self._key_set = _KeySet(self.keys)
            self.scan_shape = self._key_set.inner
            _check_scan_data(self.dataset, self._key_set)
            self._finished_flag = _dataset(parent, finished, "finished") if finished else None
        except BaseException:
            self.close()
            raise
        self.frames_read = 0
        self._ready = 0  # complete frames not yet yielded

    def __iter__(self) -> Iterator[tuple[int | tuple[int, ...], np.ndarray]]:
        return self

    def __next__(self) -> tuple[int | tuple[int, ...], np.ndarray]:
        if self._done:
            raise StopIteration
        if not self._ready:
            self._ready = self._wait(lambda: self._key_set.ready(self.frames_read))
            if not self._ready:
                self._end()
            self.dataset.refresh()
        point = self._key_set.point(self.frames_read)
        frame = self.dataset[point]
        self.frames_read += 1
        self._ready -= 1
        return point, frame


def _check_scan_data(dataset: h5py.Dataset, keys: _KeySet) -> None:
    """Refuse a frame dataset whose leading axes are not the keys' scan."""
    if keys.rank == 1:
        return
    if dataset.ndim < keys.rank or tuple(dataset.shape[1 : keys.rank]) != keys.inner:
        raise ValueError(
            f"name: {dataset.name!r} has shape {dataset.shape}, which does not start with "
            f"the scan shape {_scan_text(keys.rank, keys.inner)} of its keys "
            f"{keys.datasets[0].name!r}: its scan points cannot be found in it")


def _key_names(keys: object) -> list[str] | None:
    """``keys`` as a list of names (one name, or several), or None."""
    if keys is None:
        return None
    names = [keys] if isinstance(keys, str) else keys
    if isinstance(names, bytes) or not isinstance(names, Sequence):
        raise TypeError(f"keys must be a dataset name or a list of them, got "
                        f"{type(keys).__name__}")
    names = list(names)
    if not names:
        raise ValueError("keys must name at least one key dataset")
    for key in names:
        if not isinstance(key, str):
            raise TypeError(f"keys must be dataset names (str), got {key!r}")
        if not key:
            raise ValueError("keys must not be empty")
    return names


class RecordFollower(_Following):
    """Yields ``(frame, events)`` of a live record group in frame order, as frames become complete.

    ``events`` maps each feature to its array of the frame's events. Made
    by :func:`follow_records`, which documents the parameters.

    Attributes
    ----------
    file : h5py.File
    group : h5py.Group
    features : dict of str to h5py.Dataset
    keys : h5py.Dataset
    nevents, index : h5py.Dataset or None
        What frames' events are found by: ``nevents`` if given, else ``index``.
    frames_read : int
        Frames yielded so far (the index of the next one).
    timed_out, finished : bool
        Why iteration stopped.
    """

    def __init__(self, source: str | os.PathLike[str] | h5py.File, group: str, *,
                 features: list[str] | None = None, timeout: float = 10.0, keys: str = "keys",
                 nevents: str | None = "nevents", index: str | None = "index",
                 finished: str | None = "finished", poll: float = FIRST_POLL,
                 max_poll: float = MAX_POLL, on_timeout: str = "stop") -> None:
        _check_names(group=group, keys=keys, nevents=nevents, index=index, finished=finished)
        if nevents is None and index is None:
            raise ValueError("nevents and index cannot both be None: a follower finds each "
                             "frame's events by their counts (nevents) or by the frame of "
                             "each event (index)")
        if features is not None:
            if isinstance(features, (str, bytes)) or not all(
                    isinstance(name, str) and name for name in features):
                raise TypeError(f"features must be a list of dataset names, got {features!r}")
            features = list(features)
        super().__init__(source, timeout=timeout, poll=poll, max_poll=max_poll,
                         on_timeout=on_timeout)
        try:
            where = self.file.get(group)
            if where is None:
                raise ValueError(f"group: no group {group!r} in {self.file.filename!r}")
            if not isinstance(where, h5py.Group):
                raise TypeError(f"group: {where.name!r} is not a group")
            self.group = where
            self.keys = _dataset(where, keys, "keys")
            key_set = _KeySet([self.keys])
            if key_set.rank != 1:
                raise ValueError(f"keys: {self.keys.name!r} has shape {self.keys.shape}: a "
                                 f"record group needs one key per frame")
            self._key_set = key_set
            self.nevents = None
            if nevents is not None:
                self.nevents = _dataset(
                    where, nevents, "nevents",
                    hint="; if its writer left it out (nevents_name=None), pass nevents=None "
                         "to find frames by the index dataset")
            self.index = None
            if index is not None and (self.nevents is None or index in where):
                self.index = _dataset(where, index, "index")
            if features is None:
                bookkeeping = {item.name for item in (self.keys, self.nevents, self.index)
                               if item is not None}
                features = [name for name, item in where.items()
                            if isinstance(item, h5py.Dataset) and item.name not in bookkeeping]
            self.features = {name: _dataset(where, name, "features") for name in features}
            parent = where.parent
            self._finished_flag = _dataset(parent, finished, "finished") if finished else None
        except BaseException:
            self.close()
            raise
        self.frames_read = 0
        self._offset = 0  # first event of the next frame
        self._counts: deque[int] = deque()  # event counts of complete frames not yet yielded

    def __iter__(self) -> Iterator[tuple[int, Mapping[str, np.ndarray]]]:
        return self

    def __next__(self) -> tuple[int, Mapping[str, np.ndarray]]:
        if self._done:
            raise StopIteration
        if not self._counts:
            ready = self._wait(lambda: self._key_set.ready(self.frames_read))
            if not ready:
                self._end()
            self._counts = deque(self._event_counts(ready))
            for dataset in self.features.values():
                dataset.refresh()
        count = self._counts.popleft()
        rows = slice(self._offset, self._offset + count)
        events = {name: dataset[rows] for name, dataset in self.features.items()}
        frame = self.frames_read
        self._offset += count
        self.frames_read += 1
        return frame, events

    def _event_counts(self, ready: int) -> list[int]:
        """The event counts of the ``ready`` complete frames from :attr:`frames_read` on."""
        start = self.frames_read
        if self.nevents is not None:
            self.nevents.refresh()
            return [int(n) for n in self.nevents[start : start + ready]]
        # By the index: rows are in frame order, and every event of a complete
        # frame is in the file (stored before its key), so the frames' events
        # are the rows from the offset on while they hold those frames, in
        # order. Anything else ends them: a later frame, or rows of fill values
        # (-1 as bgio writes it, 0 in other files) a failed store left behind.
        index = self.index
        assert index is not None
        index.refresh()
        end_frame = start + ready
        counts = np.zeros(ready, np.int64)
        position, last = self._offset, start
        while position < index.shape[0]:
            values = index[position : position + KEY_WINDOW * 16]
            ends = (values < last) | (values >= end_frame)
            ends[1:] |= values[1:] < values[:-1]
            stop = int(np.argmax(ends)) if ends.any() else len(values)
            counts += np.bincount(values[:stop] - start, minlength=ready)[:ready]
            if stop < len(values) or not stop:
                break
            position, last = position + stop, int(values[stop - 1])
        return [int(n) for n in counts]


def follow(source: str | os.PathLike[str] | h5py.File, name: str, *, timeout: float = 10.0,
           keys: str | Sequence[str] | None = None, finished: str | None = "finished",
           poll: float = FIRST_POLL, max_poll: float = MAX_POLL,
           on_timeout: str = "stop") -> Follower:
    """Follow a dataset another process is writing: yield ``(index, frame)`` in order.

    Works on files written by :class:`bgio.h5.FrameWriter` with
    ``swmr=True`` and by any writer that follows the key convention: an
    integer key dataset, 0 until a frame is complete; a ``(1,)``
    finished flag set non-zero at the end. With several key datasets a
    frame is complete once every one of them is non-zero (as swmr_tools
    reads them).

    Keys of a scan have the scan's shape, alone or followed by axes of size
    1 (a 3 x 4 grid: ``(3, 4)`` or ``(3, 4, 1, 1)``); the frame dataset then
    starts with the same scan axes (``(3, 4, *frame_shape)``), and the
    follower yields ``((i, j), frame)`` for every point in C order (row by
    row). Only the first scan axis may grow while it is followed: keys whose
    other scan axes change size are refused with ``ValueError`` rather than
    followed in an order that would skip points.

    Parameters
    ----------
    source : path or h5py.File
        A path is opened for SWMR reading (retried until ``timeout`` while
        the writer has not yet made it readable) and closed when the
        follower stops; an open file must have been opened with ``swmr=True``.
    name : str
        The frame dataset; frames along axis 0 (along the scan axes for
        scan-shaped keys).
    timeout : float, default 10
        Stop after this many seconds without a new frame.
    keys : str, list of str, or None
        The key dataset, or several, relative to the dataset's group (or
        absolute); None means ``<name>_keys`` beside the dataset.
    finished : str or None, default "finished"
        The finished flag, relative to the dataset's group (or absolute);
        None to end on ``timeout`` only.
    poll, max_poll : float
        First and longest pause between looks, in seconds.
    on_timeout : {"stop", "raise"}, default "stop"
        On timeout, stop with ``timed_out`` set, or raise :class:`FollowTimeout`.

    Returns
    -------
    Follower
        An iterator, and a context manager that closes the file.

    Raises
    ------
    ValueError
        A dataset that is not there; bad options; key datasets of different
        scan shapes, or a frame dataset that does not start with their scan
        axes; during iteration, keys whose scan axes after the first changed
        size.
    TypeError
        ``keys`` that is not a name or a list of names.
    OSError
        The file cannot be opened for SWMR reading within ``timeout``.

    Examples
    --------
    ::

        for index, frame in bgio.h5.follow("run.h5", "frames"):
            show(frame)
    """
    return Follower(source, name, timeout=timeout, keys=keys, finished=finished, poll=poll,
                    max_poll=max_poll, on_timeout=on_timeout)


def follow_records(source: str | os.PathLike[str] | h5py.File, group: str, *,
                   features: list[str] | None = None, timeout: float = 10.0, keys: str = "keys",
                   nevents: str | None = "nevents", index: str | None = "index",
                   finished: str | None = "finished", poll: float = FIRST_POLL,
                   max_poll: float = MAX_POLL, on_timeout: str = "stop") -> RecordFollower:
    """Follow a record group another process is writing: yield ``(frame, events)`` in order.

    For groups written by :class:`bgio.h5.RecordWriter` with ``swmr=True``:
    ``events`` maps each feature to the frame's events (``n >= 0`` rows).

    Parameters
    ----------
    source : path or h5py.File
        As for :func:`follow`.
    group : str
        The record group.
    features : list of str or None
        Features to read; None for every dataset of the group but the
        keys, ``nevents`` and ``index``.
    timeout, poll, max_poll, on_timeout
        As for :func:`follow`.
    keys, nevents, index : str or None
        Where those datasets are, as the writer was told
        (``keys``, ``nevents_name``, ``index_name`` of
        :class:`bgio.h5.RecordWriter`): a name in the group, a path below
        it, or an absolute path. Frames' events are found by ``nevents``;
        with ``nevents=None`` (a group written without it) by ``index``,
        the frame of each event; one of them is needed. ``index`` is
        otherwise only left out of the features.
    finished : str or None, default "finished"
        The finished flag, relative to the group's parent (or absolute).

    Returns
    -------
    RecordFollower

    Raises
    ------
    ValueError
        A dataset that is not there, ``nevents`` and ``index`` both None,
        or keys that are not one per frame.
    """
    return RecordFollower(source, group, features=features, timeout=timeout, keys=keys,
                          nevents=nevents, index=index, finished=finished, poll=poll,
                          max_poll=max_poll, on_timeout=on_timeout)


def _check_names(**names: object) -> None:
    """Dataset and group names: non-empty strings (None where a name is optional)."""
    for label, value in names.items():
        if value is None and label in ("keys", "finished", "nevents", "index"):
            continue
        if not isinstance(value, str):
            raise TypeError(f"{label} must be a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{label} must not be empty")


def _dataset(group: h5py.Group, name: str, label: str, hint: str = "") -> h5py.Dataset:
    item = group.get(name)
    if item is None:
        raise ValueError(f"{label}: no dataset {name!r} in {group.name!r} of "
                         f"{group.file.filename!r}{hint}")
    if not isinstance(item, h5py.Dataset):
        raise TypeError(f"{label}: {item.name!r} is not a dataset")
    return item


def _open_swmr(path: str | os.PathLike[str], timeout: float) -> h5py.File:
    """Open ``path`` for SWMR reading, retrying while the writer has not made it readable."""
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL
    while True:
        try:
            return h5py.File(path, "r", swmr=True)
        except OSError:  # FileNotFoundError included
            # Not there yet, or still being set up by its writer (not yet in
            # SWMR mode): both pass; anything else shows after the timeout.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_POLL)
