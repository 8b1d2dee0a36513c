"""Writing one job on a destination's lane: order checks, pacing, flushing, closing.

A job whose predecessor on the lane, or whose ``chain_after``, failed or was
cancelled writes nothing and fails with :class:`~bgio.errors.ChainError`, so
a destination never has a gap. Small writes are not flushed one by one: the
handles of writes whose bytes still sit in the stream's buffer complete with
the flush that carries them, so *done* always means *handed to the OS*.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Hashable
from concurrent.futures import CancelledError

from .errors import ChainError
from .handle import BackgroundWriteProcess, finish_all, set_interrupt
from .priority import BackgroundIOPriority
from .sinks import Sink, Waiter, WriteInterrupted
from .source import Source
from .throttle import Throttle

__all__ = ["MIN_PAUSE", "Job", "Lane", "chain_failure", "failed", "flush", "raise_root_error",
           "release_frames", "report", "run_job"]

logger = logging.getLogger("bgio")

#: The shortest pacing pause taken: waking up again costs more than a shorter
#: one gives (a GIL round trip can take 5 ms when the application is busy).
#: The throttle lets short pauses add up until they reach this.
MIN_PAUSE = 0.0005

class Job:
    """One write: what, where, how fast, and after what."""

    __slots__ = (
        "chain_after",
        "chunk_size",
        "close",
        "ended",
        "fsync",
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
        fsync: bool = False,
    ) -> None:
        self.handle = handle
        self.sink = sink
        self.source = source
        self.profile = profile
        self.chunk_size = chunk_size or profile.default_chunk_size
        self.close = close
        self.chain_after = chain_after
        self.fsync = fsync
        self.ended = False  # counted as ended by its lane (see Lane.end)
        self.predecessor: BackgroundWriteProcess | None = None


class Lane:
    """The ordered queue of one destination, and what its worker carries between jobs."""

    __slots__ = ("anchor", "jobs", "key", "last", "settled", "since_flush", "target",
                 "throttle", "unflushed", "waiter", "worker")

    def __init__(self, key: Hashable, profile: BackgroundIOPriority) -> None:
        self.key = key
        self.jobs: deque[Job] = deque()
        self.worker: object = None  # the worker serving the lane, if any (see bgio.engine)
        self.last: BackgroundWriteProcess | None = None  # the latest job's handle
        self.target: object = None  # the destination object of the job last run
        self.throttle = Throttle(profile, min_pause=MIN_PAUSE)
        self.anchor: object = None  # weak reference to the file; the lane goes with the file
        # Small writes are not flushed one by one: bytes written since the
        # last flush, and the jobs whose last bytes that flush will carry
        # (their handles complete only then, so done always means flushed).
        self.since_flush = 0
        self.unflushed: list[Job] = []
        self.settled = 0  # jobs ended and not yet reported to the engine
        self.waiter: Waiter | None = None  # made when first needed, closed when idle

    def end(self, job: Job) -> None:
        """Count ``job`` as ended (settled, file closed), once whatever the path."""
        if not job.ended:
            job.ended = True
            self.settled += 1

    def take_ended(self) -> int:
        """How many jobs ended since the last call."""
        settled, self.settled = self.settled, 0
        return settled

    def bind(self, sink: Sink) -> Waiter:
        """Give ``sink`` this lane's waiter (how it waits for a full destination)."""
        if self.waiter is None:
            self.waiter = Waiter()
        sink.waiter = self.waiter
        return self.waiter

    def close_waiter(self) -> None:
        """Release the waiter's fd while the lane is idle (no handle can reach it then)."""
        if self.waiter is not None:
            self.waiter.close()
            self.waiter = None


def chain_failure(handle: BackgroundWriteProcess, what: str) -> ChainError:
    cause = handle._exception if handle._exception is not None else CancelledError(
        f"cancelled after {handle.bytes_written} bytes"
    )
    # The message names the error that started it all, not the ChainError
    # before this one: a thousand writes after a failure stay short.
    root = cause.root_cause if isinstance(cause, ChainError) else cause
    if isinstance(root, CancelledError):
        reason = "was cancelled"
    else:
        reason = f"failed ({type(root).__name__}: {root})"
    error = ChainError(f"not written: {what} {reason}", handle, root)
    error.__cause__ = cause
    return error


def release_frames(error: BaseException | None) -> None:
    """Drop the worker's traceback from an error about to be stored on a handle.

    A failed handle is kept (by its Writer, by the destination's queue), and
    a traceback holds the worker's frames, whose locals are the caller's file
    and data: they would never be freed. The traceback has been logged on the
    ``bgio`` logger already; ``result()`` re-raises the error without it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        if error.__context__ is not None and error.__context__ is not error.__cause__:
            release_frames(error.__context__)
        error = error.__cause__


def run_job(lane: Lane, job: Job, more: bool) -> None:
    """Run one job; it ends now, or (small and not yet flushed) with a later flush.

    ``more`` says whether other jobs are queued behind this one: if not, the
    destination is flushed now rather than after the next write.
    """
    handle = job.handle
    sink = job.sink
    waiter = lane.bind(sink)
    error: BaseException | None = None
    deferred = stopped = False
    try:
        predecessor = job.predecessor
        if predecessor is not None and failed(predecessor):
            raise chain_failure(predecessor, "an earlier write to this destination")
        chain_after = job.chain_after
        if chain_after is not None and not chain_after.done():
            # Never wait with bytes held back: the write we wait for may
            # itself be waiting for them (a chain across two files).
            if lane.since_flush or lane.unflushed:
                flush(lane, sink)
            handle._wait_for(chain_after)  # or for cancel(), which _start() then sees
        if chain_after is not None and chain_after.done() and failed(chain_after):
            raise chain_failure(chain_after, "the write it was chained after")
        if job.source.lazy and (lane.since_flush or lane.unflushed):
            # A generator may wait on an earlier write's handle: complete those first.
            flush(lane, sink)
        if handle._start():
            if sink.nonblocking:
                set_interrupt([handle], waiter.interrupt)
            try:
                stopped = _write_chunks(lane, job)
                if job.fsync and not stopped:
                    flush(lane, sink, sync=True)  # done means on disk
                elif lane.since_flush and (job.close or stopped or not more):
                    flush(lane, sink)
            except WriteInterrupted:  # cancel() while waiting for a full destination
                stopped = True
            finally:
                if sink.nonblocking:
                    set_interrupt([handle], None)
                    waiter.clear()
            deferred = lane.since_flush > 0 and not stopped
    except BaseException as exc:  # noqa: BLE001 - every failure belongs on the handle
        error = exc
    finally:
        job.source.release()
        if (error is not None or job.close) and (lane.since_flush or lane.unflushed):
            # Earlier writes' bytes may still sit in the stream's buffer; they
            # get a flush of their own (and its error if it fails) before the
            # destination is closed or left behind.
            flush(lane, sink, raise_error=False)
        if job.close:
            error = _close(sink, error, failed=error is not None or stopped or handle.cancelled())
    if deferred and error is None:
        lane.unflushed.append(job)
        return
    report(sink, handle, error)
    release_frames(error)
    handle._finish(error, cancelled=stopped)
    lane.end(job)


def _close(sink: Sink, error: BaseException | None, failed: bool) -> BaseException | None:
    """Close the destination, or discard what an atomic write made if ``failed``; return the error."""
    closer = getattr(sink, "discard", None) if failed else None
    try:
        (closer or sink.close)()
    except Exception as exc:  # noqa: BLE001 - reported on the handle or logged
        if error is None:
            return exc
        logger.error("closing %s after a failed write also failed: %r", sink.name, exc)
    return error


def report(sink: Sink, handle: BackgroundWriteProcess | None, error: BaseException | None) -> None:
    if error is None or handle is None:
        return
    if isinstance(error, ChainError):
        logger.debug("write to %s not run: %s", sink.name, error)
    else:
        logger.error("background write to %s failed after %d bytes",
                     sink.name, handle.bytes_written, exc_info=error)


def flush(lane: Lane, sink: Sink, raise_error: bool = True, sync: bool = False) -> None:
    """Flush the destination and complete the writes that were waiting for it.

    With ``sync``, or if one of those writes asked for ``fsync``, the data
    is put on disk too. If the flush fails, those writes fail with its error
    (their bytes may not have reached the file), and so does the current one
    unless ``raise_error`` is False.
    """
    jobs, lane.unflushed = lane.unflushed, []
    since_flush, lane.since_flush = lane.since_flush, 0
    error: BaseException | None = None
    try:
        if sync or any(job.fsync for job in jobs):
            sink.sync()
        else:
            sink.flush()
    except WriteInterrupted:
        # A cancel() of the write under way, not a failure of these: they
        # stay waiting for a later flush.
        lane.unflushed[:0] = jobs
        lane.since_flush += since_flush
        raise
    except BaseException as exc:  # noqa: BLE001 - goes to the waiting handles
        error = exc
    if error is None:
        finish_all([job.handle for job in jobs])  # one lock for the lot
    else:
        report(sink, jobs[0].handle if jobs else None, error)
        release_frames(error)
        for job in jobs:
            job.handle._finish(error)
    for job in jobs:
        lane.end(job)
    if error is not None and raise_error:
        raise error


def raise_root_error(handle: BackgroundWriteProcess) -> None:
    """Raise what ended a done write: the error that started a run of failures, not
    the ChainErrors after it (a CancelledError if the start was a cancel)."""
    if handle.cancelled():
        handle.result(0)  # raises CancelledError
    error = handle._exception
    if isinstance(error, ChainError) and error.root_cause is not None:
        error = error.root_cause
    if error is not None:
        raise error


def failed(handle: BackgroundWriteProcess) -> bool:
    """True if the write failed or was cancelled (what makes later writes ChainErrors)."""
    return handle.cancelled() or handle._exception is not None




def _write_chunks(lane: Lane, job: Job) -> bool:
    """Write every chunk of the job, paced, flushing every ``chunk_size`` bytes.

    Returns True if it stopped early because cancel() was asked.
    """
    handle = job.handle
    sink = job.sink
    write = sink.write
    throttle = lane.throttle
    throttle.profile = job.profile
    chunk_size = job.chunk_size
    clock = time.perf_counter
    waiter = sink.waiter
    assert waiter is not None
    waiter.take_waited()
    rate_of = throttle.rate
    for chunk in job.source.chunks(chunk_size, sink.kind):
        if handle._cancel_requested:
            return True
        pause = throttle.delay()
        if pause:
            if lane.since_flush:
                flush(lane, sink)  # idle time is the time to hand data on
            if handle._pause(pause):
                return True
        size = remaining = len(chunk)
        started = clock()
        taken = write(chunk)
        # Partial writes: resume exactly where the destination stopped.
        while taken < remaining:
            handle.bytes_written += taken
            if type(chunk) is bytes:
                chunk = memoryview(chunk)  # slicing bytes would copy
            chunk = chunk[taken:]
            remaining = len(chunk)
            taken = write(chunk)
        handle.bytes_written += taken
        lane.since_flush += size
        if lane.since_flush >= chunk_size:
            flush(lane, sink)
        finished = clock()
        # Time spent waiting for a slow reader is back-pressure, not work.
        waited = waiter.take_waited()
        throttle.record(size, started, finished, waited)
        handle._record(started, finished, waited, rate_of)
    return False
