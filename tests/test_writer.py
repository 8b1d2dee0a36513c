"""Writer: an ordered stream of writes into one destination; errors, closing, bounded memory."""

from __future__ import annotations

import io
import threading

import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 3, 100)  # 3-byte chunks, no pacing
FAST_1K = bgio.BackgroundIOPriority(0, 1000, 100)


def test_writer_keeps_order_with_one_thread(recorder):
    before = threading.active_count()
    peak = before
    with bgio.Writer(recorder, priority=1) as w:
        for i in range(10_000):
            w.write(b"%05d," % i)
            if i % 1000 == 0:
                peak = max(peak, threading.active_count())
    assert recorder.getvalue() == b"".join(b"%05d," % i for i in range(10_000))
    # Not a thread per write. (A worker that has just let go of the lane and not yet
    # parked is not reused: a second one may start in that window, never more.)
    assert peak - before <= 2, [thread.name for thread in threading.enumerate()]


def test_writer_flush_and_close_raise_the_first_error():
    rec = Recorder(fail_after=4)
    w = bgio.Writer(rec, priority=FAST, close_when_finished=True)
    w.write(b"1234")
    w.write(b"5678")
    w.write(b"9")
    with pytest.raises(OSError, match="No space"):
        w.flush(timeout=30)
    with pytest.raises(OSError, match="No space"):
        w.close(timeout=30)
    assert rec.closed
    assert rec.getvalue() == b"1234"
    w.close()  # a second close does nothing


def test_writer_rejects_writes_after_close(recorder):
    w = bgio.Writer(recorder)
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed bgio.Writer"):
        w.write(b"late")


def test_writer_closes_the_file_only_when_asked(recorder):
    with bgio.Writer(recorder) as w:
        w.write(b"a")
    assert not recorder.closed
    with bgio.Writer(recorder, close_when_finished=True) as w:
        w.write(b"b")
    assert recorder.closed and recorder.getvalue() == b"ab"


def test_closing_a_writer_from_two_threads(recorder):
    w = bgio.Writer(recorder, close_when_finished=True, priority=FAST_1K)
    w.write(b"data")
    errors: list[BaseException] = []

    def close() -> None:
        try:
            w.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert bgio.wait_all(timeout=10)
    assert recorder.closed and recorder.getvalue() == b"data"


def test_writer_exit_with_an_exception_keeps_the_body_error():
    rec = Recorder(fail_after=0)
    with pytest.raises(KeyError), bgio.Writer(rec, priority=FAST) as w:
        w.write(b"x")
        w.flush = None  # not used on this path
        raise KeyError("body")


def test_writer_validates_in_the_caller(tmp_path):
    with pytest.raises(TypeError, match="file must be"):
        bgio.Writer(4.2)
    with pytest.raises(ValueError, match="priority"):
        bgio.Writer(io.BytesIO(), priority=12)
    w = bgio.Writer(io.BytesIO())
    with pytest.raises(TypeError, match="str cannot be written"):
        w.write("text")
    w.close()


def test_writer_and_bgwrite_share_the_file_order(recorder):
    w = bgio.Writer(recorder, priority=FAST)
    w.write(b"1")
    bgio.bgwrite(recorder, b"2", priority=FAST)
    w.write(b"3")
    w.close()
    assert bgio.wait_all(timeout=30)
    assert recorder.getvalue() == b"123"


def test_writer_exposes_its_file_and_state(recorder):
    w = bgio.Writer(recorder)
    assert w.file is recorder and not w.closed
    assert "open" in repr(w)
    w.close()
    assert w.closed and "closed" in repr(w)


# ---- bounded memory ----------------------------------------------------------------------


def test_writer_bound_blocks_times_out_and_raises_queue_full():
    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=FAST_1K, max_pending_bytes=10)
    w.write(b"123456")
    assert w.pending_bytes == 6
    with pytest.raises(bgio.QueueFull, match="no room for 6"):
        w.write(b"abcdef", block=False)
    with pytest.raises(bgio.QueueFull, match="after 0.05 s"):
        w.write(b"abcdef", timeout=0.05)
    w.write(b"1234")  # exactly fits
    done = threading.Event()

    def blocked_writer() -> None:
        w.write(b"later")
        done.set()

    thread = threading.Thread(target=blocked_writer)
    thread.start()
    assert not done.wait(0.1)  # waits for room (a check that nothing happens: a timeout)
    rec.gate.set()
    assert done.wait(10)
    thread.join()
    w.close()
    assert rec.getvalue() == b"1234561234later"
    assert w.pending_bytes == 0


def test_a_write_larger_than_the_bound_goes_alone():
    rec = Recorder()
    with bgio.Writer(rec, priority=FAST_1K, max_pending_bytes=4) as w:
        w.write(b"much more than four bytes")
        w.write(b"!")
    assert rec.getvalue() == b"much more than four bytes!"


def test_the_bound_is_held_while_a_producer_outpaces_the_writer():
    pending_seen: list[int] = []

    class Slow(Recorder):
        def write(self, data):
            pending_seen.append(w.pending_bytes)
            return super().write(data)

    rec = Slow()
    w = bgio.Writer(rec, priority=bgio.BackgroundIOPriority(0, 100, 100, max_rate=200_000),
                    max_pending_bytes=1000)
    for i in range(100):
        w.write(bytes([i]) * 100)
    w.close()
    assert rec.getvalue() == b"".join(bytes([i]) * 100 for i in range(100))
    assert max(pending_seen) <= 1000


def test_closing_wakes_a_writer_waiting_for_room():
    rec = Recorder(gated=True)
    w = bgio.Writer(rec, priority=FAST_1K, max_pending_bytes=5, close_when_finished=True)
    w.write(b"12345")
    errors: list[BaseException] = []

    def blocked_writer() -> None:
        try:
            w.write(b"x")
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=blocked_writer)
    thread.start()
    closer = threading.Thread(target=w.close)
    closer.start()
    thread.join(10)
    assert errors and "closed bgio.Writer" in str(errors[0])
    rec.gate.set()
    closer.join(10)
    assert rec.closed and rec.getvalue() == b"12345"


def test_max_pending_bytes_is_checked():
    with pytest.raises(ValueError, match="max_pending_bytes"):
        bgio.Writer(io.BytesIO(), max_pending_bytes=0)
    with pytest.raises(TypeError, match="max_pending_bytes"):
        bgio.Writer(io.BytesIO(), max_pending_bytes="1M")


def test_close_waits_for_the_writes_ahead_of_a_last_one_cancelled_while_queued():
    from concurrent.futures import CancelledError

    from conftest import Recorder

    rec = Recorder(gated=True)
    writer = bgio.Writer(rec, priority=bgio.BackgroundIOPriority(0, 1000, 100))
    big = writer.write(b"b" * 5000)
    assert rec.entered.wait(30)
    last = writer.write(b"tail")
    assert last.cancel()
    closer = threading.Thread(target=lambda: errors.append(_raised(writer.close, 30)))
    errors: list[BaseException | None] = []
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not big.done()  # waiting for big, not returned at once
    rec.gate.set()
    closer.join(30)
    assert isinstance(errors[0], CancelledError)
    assert big.result(timeout=0) == 5000 and rec.getvalue() == b"b" * 5000


def _raised(fn, *args):
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - what the test looks at
        return exc
    return None
