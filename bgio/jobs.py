"""Writing one job, or a run of small jobs, on a destination's lane: order checks, pacing, flushing.

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
from .handle import BackgroundWriteProcess, set_interrupt, start_all
from .priority import BackgroundIOPriority
from .sinks import Sink, Waiter, WriteInterrupted
from .source import Block, Source
from .throttle import Throttle

__all__ = ["MAX_GROUP", "MIN_PAUSE", "Job", "Lane", "failed", "flush_pending", "run_batch"]

logger = logging.getLogger("bgio")

#: The shortest pacing pause taken: waking up again costs more than a shorter
#: one gives (a GIL round trip can take 5 ms when the application is busy).
#: The throttle lets short pauses add up until they reach this.
MIN_PAUSE = 0.0005

#: Most small writes merged into one pass of the worker.
MAX_GROUP = 1024


class Job:
    """One write: what, where, how fast, and after what."""

    __slots__ = (
        "chain_after",
        "chunk_size",
        "close",
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
        self.predecessor: BackgroundWriteProcess | None = None


class Lane:
    """The ordered queue of one destination, and what its worker carries between jobs."""

    __slots__ = ("anchor", "jobs", "key", "last", "settled", "since_flush", "target",
                 "throttle", "unflushed", "waiter", "worker")

    def __init__(self, key: Hashable, profile: BackgroundIOPriority) -> None:
        self.key = key
        self.jobs: deque[Job] = deque()
        self.worker: object = None  # the worker serving the lane, if any (see bgio.writer)
        self.last: BackgroundWriteProcess | None = None  # the latest job's handle
        self.target: object = None  # the destination object of the job last run
        self.throttle = Throttle(profile, min_pause=MIN_PAUSE)
        self.anchor: object = None  # weak reference to the file; the lane goes with the file
        # Small writes are not flushed one by one: bytes written since the
        # last flush, and the jobs whose last bytes that flush will carry
        # (their handles complete only then, so done always means flushed).
        self.since_flush = 0
        self.unflushed: list[Job] = []
        self.settled = 0  # deferred jobs completed by flushes, not yet counted as ended
        self.waiter: Waiter | None = None  # made when first needed, closed when idle

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


def run_batch(lane: Lane, batch: deque[Job]) -> int:
    """Run a batch of jobs taken off ``lane`` in order; return how many ended.

    A job whose handle completes with a later flush ends then; it is counted
    by the call in which that flush happens.
    """
    ended = 0
    while batch:
        job = batch.popleft()
        lane.target = job.sink.target
        group = None
        try:
            group = _small_group(job, batch)
            if group is None:
                ended += _run(lane, job, more=bool(batch) or bool(lane.jobs))
            else:
                ended += _run_group(lane, *group, more=bool(batch) or bool(lane.jobs))
        except BaseException:  # a bug in bgio itself; keep the lane alive for the others
            failed_jobs = [job] if group is None else group[0]
            logger.exception("bgio worker failed on %r", failed_jobs[0].handle)
            for failed in failed_jobs:
                failed.handle._finish(None, RuntimeError("bgio worker failed; see the bgio log"))
            ended += len(failed_jobs)
    return ended + _take_settled(lane)


def flush_pending(lane: Lane) -> int:
    """Flush what an idle lane still holds back; return how many jobs that ended."""
    if lane.unflushed:
        _flush(lane, lane.unflushed[-1].sink, raise_error=False)
    return _take_settled(lane)


def _take_settled(lane: Lane) -> int:
    settled, lane.settled = lane.settled, 0
    return settled


def _chain_failure(handle: BackgroundWriteProcess, what: str) -> ChainError:
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


def _release_frames(error: BaseException | None) -> None:
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
            _release_frames(error.__context__)
        error = error.__cause__


def _run(lane: Lane, job: Job, more: bool) -> bool:
    """Run one job; False if its handle completes later, with the next flush.

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
            raise _chain_failure(predecessor, "an earlier write to this destination")
        chain_after = job.chain_after
        if chain_after is not None and not chain_after.done():
            # Never wait with bytes held back: the write we wait for may
            # itself be waiting for them (a chain across two files).
            if lane.since_flush or lane.unflushed:
                _flush(lane, sink)
            handle._wait_for(chain_after)  # or for cancel(), which _start() then sees
        if chain_after is not None and chain_after.done() and failed(chain_after):
            raise _chain_failure(chain_after, "the write it was chained after")
        if job.source.lazy and (lane.since_flush or lane.unflushed):
            # A generator may wait on an earlier write's handle: complete those first.
            _flush(lane, sink)
        if handle._start():
            set_interrupt([handle], waiter.interrupt)
            try:
                stopped = _write_chunks(lane, job)
                if job.fsync and not stopped:
                    _flush(lane, sink, sync=True)  # done means on disk
                elif lane.since_flush and (job.close or stopped or not more):
                    _flush(lane, sink)
            except WriteInterrupted:  # cancel() while waiting for a full destination
                stopped = True
            finally:
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
            _flush(lane, sink, raise_error=False)
        if job.close:
            error = _close(sink, error, failed=error is not None or stopped or handle.cancelled())
    if deferred and error is None:
        lane.unflushed.append(job)
        return False
    _report(sink, handle, error)
    _release_frames(error)
    handle._finish(handle.bytes_written, error, cancelled=stopped)
    return True


def _small_group(job: Job, batch: deque[Job]) -> tuple[list[Job], list[Block | bytes]] | None:
    """Take the run of small writes that starts with ``job`` off ``batch``, if there is one.

    A run is consecutive plain writes (no chain_after, no close) of one
    chunk each, through one sink with one profile and chunk size, totalling
    at most one chunk: the worker
    writes them in one pass, paced and flushed as a single chunk, which
    spares the per-write overhead that would otherwise dwarf a 4 KiB write.
    """
    if not batch or job.chain_after is not None or job.close:
        return None
    chunk_size = job.chunk_size
    block = job.source.only_chunk(chunk_size)
    if block is None:
        return None
    jobs, blocks, size = [job], [block], len(block)
    while batch and len(jobs) < MAX_GROUP:
        following = batch[0]
        if (following.chain_after is not None or following.close
                or not _same_sink(following.sink, job.sink)
                or following.profile is not job.profile or following.chunk_size != chunk_size):
            break
        block = following.source.only_chunk(chunk_size)
        if block is None or size + len(block) > chunk_size:
            break
        jobs.append(batch.popleft())
        blocks.append(block)
        size += len(block)
    if len(jobs) == 1:
        return None
    return jobs, blocks


def _same_sink(one: Sink, other: Sink) -> bool:
    """Whether two writes go out through the same open file.

    Calls on one file object, fd or socket make sinks of their own around
    the same target; two paths' sinks each open a file of their own.
    """
    return one is other or (one.target is not None and one.key == other.key)


def _run_group(lane: Lane, jobs: list[Job], blocks: list[Block | bytes], more: bool) -> int:
    """Run a group of small writes in order; return how many jobs ended now.

    Behaves exactly as running each with :func:`_run`: a failed or
    cancelled write fails the ones after it with ChainError.
    """
    first = jobs[0]
    sink = first.sink
    waiter = lane.bind(sink)
    predecessor = first.predecessor
    if predecessor is not None and failed(predecessor):
        return sum(_run(lane, job, more=True) for job in jobs)
    throttle = lane.throttle
    throttle.profile = first.profile
    pause = throttle.delay()
    if pause:
        if lane.since_flush or lane.unflushed:
            _flush(lane, sink, raise_error=False)
            if predecessor is not None and failed(predecessor):  # that flush failed it
                return sum(_run(lane, job, more=True) for job in jobs)
        first.handle._pause(pause)
    handles = [job.handle for job in jobs]
    started = start_all(handles)  # stops at a write cancelled while queued
    waiter.take_waited()
    set_interrupt(handles[:started], waiter.interrupt)
    try:
        return _write_group(lane, jobs, blocks, started, more)
    finally:
        set_interrupt(handles[:started], None)
        waiter.clear()


def _write_group(lane: Lane, jobs: list[Job], blocks: list[Block | bytes], started: int,
                 more: bool) -> int:
    """Write the first ``started`` jobs of a group (already marked running); settle them all."""
    first = jobs[0]
    sink = first.sink
    throttle = lane.throttle
    handles = [job.handle for job in jobs]
    write = sink.write
    written = 0
    error: BaseException | None = None
    failed_at = 0
    clock = time.perf_counter
    began = clock()
    first_index = 0
    if sink.write_many is not None and started > 1:
        try:
            taken = sink.write_many(blocks[:started])
        except WriteInterrupted:
            pass  # nothing taken: the plain writes below see which write was cancelled
        except BaseException as exc:  # noqa: BLE001 - the group's first write failed
            error, first_index = exc, started
        else:
            written = taken
            # Hand the bytes taken to the writes they belong to; a block cut
            # short is finished below by plain writes from where it stopped.
            while first_index < started and taken >= len(blocks[first_index]):
                size = len(blocks[first_index])
                handles[first_index].bytes_written += size
                taken -= size
                first_index += 1
            if taken and first_index < started:
                handles[first_index].bytes_written += taken
                blocks[first_index] = memoryview(blocks[first_index])[taken:]
    index = first_index
    while index < started:
        handle = handles[index]
        if handle._cancel_requested:
            # Stop here: this write is cancelled where it stands, the rest not written.
            error, failed_at = WriteInterrupted(), index
            break
        block = blocks[index]
        try:
            taken = write(block)
            while taken < len(block):
                handle.bytes_written += taken
                written += taken
                if type(block) is bytes:
                    block = memoryview(block)  # slicing bytes would copy
                block = block[taken:]
                taken = write(block)
        except WriteInterrupted:
            # cancel() was asked while the destination was full; whose it was
            # is seen at the top of the loop (a later write's cancel does not
            # cut this one short: it goes on from where it stands).
            blocks[index] = block
            continue
        except BaseException as exc:  # noqa: BLE001 - goes to this write's handle
            error = exc
            failed_at = index
            break
        handle.bytes_written += taken
        written += taken
        index += 1
    lane.since_flush += written
    ok = failed_at if error is not None else started
    lane.unflushed.extend(jobs[:ok])
    if error is not None or lane.since_flush >= first.chunk_size or not more or started < len(jobs):
        _flush(lane, sink, raise_error=False)  # completes the written ones
    finished = clock()
    waited = sink.waiter.take_waited() if sink.waiter is not None else 0.0
    throttle.record(written, began, finished, waited)
    for handle in handles[:ok]:
        handle._first_start, handle._last_end = began, finished
        handle._busy = finished - began - waited
        handle._rate_of = throttle.rate
    ended = 0
    if error is not None:
        # Cancelled while waiting for the destination: that write stops where
        # it is (bytes_written says how far); the rest of the group is not written.
        interrupted = isinstance(error, WriteInterrupted)
        failed = handles[failed_at]
        if not interrupted:
            _report(sink, failed, error)
        failed._finish(failed.bytes_written, None if interrupted else error, cancelled=interrupted)
        ended += 1
        for job in jobs[failed_at + 1 : started]:  # started, never written
            job.handle._finish(0, _chain_failure(job.predecessor, "an earlier write to this destination"))
            ended += 1
    for job in jobs[started:]:  # from a write cancelled while queued on: as usual
        ended += _run(lane, job, more=True)
    return ended


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


def _report(sink: Sink, handle: BackgroundWriteProcess | None, error: BaseException | None) -> None:
    if error is None or handle is None:
        return
    if isinstance(error, ChainError):
        logger.debug("write to %s not run: %s", sink.name, error)
    else:
        logger.error("background write to %s failed after %d bytes",
                     sink.name, handle.bytes_written, exc_info=error)


def _flush(lane: Lane, sink: Sink, raise_error: bool = True, sync: bool = False) -> None:
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
    _report(sink, jobs[0].handle if jobs else None, error)
    _release_frames(error)
    for job in jobs:
        job.handle._finish(job.handle.bytes_written, error)
    lane.settled += len(jobs)
    if error is not None and raise_error:
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
    handle._rate_of = throttle.rate
    for chunk in job.source.chunks(chunk_size, sink.kind):
        if handle._cancel_requested:
            return True
        pause = throttle.delay()
        if pause:
            if lane.since_flush:
                _flush(lane, sink)  # idle time is the time to hand data on
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
            _flush(lane, sink)
        finished = clock()
        # Time spent waiting for a slow reader is back-pressure, not work.
        waited = waiter.take_waited()
        throttle.record(size, started, finished, waited)
        handle._record(started, finished, waited)
    return False
