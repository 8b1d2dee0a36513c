"""Live files: SWMR writing that announces complete frames with the key convention.

Readers of a file that is still being written (HDF5's single-writer /
multiple-reader mode, SWMR) learn which frames are complete from *key*
datasets: one integer per frame, 0 (the fill value) until the frame is
complete, then non-zero. A ``(1,)``-shaped *finished* dataset turns 1 when
the writer is done. The writer's rules: every dataset is created (chunked,
with ``maxshape``) before the file switches to SWMR mode; each frame's data
is flushed before the key that announces it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import h5py
import numpy as np

from ..handle import BackgroundWriteProcess

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_LIVE_LIBVER",
    "KEY_CHUNK",
    "Announce",
    "Announcer",
    "Keys",
    "all_done",
    "check_finished",
    "check_flush_options",
    "check_libver",
    "check_live",
    "check_live_names",
    "claim_finished",
    "create_finished",
    "create_keys",
    "libver_bounds",
    "open_live",
    "release_finished",
    "start_swmr",
]

#: Seconds between announcements by default: readers see a frame about this soon.
DEFAULT_FLUSH_INTERVAL = 0.25
#: Keys per chunk of a key dataset (8 KiB of int64). Every announcement stores the last
#: chunk again, whole, however few keys it sets: small chunks keep that cheap.
KEY_CHUNK = 1024

#: The format of live files a writer opens: HDF5 1.10's, the oldest that SWMR works in, so
#: that readers built on HDF5 1.10 (Debian 12's h5dump, h5ls, and the programs linked
#: against its libhdf5) read them; the high bound keeps every object created in the file
#: later in that format too (one that needs a newer format fails to be created instead).
DEFAULT_LIVE_LIBVER = ("v110", "v110")

# h5py's names of the format versions, oldest first, and the h5f constant of each (absent
# from an h5py built against an older HDF5).
_LIBVER_CONSTANTS = {"earliest": "LIBVER_EARLIEST", "v108": "LIBVER_V18",
                     "v110": "LIBVER_V110", "v112": "LIBVER_V112", "v114": "LIBVER_V114",
                     "v200": "LIBVER_V200", "latest": "LIBVER_LATEST"}
_LIBVERS = tuple(name for name, constant in _LIBVER_CONSTANTS.items()
                 if hasattr(h5py.h5f, constant))
# Low bounds whose files can switch to SWMR mode (superblock version 3).
_SWMR_LIBVERS = _LIBVERS[_LIBVERS.index("v110"):]

Libver = str | tuple[str, str]


def check_libver(libver: object, swmr: bool) -> Libver:
    """The ``libver`` argument, checked: a format name or a ``(low, high)`` pair of them,
    as :class:`h5py.File` takes it (a name alone is the low bound, the high one "latest").

    Raises
    ------
    TypeError
        Not a name nor a pair of names.
    ValueError
        An unknown name, a low bound above the high one, or (``swmr``) a low
        bound older than "v110", in whose format a file cannot switch to SWMR mode.
    """
    if isinstance(libver, str):
        low, high = libver, "latest"
    elif isinstance(libver, (tuple, list)) and len(libver) == 2 \
            and all(isinstance(bound, str) for bound in libver):
        low, high = libver
    else:
        raise TypeError(f"libver must be a format name or a (low, high) pair of them "
                        f"(as for h5py.File), got {libver!r}")
    for bound in (low, high):
        if bound not in _LIBVERS:
            raise ValueError(f"libver: {bound!r} is not one of {', '.join(_LIBVERS)}")
    if _LIBVERS.index(low) > _LIBVERS.index(high):
        raise ValueError(f"libver: the low bound {low!r} is newer than the high bound {high!r}")
    if swmr and low not in _SWMR_LIBVERS:
        raise ValueError(f"libver: a live file (SWMR) needs the format of HDF5 1.10 or newer, "
                         f"a low bound of {', '.join(map(repr, _SWMR_LIBVERS))}; got "
                         f"{libver!r}, whose files cannot switch to SWMR mode")
    return libver if isinstance(libver, str) else (low, high)


def libver_bounds(libver: Libver) -> tuple[int, int]:
    """``libver`` (checked) as HDF5's ``(low, high)`` bounds, to compare with a file's
    ``file.id.get_access_plist().get_libver_bounds()`` ("latest" is the newest named
    version: h5py reports it by that name)."""
    low, high = (libver, "latest") if isinstance(libver, str) else libver
    return (getattr(h5py.h5f, _LIBVER_CONSTANTS[low]), getattr(h5py.h5f, _LIBVER_CONSTANTS[high]))


def open_live(path: str | os.PathLike[str], mode: str = "a", *,
              libver: Libver = DEFAULT_LIVE_LIBVER) -> h5py.File:
    """Open (or create) an HDF5 file in a format SWMR works in.

    For an acquisition with several writers in one file: open it with this,
    create every writer with ``swmr=True`` on it, then append. The file
    switches to SWMR mode at the first append of any of them, after which
    no dataset can be created in it.

    Parameters
    ----------
    path : path-like
    mode : {"a", "w", "x"}, default "a"
        As for :class:`h5py.File`.
    libver : str or (str, str), keyword-only, default ("v110", "v110")
        The format version bounds, as for :class:`h5py.File`; the low bound
        must be "v110" or newer. The default, HDF5 1.10's format, is read by
        every HDF5 from 1.10 on (``"latest"`` is HDF5 2.0's format here,
        which 1.10's tools cannot read).

    Returns
    -------
    h5py.File

    Raises
    ------
    ValueError
        A mode that cannot write, or a ``libver`` SWMR cannot work in.
    TypeError
        A ``libver`` that is not a name nor a pair of names.
    """
    libver = check_libver(libver, swmr=True)
    if mode not in ("a", "w", "x", "w-"):
        raise ValueError(f"mode must be 'a', 'w' or 'x' for a live file, got {mode!r}")
    return h5py.File(path, mode, libver=libver)


def check_live(group: h5py.Group) -> None:
    """Refuse a file that cannot take new datasets for SWMR writing, with the reason.

    Raises
    ------
    ValueError
        If the file is read-only, already in SWMR mode, or opened without
        a libver that SWMR needs.
    """
    file = group.file
    if file.mode != "r+":
        raise ValueError(f"target: {file.filename!r} is open read-only")
    if file.swmr_mode:
        raise ValueError(
            f"target: {file.filename!r} is already in SWMR mode, where no dataset can be "
            f"created; create every writer of the file before the first append")
    if file.libver[0] not in _SWMR_LIBVERS:
        raise ValueError(
            f"target: SWMR needs a file opened with a libver low bound of 'v110' or newer "
            f"(bgio.h5.open_live(path), or h5py.File(path, mode, libver=('v110', 'v110'))); "
            f"{file.filename!r} has libver {file.libver}")
    version = file.id.get_create_plist().get_version()[0]
    if version < 3:
        raise ValueError(
            f"target: {file.filename!r} was created in an older format (superblock version "
            f"{version}) that cannot switch to SWMR mode; write the live data to a new file")


_switch_lock = threading.Lock()


def start_swmr(file: h5py.File) -> None:
    """Switch ``file`` to SWMR mode, once, whichever of its writers gets there first."""
    with _switch_lock:
        if not file.swmr_mode:
            file.swmr_mode = True


def create_keys(group: h5py.Group, name: str) -> h5py.Dataset:
    """The key dataset of a frame dataset: int64 per frame, fill value 0.

    It starts with one key, 0 ("not yet"), never empty: readers of the
    convention take the first zero as the end of the complete frames, and
    some (swmr_tools' ``KeyFollower``) fail on a key dataset of length 0,
    which a reader started before the first announcement would otherwise
    see. It grows as frames are announced; a writer that announces none
    leaves that one 0.
    """
    if name in group:
        raise ValueError(f"keys: {name!r} already exists in {group.name!r}")
    return group.create_dataset(name, shape=(1,), maxshape=(None,), chunks=(KEY_CHUNK,),
                                dtype=np.int64, fillvalue=0)


def check_finished(group: h5py.Group | None, name: str) -> None:
    """Refuse a ``name`` in ``group`` that exists and cannot serve as the finished flag."""
    existing = group.get(name) if group is not None else None
    if existing is None:
        return
    if not isinstance(existing, h5py.Dataset) or existing.shape != (1,) \
            or existing.dtype.kind not in "iu":
        raise ValueError(f"finished: {existing.name!r} exists and is not a (1,) integer dataset")


def create_finished(group: h5py.Group, name: str) -> h5py.Dataset:
    """The ``(1,)``-shaped finished flag (int32, 0 while writing); shared if it exists."""
    check_finished(group, name)
    if name in group:
        return group[name]
    return group.create_dataset(name, shape=(1,), maxshape=(1,), dtype=np.int32, fillvalue=0)


class _Sharers:
    """The writers sharing one finished flag, and the last stores of those that closed."""

    __slots__ = ("finals", "open")

    def __init__(self) -> None:
        self.open = 0
        self.finals: list[BackgroundWriteProcess] = []


# Writers sharing one finished flag, by open file and flag name.
_sharers: dict[tuple[object, str], _Sharers] = {}
_sharers_lock = threading.Lock()


def _flag_key(flag: h5py.Dataset) -> tuple[object, str]:
    # The open file's number, not its name: a relative name changes meaning
    # with the working directory, and a new file at the same path is another.
    return (flag.file.id.fileno, flag.name)


def claim_finished(flag: h5py.Dataset) -> None:
    """Count a writer that will set ``flag`` when it is done."""
    with _sharers_lock:
        _sharers.setdefault(_flag_key(flag), _Sharers()).open += 1


def release_finished(flag: h5py.Dataset,
                     final: BackgroundWriteProcess | None) -> BackgroundWriteProcess | None:
    """A writer is done, its last store being ``final``.

    Returns None while other writers sharing ``flag`` are open. For the last
    one, returns a handle that is done once the last stores of all of them
    are: the flag is set after it, so that it never announces the end
    before every sharer's data and keys are in (they close in any order,
    from any thread, and each writes on its own lane).
    """
    with _sharers_lock:
        key = _flag_key(flag)
        sharers = _sharers.setdefault(key, _Sharers())
        sharers.open -= 1
        if final is not None:
            sharers.finals.append(final)
        if sharers.open > 0:
            return None
        del _sharers[key]
        waiting = [handle for handle in sharers.finals if not handle.done()]
    return all_done(waiting)


def all_done(handles: list[BackgroundWriteProcess]) -> BackgroundWriteProcess:
    """A handle that finishes (successfully) once every one of ``handles`` is done."""
    barrier = BackgroundWriteProcess(0)
    if not handles:
        barrier.set_result()
        return barrier
    remaining = [len(handles)]
    lock = threading.Lock()

    def one_done(_: BackgroundWriteProcess) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            barrier.set_result()

    for handle in handles:
        handle.add_done_callback(one_done)
    return barrier


class Announce:
    """A block for the worker: flush the data, then mark these frames complete."""

    __slots__ = ("frames",)

    def __init__(self, frames: Sequence[int]) -> None:
        self.frames = frames  # increasing frame indices

    def __len__(self) -> int:
        return 8 * len(self.frames)  # the key bytes written: what pacing counts


class Keys:
    """The worker's side of a key dataset: marks frames complete, then flushes."""

    __slots__ = ("dataset", "extent")

    def __init__(self, dataset: h5py.Dataset) -> None:
        self.dataset = dataset
        self.extent = dataset.shape[0]

    def mark(self, frames: Sequence[int]) -> None:
        """Set the keys of ``frames`` (increasing) non-zero (index + 1) and flush them."""
        if not len(frames):
            return
        dataset = self.dataset
        end = int(frames[-1]) + 1
        if end > self.extent:
            dataset.resize(end, axis=0)
            self.extent = end
        for start, stop in _runs(frames):
            dataset[start:stop] = np.arange(start + 1, stop + 1, dtype=np.int64)
        dataset.flush()


def _runs(frames: Sequence[int]) -> list[tuple[int, int]]:
    """Increasing indices as ``[start, stop)`` runs of consecutive ones."""
    if isinstance(frames, range) and frames.step == 1:
        return [(frames.start, frames.stop)]
    runs: list[tuple[int, int]] = []
    start = previous = int(frames[0])
    for frame in frames[1:]:
        frame = int(frame)
        if frame != previous + 1:
            runs.append((start, previous + 1))
            start = frame
        previous = frame
    runs.append((start, previous + 1))
    return runs


class Announcer:
    """When a live writer announces its frames: every ``interval`` seconds, or every
    ``every`` frames, whichever comes first.

    The writer tells it of accepted frames (under its own lock); it answers
    whether to announce now (``every`` reached), and otherwise makes sure a
    timer will call ``fire`` within ``interval``. The timer is armed only
    while frames wait to be announced, so an idle writer costs nothing.
    """

    def __init__(self, interval: float | None, every: int | None,
                 fire: Callable[[], None]) -> None:
        self.interval = interval
        self.every = every
        self._fire = fire
        self._waiting = 0
        self._timer: threading.Timer | None = None

    def accepted(self, frames: int) -> bool:
        """``frames`` more await announcement; True if they should be announced now."""
        self._waiting += frames
        if self.every is not None and self._waiting >= self.every:
            return True
        if self.interval is not None and self._timer is None:
            timer = threading.Timer(self.interval, self._on_timer)
            timer.daemon = True  # a flush at exit is close()'s job, not the timer's
            timer.name = "bgio-h5-announce"
            self._timer = timer
            timer.start()
        return False

    def announced(self) -> None:
        """Everything accepted so far is being announced."""
        self._waiting = 0
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _on_timer(self) -> None:
        self._fire()

    def close(self) -> None:
        self.announced()


def check_live_names(**names: object) -> None:
    """Names of the key dataset and the finished flag: plain names (no "/"), or None."""
    for label, value in names.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{label} must be a str, got {type(value).__name__}")
        if not value or "/" in value:
            raise ValueError(f"{label} must be a dataset name without '/', got {value!r}")


def check_flush_options(flush_interval: object, flush_every: object) -> tuple[float | None, int | None]:
    """Validate ``flush_interval`` (seconds > 0, or None) and ``flush_every`` (frames >= 1, or None)."""
    if flush_interval is not None:
        if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)) \
                or not flush_interval > 0:
            raise ValueError(f"flush_interval must be seconds > 0 or None, got {flush_interval!r}")
        flush_interval = float(flush_interval)
        if flush_interval == float("inf"):
            raise ValueError("flush_interval must be finite (None announces by count only)")
    if flush_every is not None and (isinstance(flush_every, bool)
                                    or not isinstance(flush_every, int) or flush_every < 1):
        raise ValueError(f"flush_every must be an int >= 1 or None, got {flush_every!r}")
    if flush_interval is None and flush_every is None:
        raise ValueError("flush_interval and flush_every cannot both be None: readers would "
                         "see frames only at close")
    return flush_interval, flush_every
