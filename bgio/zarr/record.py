"""The array's ``zarr.json``: its length and the frames bgio announces, rewritten as frames
are stored.

Stores land in any order (several are in flight at once), so the length a
reader is shown is the end of the run of frames stored from frame 0: past
it, a slot may still be on its way, and would read as fill values. The
record is rewritten at most every ``flush_interval`` (or every
``flush_every`` frames), one rewrite in flight at a time, each a
conditional write on the last one, so no older length ever overwrites a
newer one.

The announcement is the ``"bgio"`` attribute::

    {"frames": 120, "finished": false}

``frames`` (equal to the length) are stored and durable (tensorstore's file
store writes each object with ``fsync`` and a rename before its write is
done); at the close ``finished`` is true, and ``missing`` lists the
``[start, stop)`` ranges of slots never written (they read as 0), or
``error`` says why the writer stopped.
"""

from __future__ import annotations

import heapq
import json
import threading
from typing import Any

from ..h5.live import Announcer
from .landing import Landing

__all__ = ["ATTRIBUTE", "Record", "SharedRecord", "Stored", "announcement"]

#: The attribute of the array bgio announces its frames in.
ATTRIBUTE = "bgio"


class Stored:
    """Frames stored so far: :attr:`prefix`, the end of the run from frame 0, and the
    ranges stored past it (they may overlap: a flushed part of a chunk is stored again
    with the whole)."""

    __slots__ = ("_later", "prefix")

    def __init__(self) -> None:
        self.prefix = 0
        self._later: list[tuple[int, int]] = []  # a heap of (start, stop)

    def add(self, start: int, stop: int) -> int:
        """Frames ``start..stop-1`` are stored; return the new :attr:`prefix`."""
        heapq.heappush(self._later, (start, stop))
        while self._later and self._later[0][0] <= self.prefix:
            self.prefix = max(self.prefix, heapq.heappop(self._later)[1])
        return self.prefix

    def ends(self) -> int:
        """One after the highest frame stored."""
        return max([self.prefix, *(stop for _, stop in self._later)])

    def ranges_past(self) -> list[list[int]]:
        """The ranges stored past :attr:`prefix`, merged, as ``[start, stop]``."""
        merged: list[list[int]] = []
        for start, stop in sorted(self._later):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return merged


def announcement(document: dict[str, Any]) -> dict[str, Any] | None:
    """The ``"bgio"`` attribute of a parsed ``zarr.json``, or None if it has none."""
    attributes = document.get("attributes") or {}
    found = attributes.get(ATTRIBUTE)
    return found if isinstance(found, dict) else None


class Record:
    """Keeps ``zarr.json`` up to date with the frames stored (see the module's text).

    Parameters
    ----------
    kvstore : tensorstore.KvStore
        The array's folder.
    name : str
        The store, for messages.
    interval, every : float or int or None
        Announce at most this often, in seconds and in frames.
    """

    def __init__(self, kvstore: Any, name: str, interval: float | None,
                 every: int | None) -> None:
        self._kvstore = kvstore
        self._name = name
        read = kvstore.read("zarr.json").result()
        self._document: dict[str, Any] = json.loads(read.value)
        self._generation: bytes = read.stamp.generation
        # What follows each rewrite (and the array's stores: the sink's) runs here.
        self.landing = Landing(name)
        # Reentrant: at exit a thread waiting with the lock held lands the stores itself
        # (see bgio.zarr.landing), and what follows a rewrite takes the lock again.
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._stored = Stored()
        self._announcer = Announcer(interval, every, self._tick)
        self._writing = False
        self._wanted: dict[str, Any] | None = None  # the next state, if one is being written
        self._final = False
        self._issued = 0  # rewrites issued (a retry after a conflict counts too), and done
        self._completed = 0
        self.announced = 0  # frames in the zarr.json last written
        self.error: BaseException | None = None  # the first rewrite that failed

    def start(self) -> None:
        """Mark the new array as being written (0 frames, not finished), and wait."""
        with self._lock:
            self._issue({"frames": 0, "finished": False})
        self.settle(None)

    @property
    def stored_prefix(self) -> int:
        """Frames stored from frame 0 without a gap."""
        return self._stored.prefix

    def stored(self, start: int, stop: int) -> None:
        """Frames ``start..stop-1`` are stored (called as each store lands)."""
        with self._lock:
            self._stored.add(start, stop)
            if self._final:
                return
            try:
                now = self._announcer.accepted(stop - start)
            except RuntimeError:  # no thread for the timer (at exit): announce now
                now = True
            if now:
                self._want({"frames": self._stored.prefix, "finished": False})

    def _tick(self) -> None:
        with self._lock:
            if not self._final:
                self._want({"frames": self._stored.prefix, "finished": False})

    def finish(self, length: int, missing: list[tuple[int, int]],
               error: BaseException | None) -> None:
        """Announce the last state: ``length`` frames (slots in ``missing`` never written),
        or, after ``error``, the frames stored from frame 0; wait until it is written.

        Raises
        ------
        OSError
            If a rewrite of ``zarr.json`` failed.
        """
        with self._lock:
            self._final = True
            self._announcer.close()
            state: dict[str, Any] = {"frames": length, "finished": True}
            if error is not None:
                state = {"frames": self._stored.prefix, "finished": True,
                         "error": f"{type(error).__name__}: {error}"}
            elif missing:
                state["missing"] = [[start, stop] for start, stop in missing]
            self._want(state)
        try:
            self.settle(None)
        finally:
            self.landing.close()

    def abandon(self) -> None:
        """Stop announcing, the array not written (its writer failed to open): no thread is
        left behind."""
        with self._lock:
            self._final = True
            self._announcer.close()
        self.landing.close()

    def announce_now(self) -> int:
        """Announce every frame stored so far (at a flush); return the ticket
        :meth:`settle` waits for."""
        with self._lock:
            if not self._final:
                self._want({"frames": self._stored.prefix, "finished": False})
            # The rewrite that will carry this state: the one in flight if it was just
            # issued, else the one waiting behind it.
            return self._issued + (self._wanted is not None)

    def settle(self, timeout: float | None, ticket: int | None = None) -> bool:
        """Wait until no rewrite is in flight (or rewrite ``ticket`` of
        :meth:`announce_now` is done); False on timeout.

        Raises
        ------
        OSError
            If a rewrite failed.
        """
        with self._idle:
            if not self.landing.wait_for(
                    self._idle, lambda: self.error is not None or (
                        not self._writing if ticket is None else self._completed >= ticket),
                    timeout):
                return False
            if self.error is not None:
                raise self.error
        return True

    def _want(self, state: dict[str, Any]) -> None:
        # (lock held) Write this state next: now, or once the rewrite in flight lands.
        self._announcer.announced()
        if self._unchanged(state):
            return
        if self._writing:
            self._wanted = state
            return
        self._issue(state)

    def _unchanged(self, state: dict[str, Any]) -> bool:
        return bool(state["frames"] == self.announced and not state["finished"])

    def _document_for(self, state: dict[str, Any]) -> dict[str, Any]:
        """``zarr.json`` as it is to be written for ``state``."""
        document = dict(self._document)
        document["shape"] = [state["frames"], *document["shape"][1:]]
        document["attributes"] = {**(document.get("attributes") or {}), ATTRIBUTE: state}
        return document

    def _issue(self, state: dict[str, Any]) -> None:
        # (lock held)
        if self.error is not None:
            return
        try:
            document = self._document_for(state)
            future = self._kvstore.write("zarr.json", json.dumps(document, indent=2).encode(),
                                         if_equal=self._generation)
        except Exception as exc:  # noqa: BLE001 - kept, raised by settle() and the close
            self.error = OSError(f"{self._name}: rewriting zarr.json failed: {exc}")
            return
        self._writing = True
        self._issued += 1
        self.landing.follow(future, lambda done: self._written(done, document, state))

    def _accepted(self, document: dict[str, Any]) -> None:
        """(lock held) ``document`` is what ``zarr.json`` holds now."""

    def _conflict(self, state: dict[str, Any]) -> None:
        """(lock held) Someone else rewrote ``zarr.json`` since we last did."""
        self.error = OSError(
            f"{self._name}: zarr.json was changed by someone else while bgio "
            f"was writing the array; it was left as they wrote it")

    def _written(self, future: Any, document: dict[str, Any], state: dict[str, Any]) -> None:
        with self._lock:
            self._writing = False
            try:
                stamp = future.result()
            except Exception as exc:  # noqa: BLE001 - kept, raised by settle() and the close
                self.error = OSError(f"{self._name}: rewriting zarr.json failed: {exc}")
            else:
                if not stamp.generation:  # the condition failed
                    self._conflict(state)
                    if self._writing:  # (trying again)
                        return
                else:
                    self._generation = stamp.generation
                    self._document = document
                    self.announced = document["shape"][0]
                    self._accepted(document)
            self._completed = self._issued
            wanted, self._wanted = self._wanted, None
            if wanted is not None and self.error is None:
                self._issue(wanted)
            self._idle.notify_all()  # (a ticket may be done though the next is in flight)


class SharedRecord(Record):
    """The record of an array several writers share (``shared=True``), in processes or
    on machines sharing the store.

    Each writer keeps its entry under ``"writers"`` in the ``"bgio"``
    attribute: the ranges it stored past ``"through"`` (the end of the run
    of frames every writer together stored from frame 0), whether it
    finished, and its extent. Every rewrite is conditional on the last
    ``zarr.json`` seen; when another writer got there first, it is read
    again and the entries merged, so none is lost. The length is
    ``"through"`` while any writer is open; once every writer that joined
    has finished it is the highest extent, ``"missing"`` listing the slots
    no one wrote.
    """

    def __init__(self, kvstore: Any, name: str, interval: float | None,
                 every: int | None, writer: str) -> None:
        super().__init__(kvstore, name, interval, every)
        self._writer = writer

    def _unchanged(self, state: dict[str, Any]) -> bool:
        return False  # (frames past the common run are news too)

    def _document_for(self, state: dict[str, Any]) -> dict[str, Any]:
        document = dict(self._document)
        shared = dict(announcement(document) or {})
        writers = dict(shared.get("writers") or {})
        through = int(shared.get("through", 0))
        prefix = self._stored.prefix
        mine: dict[str, Any] = {"stored": [[0, prefix]] * bool(prefix) + self._stored.ranges_past(),
                                "finished":
                                bool(state["finished"]), "extent": self._stored.ends()}
        if state["finished"]:
            mine["extent"] = max(mine["extent"], int(state["frames"]))
        if "error" in state:
            mine["error"] = state["error"]
        writers[self._writer] = mine
        ranges = sorted((int(a), int(b)) for entry in writers.values()
                        for a, b in entry.get("stored", ()))
        for start, stop in ranges:
            if start <= through:
                through = max(through, stop)
        for entry in writers.values():
            entry["stored"] = [[max(int(a), through), int(b)]
                               for a, b in entry.get("stored", ()) if int(b) > through]
        finished = all(entry.get("finished") for entry in writers.values())
        new: dict[str, Any] = {"frames": through, "finished": finished, "through": through,
                               "writers": writers}
        if finished:
            extent = max([through, *(int(entry.get("extent", 0)) for entry in writers.values())])
            missing, at = [], through
            for start, stop in sorted((int(a), int(b)) for entry in writers.values()
                                      for a, b in entry["stored"]):
                if start > at:
                    missing.append([at, start])
                at = max(at, stop)
            if extent > at:
                missing.append([at, extent])
            new["frames"] = extent
            if missing:
                new["missing"] = missing
        document["shape"] = [new["frames"], *document["shape"][1:]]
        document["attributes"] = {**(document.get("attributes") or {}), ATTRIBUTE: new}
        return document

    def _accepted(self, document: dict[str, Any]) -> None:
        # What every writer stored from frame 0 counts as stored here too: it keeps this
        # writer's entry to the ranges past it.
        self._stored.add(0, int((announcement(document) or {}).get("through", 0)))

    def _conflict(self, state: dict[str, Any]) -> None:
        self._writing = True  # (still: read, merge, write again)

        def reread(future: Any) -> None:
            with self._lock:
                try:
                    read = future.result()
                    self._document = json.loads(read.value)
                    self._generation = read.stamp.generation
                except Exception as exc:  # noqa: BLE001 - kept, raised by settle() and the close
                    self.error = OSError(f"{self._name}: reading zarr.json failed: {exc}")
                    self._writing = False
                    self._idle.notify_all()
                    return
                wanted, self._wanted = self._wanted, None
                self._writing = False
                self._issue(wanted or state)
                if not self._writing:
                    self._idle.notify_all()

        self.landing.follow(self._kvstore.read("zarr.json"), reread)
