"""The worker's side of a destination: its jobs run in order by one write loop that paces.

A *lane* is one destination's ordered queue (kept by :mod:`bgio.engine`) and
what its worker carries between jobs: the throttle, bytes not yet flushed,
and the first failure. :func:`run_batch` takes the jobs queued on a lane
and runs them in order. A *run* is what one pass of the write loop writes:
one job's chunks, or a run of small writes gathered into one chunk. The
loop, :func:`_write_pieces` (run by :func:`_write_run`), is the one place
that asks the throttle and sleeps; :mod:`bgio.pieces` writes each piece it
hands on.

Order: a job after a failed or cancelled one (on its lane, or its
``chain_after``) writes nothing and fails with :class:`~bgio.errors.ChainError`,
so a destination never has a gap. *Done* means *handed to the OS*: the
handles of writes whose bytes still sit in a stream's buffer complete with
the flush that carries them.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import CancelledError
from typing import cast

from . import ioprio
from .errors import ChainError
from .group import GroupOwners, WriteGroup
from .handle import (
    BackgroundWriteProcess,
    GroupState,
    WriteTiming,
    cancels_so_far,
    failure_of,
    finish_all,
    finish_group,
    start_all,
    start_group,
)
from .lag import LagGauge
from .pieces import IOV_MAX, Owner, put_piece
from .priority import BackgroundIOPriority
from .runqueue import run_delay
from .sinks import Sink, Waiter, WriteInterrupted
from .source import Block, Source, chunks_of, only_chunk_of
from .throttle import Throttle
from .writeback import Progress

__all__ = ["MAX_GROUP", "MIN_PAUSE", "Job", "Lane", "flush_pending", "run_batch"]

logger = logging.getLogger("bgio")

#: The shortest pacing pause taken: waking up again costs more than a shorter
#: one gives (a round trip for the interpreter lock can take 5 ms when the
#: application is busy). The time owed carries over to a later pause.
MIN_PAUSE = 0.0005

#: Most small writes gathered into one pass of the loop (one chunk's worth of
#: bytes at most).
MAX_GROUP = 65536

#: Beyond IOV_MAX blocks, a pass goes on gathering only while its blocks
#: average less than this many bytes: those are copied into one buffer.
_GATHER_BELOW = 1024

#: Chunks between two measurements of the wake-up latency when pacing takes
#: no pauses to measure it from (what ``duty_cycle`` subtracts).
_PROBE_EVERY = 64


class Job:
    """One write: what, where, how fast, and after what.

    ``close``, ``chain_after`` and ``fsync`` are class-level defaults, set on
    the few jobs that need them: a Writer makes one job per write, and every
    attribute set is part of the cost of a small write.
    """

    __slots__ = ("__dict__", "chunk_size", "ended", "handle", "profile", "sink", "source")

    close = False
    chain_after: BackgroundWriteProcess | None = None
    fsync = False
    #: A Writer's small writes queued as this one job (``handle`` is the first).
    group: WriteGroup | None = None
    #: The writer's ``max_lag`` gauge (:mod:`bgio.lag`), and when it accepted the job
    #: (:func:`time.perf_counter`): its chunks go unpaced while the writer is behind.
    lag: LagGauge | None = None
    accepted = 0.0

    def __init__(
        self,
        handle: BackgroundWriteProcess,
        sink: Sink,
        source: Source | bytes,
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
        self.ended = False  # counted as ended by its lane (see Lane.end)
        if close:
            self.close = True
        if chain_after is not None:
            self.chain_after = chain_after
        if fsync:
            self.fsync = True

    def abandon(self, error: BaseException) -> None:
        """Fail the writes of a job that will not run or finish (a bug in bgio)."""
        if self.group is None:
            if not self.handle.done():
                self.handle.set_exception(error)
            return
        self.group.open = False  # nothing may join it any more
        state = self.group.state
        if state.stop_offset is None:
            state.stop(0, error, "not written: the bgio worker failed", error)
        finish_group(state)


class Lane:
    """The ordered queue of one destination, and what its worker carries between jobs."""

    __slots__ = ("anchor", "batch", "failure", "flush_groups", "flush_waiters", "jobs", "key",
                 "open_group", "probe", "progress", "running",
                 "settled", "since_flush", "sync_pending", "target", "throttle", "unflushed",
                 "waiter", "wake", "worker")

    def __init__(self, key: Hashable, profile: BackgroundIOPriority) -> None:
        self.key = key
        self.jobs: deque[Job] = deque()  # guarded by the engine's lock
        # The jobs the worker took and runs now (read by the exit drain, to cancel them).
        self.batch: deque[Job] = deque()
        self.running: Job | None = None
        # The Writer's group last queued, while it may still take writes (engine's lock).
        self.open_group: WriteGroup | None = None
        self.worker: object = None  # the worker serving the lane, if any (see bgio.engine)
        self.target: object = None  # the destination object of the job last run
        self.anchor: object = None  # weak reference to the file; the lane goes with the file
        self.throttle = Throttle(profile, min_pause=MIN_PAUSE)
        # The first failure on the destination: its error and (weakly, so
        # the lane keeps no handle and no file alive) its handle.
        self.failure: tuple[BaseException, weakref.ref[BackgroundWriteProcess] | None] | None = None
        # Small writes are not flushed one by one: bytes written since the
        # last flush, the writes whose last bytes that flush will carry, and
        # the jobs that end with it.
        self.since_flush = 0
        self.flush_waiters: list[BackgroundWriteProcess] = []
        self.flush_groups: list[GroupState] = []  # a Writer's groups, done with that flush
        self.unflushed: list[Job] = []
        self.sync_pending = False  # one of the unflushed writes asked for fsync
        self.settled = 0  # jobs ended and not yet reported to the engine
        self.waiter: Waiter | None = None  # made when first needed, closed when idle
        self.wake = threading.Event()  # cuts a pause or a chain wait short
        self.probe = 0  # chunks until the next wake-up latency probe
        # What the sink last said is on the device (see _Windows), or None.
        self.progress: Progress | None = None

    def unfinished(self) -> list[Job]:
        """The job running and those queued behind it, in order (for the exit drain)."""
        running = self.running
        return ([running] if running is not None else []) + [*self.batch, *self.jobs]

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

    def interrupt(self) -> None:
        """Wake the worker from a pause, a chain wait or a wait for the destination
        (a handle's cancel() calls it, under that handle's lock)."""
        self.wake.set()
        if self.waiter is not None:
            self.waiter.interrupt()

    def close_waiter(self) -> None:
        """Release the waiter's fd while the lane is idle (no handle can reach it then)."""
        if self.waiter is not None:
            self.waiter.close()
            self.waiter = None

    def fail(self, handle: BackgroundWriteProcess | None, error: BaseException) -> None:
        """Remember the destination's first failure: every later write is a ChainError.

        ``handle`` is the failed write's (None for a write of a Writer's group:
        the group keeps no handles)."""
        if self.failure is None:
            root = error.root_cause if isinstance(error, ChainError) else error
            self.failure = (root or error, None if handle is None else weakref.ref(handle))

    def chain_error(self) -> ChainError:
        """The error of a write queued after the destination's first failure."""
        assert self.failure is not None
        root, ref = self.failure
        return _chain_error("an earlier write to this destination", root,
                            None if ref is None else ref())


def _chain_error(what: str, root: BaseException,
                 handle: BackgroundWriteProcess | None) -> ChainError:
    # Linked to the error that started it all, never to the ChainError
    # before it: each costs O(1), and a failed handle keeps no other alive.
    if isinstance(root, ChainError) and root.root_cause is not None:
        root = root.root_cause
    if type(root).__name__ == "CancelledError":
        reason = "was cancelled"
    else:
        reason = f"failed ({type(root).__name__}: {root})"
    error = ChainError(f"not written: {what} {reason}", handle, root)
    error.__cause__ = root
    return error


def release_frames(error: BaseException | None) -> None:
    """Drop the worker's traceback from an error about to be stored on a handle.

    A failed handle is kept (by its Writer, by the caller), and a traceback
    holds the worker's frames, whose locals are the caller's file and data:
    they would never be freed. The traceback has been logged on the ``bgio``
    logger already; ``result()`` re-raises the error without it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        if error.__context__ is not None and error.__context__ is not error.__cause__:
            release_frames(error.__context__)
        error = error.__cause__


def _report(sink: Sink, handle: BackgroundWriteProcess | None, error: BaseException) -> None:
    if isinstance(error, ChainError):
        logger.debug("write to %s not run: %s", sink.name, error)
    elif isinstance(error, CancelledError):
        # Its data said it was cancelled (a writer-process write cancelled before it
        # was sent): a cancel, not a failure.
        logger.debug("write to %s cancelled: %s", sink.name, error)
    elif handle is not None:
        logger.error("background write to %s failed after %d bytes",
                     sink.name, handle.bytes_written, exc_info=error)


def _settle(lane: Lane, sink: Sink, handle: BackgroundWriteProcess,
            error: BaseException | None, stopped: bool = False) -> None:
    """Set the final state of a write's handle (its job is counted apart: :meth:`Lane.end`)."""
    if error is not None:
        _report(sink, handle, error)
        release_frames(error)
        lane.fail(handle, error)
        handle.set_exception(error)
    elif stopped:
        lane.fail(handle, failure_of_stop(handle))
        handle.set_stopped()
    else:
        handle.set_result()


def failure_of_stop(handle: BackgroundWriteProcess) -> BaseException:
    """The failure a stopped (cancelled) write leaves on its destination."""
    return CancelledError(f"cancelled after {handle.bytes_written} bytes")


# -- flushing ------------------------------------------------------------------------------


def flush(lane: Lane, sink: Sink, raise_error: bool = True, sync: bool = False) -> None:
    """Flush the destination and complete the writes that were waiting for it.

    With ``sync``, or if one of those writes asked for ``fsync``, the data
    is put on disk too. If the flush fails, those writes fail with its error
    (their bytes may not have reached the file), and so does the current one
    unless ``raise_error`` is False.
    """
    jobs, lane.unflushed = lane.unflushed, []
    handles, lane.flush_waiters = lane.flush_waiters, []
    groups, lane.flush_groups = lane.flush_groups, []
    since_flush, lane.since_flush = lane.since_flush, 0
    sync_pending, lane.sync_pending = lane.sync_pending, False
    error: BaseException | None = None
    synced = sync or sync_pending
    try:
        if synced:
            sink.sync()
        else:
            sink.flush()
    except WriteInterrupted:
        # A cancel() of the write under way, not a failure of these: they
        # stay waiting for a later flush.
        lane.unflushed[:0] = jobs
        lane.flush_waiters[:0] = handles
        lane.flush_groups[:0] = groups
        lane.since_flush += since_flush
        lane.sync_pending = lane.sync_pending or sync_pending
        raise
    except BaseException as exc:  # noqa: BLE001 - goes to the waiting handles
        error = exc
    if error is None:
        if synced or _all_on_disk(lane):
            for handle in handles:
                handle.bytes_on_disk = handle.bytes_written
        finish_all(handles)  # one lock for the lot
        for group in groups:
            finish_group(group)
    else:
        for handle in handles:
            _settle(lane, sink, handle, error)
        if groups:
            if not handles:  # (else logged with each of them)
                logger.error("flushing %s failed", sink.name, exc_info=error)
            release_frames(error)
            lane.fail(None, error)
            for group in groups:
                finish_group(group, flush_error=error)
    for job in jobs:
        lane.end(job)
    if error is not None and raise_error:
        raise error


def flush_pending(lane: Lane) -> int:
    """Flush what an idle lane still holds back; return how many jobs that ended.

    Bytes in a stream's buffer cannot be taken back: a wake-up meant for a
    cancel (there is none to honour here) is cleared and the flush goes on.
    """
    while lane.unflushed:
        try:
            flush(lane, lane.unflushed[-1].sink, raise_error=False)
        except WriteInterrupted:
            if lane.waiter is not None:
                lane.waiter.clear()
    return lane.take_ended()


# -- running jobs --------------------------------------------------------------------------


def run_batch(lane: Lane, batch: deque[Job]) -> int:
    """Run a batch of jobs taken off ``lane`` in order; return how many ended.

    A job ends when its handles are settled and its file closed if asked;
    ends are counted once each (:meth:`Lane.end`), whatever path got there.
    A job whose handles complete with a later flush ends then, and is
    counted by the call in which that flush happens.
    """
    while batch:
        job = lane.running = batch.popleft()
        lane.target = job.sink.target
        run = [job]
        try:
            if job.group is not None:
                _run_group(lane, job, batch)
            else:
                _run(lane, run, batch)
        except BaseException:  # a bug in bgio itself; keep the lane alive for the others
            logger.exception("bgio worker failed on %r", job.handle)
            stuck = {id(each.handle) for each in run}
            lane.flush_waiters = [h for h in lane.flush_waiters if id(h) not in stuck]
            if job.group is not None and job.group.state in lane.flush_groups:
                lane.flush_groups.remove(job.group.state)
            for each in run:
                each.abandon(RuntimeError("bgio worker failed; see the bgio log"))
                if each in lane.unflushed:
                    lane.unflushed.remove(each)
                lane.end(each)
    lane.running = None
    return lane.take_ended()


def _run(lane: Lane, run: list[Job], batch: deque[Job]) -> None:
    """Run ``run[0]`` (and the small writes after it that join its pass), then settle them."""
    job = run[0]
    sink = job.sink
    handle = job.handle
    owners = [handle]  # the handles of the writes in the pass, in order
    error: BaseException | None = None
    stopped_at = -1
    try:
        _check_order(lane, job)
        if not handle.set_running_or_notify_cancel():
            # Cancelled while queued: nothing written, and nothing after it.
            lane.fail(handle, failure_of_stop(handle))
            stopped_at = 0
        else:
            timing = WriteTiming(-1.0, -1.0, 0.0, None)  # shared by the run's writes
            handle.set_timing(timing)
            cancels = cancels_so_far()  # any cancel from now on may concern the run
            group = _gather(run, batch, timing)
            owners.extend(each.handle for each in run[1:])
            waiter = lane.bind(sink)
            waiter.take_waited()
            hooked = sink.nonblocking
            if hooked:  # cancel() must be able to wake a wait for the destination
                for each in owners:
                    each.watch_cancel(lane.interrupt)
            try:
                stopped_at, error = _write_run(lane, job, owners, group, timing, cancels)
                group = None  # no view of the caller's data outlives its write
            finally:
                if hooked:
                    for each in owners:
                        each.watch_cancel(None)
                    waiter.clear()
    except BaseException as exc:  # noqa: BLE001 - an order check or a flush: this job's
        error, stopped_at = exc, 0
    _finish_run(lane, run, owners, batch, error, stopped_at)


def _run_group(lane: Lane, job: Job, batch: deque[Job]) -> None:
    """Run a Writer's group of small writes (:mod:`bgio.group`) as one piece, and settle
    it in one step: its handles derive their outcome from the group's state."""
    group = job.group
    assert group is not None
    state = group.state
    sink = job.sink
    blocks: list[Block | bytes] | None = group.seal()  # type: ignore[assignment]
    assert blocks is not None
    error: BaseException | None = None
    flush_error: BaseException | None = None
    stop_offset: int | None = None
    written = 0
    try:
        _check_order(lane, job)
        cancels = cancels_so_far()  # before it starts: a cancel from now on is seen
        cut = start_group(state, WriteTiming(-1.0, -1.0, 0.0, None))
        if cut is not None:  # a write cancelled while queued: only those before it go
            blocks = _blocks_before(blocks, cut)
            stop_offset = cut
        if blocks:
            assert state.timing is not None
            waiter = lane.bind(sink)
            waiter.take_waited()
            owners = GroupOwners(state, blocks)
            hooked = sink.nonblocking
            if hooked:  # cancel() must be able to wake a wait for the destination
                state.watch_cancel(lane.interrupt)
            try:
                stopped_at, error = _write_run(lane, job, owners, blocks, state.timing,
                                               cancels, state)
            finally:
                if hooked:
                    state.watch_cancel(None)
                    waiter.clear()
            written = state.bytes_written
            if stopped_at >= 0:
                stop_offset = owners.offset(stopped_at)
                if (error is not None and stop_offset == 0
                        and written == owners.offset(len(owners))):
                    # All of it went out, and the flush after it failed: every
                    # write of the group gets that error (see finish_group).
                    flush_error, error, stop_offset = error, None, None
            blocks = owners = None  # type: ignore[assignment]  # no view of the caller's data outlives its write
    except BaseException as exc:  # noqa: BLE001 - an order check or a flush
        error, stop_offset = exc, 0
    if flush_error is not None:
        logger.error("background write to %s failed: flushing it failed", sink.name,
                     exc_info=flush_error)
        release_frames(flush_error)
        lane.fail(None, flush_error)
        finish_group(state, flush_error=flush_error)
        lane.end(job)
        return
    if stop_offset is not None:
        if error is None:  # the write there was cancelled: its own bytes
            root: BaseException = CancelledError(
                f"cancelled after {max(0, written - stop_offset)} bytes")
        else:
            root = error.root_cause if isinstance(error, ChainError) and error.root_cause \
                else error
            if not isinstance(error, ChainError):
                logger.error("background write to %s failed after %d bytes",
                             sink.name, written, exc_info=error)
            release_frames(error)
        lane.fail(None, root)
        reason = "was cancelled" if type(root).__name__ == "CancelledError" else \
            f"failed ({type(root).__name__}: {root})"
        state.stop(stop_offset, error, f"not written: an earlier write to this destination "
                   f"{reason}", root)
    if stop_offset != 0:  # some written: done with the flush that carries them
        lane.flush_groups.append(state)
        lane.unflushed.append(job)
        if job.fsync:
            lane.sync_pending = True
    else:
        finish_group(state)
        lane.end(job)
    _flush_after(lane, sink, stopped=stop_offset is not None, closing=False,
                 sync=stop_offset is None and job.fsync, more=bool(batch or lane.jobs))


def _blocks_before(blocks: list[Block | bytes], offset: int) -> list[Block | bytes]:
    """The blocks of a group that lie before ``offset`` (a block boundary)."""
    total = 0
    for index, block in enumerate(blocks):
        if total >= offset:
            return blocks[:index]
        total += len(block)
    return blocks


def _check_order(lane: Lane, job: Job) -> None:
    """Raise the ChainError of a job that must not run; wait for its ``chain_after``."""
    if lane.failure is not None:
        raise lane.chain_error()
    chain_after = job.chain_after
    if chain_after is not None:
        if not chain_after.done():
            # Never wait with bytes held back: the write we wait for may
            # itself be waiting for them (a chain across two files).
            if lane.since_flush or lane.unflushed:
                flush(lane, job.sink)
            _wait_for(lane, job.handle, chain_after)
        cause = failure_of(chain_after)
        if cause is not None:
            raise _chain_error("the write it was chained after", cause, chain_after)
    source = job.source
    if type(source) is not bytes and source.lazy and (lane.since_flush or lane.unflushed):  # type: ignore[union-attr]
        # A generator may wait on an earlier write's handle: complete those first.
        flush(lane, job.sink)


def _wait_for(lane: Lane, handle: BackgroundWriteProcess, other: BackgroundWriteProcess) -> None:
    """Wait until ``other`` is done, or ``handle`` (pending) is cancelled."""
    wake = lane.wake
    other.add_done_callback(lambda _: wake.set())
    try:
        while True:
            wake.clear()
            if handle.watch_cancel(lane.interrupt) or other.done():
                return
            wake.wait()
    finally:
        handle.watch_cancel(None)


def _gather(run: list[Job], batch: deque[Job], timing: WriteTiming) -> list[Block | bytes] | None:
    """Move the small writes that follow ``run[0]`` into its pass (marking them running);
    return the pass's one piece (block ``k`` is ``run[k]``'s), or None when ``run[0]``
    goes alone.

    They are consecutive plain writes (no chain_after, no close) of one
    block each, through the same open file with one profile and chunk
    size, totalling at most one chunk: written in one pass, paced and
    flushed as a single chunk, which spares the per-write overhead that
    would otherwise dwarf a 4 KiB write.
    """
    first = run[0]
    if not batch or first.chain_after is not None or first.close:
        return None
    chunk_size = first.chunk_size
    block = only_chunk_of(first.source, chunk_size)
    if block is None:
        return None
    blocks = [block]
    size = len(block)
    sink, profile, fsync = first.sink, first.profile, first.fsync
    taken = []
    count = 1
    copy_free = IOV_MAX * _GATHER_BELOW
    while batch and count < MAX_GROUP:
        following = batch[0]
        if (following.group is not None or following.chain_after is not None or following.close
                or following.fsync != fsync
                or (following.sink is not sink and not _same_sink(following.sink, sink))
                or following.profile is not profile or following.chunk_size != chunk_size):
            break
        source = following.source
        if type(source) is bytes:  # a Writer's bytes are their own source: the common case
            block = source
        else:
            block = only_chunk_of(source, chunk_size)
            if block is None:
                break
        length = len(block)
        if not length or size + length > chunk_size:
            break
        if count >= IOV_MAX and size >= copy_free:
            break  # blocks this big fill a gather write without being copied
        taken.append(batch.popleft())
        blocks.append(block)
        size += length
        count += 1
    if not taken:
        return None
    # One lock for the lot; a write cancelled while queued goes back to the
    # batch and is handled on its own, in order.
    started = start_all([job.handle for job in taken], timing)
    for job in reversed(taken[started:]):
        batch.appendleft(job)
    run.extend(taken[:started])
    return blocks[:started + 1] if started else None


def _same_sink(one: Sink, other: Sink) -> bool:
    """Whether two writes go out through the same open file.

    Calls on one file object, fd or socket make sinks of their own around
    the same target; two paths' sinks each open a file of their own.
    """
    return one is other or (one.target is not None and one.key == other.key)


# -- the write loop ------------------------------------------------------------------------


def _write_run(lane: Lane, first: Job, owners: Sequence[Owner],
               group: list[Block | bytes] | None, timing: WriteTiming, cancels: int,
               shared: GroupState | None = None) -> tuple[int, BaseException | None]:
    """:func:`_write_pieces`; a run that stops short (an error, a cancel) ends its
    writer's ``max_lag`` episode: nothing after it will be written."""
    lag = first.lag
    try:
        result = _write_pieces(lane, first, owners, group, timing, cancels, shared)
    except BaseException:
        if lag is not None:
            lag.stop()
        raise
    if lag is not None and result[0] >= 0:
        lag.stop()
    return result


def _write_pieces(lane: Lane, first: Job, owners: Sequence[Owner],
                  group: list[Block | bytes] | None, timing: WriteTiming, cancels: int,
                  shared: GroupState | None = None) -> tuple[int, BaseException | None]:
    """Write the run's data in order, paced; the one loop that asks the throttle and sleeps.

    The run is one job (``first``), written chunk by chunk, or a ``group``
    of small writes in one piece (gathered by :func:`_gather`, or by a
    Writer: :mod:`bgio.group`), block ``k`` being ``owners[k]``'s (a
    Writer's group's state owns all its blocks, and is ``shared``: credited
    at once when the whole piece is written).

    Returns ``(index, error)``: where in ``owners`` it stopped and why (an
    error, or None for a cancel), or ``(-1, None)`` when everything was written.
    """
    sink = first.sink
    throttle = lane.throttle
    throttle.profile = first.profile
    ioprio.apply(first.profile.io_priority)
    chunk_size = first.chunk_size
    waiter = sink.waiter
    assert waiter is not None
    clock = time.perf_counter
    cpu_clock = time.thread_time
    # A piece's block k belongs to run[k]: one job's chunks go one at a time.
    pieces = (group,) if group is not None else (
        [chunk] for chunk in chunks_of(first.source, chunk_size, sink.kind))
    leader = owners[0]
    # One job's progress callbacks are told after each chunk (a group's writes are
    # small: theirs hear only of the end).
    report = getattr(leader, "report_progress", None) if group is None else None
    hooked = sink.nonblocking
    windows = _Windows.of(sink, first.profile, chunk_size, owners, group, shared)
    lane.progress = windows.progress if windows is not None else None
    last_seen = run_delay()  # this thread's: a run is served by one thread
    # The CPU time the source takes to produce a piece in this thread (a
    # generator's work; in the writer process, the read of the caller's memory)
    # is the write's work too: busy time, paced like the write itself. Time
    # off the CPU meanwhile (waiting for the data) is not.
    lag = first.lag
    hurried = False
    in_hand = 0  # the run's bytes (what the writer counts queued until it is done)
    if lag is not None:
        in_hand = (sum(len(block) for block in group) if group is not None
                   else first.handle.total_bytes or 0)
    pulling = cpu_clock()
    for piece in pieces:
        pulled = cpu_clock() - pulling
        if leader.cancel_requested:
            return 0, None
        if lag is not None:
            hurried = lag.behind(first.accepted, clock(), in_hand)
        pause = 0.0 if hurried else throttle.delay()
        if pause:
            if lane.since_flush:
                # Idle time is the time to hand data on.
                stopped = _flush_in_run(lane, sink, leader, before_piece=True)
                if stopped is not None:
                    return stopped
            if _pause(lane, leader, pause, hooked):
                return 0, None
        elif lane.probe <= 0 and len(piece) == 1:
            _probe(lane)
        lane.probe -= 1
        # The statistics are read outside the wall span: their system calls
        # are not busy time (~3 us of a 1 MiB chunk's ~200 us on tmpfs).
        before = run_delay()
        cpu = cpu_clock()
        started = clock()
        # Seconds spent handing windows to the device and waiting for it.
        device = windows.before_piece() if windows is not None else 0.0
        written, stop, error = put_piece(sink, owners, piece, cancels, shared)
        del piece  # no view of the caller's data outlives its write
        if windows is not None:
            turned = clock()
            try:
                windows.after_piece()
            except OSError as exc:  # the device failed to write what it had taken
                if error is None:
                    stop, error = 0, exc
            device += clock() - turned
        lane.since_flush += written
        if stop < 0 and lane.since_flush >= chunk_size:
            stopped = _flush_in_run(lane, sink, leader, before_piece=False)
            if stopped is not None:
                stop, error = stopped
        finished = clock()
        cpu = cpu_clock() - cpu
        wall = finished - started
        # Off the CPU for longer than a wake-up: waiting for a CPU (other
        # processes) is not busy, waiting for the device is; the run queue
        # tells them apart.
        queued = 0.0
        seen = before
        if wall - cpu > throttle.latency:
            seen = run_delay()
            queued = max(0.0, seen - before)
        # The device's time is busy, all of it: no wake-up latency is taken off it.
        busy = (throttle.busy_of(wall - device, cpu, waiter.take_waited(), queued) + device
                + pulled)
        # Waiting for a CPU since the last reading (a pause's wake-up, a
        # preemption between chunks) and during this chunk.
        cpu_wait = max(0.0, seen - last_seen)
        last_seen = seen
        # The piece's span begins with its production: that is not idle time.
        throttle.record(written, started - pulled, finished, busy, cpu_wait, hurried)
        if hurried:
            assert lag is not None
            lag.wrote(written, finished)
            _credit_unpaced(owners, group, shared, written)
        if timing.first_start < 0:
            timing.first_start = started - pulled
        timing.busy += busy
        timing.last_end = finished
        timing.rate = throttle.rate(timing.first_start)
        if report is not None:
            report()
        if stop >= 0:
            return stop, error
        pulling = cpu_clock()
    if hurried:
        assert lag is not None
        lag.settle(in_hand)  # caught up, if nothing waits behind the run
    return -1, None


def _credit_unpaced(owners: Sequence[Owner], group: list[Block | bytes] | None,
                    shared: GroupState | None, written: int) -> None:
    """``written`` bytes of a piece went unpaced: count them on their handles (a
    Writer's group, ``shared``, keeps none)."""
    if shared is not None:
        return
    handles = cast("Sequence[BackgroundWriteProcess]", owners)
    if group is None:  # one job's chunk: the leader's
        handles[0].unpaced_bytes += written
        return
    for handle, block in zip(handles, group):  # a run of small writes, block by block
        if written <= 0:
            break
        taken = min(written, len(block))
        handle.unpaced_bytes += taken
        written -= taken


class _Windows:
    """A run's write-back windows (:mod:`bgio.writeback`), and what they tell its handles.

    Before each piece the window ended last goes to the device (after any
    pause, never in one); after it, a window ends once ``window`` bytes were
    written, each piece at most (pauses come between pieces, so a window of
    whole pieces has none of its device time inside a pause), and the
    handles learn how much of their data is on the device
    (``bytes_on_disk``). A write's bytes are a range of what went through
    the sink: from the count when the run began, block after block in a run
    of small writes. A Writer's group (``shared``) keeps no handles to
    credit: its writes say None.
    """

    __slots__ = ("_owners", "_starts", "_window", "_writeback")

    def __init__(self, writeback: Progress, window: int, owners: Sequence[Owner],
                 group: list[Block | bytes] | None, shared: GroupState | None) -> None:
        self._writeback = writeback
        self._window = window
        origin = writeback.written
        handles = cast("Sequence[BackgroundWriteProcess]", owners)  # not a group: handles
        self._owners: Sequence[BackgroundWriteProcess] = ()
        self._starts: list[int] = []
        if shared is None and group is None:
            self._owners, self._starts = handles[:1], [origin]
        elif shared is None and group is not None:
            for block in group:
                self._starts.append(origin)
                origin += len(block)
            self._owners = handles

    @classmethod
    def of(cls, sink: Sink, profile: BackgroundIOPriority, chunk_size: int,
           owners: Sequence[Owner], group: list[Block | bytes] | None,
           shared: GroupState | None) -> _Windows | None:
        """The run's windows, or None where the profile has none or they do not apply."""
        window = profile.writeback_window
        use_writeback = getattr(sink, "use_writeback", None)  # optional (see Sink)
        writeback = use_writeback(window) if use_writeback is not None else None
        if writeback is None:
            return None
        # A sink may count bytes on the device without windows (direct I/O).
        return cls(writeback, min(window or chunk_size, chunk_size), owners, group, shared)

    @property
    def progress(self) -> Progress:
        """The sink's account of what is on the device."""
        return self._writeback

    def before_piece(self) -> float:
        """Start the device write of the window ended last; return the seconds it took."""
        started = time.perf_counter()
        self._writeback.resume()
        return time.perf_counter() - started

    def after_piece(self) -> None:
        """End a window if one is full (waiting for the one before), then credit the handles."""
        self._writeback.turn(self._window)
        on_disk = self._writeback.on_disk
        for owner, start in zip(self._owners, self._starts):
            if on_disk <= start:
                break  # the rest start later still
            owner.bytes_on_disk = min(on_disk - start, owner.bytes_written)


def _all_on_disk(lane: Lane) -> bool:
    """Whether the sink says everything it took is on the device (a direct sink, flushed).

    Only a sink whose flush settles everything (``settled_by_flush``) can say
    so: a path's, which is opened and closed by the writes it serves, so the
    handles a flush completes are all its own.
    """
    progress = lane.progress
    return (progress is not None and progress.settled_by_flush
            and progress.on_disk >= progress.written)


def _flush_in_run(lane: Lane, sink: Sink, leader: Owner, before_piece: bool
                  ) -> tuple[int, BaseException | None] | None:
    """Flush during a run; None if that went well, else where the run stops and why.

    A failed flush fails the writes it carried and the run (their bytes may
    not have reached the destination). A cancel that cut the flush short (a
    full non-blocking destination) cannot take back bytes already in the
    stream's buffer: they stay queued for a later flush, and their writes
    finish normally. Before the next piece, a cancel of the run's first
    write stops the run there, with nothing of that piece written; any
    other cancel is seen as the piece is written.
    """
    try:
        flush(lane, sink)
    except WriteInterrupted:
        if before_piece and leader.cancel_requested:
            return 0, None
        return None  # the bytes stay queued, the run goes on
    except BaseException as exc:  # noqa: BLE001 - on the handles it carried already
        return 0, exc
    return None


def _pause(lane: Lane, handle: Owner, seconds: float,
           hooked: bool = False) -> bool:
    """Sleep ``seconds`` for pacing, cut short by ``handle.cancel()``; True if cancelled.

    ``hooked``: the run's handles wake the lane on cancel already (a
    non-blocking destination), and must go on doing so after the pause.
    """
    wake = lane.wake
    started = time.perf_counter()
    deadline = started + seconds
    try:
        while True:
            wake.clear()
            if handle.watch_cancel(lane.interrupt):
                return True
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            # The platform's longest wait at most: a pause that long is
            # forever in practice, and cancel() still cuts it short. (A
            # wake-up for something else, a chain wait's late callback,
            # just goes round again.)
            wake.wait(min(remaining, threading.TIMEOUT_MAX))
    finally:
        handle.watch_cancel(lane.interrupt if hooked else None)
    lane.throttle.note_wake(seconds, time.perf_counter() - started)
    lane.probe = _PROBE_EVERY
    return False


def _probe(lane: Lane) -> None:
    """Measure the wake-up latency when pacing takes no pauses: one zero-length sleep
    (a single round trip for the interpreter lock) every ``_PROBE_EVERY`` chunks."""
    started = time.perf_counter()
    time.sleep(0)
    lane.throttle.note_wake(0.0, time.perf_counter() - started)
    lane.probe = _PROBE_EVERY


def _finish_run(lane: Lane, run: list[Job], owners: list[BackgroundWriteProcess],
                batch: deque[Job], error: BaseException | None, stopped_at: int) -> None:
    """Settle every write of a run after its pass: done, deferred to a flush, failed or stopped.

    ``stopped_at`` is where in the run the pass stopped (-1: it wrote
    everything), with ``error``, or None for a cancel; ``owners`` are the
    run's handles. A job that closes its destination runs alone, and its
    handle completes once the destination is closed. The jobs written end
    with the flush that completes them.
    """
    last = run[-1]
    sink = last.sink
    for job in run:
        job.source = b""  # let go of the caller's data
    stopped = None if stopped_at < 0 else owners[stopped_at]
    count = len(run) if stopped is None else stopped_at  # written, done with a flush
    closing = last.close
    if closing and stopped is None:
        count = 0  # settled below, once the destination is closed
    if count:
        lane.flush_waiters.extend(owners[:count])
        lane.unflushed.extend(run[:count])
        if last.fsync:  # a run's writes agree on fsync (see _gather)
            lane.sync_pending = True
    flush_error = _flush_after(lane, sink, stopped=stopped is not None, closing=closing,
                               sync=stopped is None and last.fsync,
                               more=bool(batch or lane.jobs))
    if closing:
        failed = stopped is not None or error is not None or flush_error is not None
        error = _close(sink, error if stopped is not None else flush_error, failed)
        lane.since_flush = 0  # whatever was buffered went with the close
        progress = lane.progress
        if (failed or error is not None) and progress is not None and \
                last.handle.bytes_on_disk:
            # What a discard left stored (an aborted upload: nothing), if it is less.
            last.handle.bytes_on_disk = min(last.handle.bytes_on_disk, progress.on_disk)
        if stopped is None:
            if error is None and (last.fsync or _all_on_disk(lane)):  # (flushed above)
                last.handle.bytes_on_disk = last.handle.bytes_written
            _settle(lane, sink, last.handle, error)
            lane.end(last)
            return
    if stopped is None:
        return
    if not stopped.done():  # (done: cancelled while queued)
        _settle(lane, sink, stopped, error, stopped=error is None)
    for handle in owners[stopped_at + 1:]:  # in the pass, never written
        _settle(lane, sink, handle, lane.chain_error())
    for job in run[count:]:
        lane.end(job)


def _flush_after(lane: Lane, sink: Sink, stopped: bool, closing: bool, sync: bool,
                 more: bool) -> BaseException | None:
    """Flush after a run if it is time to: on disk if ``sync``; else when the run
    stopped, closes its destination, or has no more jobs behind it (``more``) and
    something waits for the flush. Return the flush's error, if it failed (already
    on the handles it carried)."""
    try:
        if sync:
            flush(lane, sink, sync=True)  # done means on disk
        elif (lane.unflushed or (closing and lane.since_flush)) and (
                stopped or closing or not lane.since_flush or not more):
            flush(lane, sink)
    except WriteInterrupted:
        # A stale wake-up (the run's cancel hooks are gone by now): bytes
        # already in the stream's buffer go out with the lane's next flush.
        pass
    except BaseException as exc:  # noqa: BLE001 - already on the handles it carried
        return exc
    return None


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
