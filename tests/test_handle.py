"""The handle: Future-like state, results, cancel, callbacks, asyncio, progress."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeoutError

import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 4, 100)


def test_states_of_a_successful_write():
    rec = Recorder(gated=True)
    h = bgio.bgwrite(rec, b"abcdefgh", priority=FAST)
    rec.entered.wait(5)
    assert h.running() and not h.done() and not h.cancelled() and h.is_alive()
    assert "state=running" in repr(h)
    rec.gate.set()
    assert h.result(timeout=30) == 8
    assert h.done() and not h.running() and not h.is_alive()
    assert h.exception() is None
    assert "state=finished" in repr(h) and "bytes_written=8" in repr(h)


def test_result_and_exception_time_out():
    rec = Recorder(gated=True)
    h = bgio.bgwrite(rec, b"x")
    with pytest.raises(FutureTimeoutError):
        h.result(timeout=0.01)
    with pytest.raises(FutureTimeoutError):
        h.exception(timeout=0.01)
    assert h.wait(timeout=0.01) is False
    h.join(timeout=0.01)
    assert h.is_alive()
    rec.gate.set()
    assert h.wait(timeout=30) is True


def test_result_reraises_the_write_error_each_time():
    h = bgio.bgwrite(Recorder(fail_after=0), b"x", priority=FAST)
    for _ in range(2):
        with pytest.raises(OSError, match="No space left on device"):
            h.result(timeout=30)
    assert isinstance(h.exception(), OSError)
    assert "state=failed" in repr(h)


def test_cancel_a_pending_write_writes_nothing():
    rec = Recorder(gated=True)
    first = bgio.bgwrite(rec, b"first", priority=FAST)
    second = bgio.bgwrite(rec, b"second", priority=FAST)
    assert second.cancel() is True
    assert second.cancelled() and second.done()
    with pytest.raises(CancelledError):
        second.result()
    with pytest.raises(CancelledError):
        second.exception()
    rec.gate.set()
    assert first.result(timeout=30) == 5
    assert rec.getvalue() == b"first"


def test_cancel_a_running_write_stops_before_the_next_chunk():
    rec = Recorder(gated=True)
    h = bgio.bgwrite(rec, b"0123456789" * 10, priority=FAST)  # 25 chunks of 4
    rec.entered.wait(5)
    assert h.cancel() is True
    rec.gate.set()
    assert h.wait(timeout=30)
    assert h.cancelled()
    # The chunk under way completes; nothing after it is written.
    assert rec.getvalue() == b"0123"
    assert h.bytes_written == 4
    assert h.cancel() is True  # already cancelled


def test_cancel_cuts_a_pacing_pause_short():
    # 1 % busy: after the first chunk the worker would pause ~99x its write time.
    slow = bgio.BackgroundIOPriority(0, 1, 1)

    class Slow(Recorder):
        def write(self, data):
            time.sleep(0.05)
            return super().write(data)

    rec = Slow()
    h = bgio.bgwrite(rec, b"ab", priority=slow)
    rec.entered.wait(5)
    time.sleep(0.1)  # now in the ~5 s pause
    t0 = time.perf_counter()
    h.cancel()
    assert h.wait(timeout=30)
    assert time.perf_counter() - t0 < 1.0
    assert h.cancelled() and rec.getvalue() == b"a"


def test_cancel_after_completion_returns_false():
    h = bgio.bgwrite(io.BytesIO(), b"x", priority=FAST)
    h.result(timeout=30)
    assert h.cancel() is False
    assert not h.cancelled()


def test_callbacks_run_once_even_when_added_late():
    calls: list[bgio.BackgroundWriteProcess] = []
    rec = Recorder(gated=True)
    h = bgio.bgwrite(rec, b"x", priority=FAST)
    h.add_done_callback(calls.append)
    rec.gate.set()
    h.result(timeout=30)
    assert bgio.wait_all(30)
    h.add_done_callback(calls.append)  # already done: called at once
    assert calls == [h, h]


def test_callback_also_runs_on_failure_and_cancel():
    seen: list[str] = []
    failed = bgio.bgwrite(Recorder(fail_after=0), b"x", priority=FAST)
    failed.add_done_callback(lambda h: seen.append(type(h.exception()).__name__))
    rec = Recorder(gated=True)
    bgio.bgwrite(rec, b"x", priority=FAST)
    queued = bgio.bgwrite(rec, b"y", priority=FAST)
    queued.add_done_callback(lambda h: seen.append("cancelled" if h.cancelled() else "?"))
    queued.cancel()
    rec.gate.set()
    failed.wait(30)
    assert bgio.wait_all(30)
    assert sorted(seen) == ["OSError", "cancelled"]


def test_callback_exceptions_are_logged(caplog):
    caplog.set_level(logging.ERROR, logger="bgio")
    h = bgio.bgwrite(io.BytesIO(), b"x", priority=FAST)
    h.result(timeout=30)

    def broken(_):
        raise ZeroDivisionError("oops")

    h.add_done_callback(broken)
    assert any("exception calling callback" in r.getMessage() for r in caplog.records)


def test_await_gives_the_result():
    async def main() -> int:
        rec = Recorder(gated=True)
        h = bgio.bgwrite(rec, b"async!", priority=FAST)
        asyncio.get_running_loop().call_later(0.05, rec.gate.set)
        return await h

    assert asyncio.run(main()) == 6


def test_await_raises_the_write_error():
    async def main() -> None:
        await bgio.bgwrite(Recorder(fail_after=0), b"x", priority=FAST)

    with pytest.raises(OSError, match="No space"):
        asyncio.run(main())


def test_await_after_completion():
    h = bgio.bgwrite(io.BytesIO(), b"xyz", priority=FAST)
    h.result(timeout=30)

    async def main() -> int:
        return await h

    assert asyncio.run(main()) == 3


def test_context_manager_waits_and_raises():
    rec = Recorder(gated=True)
    threading.Timer(0.05, rec.gate.set).start()
    with bgio.bgwrite(rec, b"with", priority=FAST) as h:
        pass
    assert h.done() and rec.getvalue() == b"with"
    with pytest.raises(OSError), bgio.bgwrite(Recorder(fail_after=0), b"x", priority=FAST):
        pass


def test_progress_attributes():
    rec = Recorder(gated=True)
    h = bgio.bgwrite(rec, b"x" * 10, priority=FAST)
    assert h.total_bytes == 10
    assert h.progress == 0.0 and h.rate is None and h.duty_cycle is None
    rec.gate.set()
    h.result(timeout=30)
    assert h.bytes_written == 10 and h.progress == 1.0
    assert h.rate is not None and h.rate > 0
    assert 0 < h.duty_cycle <= 1.0


def test_progress_of_unknown_and_empty_sizes():
    h = bgio.bgwrite(io.BytesIO(), iter([b"ab", b"c"]), priority=FAST)
    assert h.total_bytes is None and h.progress is None
    assert h.result(timeout=30) == 3 and h.bytes_written == 3
    empty = bgio.bgwrite(io.BytesIO(), b"", priority=FAST)
    assert empty.result(timeout=30) == 0 and empty.progress == 1.0


@pytest.mark.slow
def test_measured_duty_cycle_follows_the_profile(tmp_path):
    # Real sleeping: generous bounds, only to catch a pacing that does not act.
    profile = bgio.BackgroundIOPriority(0, 64 * 1024, 25)

    class Timed(Recorder):
        def write(self, data):
            time.sleep(0.004)  # a slow disk: 4 ms per chunk
            return super().write(data)

    h = bgio.bgwrite(Timed(), bytes(64 * 1024 * 30), priority=profile)
    h.result(timeout=60)
    assert 0.15 < h.duty_cycle < 0.35


def _burn(seconds):
    """Keep this thread on the CPU for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_the_cpu_a_source_takes_to_produce_its_data_is_paced_as_busy_time():
    # A generator's work happens in the worker: the profile's share governs
    # it too (as the writer process's read of the caller's memory).
    produced = []

    def computed():
        for _ in range(12):
            started = time.thread_time()
            _burn(0.005)
            produced.append(time.thread_time() - started)
            yield bytes(4096)

    profile = bgio.BackgroundIOPriority(0, 4096, 25)
    h = bgio.bgwrite(io.BytesIO(), computed(), priority=profile)
    assert h.result(timeout=60) == 12 * 4096
    assert h.timing.busy >= 0.9 * sum(produced)
    assert 0.15 < h.duty_cycle < 0.35  # real sleeping: generous bounds


def test_a_source_waiting_for_its_data_is_not_busy():
    def slow():
        for _ in range(8):
            time.sleep(0.004)  # off the CPU: a slow producer, not the write's work
            yield bytes(4096)

    h = bgio.bgwrite(io.BytesIO(), slow(), priority=FAST)
    assert h.result(timeout=60) == 8 * 4096
    assert h.duty_cycle < 0.5


# -- a real concurrent.futures.Future ------------------------------------------------------


def test_the_handle_is_a_future_that_futures_wait_and_as_completed_accept():
    import concurrent.futures as cf

    rec = Recorder(gated=True)
    first = bgio.bgwrite(rec, b"abcdefgh", priority=FAST)
    second = bgio.bgwrite(rec, b"ij", priority=FAST)
    assert isinstance(first, cf.Future)
    done, pending = cf.wait([first, second], timeout=0.05)
    assert done == set() and pending == {first, second}
    rec.gate.set()
    done, pending = cf.wait([first, second], timeout=30)
    assert done == {first, second} and not pending
    assert sorted(f.result() for f in cf.as_completed([first, second], timeout=30)) == [2, 8]
    assert rec.getvalue() == b"abcdefghij"


def test_futures_wait_sees_a_pending_write_cancelled_at_once():
    import concurrent.futures as cf

    rec = Recorder(gated=True)
    running = bgio.bgwrite(rec, b"x", priority=FAST)
    assert rec.entered.wait(30)  # writing: what comes next is queued, not in its pass
    queued = bgio.bgwrite(rec, b"y", priority=FAST)
    waiting = []
    thread = threading.Thread(target=lambda: waiting.append(
        cf.wait([queued], timeout=30, return_when=cf.FIRST_COMPLETED)))
    thread.start()
    assert queued.cancel()
    thread.join(30)
    assert waiting[0].done == {queued}  # not when the worker reaches it: now
    rec.gate.set()
    assert running.result(timeout=30) == 1


def test_asyncio_wrap_future_and_await():
    async def main():
        rec = Recorder()
        wrapped = await asyncio.wrap_future(bgio.bgwrite(rec, b"abc", priority=FAST))
        awaited = await bgio.bgwrite(rec, b"de", priority=FAST)
        return wrapped, awaited, rec.getvalue()

    assert asyncio.run(main()) == (3, 2, b"abcde")


def test_asyncio_wait_for_cancels_the_write_on_timeout():
    rec = Recorder(gated=True)

    async def main():
        handle = bgio.bgwrite(rec, b"x" * 40, priority=FAST)  # ten 4-byte chunks
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(handle, 0.05)
        return handle

    handle = asyncio.run(main())
    rec.gate.set()
    assert handle.wait(30) and handle.cancelled()
    assert rec.getvalue() == b"x" * handle.bytes_written and handle.bytes_written < 40


@pytest.mark.slow  # a stress test: a thread spinning in Python
def test_progress_is_read_safely_from_another_thread_while_writes_go_on():
    errors = []
    stop = threading.Event()
    handles = []

    def poll():
        while not stop.is_set():
            for handle in handles:
                try:
                    _ = (handle.rate, handle.progress, handle.duty_cycle, repr(handle))
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    out = io.BytesIO()
    profile = bgio.BackgroundIOPriority(0, 64, 100)
    try:
        for _ in range(200):
            handles.append(bgio.bgwrite(out, b"z" * 6400, priority=profile))
        for handle in handles:
            handle.result(timeout=30)
    finally:
        stop.set()
        poller.join(30)
    assert errors == []
    assert out.getvalue() == b"z" * 6400 * 200


def test_a_finished_write_keeps_its_rate_and_duty_cycle():
    out = io.BytesIO()
    profile = bgio.BackgroundIOPriority(0, 1000, 100)
    first = bgio.bgwrite(out, b"a" * 10_000, priority=profile)
    first.result(timeout=30)
    rate, duty = first.rate, first.duty_cycle
    assert rate is not None and rate > 0 and duty is not None
    for _ in range(20):
        bgio.bgwrite(out, b"b" * 10_000, priority=profile).result(timeout=30)
    assert (first.rate, first.duty_cycle) == (rate, duty)


def test_result_and_wait_refuse_timeouts_that_cannot_be_waited():
    import math

    h = bgio.bgwrite(io.BytesIO(), b"x", priority=FAST)
    assert h.result(timeout=math.inf) == 1
    for bad in (-1, float("nan"), 1e300):
        with pytest.raises(ValueError, match="timeout"):
            h.result(timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            h.wait(bad)
    with pytest.raises(TypeError, match="timeout"):
        h.exception(timeout="1")
