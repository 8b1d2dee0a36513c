"""The engine: one ordered queue and at most one worker thread per destination.

Every write is a job on its destination's *lane*. A lane's worker takes jobs
in call order, waits (on a Condition, never polling) for a ``chain_after``
predecessor, paces each chunk with a :class:`~bgio.throttle.Throttle`, and
settles the handle. A job whose predecessor on the lane, or whose
``chain_after``, failed or was cancelled writes nothing and fails with
:class:`~bgio.errors.ChainError`, so a destination never has a gap.

Workers are non-daemon threads that linger briefly when their lane empties
(a stream of small writes reuses one thread) and leave at once when the
interpreter starts to shut down, after draining what is queued.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable
from concurrent.futures import CancelledError

from .errors import ChainError
from .handle import BackgroundWriteProcess
from .priority import BackgroundIOPriority
from .sinks import Sink
from .source import Source
from .throttle import Throttle

__all__ = ["Job", "submit", "wait_all"]

logger = logging.getLogger("bgio")

#: Seconds an idle worker waits for more work before its thread ends.
LINGER = 0.25

_lock = threading.Lock()  # guards _lanes, every lane's queue, and _unfinished
_all_done = threading.Condition(_lock)
_lanes: dict[Hashable, _Lane] = {}
_unfinished = 0
_shutting_down = False


class Job:
    """One write: what, where, how fast, and after what."""

    __slots__ = (
        "chain_after",
        "chunk_size",
        "close",
        "handle",
        "predecessor",
        "profile",
        "sink",
        "source",
    )

    def __init__(
        self,
        handle: BackgroundWriteProcess,
        sink: Sink,
        source: Source,
        profile: BackgroundIOPriority,
        chunk_size: int | None = None,
        close: bool = False,
        chain_after: BackgroundWriteProcess | None = None,
    ) -> None:
        self.handle = handle
        self.sink = sink
        self.source = source
        self.profile = profile
        self.chunk_size = chunk_size or profile.default_chunk_size
        self.close = close
        self.chain_after = chain_after
        self.predecessor: BackgroundWriteProcess | None = None


class _Lane:
    """The ordered queue of one destination."""

    __slots__ = ("anchor", "jobs", "key", "last", "target", "throttle", "wakeup", "worker")

    def __init__(self, key: Hashable, profile: BackgroundIOPriority) -> None:
        self.key = key
        self.jobs: deque[Job] = deque()
        self.worker: threading.Thread | None = None
        self.last: BackgroundWriteProcess | None = None  # the latest job's handle
        self.target: object = None  # the destination object of the job last run
        self.throttle = Throttle(profile)
        self.wakeup = threading.Condition(_lock)
        self.anchor: object = None  # weak reference keeping a failed lane while its file lives


def submit(job: Job) -> BackgroundWriteProcess:
    """Queue ``job`` on its destination's lane and make sure a worker serves it."""
    global _unfinished
    start = None
    with _lock:
        lane = _lanes.get(job.sink.key)
        if lane is None:
            lane = _lanes[job.sink.key] = _Lane(job.sink.key, job.profile)
        job.predecessor = lane.last
        lane.last = job.handle
        lane.jobs.append(job)
        _unfinished += 1
        if lane.worker is None:
            start = lane.worker = threading.Thread(
                target=_serve, args=(lane,), name=f"bgio-{job.sink.name}"[:60]
            )
        else:
            lane.wakeup.notify()
    if start is not None:
        try:
            start.start()
        except RuntimeError:
            # No new threads during interpreter shutdown: write in this thread
            # rather than lose the data.
            _serve(lane)
    return job.handle


def _job_ended() -> None:
    # Counted when the worker is through with a job (file closed and all),
    # not when its handle is done: a write cancelled while queued is done at
    # once, but its close_when_finished still happens in order later.
    global _unfinished
    with _lock:
        _unfinished -= 1
        if _unfinished == 0:
            _all_done.notify_all()


def wait_all(timeout: float | None = None) -> bool:
    """Wait until every background write started so far is done.

    Parameters
    ----------
    timeout : float or None
        Seconds to wait at most; None waits as long as it takes.

    Returns
    -------
    bool
        True if nothing is pending any more, False on timeout.
    """
    with _lock:
        return _all_done.wait_for(lambda: _unfinished == 0, timeout)


def _serve(lane: _Lane) -> None:
    """A lane's worker: run its jobs in order, linger a little, then end."""
    while True:
        with _lock:
            if not lane.jobs and not _shutting_down:
                lane.wakeup.wait(LINGER)
            if not lane.jobs:
                lane.worker = None
                _retire(lane)
                return
            job = lane.jobs.popleft()
            lane.target = job.sink.target
        try:
            _run(lane, job)
        except BaseException:  # a bug in bgio itself; keep the lane alive for the others
            logger.exception("bgio worker failed on %r", job.handle)
            job.handle._finish(None, RuntimeError("bgio worker failed; see the bgio log"))
        finally:
            _job_ended()


def _retire(lane: _Lane) -> None:
    """Forget an idle lane, unless it must remember a failure (called under _lock)."""
    last = lane.last
    failed = last is not None and (last.cancelled() or last._exception is not None)
    if not failed:
        del _lanes[lane.key]
        return
    target, lane.target = lane.target, None
    if lane.anchor is not None:
        return
    try:
        lane.anchor = weakref.ref(target, lambda ref, key=lane.key: _forget(ref, key))
    except TypeError:
        # Without a weak reference, the id could be reused by an unrelated
        # object; drop the lane rather than fail that object's writes.
        del _lanes[lane.key]


def _forget(ref: weakref.ref[object], key: Hashable) -> None:
    # Runs when a failed lane's file object is freed, possibly inside a
    # `with _lock` of this same thread (garbage collection), so it must not
    # take the lock. No job can be queued: each job holds its file alive.
    lane = _lanes.get(key)
    if lane is not None and lane.anchor is ref:
        _lanes.pop(key, None)


def _shutdown() -> None:
    """At interpreter exit: wake lingering workers so they end once their lanes are drained."""
    global _shutting_down
    with _lock:
        _shutting_down = True
        for lane in _lanes.values():
            lane.wakeup.notify_all()


def _chain_failure(handle: BackgroundWriteProcess, what: str) -> ChainError:
    cause = handle._exception if handle._exception is not None else CancelledError(
        f"cancelled after {handle.bytes_written} bytes"
    )
    error = ChainError(
        f"not written: {what} {'was cancelled' if handle.cancelled() else 'failed'} "
        f"({type(cause).__name__}: {cause})",
        handle,
    )
    error.__cause__ = cause
    return error


def _run(lane: _Lane, job: Job) -> None:
    handle = job.handle
    sink = job.sink
    written = 0
    error: BaseException | None = None
    try:
        predecessor = job.predecessor
        if predecessor is not None and not _succeeded(predecessor):
            raise _chain_failure(predecessor, "an earlier write to this destination")
        chain_after = job.chain_after
        if chain_after is not None:
            if not handle._wait_for(chain_after):
                return  # cancelled while waiting
            if not _succeeded(chain_after):
                raise _chain_failure(chain_after, "the write it was chained after")
        if not handle._start():
            return  # cancelled while pending
        written = _write_chunks(lane.throttle, job)
    except BaseException as exc:  # noqa: BLE001 - every failure belongs on the handle
        error = exc
    finally:
        job.source.release()
        if job.close:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - reported on the handle or logged
                if error is None:
                    error = exc
                else:
                    logger.error("closing %s after a failed write also failed: %r", sink.name, exc)
        if error is not None:
            if isinstance(error, ChainError):
                logger.debug("write to %s not run: %s", sink.name, error)
            else:
                logger.error("background write to %s failed after %d bytes",
                             sink.name, handle.bytes_written, exc_info=error)
        handle._finish(written, error)


def _succeeded(handle: BackgroundWriteProcess) -> bool:
    return handle.done() and not handle.cancelled() and handle._exception is None


def _write_chunks(throttle: Throttle, job: Job) -> int:
    """Write every chunk of the job, paced; return the bytes written."""
    handle = job.handle
    sink = job.sink
    write = sink.write
    flush = sink.flush
    clock = time.perf_counter
    throttle.profile = job.profile
    since = clock()
    for chunk in job.source.chunks(job.chunk_size, sink.kind):
        if handle._cancel_requested:
            break
        pause = throttle.delay()
        if pause > 0 and handle._pause(pause):
            break
        size = remaining = len(chunk)
        started = clock()
        taken = write(chunk)
        # Partial writes: resume exactly where the destination stopped.
        while taken < remaining:
            handle.bytes_written += taken
            chunk = chunk[taken:]
            remaining = len(chunk)
            taken = write(chunk)
        flush()
        finished = clock()
        handle.bytes_written += taken
        throttle.record(size, started, finished)
        handle._record(started, finished, throttle.rate(since))
    return handle.bytes_written


try:
    threading._register_atexit(_shutdown)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - very old interpreters
    import atexit

    atexit.register(_shutdown)
