"""The engine: one ordered queue per destination, worker threads to serve them, exit drain.

Every write is a job on its destination's *lane*; a lane's worker takes its
jobs in call order and runs them (:mod:`bgio.worker`). At most one worker
serves a lane at a time.

Workers are non-daemon threads. One serves a lane while it has work, then
parks for a while, ready to be handed the next lane that needs one, so a
call to :func:`submit` never waits for a thread to start once the program is
warm. Parked workers leave at once when the interpreter shuts down; busy
ones first drain what is queued, so no accepted write is lost at exit.

A lane stays registered while its file object is alive (a weak reference
says when it is gone), so pacing history and a failure are remembered
across writes. A path's or an fd's lane is forgotten when idle (a Writer
remembers its own failures).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable

from . import drain, ioprio, runqueue
from .handle import BackgroundWriteProcess, finish_group
from .timeouts import check_timeout
from .worker import Job, Lane, flush_pending, run_batch

__all__ = ["in_worker_thread", "pending", "shutting_down", "submit", "submit_held", "wait_all"]

logger = logging.getLogger("bgio")

#: Seconds a parked worker waits for a lane before its thread ends.
LINGER = 1.0

_lock = threading.Lock()  # guards _lanes, every lane's queue, and _unfinished
_all_done = threading.Condition(_lock)
_lanes: dict[Hashable, Lane] = {}
_parked: list[Worker] = []  # idle worker threads, ready to be handed a lane

_unfinished = 0
_shutting_down = False


class Worker:
    """A worker thread's hand-off slot: the lane it is to serve next."""

    __slots__ = ("lane", "wakeup")

    def __init__(self, lane: Lane) -> None:
        self.lane: Lane | None = lane
        self.wakeup = threading.Condition(_lock)


_thread_count = 0


def submit(job: Job) -> BackgroundWriteProcess:
    """Queue ``job`` on its destination's lane and make sure a worker serves it."""
    serve = submit_held(job)
    if serve is not None:
        serve()
    return job.handle


def submit_held(job: Job) -> Callable[[], None] | None:
    """Queue ``job`` as :func:`submit` does, for a caller holding a lock of its own.

    When no worker thread can serve the lane (the interpreter is shutting
    down, or a thread cannot start), the caller's thread must write: that
    is returned, to be called once the caller's lock is released (a Writer's
    group is sealed under the Writer's lock). None when a worker serves it.
    """
    global _unfinished, _thread_count
    new_worker = inline = None
    with _lock:
        if _freed:
            _bury()
        lane = _lanes.get(job.sink.key)
        if lane is None:
            lane = _lanes[job.sink.key] = Lane(job.sink.key, job.profile)
        lane.jobs.append(job)
        # Nothing joins a Writer's group of small writes once anything is
        # queued behind it: order is call order (see bgio.group).
        if lane.open_group is not None:
            lane.open_group.open = False
        lane.open_group = job.group
        _unfinished += 1
        if lane.worker is None:
            if _parked:
                worker = lane.worker = _parked.pop()
                worker.lane = lane
                worker.wakeup.notify()
            elif _shutting_down:
                # Threads started now (from an atexit handler, say) would never
                # be joined: the write is done in the caller's thread instead.
                inline = lane.worker = Worker(lane)
            else:
                new_worker = lane.worker = Worker(lane)
                _thread_count += 1
    if inline is not None:
        return functools.partial(_serve, lane)
    if new_worker is not None:
        ioprio.load()  # here, not in the new thread (see bgio.ioprio.load)
        thread = threading.Thread(target=_work, args=(new_worker,), name=f"bgio-{_thread_count}")
        try:
            thread.start()
        except RuntimeError:
            # No new threads during interpreter shutdown: write in this thread
            # rather than lose the data.
            return functools.partial(_serve, lane)
    return None


_workers = threading.local()


def shutting_down() -> bool:
    """True once the interpreter has begun to exit: a thread started now would never be
    joined, so what would run in one runs in the thread that waits for it instead."""
    return _shutting_down


def in_worker_thread() -> bool:
    """True in one of bgio's worker threads, where nothing may wait for a write (that
    write may need this very thread)."""
    return getattr(_workers, "serving", False)


def _work(worker: Worker) -> None:
    """A worker thread: serve the lane handed over, park, repeat; end when unused for LINGER."""
    _workers.serving = True
    ioprio.adopt()
    while True:
        lane = worker.lane
        assert lane is not None
        try:
            _serve(lane)
        except BaseException:  # a bug in bgio: fail what is queued rather than hang it
            logger.exception("bgio worker failed serving %s", lane.key)
            with _lock:
                jobs, lane.jobs = list(lane.jobs), deque()
                handles, groups = lane.flush_waiters, lane.flush_groups
                jobs += lane.unflushed
                lane.unflushed, lane.flush_waiters, lane.flush_groups = [], [], []
                lane.worker = None
                lane.close_waiter()
            error = RuntimeError("bgio worker failed; see the bgio log")
            for job in jobs:
                job.abandon(error)
            for handle in handles:
                if not handle.done():
                    handle.set_exception(error)
            for group in groups:
                finish_group(group, flush_error=error)
            _jobs_ended(len(jobs))
        with _lock:
            worker.lane = None
            _parked.append(worker)
            while worker.lane is None:
                if (_shutting_down or not worker.wakeup.wait(LINGER)) and worker.lane is None:
                    _parked.remove(worker)
                    runqueue.release()
                    return


def _jobs_ended(count: int) -> None:
    # Counted when the worker is through with a job (flushed, file closed),
    # not when its handle is done: a write cancelled while queued is done at
    # once, but its close_when_finished still happens in order later.
    global _unfinished
    if not count:
        return
    with _lock:
        _unfinished -= count
        if _unfinished == 0:
            _all_done.notify_all()


def wait_all(timeout: float | None = None) -> bool:
    """Wait (up to ``timeout`` seconds; None: no limit) until the threads' writes are done;
    True if none is left. :func:`bgio.wait_all` waits for the writer process's too."""
    limit = check_timeout(timeout)
    with _lock:
        return _all_done.wait_for(lambda: _unfinished == 0, limit)


def _serve(lane: Lane) -> None:
    """Run a lane's jobs in order, flush when its queue runs dry; return when it is empty."""
    ended = 0  # jobs ended and not yet counted
    while True:
        with _lock:
            # Take every queued job at once: one lock round trip per batch,
            # not per job (a Writer may queue thousands of small writes).
            batch, lane.jobs = lane.jobs, deque()
            lane.batch = batch
        if batch:
            _jobs_ended(ended)
            ended = run_batch(lane, batch)
            continue
        if lane.unflushed:
            ended += flush_pending(lane)
            continue  # more jobs may have come meanwhile
        with _lock:
            if not lane.jobs:
                lane.worker = None
                target = _retire(lane)
                break
    # Dropped only now, outside the lock: if this was the file object's last
    # reference, its close() may well write through bgio again.
    del target
    # The last jobs are counted only now: once wait_all() returns, the lane
    # holds no file object.
    _jobs_ended(ended)


def _retire(lane: Lane) -> object:
    """Keep an idle lane while its file object lives, or drop it (called under _lock).

    Returns the lane's reference to its destination object, for the caller
    to drop once the lock is released.
    """
    target, lane.target = lane.target, None
    lane.open_group = None  # run, so sealed already
    lane.close_waiter()
    if _freed:
        _bury()
        if _lanes.get(lane.key) is not lane:
            return target  # forgotten just now
    if lane.anchor is None:
        try:
            lane.anchor = weakref.ref(target, functools.partial(_forget, key=lane.key))
        except TypeError:
            # Nothing to follow (a path, an fd number): forget the lane. Its
            # queued writes are done; a Writer remembers its own failure.
            del _lanes[lane.key]
    return target


# Lanes whose file object was freed: (weak reference, key), settled by _bury.
_freed: list[tuple[weakref.ref[object], Hashable]] = []


def _forget(ref: weakref.ref[object], key: Hashable) -> None:
    # Runs when a lane's file object is freed, possibly inside a `with _lock`
    # of this same thread (garbage collection), so it must not take the
    # lock, nor touch the lanes: another object with the same key (a file
    # reopened on the same fd) may be writing through the lane right now.
    # It only notes the death (list.append is atomic); _bury settles it.
    _freed.append((ref, key))


def _bury() -> None:
    """Drop the lanes whose file object was freed, unless busy (called under _lock).

    A busy lane serves another object with the same key: it stays, and is
    anchored to that object when it next goes idle. Dropping it would let
    a second worker write to the same destination at the same time.
    """
    while _freed:
        ref, key = _freed.pop()
        lane = _lanes.get(key)
        if lane is None or lane.anchor is not ref:
            continue
        if lane.worker is None and not lane.jobs:
            del _lanes[key]
        else:
            lane.anchor = None


def pending() -> list[tuple[str, BackgroundWriteProcess]]:
    """Every write queued or under way that is not done: (destination's name, handle).

    For the exit drain (:mod:`bgio.drain`); a snapshot, taken under the
    engine's lock.
    """
    with _lock:
        jobs = [job for lane in _lanes.values() for job in lane.unfinished()]
    return [(job.sink.name, job.handle) for job in jobs if not job.handle.done()]


def _shutdown() -> None:
    """At interpreter exit: parked workers end now; busy ones once their lanes are drained
    (waited for here, where a Ctrl-C can abandon them: :func:`bgio.drain.drain`)."""
    global _shutting_down
    with _lock:
        _shutting_down = True
        for worker in _parked:
            worker.wakeup.notify()
    drain.drain(pending, wait_all)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's worker threads: it starts afresh, with
    no lanes and nothing pending (what the parent queued, the parent writes)."""
    global _lock, _all_done, _unfinished, _shutting_down
    _lock = threading.Lock()
    _all_done = threading.Condition(_lock)
    for lane in _lanes.values():
        if lane.open_group is not None:
            # Its job is the parent's: a write joining it here would never run.
            lane.open_group.open = False
    _lanes.clear()
    _parked.clear()
    _freed.clear()
    _unfinished = 0
    _shutting_down = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

try:
    threading._register_atexit(_shutdown)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - very old interpreters
    import atexit

    atexit.register(_shutdown)
