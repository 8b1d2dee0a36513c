"""A batch of queued jobs run in order, with runs of small writes merged into one pass."""

from __future__ import annotations

import logging
import time
from collections import deque

from .handle import WriteTiming, set_interrupt, start_all
from .jobs import (
    Job,
    Lane,
    chain_failure,
    failed,
    flush,
    report,
    run_job,
)
from .sinks import Sink, WriteInterrupted
from .source import Block

__all__ = ["MAX_GROUP", "flush_pending", "run_batch"]

logger = logging.getLogger("bgio")

#: Most small writes merged into one pass of the worker.
MAX_GROUP = 1024


def run_batch(lane: Lane, batch: deque[Job]) -> int:
    """Run a batch of jobs taken off ``lane`` in order; return how many ended.

    A job ends when its handle is settled and its file closed if asked;
    ends are counted once each (:meth:`Lane.end`), whatever path got there.

    A job whose handle completes with a later flush ends then, and is
    counted by the call in which that flush happens.
    """
    while batch:
        job = batch.popleft()
        lane.target = job.sink.target
        group = None
        try:
            group = _small_group(job, batch)
            if group is None:
                run_job(lane, job, more=bool(batch) or bool(lane.jobs))
            else:
                _run_group(lane, *group, more=bool(batch) or bool(lane.jobs))
        except BaseException:  # a bug in bgio itself; keep the lane alive for the others
            failed_jobs = [job] if group is None else group[0]
            logger.exception("bgio worker failed on %r", failed_jobs[0].handle)
            for stuck in failed_jobs:
                if stuck in lane.unflushed:
                    lane.unflushed.remove(stuck)
                stuck.handle._finish(RuntimeError("bgio worker failed; see the bgio log"))
                lane.end(stuck)
    return lane.take_ended()


def flush_pending(lane: Lane) -> int:
    """Flush what an idle lane still holds back; return how many jobs that ended."""
    if lane.unflushed:
        flush(lane, lane.unflushed[-1].sink, raise_error=False)
    return lane.take_ended()


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
    sink, profile = job.sink, job.profile
    while batch and len(jobs) < MAX_GROUP:
        following = batch[0]
        if (following.chain_after is not None or following.close
                or (following.sink is not sink and not _same_sink(following.sink, sink))
                or following.profile is not profile or following.chunk_size != chunk_size):
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


def _one_by_one(lane: Lane, jobs: list[Job]) -> None:
    for job in jobs:
        run_job(lane, job, more=True)


def _run_group(lane: Lane, jobs: list[Job], blocks: list[Block | bytes], more: bool) -> None:
    """Run a group of small writes in order.

    Behaves exactly as running each with :func:`~bgio.jobs.run_job`: a
    failed or cancelled write fails the ones after it with ChainError.
    """
    first = jobs[0]
    sink = first.sink
    waiter = lane.bind(sink)
    predecessor = first.predecessor
    if predecessor is not None and failed(predecessor):
        _one_by_one(lane, jobs)  # each fails with ChainError, as usual
        return
    throttle = lane.throttle
    throttle.profile = first.profile
    pause = throttle.delay()
    if pause:
        if lane.since_flush or lane.unflushed:
            flush(lane, sink, raise_error=False)
            if predecessor is not None and failed(predecessor):  # that flush failed it
                _one_by_one(lane, jobs)
                return
        first.handle._pause(pause)
    handles = [job.handle for job in jobs]
    started = start_all(handles)  # stops at a write cancelled while queued
    waiter.take_waited()
    if not sink.nonblocking:  # it never waits: nothing for cancel() to wake
        _write_group(lane, jobs, blocks, started, more)
        return
    set_interrupt(handles[:started], waiter.interrupt)
    try:
        _write_group(lane, jobs, blocks, started, more)
    finally:
        set_interrupt(handles[:started], None)
        waiter.clear()


def _write_group(lane: Lane, jobs: list[Job], blocks: list[Block | bytes], started: int,
                 more: bool) -> None:
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
        flush(lane, sink, raise_error=False)  # completes the written ones
    finished = clock()
    waited = sink.waiter.take_waited() if sink.waiter is not None else 0.0
    throttle.record(written, began, finished, waited)
    timing = WriteTiming(began, finished, finished - began - waited, throttle.rate)
    for handle in handles[:ok]:
        handle._timing = timing  # one pass for all: one record, shared
    if error is not None:
        # Cancelled while waiting for the destination: that write stops where
        # it is (bytes_written says how far); the rest of the group is not written.
        interrupted = isinstance(error, WriteInterrupted)
        failed = handles[failed_at]
        if not interrupted:
            report(sink, failed, error)
        failed._finish(None if interrupted else error, cancelled=interrupted)
        lane.end(jobs[failed_at])
        for job in jobs[failed_at + 1 : started]:  # started, never written
            job.handle._finish(chain_failure(job.predecessor, "an earlier write to this destination"))
            lane.end(job)
    _one_by_one(lane, jobs[started:])  # from a write cancelled while queued on: as usual
