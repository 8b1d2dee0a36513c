"""bgio.group: a Writer's small writes queued as one job, each with a handle of its own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from conftest import Recorder, drain, full_pipe

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


@pytest.mark.parametrize("which", [0, 5])
def test_cancel_of_a_grouped_write_while_the_pipe_is_full(destination_waits, which):
    r, w = full_pipe()
    writer = bgio.Writer(w, priority=1)
    handles = [writer.write(b"%03d," % i) for i in range(10)]
    assert destination_waits.wait(30)
    assert handles[which].cancel()
    got_list = []
    reader = threading.Thread(target=lambda: got_list.append(drain(r)))
    reader.start()  # the writes before the cancelled one must still go out
    assert handles[which].wait(10)
    assert handles[which].cancelled()
    with pytest.raises(CancelledError):
        writer.close(timeout=10)
    os.close(w)
    reader.join(10)
    os.close(r)
    got = got_list[0].lstrip(b".")
    assert got == b"".join(b"%03d," % i for i in range(which))
    assert [h.bytes_written for h in handles] == [4] * which + [0] * (10 - which)


def _script(code, tmp_path, timeout=20):
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False,
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_a_writer_used_in_an_atexit_handler_does_not_deadlock(tmp_path):
    # At shutdown the lane is served in the caller's thread, which must not
    # hold the Writer's lock then: sealing the group takes it.
    out = tmp_path / "late.bin"
    try:
        proc = _script(f"""
            import atexit, bgio
            def save():
                with bgio.Writer({str(out)!r}) as w:
                    for i in range(3):
                        w.write(b"line %d\\n" % i)
            atexit.register(save)
        """, tmp_path, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("interpreter hung at exit (Writer lock taken twice by the inline worker)")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == b"line 0\nline 1\nline 2\n"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_s_small_write_is_written(tmp_path):
    # The child's engine forgets the parent's lanes: the Writer's open group,
    # queued in the parent only, must take no more writes there.
    proc = _script(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import bgio
        from conftest import Recorder
        rec = Recorder(gated=True)
        w = bgio.Writer(rec, priority=1)
        w.write(b"B" * 70000)       # holds the parent's worker
        assert rec.entered.wait(10)
        w.write(b"parent")          # waits in an open group
        pid = os.fork()
        if pid == 0:
            rec.gate.set()          # the child's own worker may write at once
            h = w.write(b"child")
            os._exit(0 if h.wait(5) and h.result() == 5 else 3)
        _, status = os.waitpid(pid, 0)
        rec.gate.set()
        w.close()
        sys.exit(os.waitstatus_to_exitcode(status))
    """, tmp_path, timeout=30)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)


def test_the_error_of_a_cancelled_grouped_write_counts_its_own_bytes():
    # The error flush() raises counts the cancelled write's bytes, as its handle does.
    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=1)
    w.write(b"B" * 70000)
    assert rec.entered.wait(30)
    handles = [w.write(b"0123456789") for _ in range(5)]
    assert handles[3].cancel()
    rec.gate.set()
    with pytest.raises(CancelledError, match="after 0 bytes"):
        handles[3].result(30)
    with pytest.raises(CancelledError, match="after 0 bytes"):
        w.flush(timeout=30)


def test_a_cancel_just_after_the_group_starts_still_stops_it(monkeypatch):
    # A cancel between the group's start and its piece is still seen by the loop.
    from bgio import worker

    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=1)
    w.write(b"B" * 70000)
    assert rec.entered.wait(30)
    handles = [w.write(b"%d;" % i) for i in range(4)]
    real = worker.GroupOwners

    def owners_after_a_cancel(state, blocks):
        handles[2].cancel()  # running by now: its bytes have not gone out
        return real(state, blocks)

    monkeypatch.setattr(worker, "GroupOwners", owners_after_a_cancel)
    rec.gate.set()
    with pytest.raises(CancelledError):
        w.flush(timeout=30)
    assert rec.getvalue() == b"B" * 70000 + b"0;1;"
    assert handles[2].cancelled()


@pytest.mark.slow
def test_a_small_write_when_no_worker_thread_can_start_does_not_deadlock(tmp_path):
    # When no thread can start (a thread limit), the caller's thread writes,
    # once it has let go of the Writer's lock.
    try:
        proc = _script("""
            import io, threading, bgio
            real = threading.Thread.start
            def start(self):
                if self.name.startswith("bgio"):
                    raise RuntimeError("can't start new thread")
                return real(self)
            threading.Thread.start = start
            out = io.BytesIO()
            w = bgio.Writer(out)
            w.write(b"small")
            w.close()
            assert out.getvalue() == b"small"
        """, tmp_path, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("deadlock: the inline worker waits for the Writer's lock its caller holds")
    assert proc.returncode == 0, proc.stderr


def test_a_flush_failing_right_after_a_group_fails_all_of_its_writes_with_that_error():
    # A chunk's worth is flushed inside the loop, just after the piece.
    class FlushFailsAfterBig(Recorder):
        def flush(self) -> None:
            super().flush()
            if self.size > len(BIG):
                raise OSError(5, "Input/output error")

    rec = FlushFailsAfterBig(gated=True)
    w = bgio.Writer(rec, priority=bgio.BackgroundIOPriority(0, 1000, 100))
    w.write(BIG)
    assert rec.entered.wait(30)
    handles = [w.write(b"%03d" % i + b"." * 97) for i in range(10)]  # exactly one chunk
    rec.gate.set()
    for h in handles:
        with pytest.raises(OSError, match="Input/output"):
            h.result(30)
        assert h.bytes_written == 100
    with pytest.raises(OSError, match="Input/output"):
        w.close(timeout=30)
