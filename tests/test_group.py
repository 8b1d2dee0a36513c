"""bgio.group: a Writer's small writes queued as one job, each with a handle of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref

import pytest
from conftest import Recorder

import bgio
from bgio.group import MAX_WRITES, SMALL_WRITE

BIG = b"B" * (SMALL_WRITE + 1)  # a job of its own: holds the worker at a gated Recorder


def _held_writer(**kwargs):
    """A Writer whose worker is stuck in a first, large write until ``rec.gate`` is set."""
    rec = Recorder(gated=True, **kwargs)
    writer = bgio.Writer(rec, priority=1)
    first = writer.write(BIG)
    assert rec.entered.wait(30)
    return rec, writer, first


def test_grouped_writes_wait_together_then_each_reports_its_own_bytes():
    rec, w, _ = _held_writer()
    handles = [w.write(b"%05d|" % i) for i in range(3000)]
    assert not any(h.done() or h.running() for h in handles)
    assert {h.bytes_written for h in handles} == {0}
    assert handles[0].rate is None and handles[0].duty_cycle is None
    rec.gate.set()
    w.flush(timeout=30)
    assert rec.getvalue() == BIG + b"".join(b"%05d|" % i for i in range(3000))
    for h in handles:
        assert h.done() and not h.cancelled()
        assert h.result() == h.bytes_written == h.total_bytes == 6
        assert h.progress == 1.0
    assert handles[-1].rate is not None and handles[-1].duty_cycle is not None
    w.close()


def test_a_group_takes_at_most_max_writes_and_a_chunk():
    assert MAX_WRITES >= 1024  # else a group saves little
    rec, w, _ = _held_writer()
    count = MAX_WRITES + 10
    handles = [w.write(b"x") for _ in range(count)]
    rec.gate.set()
    w.close(timeout=60)
    assert rec.getvalue() == BIG + b"x" * count
    assert all(h.result() == 1 for h in handles)


def test_a_write_cancelled_while_its_group_waits_stops_the_writes_after_it():
    rec, w, first = _held_writer()
    before, cancelled, after = w.write(b"a"), w.write(b"b"), w.write(b"c")
    assert cancelled.cancel()
    assert cancelled.cancelled() and cancelled.done() and not before.done()
    rec.gate.set()
    assert first.result(30) == len(BIG)
    assert before.result(30) == 1
    with pytest.raises(concurrent.futures.CancelledError):
        cancelled.result(30)
    with pytest.raises(bgio.ChainError, match="cancelled"):
        after.result(30)
    assert after.bytes_written == 0
    assert rec.getvalue() == BIG + b"a"
    with pytest.raises(concurrent.futures.CancelledError):
        w.close(timeout=30)


def test_a_failure_inside_a_group_fails_that_write_and_chains_the_rest():
    rec, w, _ = _held_writer(fail_after=len(BIG) + 25)
    handles = [w.write(b"0123456789") for _ in range(5)]
    rec.gate.set()
    with pytest.raises(OSError, match="No space"):
        w.flush(timeout=30)
    assert [h.result() for h in handles[:2]] == [10, 10]
    with pytest.raises(OSError, match="No space"):
        handles[2].result()
    assert handles[2].bytes_written == 0
    for h in handles[3:]:
        with pytest.raises(bgio.ChainError, match="No space"):
            h.result()
    assert rec.getvalue() == BIG + b"0123456789" * 2
    with pytest.raises(OSError):
        w.close(timeout=30)


def test_waiters_and_callbacks_of_grouped_writes_are_told_once():
    rec, w, _ = _held_writer()
    h1, h2 = w.write(b"one"), w.write(b"two")
    called: list[object] = []
    h1.add_done_callback(called.append)
    waited: list[object] = []
    waiter = threading.Thread(target=lambda: waited.append(h2.result(30)))
    waiter.start()
    pool_wait: list[object] = []
    other = threading.Thread(
        target=lambda: pool_wait.append(concurrent.futures.wait([h1, h2], timeout=30)))
    other.start()
    rec.gate.set()
    waiter.join(30)
    other.join(30)
    assert called == [h1]
    assert waited == [3]
    done, not_done = pool_wait[0]
    assert done == {h1, h2} and not not_done
    h1.add_done_callback(called.append)  # done: called at once
    assert called == [h1, h1]
    assert asyncio.run(_awaited(h2)) == 3
    w.close()


async def _awaited(handle):
    return await asyncio.wrap_future(handle)


def test_a_write_queued_on_the_file_between_small_writes_keeps_call_order():
    rec, w, _ = _held_writer()
    w.write(b"a")
    other = bgio.bgwrite(rec, b"-other-", priority=1)  # seals the Writer's group
    w.write(b"c")
    rec.gate.set()
    other.result(30)
    w.close(timeout=30)
    assert rec.getvalue() == BIG + b"a-other-c"


def test_grouped_handles_are_freed_once_written_and_dropped():
    rec, w, _ = _held_writer()
    refs = [weakref.ref(w.write(b"z")) for _ in range(100)]
    rec.gate.set()
    w.flush(timeout=30)
    # Only the last one is still held, by the Writer (for flush and close).
    assert [ref() is None for ref in refs] == [True] * 99 + [False]
    w.close()


def test_a_group_keeps_no_handle_a_dropped_one_is_freed_and_still_written():
    rec, w, _ = _held_writer()
    first = w.write(b"first;")  # (the group's job holds its first write's handle)
    ref = weakref.ref(w.write(b"dropped;"))
    kept = w.write(b"kept")
    assert ref() is None  # freed at once, though its write waits in the group
    rec.gate.set()
    assert first.result(30) == 6 and kept.result(30) == 4
    w.close(timeout=30)
    assert rec.getvalue() == BIG + b"first;dropped;kept"


class _FlushFails(Recorder):
    def flush(self) -> None:
        super().flush()
        if self.writes:
            raise OSError(5, "Input/output error")


def test_a_failed_flush_fails_every_write_of_the_group_it_carried():
    rec = _FlushFails(gated=True)
    w = bgio.Writer(rec, priority=1)
    w.write(BIG)
    assert rec.entered.wait(30)
    handles = [w.write(b"%d" % i) for i in range(10)]
    rec.gate.set()
    for h in handles:
        with pytest.raises(OSError, match="Input/output"):
            h.result(30)
        assert h.done() and not h.cancelled()
    with pytest.raises(OSError, match="Input/output"):
        w.flush(timeout=30)
    with pytest.raises(bgio.ChainError, match="Input/output"):
        w.write(b"after").result(30)
