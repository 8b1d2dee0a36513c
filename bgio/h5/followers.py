"""Following a live file: frames (or records) yielded in order as a SWMR writer completes them.

A frame is complete when its key is non-zero; frames are yielded while the
keys from the last one yielded on are non-zero, so a frame never written
stops the follower there. It ends when the writer sets the finished flag
(after yielding every frame announced before it) or after ``timeout``
seconds without progress. Between looks it sleeps, twice as long each time
up to ``max_poll``: an idle follower costs a fraction of a percent of a core.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import h5py
import numpy as np

from ..errors import BgioError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["FollowTimeout", "Follower", "RecordFollower", "follow", "follow_records"]

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


class _Following:
    """What both followers share: opening the file, the keys, the finished flag, the pacing."""

    def __init__(self, source: str | os.PathLike[str] | h5py.File, *, timeout: float,
                 poll: float, max_poll: float, on_timeout: str) -> None:
        if on_timeout not in ("stop", "raise"):
            raise ValueError(f"on_timeout must be 'stop' or 'raise', got {on_timeout!r}")
        for label, value in (("timeout", timeout), ("poll", poll), ("max_poll", max_poll)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{label} must be seconds, got {type(value).__name__}")
            if not 0 < value < float("inf"):
                raise ValueError(f"{label} must be seconds > 0, got {value!r}")
        self.timeout = float(timeout)
        self._poll = float(poll)
        self._max_poll = max(float(max_poll), self._poll)
        self._raise = on_timeout == "raise"
        #: True once iteration stopped because nothing came for ``timeout`` seconds.
        self.timed_out = False
        #: True once iteration stopped because the writer set the finished flag.
        self.finished = False
        self._own = not isinstance(source, h5py.File)
        self.file = _open_swmr(source, self.timeout) if self._own else source
        self._filename = self.file.filename
        self._done = False
        self._last_progress = time.monotonic()

    def _keys_ready(self, keys: h5py.Dataset, position: int) -> int:
        """How many frames from ``position`` on are complete (their keys non-zero).

        Reads at most :data:`KEY_WINDOW` keys: a writer may size its key
        dataset for the whole acquisition up front (the convention allows
        it), and an idle look must not read them all.
        """
        keys.refresh()
        if keys.shape[0] <= position:
            return 0
        values = keys[position : position + KEY_WINDOW]
        zeros = np.flatnonzero(values == 0)
        return int(zeros[0]) if len(zeros) else len(values)

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


class Follower(_Following):
    """Yields ``(index, frame)`` of a live dataset in order, as frames become complete.

    Made by :func:`follow`, which documents the parameters.

    Attributes
    ----------
    file : h5py.File
        The file, opened for SWMR reading.
    dataset, keys : h5py.Dataset
    frames_read : int
        Frames yielded so far (the index of the next one).
    timed_out, finished : bool
        Why iteration stopped: no progress for ``timeout`` seconds, or the
        writer's finished flag.
    """

    def __init__(self, source: str | os.PathLike[str] | h5py.File, name: str, *,
                 timeout: float = 10.0, keys: str | None = None, finished: str | None = "finished",
                 poll: float = FIRST_POLL, max_poll: float = MAX_POLL,
                 on_timeout: str = "stop") -> None:
        _check_names(name=name, keys=keys, finished=finished)
        super().__init__(source, timeout=timeout, poll=poll, max_poll=max_poll,
                         on_timeout=on_timeout)
        try:
            self.dataset = _dataset(self.file, name, "name")
            parent = self.dataset.parent
            keys = keys or f"{self.dataset.name.rsplit('/', 1)[-1]}_keys"
            self.keys = _dataset(parent, keys, "keys")
            self._finished_flag = _dataset(parent, finished, "finished") if finished else None
        except BaseException:
            self.close()
            raise
        self.frames_read = 0
        self._ready = 0  # complete frames not yet yielded

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._done:
            raise StopIteration
        if not self._ready:
            self._ready = self._wait(lambda: self._keys_ready(self.keys, self.frames_read))
            if not self._ready:
                self._end()
            self.dataset.refresh()
        index = self.frames_read
        frame = self.dataset[index]
        self.frames_read += 1
        self._ready -= 1
        return index, frame


class RecordFollower(_Following):
    """Yields ``(frame, events)`` of a live record group in frame order, as frames become complete.

    ``events`` maps each feature to its array of the frame's events. Made
    by :func:`follow_records`, which documents the parameters.

    Attributes
    ----------
    file : h5py.File
    group : h5py.Group
    features : dict of str to h5py.Dataset
    frames_read : int
        Frames yielded so far (the index of the next one).
    timed_out, finished : bool
        Why iteration stopped.
    """

    def __init__(self, source: str | os.PathLike[str] | h5py.File, group: str, *,
                 features: list[str] | None = None, timeout: float = 10.0, keys: str = "keys",
                 nevents: str = "nevents", index: str = "index",
                 finished: str | None = "finished", poll: float = FIRST_POLL,
                 max_poll: float = MAX_POLL, on_timeout: str = "stop") -> None:
        _check_names(group=group, keys=keys, nevents=nevents, index=index, finished=finished)
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
            self.nevents = _dataset(where, nevents, "nevents")
            if features is None:
                features = [name for name, item in where.items()
                            if isinstance(item, h5py.Dataset) and name not in (keys, nevents, index)]
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
            ready = self._wait(lambda: self._keys_ready(self.keys, self.frames_read))
            if not ready:
                self._end()
            self.nevents.refresh()
            start = self.frames_read
            self._counts = deque(int(n) for n in self.nevents[start : start + ready])
            for dataset in self.features.values():
                dataset.refresh()
        count = self._counts.popleft()
        rows = slice(self._offset, self._offset + count)
        events = {name: dataset[rows] for name, dataset in self.features.items()}
        frame = self.frames_read
        self._offset += count
        self.frames_read += 1
        return frame, events


def follow(source: str | os.PathLike[str] | h5py.File, name: str, *, timeout: float = 10.0,
           keys: str | None = None, finished: str | None = "finished",
           poll: float = FIRST_POLL, max_poll: float = MAX_POLL,
           on_timeout: str = "stop") -> Follower:
    """Follow a dataset another process is writing: yield ``(index, frame)`` in order.

    Works on files written by :class:`bgio.h5.FrameWriter` with
    ``swmr=True`` and by any writer that follows the key convention: an
    integer key dataset, 0 until a frame is complete; a ``(1,)``
    finished flag set non-zero at the end.

    Parameters
    ----------
    source : path or h5py.File
        A path is opened for SWMR reading (retried until ``timeout`` while
        the writer has not yet made it readable) and closed when the
        follower stops; an open file must have been opened with ``swmr=True``.
    name : str
        The frame dataset; frames along axis 0.
    timeout : float, default 10
        Stop after this many seconds without a new frame.
    keys : str or None
        The key dataset, relative to the dataset's group (or absolute);
        None means ``<name>_keys`` beside the dataset.
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
        A dataset that is not there; bad options.
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
                   nevents: str = "nevents", index: str = "index",
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
    keys, nevents, index : str
        Names of those datasets in the group.
    finished : str or None, default "finished"
        The finished flag, relative to the group's parent (or absolute).

    Returns
    -------
    RecordFollower
    """
    return RecordFollower(source, group, features=features, timeout=timeout, keys=keys,
                          nevents=nevents, index=index, finished=finished, poll=poll,
                          max_poll=max_poll, on_timeout=on_timeout)


def _check_names(**names: object) -> None:
    """Dataset and group names: non-empty strings (None where a name is optional)."""
    for label, value in names.items():
        if value is None and label in ("keys", "finished"):
            continue
        if not isinstance(value, str):
            raise TypeError(f"{label} must be a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{label} must not be empty")


def _dataset(group: h5py.Group, name: str, label: str) -> h5py.Dataset:
    item = group.get(name)
    if item is None:
        raise ValueError(f"{label}: no dataset {name!r} in {group.name!r} of {group.file.filename!r}")
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
