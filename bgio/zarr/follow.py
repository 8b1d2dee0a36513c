"""Following a Zarr array another process is writing: :func:`follow`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..h5.followers import FIRST_POLL, MAX_POLL, FollowTimeout, check_follow_options
from .record import announcement
from .spec import kvstore_of

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Follower", "follow", "image_array"]


def image_array(tensorstore: Any, spec: dict[str, Any], context: Any) -> dict[str, Any]:
    """The kvstore of the array ``spec`` names: itself, or for an OME-Zarr image group
    (as :class:`bgio.zarr.FrameWriter` writes with ``ome``) its first level."""
    group = tensorstore.KvStore.open(spec, context=context).result()
    read = group.read("zarr.json").result()
    if read.state != "value":
        return spec
    document = json.loads(read.value)
    try:
        path = document["attributes"]["ome"]["multiscales"][0]["datasets"][0]["path"]
    except (KeyError, IndexError, TypeError):
        return spec
    if document.get("node_type") != "group" or not isinstance(path, str):
        return spec
    return {**spec, "path": spec["path"] + path.strip("/") + "/"}


class Follower:
    """Yields ``(index, frame)`` of a Zarr array in order, as its writer announces them.

    Made by :func:`follow`, which documents the parameters.

    Attributes
    ----------
    frames_read : int
        Frames yielded so far (the index of the next one).
    announced : int
        Frames the writer has announced (the array's length).
    timed_out, finished : bool
        Why iteration stopped: nothing new for ``timeout`` seconds, or the
        writer's finished mark.
    error : str or None
        What the writer said stopped it, if its finished mark says it failed.
    """

    def __init__(self, store: str | os.PathLike[str] | dict[str, Any], *, timeout: float = 10.0,
                 poll: float = FIRST_POLL, max_poll: float = MAX_POLL,
                 on_timeout: str = "stop", batch: int = 64) -> None:
        self._timeout, self._poll, self._max_poll, self._raise = check_follow_options(
            timeout, poll, max_poll, on_timeout)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        import tensorstore

        from .frames import context

        self._tensorstore = tensorstore
        self._context = context()
        self._root = kvstore_of(store)
        self._spec = self._root
        self._kvstore = tensorstore.KvStore.open(self._spec, context=self._context).result()
        self._name = str(store)
        self._batch = batch
        self._generation = b""
        self._array: Any = None
        self._held: np.ndarray | None = None  # frames read ahead, from _held_first on
        self._held_first = 0
        self.frames_read = 0
        self.announced = 0
        self.timed_out = False
        self.finished = False
        self.error: str | None = None
        self._done = False

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop following (iteration ends)."""
        self._done = True
        self._array = self._held = None

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._done:
            raise StopIteration
        index = self.frames_read
        if self._held is None or index >= self._held_first + len(self._held):
            if index >= self.announced and not self._wait():
                self._done = True
                if self.timed_out and self._raise:
                    raise FollowTimeout(f"no new frame in {self._name!r} for "
                                        f"{self._timeout} s, and it is not finished")
                raise StopIteration
            stop = min(self.announced, index + self._batch)
            self._held = self._array[index:stop].read().result()
            self._held_first = index
        frame = self._held[index - self._held_first]
        self.frames_read += 1
        return index, frame

    def _wait(self) -> bool:
        """Look at ``zarr.json`` until it announces a frame past those read; False at the
        finished mark or the timeout."""
        pause = self._poll
        deadline = time.monotonic() + self._timeout
        while True:
            if self._look() and self.announced > self.frames_read:
                return True
            if self.finished:
                return False
            now = time.monotonic()
            if now >= deadline:
                self.timed_out = True
                return False
            # (A store in another process: no event reaches us, so we look, backing off.)
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, self._max_poll)

    def _look(self) -> bool:
        """Read ``zarr.json`` if it changed; True if it did."""
        read = self._kvstore.read("zarr.json", if_not_equal=self._generation or None).result()
        if read.state != "value":
            return False  # unchanged, or not there yet
        document = json.loads(read.value)
        if document.get("node_type") == "group":  # an OME-Zarr image: follow its level 0
            spec = image_array(self._tensorstore, self._root, self._context)
            if spec is not self._root and self._spec is self._root:
                self._spec = spec
                self._kvstore = self._tensorstore.KvStore.open(
                    spec, context=self._context).result()
                return self._look()
            return False
        self._generation = read.stamp.generation
        state = announcement(document) or {}
        self.announced = int(document["shape"][0])
        self.finished = bool(state.get("finished", False))
        self.error = state.get("error")
        # Opened at the length it states (reopened as it grows): nothing past it is read.
        self._array = self._tensorstore.open(
            {"driver": "zarr3", "kvstore": self._spec}, context=self._context,
            open=True).result()
        self._held = None
        return True


def follow(store: str | os.PathLike[str] | dict[str, Any], *, timeout: float = 10.0,
           poll: float = FIRST_POLL, max_poll: float = MAX_POLL,
           on_timeout: str = "stop", batch: int = 64) -> Follower:
    """Follow a Zarr array another process is writing: yield ``(index, frame)`` in order.

    Works on arrays written by :class:`bgio.zarr.FrameWriter` (its length
    is raised only to frames stored, and the ``"bgio"`` attribute carries
    a finished mark at the close), and on any growing Zarr v3 array (then
    it ends on ``timeout`` only). ``zarr.json`` is read again when it
    changes: at most every ``max_poll`` seconds, sooner while frames come.

    Parameters
    ----------
    store : path or str
        As for :class:`bgio.zarr.FrameWriter` (a folder, ``file://``,
        ``memory://`` in :func:`bgio.zarr.context`).
    timeout : float, default 10
        Stop after this many seconds without a new frame (the array need
        not exist yet when following starts).
    poll, max_poll : float
        First and longest pause between looks, in seconds.
    on_timeout : {"stop", "raise"}, default "stop"
        On timeout, stop with ``timed_out`` set, or raise
        :class:`bgio.h5.FollowTimeout`.
    batch : int, default 64
        Frames read at once when several are announced.

    Returns
    -------
    Follower
        An iterator, and a context manager.

    Examples
    --------
    >>> import bgio.zarr, numpy as np
    >>> with bgio.zarr.FrameWriter("memory://followed", (2, 2), "uint8") as w:
    ...     for i in range(3):
    ...         _ = w.append(np.full((2, 2), i, dtype="uint8"))
    >>> [int(frame[0, 0]) for _, frame in bgio.zarr.follow("memory://followed")]
    [0, 1, 2]
    """
    return Follower(store, timeout=timeout, poll=poll, max_poll=max_poll,
                    on_timeout=on_timeout, batch=batch)
