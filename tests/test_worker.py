"""The worker and the engine (bgio.worker, bgio.engine): order per destination, chains,
failures, small writes gathered into one pass, flushing, threads, exit drain."""

from __future__ import annotations

import gc
import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import weakref
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from conftest import Recorder, drain, full_pipe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bgio

FAST = bgio.BackgroundIOPriority(0, 3, 100)  # 3-byte chunks, no pacing
FAST_1K = bgio.BackgroundIOPriority(0, 1000, 100)
FAST_64K = bgio.BackgroundIOPriority(0, 64 * 1024, 100)


# ---- order ---------------------------------------------------------------------------------


def test_writes_to_one_file_keep_call_order_without_chain(recorder):
    handles = [bgio.bgwrite(recorder, b"%04d" % i, priority=FAST) for i in range(300)]
    for h in handles:
        h.result(timeout=30)
    assert recorder.getvalue() == b"".join(b"%04d" % i for i in range(300))


@pytest.mark.slow
def test_writes_from_many_threads_never_interleave(tmp_path):
    # Each thread's write is one block of its own byte; blocks must not mix.
    path = tmp_path / "mixed"
    with open(path, "wb") as f:
        handles: list[bgio.BackgroundWriteProcess] = []
        lock = threading.Lock()

        def producer(byte: int) -> None:
            for _ in range(20):
                h = bgio.bgwrite(f, bytes([byte]) * 1000, priority=FAST)
                with lock:
                    handles.append(h)

        threads = [threading.Thread(target=producer, args=(b,)) for b in range(65, 75)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in handles:
            h.result(timeout=30)
    content = path.read_bytes()
    assert len(content) == 10 * 20 * 1000
    blocks = [content[i : i + 1000] for i in range(0, len(content), 1000)]
    assert all(block == block[:1] * 1000 for block in blocks)


def test_chain_after_orders_writes_across_destinations():
    first, second = Recorder(gated=True), Recorder()
    order: list[str] = []
    h1 = bgio.bgwrite(first, b"one", priority=FAST)
    h1.add_done_callback(lambda h: order.append("first"))
    h2 = bgio.bgwrite(second, b"two", chain_after=h1, priority=FAST)
    h2.add_done_callback(lambda h: order.append("second"))
    first.entered.wait(5)
    assert not h2.done() and second.writes == []
    first.gate.set()
    assert h2.result(timeout=30) == 3
    assert order == ["first", "second"]


# Property tests: whatever the blocks, chunk sizes, priorities and chains, the bytes are exact.

blocks = st.lists(st.binary(max_size=64), max_size=12)
profiles = st.builds(
    bgio.BackgroundIOPriority,
    chain_poll_time=st.just(0.0),
    default_chunk_size=st.integers(1, 50),
    bandwidth_pct=st.sampled_from([100.0, 99.0, 95.0]),
    num_chunks_rate_smoothing=st.integers(1, 6),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(blocks, profiles, st.sampled_from(["list", "joined", "iter"])),
                       max_size=6))
def test_writes_to_one_file_are_exact_and_in_order(writes):
    out = io.BytesIO()
    handles = []
    for parts, profile, shape in writes:
        data = {"list": parts, "joined": b"".join(parts), "iter": iter(parts)}[shape]
        handles.append(bgio.bgwrite(out, data, priority=profile))
    for h in handles:
        h.result(timeout=30)
    assert out.getvalue() == b"".join(b"".join(parts) for parts, _, _ in writes)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 400), priority=st.integers(1, 10))
def test_bgwrite_chunk_is_exact_for_any_chunk_size(data, chunk, priority):
    out = io.BytesIO()
    assert bgio.bgwrite_chunk(out, data, chunk, priority=priority).result(timeout=30) == len(data)
    assert out.getvalue() == data


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=20), min_size=1, max_size=5), n_out=st.integers(1, 3),
       chunk=st.integers(1, 30))
def test_chains_across_destinations_keep_global_order(texts, n_out, chunk):
    # Round-robin over several streams, each write chained after the previous one:
    # a shared log of completions must come out in submission order.
    outs = [io.StringIO() for _ in range(n_out)]
    order: list[int] = []
    previous = None
    for i, text in enumerate(texts):
        previous = bgio.bgwrite_chunk(outs[i % n_out], text, chunk, chain_after=previous,
                                      priority=bgio.BackgroundIOPriority(0, chunk, 100))
        previous.add_done_callback(lambda h, i=i: order.append(i))
    previous.result(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert order == list(range(len(texts)))
    for k, out in enumerate(outs):
        assert out.getvalue() == "".join(texts[k::n_out])


# ---- failures, cancels and chains ----------------------------------------------------------


def test_failure_fails_every_later_write_with_chain_error():
    rec = Recorder(fail_after=10)
    h1 = bgio.bgwrite(rec, b"a" * 9, priority=FAST)
    h2 = bgio.bgwrite(rec, b"b" * 9, priority=FAST)  # fails midway
    h3 = bgio.bgwrite(rec, b"c" * 9, priority=FAST)
    h4 = bgio.bgwrite(io.BytesIO(), b"d", chain_after=h2, priority=FAST)
    assert h1.result(timeout=30) == 9
    with pytest.raises(OSError, match="No space left"):
        h2.result(timeout=30)
    assert h2.bytes_written == 0  # the chunk that failed was not counted
    with pytest.raises(bgio.ChainError, match="an earlier write to this destination failed") as e3:
        h3.result(timeout=30)
    assert isinstance(e3.value.__cause__, OSError)
    assert e3.value.predecessor is h2
    with pytest.raises(bgio.ChainError, match="the write it was chained after failed") as e4:
        h4.result(timeout=30)
    assert e4.value.__cause__ is h2.exception()
    assert rec.getvalue() == b"a" * 9  # nothing after the gap


def test_failure_is_remembered_for_later_writes_to_the_same_file():
    rec = Recorder(fail_after=0)
    h1 = bgio.bgwrite(rec, b"x", priority=FAST)
    assert isinstance(h1.exception(timeout=30), OSError)
    assert bgio.wait_all(timeout=30)
    later = bgio.bgwrite(rec, b"y", priority=FAST)
    with pytest.raises(bgio.ChainError):
        later.result(timeout=30)
    rec.fail_after = None
    assert bgio.bgwrite(Recorder(), b"z", priority=FAST).result(timeout=30) == 1  # others unaffected
    assert rec.writes == []


def test_chain_error_messages_stay_short():
    w = bgio.Writer(Recorder(fail_after=0), priority=FAST_1K)
    handles = [w.write(b"x") for _ in range(1000)]
    assert bgio.wait_all(timeout=30)
    last = handles[-1].exception()
    assert isinstance(last, bgio.ChainError)
    assert len(str(last)) < 200
    assert isinstance(last.root_cause, OSError)
    assert "No space left on device" in str(last)


def test_a_failed_write_does_not_keep_the_file_or_the_data_alive(caplog):
    # (A log handler that keeps records keeps their tracebacks: none here.)
    caplog.set_level(logging.CRITICAL, logger="bgio")
    f = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - freed by the test
    data = bytearray(1 << 20)
    handle = bgio.bgwrite(f, data, priority=FAST_1K)
    assert isinstance(handle.exception(timeout=30), OSError)
    # The handle is failed before the worker has ended its run (it settles the handle,
    # then lets go of the job): wait for the engine to count the run ended.
    assert bgio.wait_all(timeout=30)
    file_ref = weakref.ref(f)
    del f, data
    gc.collect()
    assert file_ref() is None
    assert handle.exception().__traceback__ is None  # logged already; not kept


def test_cancelled_predecessor_fails_its_successors():
    rec = Recorder(gated=True)
    h1 = bgio.bgwrite(rec, b"first", priority=FAST)
    h2 = bgio.bgwrite(rec, b"second", priority=FAST)
    other = bgio.bgwrite(io.BytesIO(), b"other", chain_after=h2, priority=FAST)
    assert h2.cancel() is True
    assert h2.cancelled() and h2.done()
    rec.gate.set()
    assert h1.result(timeout=30) == 5
    with pytest.raises(bgio.ChainError, match="was cancelled") as err:
        other.result(timeout=30)
    assert isinstance(err.value.__cause__, CancelledError)
    assert rec.getvalue() == b"first"


def test_cancel_while_waiting_for_chain():
    rec = Recorder(gated=True)
    h1 = bgio.bgwrite(rec, b"slow", priority=FAST)
    out = io.BytesIO()
    h2 = bgio.bgwrite(out, b"never", chain_after=h1, priority=FAST)
    assert h2.cancel()
    with pytest.raises(CancelledError):
        h2.result(timeout=5)
    rec.gate.set()
    h1.result(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert out.getvalue() == b""


@pytest.mark.parametrize("outcome", ["success", "failure", "cancel"])
def test_close_when_finished_closes_in_every_case(outcome):
    rec = Recorder(fail_after=0 if outcome == "failure" else None, gated=outcome == "cancel")
    blocker = bgio.bgwrite(rec, b"" if outcome == "failure" else b"x", priority=FAST)
    handle = bgio.bgwrite(rec, b"data", close_when_finished=True, priority=FAST)
    if outcome == "cancel":
        handle.cancel()
        rec.gate.set()
    handle.wait(timeout=30)
    blocker.wait(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert rec.closed is True


def test_close_error_is_reported_when_the_write_succeeded():
    class BadClose(Recorder):
        def close(self):
            raise OSError(5, "close failed")

    handle = bgio.bgwrite(BadClose(), b"x", close_when_finished=True, priority=FAST)
    with pytest.raises(OSError, match="close failed"):
        handle.result(timeout=30)


def test_a_cancelled_closing_write_still_flushes_the_earlier_ones(tmp_path):
    rec = Recorder(gated=True)
    blocker = bgio.bgwrite(rec, b"b", priority=FAST_1K)
    out = open(tmp_path / "f", "wb")  # noqa: SIM115 - closed by the closing write
    earlier = bgio.bgwrite(out, b"1" * 100, chain_after=blocker, priority=FAST_1K)
    closing = bgio.bgwrite(out, b"2" * 100, close_when_finished=True, priority=FAST_1K)
    assert closing.cancel()
    rec.gate.set()
    assert earlier.result(timeout=30) == 100
    assert bgio.wait_all(timeout=30)
    assert out.closed and (tmp_path / "f").read_bytes() == b"1" * 100


def test_errors_are_logged_on_the_bgio_logger_not_printed(caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="bgio")
    rec = Recorder(fail_after=0)
    h = bgio.bgwrite(rec, b"x", priority=FAST)
    h2 = bgio.bgwrite(rec, b"y", priority=FAST)
    h.wait(30)
    h2.wait(30)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "bgio"]
    assert len(errors) == 1
    assert "failed after 0 bytes" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], OSError)
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out


def test_a_bug_in_the_worker_fails_the_writes_and_leaves_wait_all_working(monkeypatch, caplog):
    import bgio.worker

    finish_run = bgio.worker._finish_run

    def broken(lane, run, *args, **kwargs):
        if len(run) > 1:  # only a pass of several small writes
            raise NameError("simulated bug")
        return finish_run(lane, run, *args, **kwargs)

    monkeypatch.setattr(bgio.worker, "_finish_run", broken)
    caplog.set_level(logging.CRITICAL, logger="bgio")
    rec = Recorder(gated=True)
    first = bgio.bgwrite(rec, b"x" * 2000, priority=FAST_1K)  # two chunks: never in a group
    handles = [bgio.bgwrite(rec, b"y", priority=FAST_1K) for _ in range(10)]  # a group
    rec.gate.set()
    assert first.result(timeout=10) == 2000
    for h in handles:
        assert isinstance(h.exception(timeout=10), (RuntimeError, bgio.ChainError))
    assert bgio.wait_all(timeout=10)
    monkeypatch.undo()
    assert bgio.bgwrite(Recorder(), b"after", priority=FAST_1K).result(timeout=10) == 5
    assert bgio.wait_all(timeout=10)


# ---- small writes merged into one pass (the worker's group path) --------------------------

SMALL = bgio.BackgroundIOPriority(0, 1024, 100)


def _queue_behind_a_gate(dest, count, size=4):
    """Queue `count` small writes while the worker is held in a first write to `dest`."""
    gate = threading.Event()
    original = dest.write

    def held(data):
        gate.wait()
        return original(data)

    dest.write = held
    first = bgio.bgwrite(dest, b"<", priority=SMALL)
    handles = [bgio.bgwrite(dest, bytes([65 + i % 26]) * size, priority=SMALL)
               for i in range(count)]
    return gate, first, handles


def test_a_failure_inside_a_group_fails_the_rest_with_chain_error():
    rec = Recorder(fail_after=1 + 10 * 4)  # the 11th small write does not fit
    gate, first, handles = _queue_behind_a_gate(rec, 30)
    gate.set()
    first.result(timeout=30)
    for h in handles[:10]:
        assert h.result(timeout=30) == 4
    with pytest.raises(OSError):
        handles[10].result(timeout=30)
    for h in handles[11:]:
        with pytest.raises(bgio.ChainError):
            h.result(timeout=30)
    assert rec.getvalue() == b"<" + b"".join(bytes([65 + i]) * 4 for i in range(10))


def test_a_cancel_inside_a_group_stops_the_rest():
    rec = Recorder()
    gate, _first, handles = _queue_behind_a_gate(rec, 20)
    assert handles[7].cancel()
    gate.set()
    for h in handles[:7]:
        assert h.result(timeout=30) == 4
    assert handles[7].cancelled()
    for h in handles[8:]:
        with pytest.raises(bgio.ChainError, match="was cancelled"):
            h.result(timeout=30)
    assert rec.getvalue() == b"<" + b"".join(bytes([65 + i]) * 4 for i in range(7))


def _file_behind_a_gate(path, count, size=4):
    """Queue small writes to a real file while its lane waits (chain_after) on a held write."""
    f = open(path, "wb")  # noqa: SIM115 - the caller closes it
    gate = threading.Event()
    held = bgio.bgwrite(GateOnWrite(gate), b"x", priority=SMALL)
    first = bgio.bgwrite(f, b"<", chain_after=held, priority=SMALL)
    handles = [bgio.bgwrite(f, bytes([65 + i % 26]) * size, priority=SMALL) for i in range(count)]
    return f, gate, first, handles


class GateOnWrite:
    mode = "wb"

    def __init__(self, gate):
        self.gate = gate

    def write(self, data):
        self.gate.wait()
        return len(data)


def test_gathered_writes_to_a_file_are_exact(tmp_path):
    f, gate, _first, handles = _file_behind_a_gate(tmp_path / "g", 300)
    calls = []
    real = os.writev

    def spy(fd, blocks):
        calls.append(len(blocks))
        return real(fd, blocks)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", spy)
        gate.set()
        for h in handles:
            assert h.result(timeout=30) == 4
    f.close()
    expected = b"<" + b"".join(bytes([65 + i % 26]) * 4 for i in range(300))
    assert (tmp_path / "g").read_bytes() == expected
    assert calls and max(calls) > 100  # really gathered, not one call per write


def test_partial_gathered_write_resumes_exactly(tmp_path):
    f, gate, _first, handles = _file_behind_a_gate(tmp_path / "p", 50, size=10)
    real = os.writev

    def short(fd, blocks):
        # Take 2.5 blocks at most, as a full pipe or a signal would.
        data = b"".join(bytes(b) for b in blocks)[:25]
        return real(fd, [data])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", short)
        gate.set()
        for h in handles:
            assert h.result(timeout=30) == 10
    f.close()
    expected = b"<" + b"".join(bytes([65 + i % 26]) * 10 for i in range(50))
    assert (tmp_path / "p").read_bytes() == expected


def test_failed_gathered_write_fails_the_group_in_order(tmp_path):
    f, gate, first, handles = _file_behind_a_gate(tmp_path / "f", 20)

    def broken(fd, blocks):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", broken)
        gate.set()
        first.result(timeout=30)
        with pytest.raises(OSError, match="No space"):
            handles[0].result(timeout=30)
        for h in handles[1:]:
            with pytest.raises(bgio.ChainError):
                h.result(timeout=30)
    f.close()
    assert (tmp_path / "f").read_bytes() == b"<"


def test_cancelling_a_later_small_write_leaves_the_earlier_one_whole(destination_waits):
    # Set when the worker waits for the full pipe: then `kept` and `cancelled`
    # are in one pass (or queued behind `first`), and the cancel must cut
    # short only the write it belongs to.
    waiting = destination_waits
    r, w = os.pipe()
    os.set_blocking(w, False)
    filler = b"." * 65536
    while True:  # fill the pipe
        try:
            os.write(w, filler)
        except BlockingIOError:
            break
    gate = threading.Event()

    class Held:
        mode = "wb"

        def write(self, data):
            gate.wait()
            return len(data)

    held = bgio.bgwrite(Held(), b"x", priority=FAST_1K)
    first = bgio.bgwrite(w, b"1" * 100, chain_after=held, priority=FAST_1K)
    kept = bgio.bgwrite(w, b"2" * 100, priority=FAST_1K)
    cancelled = bgio.bgwrite(w, b"3" * 100, priority=FAST_1K)
    gate.set()
    assert waiting.wait(10)
    assert cancelled.cancel()
    pieces: list[bytes] = []

    def drain() -> None:  # reads until the write end is closed
        while block := os.read(r, 1 << 16):
            pieces.append(block)

    reader = threading.Thread(target=drain)
    reader.start()
    assert first.result(timeout=10) == 100 and kept.result(timeout=10) == 100
    cancelled.wait(timeout=10)
    assert cancelled.cancelled()
    bgio.wait_all(timeout=10)  # the worker is through with the pipe
    os.close(w)
    reader.join(10)
    drained = b"".join(pieces)
    assert drained.replace(b".", b"") == b"1" * 100 + b"2" * 100
    os.close(r)


def test_a_generator_may_wait_for_an_earlier_small_write():
    out = io.BytesIO()
    first = bgio.bgwrite(out, b"header", priority=FAST_1K)

    def body():
        first.result(timeout=10)  # complete before the body is produced
        yield b"body"

    second = bgio.bgwrite(out, body(), priority=FAST_1K)
    assert second.result(timeout=15) == 4
    assert out.getvalue() == b"headerbody"


# ---- flushing and fsync --------------------------------------------------------------------


def test_chunking_follows_the_profile_and_flushes_each_chunk(recorder):
    bgio.bgwrite(recorder, b"x" * 23, priority=bgio.BackgroundIOPriority(0, 5, 100)).result(30)
    assert [len(w) for w in recorder.writes] == [5, 5, 5, 5, 3]
    assert recorder.flushes == 5


def test_fsync_syncs_before_the_handle_completes(tmp_path, monkeypatch):
    calls: list[tuple[int, bool]] = []
    real = os.fdatasync
    handles: list[bgio.BackgroundWriteProcess] = []

    def spy(fd: int) -> None:
        calls.append((fd, handles[0].done()))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    with open(tmp_path / "f", "wb") as f:
        handles.append(bgio.bgwrite(f, b"durable" * 1000, fsync=True, priority=FAST_1K))
        handles[0].result(timeout=30)
        assert calls == [(f.fileno(), False)]  # synced, and before done


def test_fsync_on_a_path_and_a_writer(tmp_path, monkeypatch):
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    bgio.bgwrite(tmp_path / "p", b"x" * 5000, fsync=True, priority=FAST_1K).result(timeout=30)
    assert len(synced) == 1
    with bgio.Writer(tmp_path / "w", fsync=True, priority=FAST_1K) as w:
        for _ in range(20):
            w.write(b"small")
        w.flush()
        assert len(synced) >= 2  # flush() returned: the writes so far are on disk
    assert (tmp_path / "w").read_bytes() == b"small" * 20


def test_without_fsync_nothing_is_synced(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fdatasync", lambda fd: pytest.fail("fdatasync called"))
    bgio.bgwrite(tmp_path / "p", b"x" * 5000, priority=FAST_1K).result(timeout=30)


# ---- the engine: lanes, threads, wait_all --------------------------------------------------


def test_wait_all_times_out_while_a_write_is_stuck():
    rec = Recorder(gated=True)
    bgio.bgwrite(rec, b"x")
    assert bgio.wait_all(timeout=0.05) is False
    rec.gate.set()
    assert bgio.wait_all(timeout=30) is True


@pytest.mark.slow
def test_many_destinations_then_threads_end():
    recs = [Recorder() for _ in range(20)]
    for r in recs:
        bgio.bgwrite(r, b"abc", priority=FAST)
    assert bgio.wait_all(timeout=30)
    assert all(r.getvalue() == b"abc" for r in recs)
    # (The writer process's two threads, if another test started it, stay for the
    # program's life, as the writer process does; a producers' service answers each
    # connected producer until it disconnects.)
    workers = [t for t in threading.enumerate()
               if t.name.startswith("bgio-") and not t.name.startswith(("bgio-process-",
                                                                       "bgio-service-"))]
    for t in workers:
        t.join(timeout=5)  # parked workers leave after engine.LINGER (1 s)
    assert not [t for t in workers if t.is_alive()]


def test_a_file_object_closed_by_its_finalizer_in_the_worker_does_not_deadlock(tmp_path):
    # The worker drops the last reference to a bgio.open file, whose close()
    # writes through bgio again: that must not happen under the engine's lock.
    path = tmp_path / "inner"
    handle = bgio.bgwrite(bgio.open(path), b"payload", priority=FAST_1K)
    assert handle.result(timeout=30) == 7
    assert bgio.wait_all(timeout=10)
    gc.collect()
    assert bgio.wait_all(timeout=10)
    assert path.read_bytes() == b"payload"


class _Gate:
    """A sink for the engine tests: each write is logged, sets ``entered`` and waits for ``go``."""

    kind = None
    nonblocking = False
    write_many = None
    waiter = None

    def __init__(self, key, log, go):
        self.key = key
        self.target = self  # what the lane anchors to
        self.name = f"gate {key}"
        self.log = log
        self.go = go
        self.entered = threading.Event()

    def write(self, block):
        self.log.append(("start", bytes(block)))
        self.entered.set()
        self.go.wait(30)
        self.log.append(("end", bytes(block)))
        return len(block)

    def flush(self):
        pass

    def sync(self):
        pass

    def close(self):
        pass


def _job(sink, data):
    from bgio.handle import BackgroundWriteProcess
    from bgio.source import Source
    from bgio.worker import Job

    return Job(BackgroundWriteProcess(len(data)), sink, Source((data,), "bytes", len(data), False,
                                                                len(data)), FAST_1K)


def test_a_freed_object_does_not_take_its_key_from_a_live_one():
    # Two objects with one key (an fd reused by a new file object): the first
    # is freed while the second writes. Its lane must stay, or a second
    # worker would write to the destination at the same time as the first.
    from bgio import engine

    log, go = [], threading.Event()
    first = _Gate("shared", log, go)
    go.set()
    assert engine.submit(_job(first, b"a")).result(timeout=30) == 1
    assert bgio.wait_all(timeout=10)  # idle: the lane is anchored to `first`
    go.clear()
    second = _Gate("shared", log, go)
    busy = engine.submit(_job(second, b"b"))
    assert second.entered.wait(30)  # b is being written
    del first
    gc.collect()  # `first` is freed while `second` writes
    after = engine.submit(_job(second, b"c"))
    time.sleep(0.05)  # a second worker, if there were one, would start c within this
    assert ("start", b"c") not in log  # queued behind b, not written beside it
    go.set()
    assert busy.result(timeout=30) == 1 and after.result(timeout=30) == 1
    assert log[-4:] == [("start", b"b"), ("end", b"b"), ("start", b"c"), ("end", b"c")]
    assert bgio.wait_all(timeout=10)
    del second
    gc.collect()
    engine.submit(_job(_Gate("other", [], go), b"x")).result(timeout=30)  # settles the freed
    assert "shared" not in engine._lanes


# ---- exit drain (scripts in a subprocess) --------------------------------------------------


def _run_script(code: str, tmp_path) -> subprocess.CompletedProcess:
    # The package under test, whether installed or not.
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )


@pytest.mark.slow
def test_exit_drains_pending_writes(tmp_path):
    proc = _run_script(
        """
        import bgio
        data = bytes(range(256)) * 40_000          # ~10 MB
        f = open("out.bin", "wb")
        bgio.bgwrite(f, data, priority=10)          # paced: takes a while
        bgio.bgwrite(f, b"END", close_when_finished=True, priority=10)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "out.bin").read_bytes() == bytes(range(256)) * 40_000 + b"END"


@pytest.mark.slow
def test_a_write_from_an_atexit_handler_is_complete(tmp_path):
    out = tmp_path / "late.bin"
    script = textwrap.dedent(f"""
        import atexit, bgio
        def save():
            bgio.bgwrite({str(out)!r}, b"x" * (8 << 20), priority=10)
        atexit.register(save)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == 8 << 20


@pytest.mark.slow
def test_failure_in_a_script_leaves_no_traceback_on_stderr(tmp_path):
    proc = _run_script(
        """
        import bgio
        class Full:
            mode = "wb"
            def write(self, b):
                raise OSError(28, "No space left on device")
        h = bgio.bgwrite(Full(), b"x")
        bgio.bgwrite(Full(), b"y")
        print(type(h.exception(5)).__name__)
        """,
        tmp_path,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "OSError"
    assert proc.stderr == ""


@pytest.mark.slow
def test_writes_after_a_failure_cost_the_same_and_free_their_handles():
    class Full:
        mode = "wb"

        def write(self, data):
            raise OSError(28, "No space left on device")

    destination = Full()
    first = bgio.bgwrite(destination, b"x", priority=FAST_64K)
    assert isinstance(first.exception(timeout=30), OSError)
    refs = []
    tracemalloc.start()
    try:
        timings = []
        for round_ in range(10):
            started = time.perf_counter()
            for _ in range(10_000):
                handle = bgio.bgwrite(destination, b"y", priority=FAST_64K)
                if len(refs) < 1000:
                    refs.append(weakref.ref(handle))
            assert bgio.wait_all(timeout=60)
            timings.append(time.perf_counter() - started)
            if round_ == 1:
                base, _ = tracemalloc.get_traced_memory()
        error = handle.exception(timeout=30)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, bgio.ChainError)
    assert error.__cause__ is error.root_cause and isinstance(error.root_cause, OSError)
    assert error.predecessor is first  # the write that failed first, not the one before
    del handle, error
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 0  # failed handles are freed
    assert current - base < 2 * 1024 * 1024  # memory flat over 80,000 more failing writes
    # O(1) each: the last rounds cost what the first did (a generous bound: this is no benchmark).
    assert min(timings[-3:]) < 5 * max(timings[:3])


def test_the_gentlest_profiles_still_write_and_cancel():
    slow = bgio.BackgroundIOPriority(0, 10, 0.01, max_rate=1.0)
    out = io.BytesIO()
    handle = bgio.bgwrite(out, b"a" * 100, priority=slow)
    assert handle.cancel()  # pending, or in the pause of ~10 s after its first chunk
    assert handle.wait(30) and handle.cancelled()
    assert out.getvalue() == b"a" * handle.bytes_written


# -- cancels against a full destination (review of the one write loop) --------------------


def test_cancel_cuts_a_full_pipe_wait_short_after_a_pacing_pause(destination_waits):
    waiting = destination_waits
    r, w = os.pipe()  # empty: paced chunks go in, with pauses, until it is full
    os.set_blocking(w, False)
    paced = bgio.BackgroundIOPriority(0.001, 4096, 100, max_rate=1e6)
    handle = bgio.bgwrite(w, b"x" * (1 << 20), priority=paced)
    assert waiting.wait(30)
    assert handle.cancel()
    with pytest.raises(CancelledError):
        handle.result(timeout=10)
    assert 0 < handle.bytes_written < 1 << 20
    os.close(w)
    assert drain(r) == b"x" * handle.bytes_written
    os.close(r)


def test_a_cancel_that_cuts_a_buffered_flush_short_cancels_the_write(destination_waits):
    waiting = destination_waits
    r, w = full_pipe()

    class Buffered(io.BufferedWriter):  # not a plain file: bgio writes through its buffer
        pass

    out = Buffered(io.FileIO(w, "wb", closefd=False))
    handle = bgio.bgwrite_chunk(out, b"x" * 1_000_000, 4096, priority=1)
    assert waiting.wait(30)
    assert handle.cancel()
    assert handle.wait(10)
    assert handle.cancelled(), repr(handle.exception(0) if not handle.cancelled() else None)
    with pytest.raises(bgio.ChainError):
        bgio.bgwrite(out, b"after", priority=1).result(timeout=10)
    reader = threading.Thread(target=lambda: got.append(drain(r)))
    got: list[bytes] = []
    reader.start()
    try:
        out.close()
    except (BlockingIOError, OSError):
        pass
    os.close(w)
    reader.join(30)
    os.close(r)
    assert got[0].strip(b".") == b"x" * len(got[0].strip(b"."))  # no "after"
    assert len(got[0].strip(b".")) <= handle.bytes_written


def test_a_partial_take_before_a_cancelled_wait_is_not_written_twice(destination_waits):
    waiting = destination_waits
    r, w = full_pipe()

    class Buffered(io.BufferedWriter):
        pass

    out = Buffered(io.FileIO(w, "wb", closefd=False))
    profile = bgio.BackgroundIOPriority(0, 1 << 20, 100)
    writer = bgio.Writer(out, priority=profile)
    gate = threading.Event()

    def held():
        gate.wait(30)
        yield b""

    writer.write(held())
    a = writer.write(b"A" * 20000)  # a, b and c in one pass
    b = writer.write(b"B" * 20000)
    c = writer.write(b"C" * 20000)
    gate.set()
    assert waiting.wait(30)  # a went partly into the buffer, the rest waits
    assert c.cancel()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(drain(r)))
    reader.start()
    assert a.result(timeout=30) == 20000 and b.result(timeout=30) == 20000
    assert c.cancelled()
    with pytest.raises(CancelledError):
        writer.close(timeout=30)
    out.flush()
    os.close(w)
    reader.join(30)
    os.close(r)
    data = got[0].strip(b".")
    assert data == b"A" * 20000 + b"B" * 20000


def test_cancel_inside_a_gathered_run_of_small_writes_stops_at_that_write(destination_waits):
    waiting = destination_waits
    r, w = full_pipe()
    gate = threading.Event()

    def held():
        gate.wait(30)
        yield b""

    writer = bgio.Writer(w, priority=1)
    writer.write(held())
    handles = [writer.write(b"%05d;" % i) for i in range(2000)]  # one pass: > IOV_MAX
    gate.set()
    assert waiting.wait(30)
    assert handles[1500].cancel()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(drain(r)))
    reader.start()
    assert handles[1500].wait(30) and handles[1500].cancelled()
    assert handles[1500].bytes_written < 6
    for handle in handles[:1500]:
        assert handle.result(timeout=30) == 6
    for handle in handles[1501:]:
        assert isinstance(handle.exception(timeout=30), bgio.ChainError)
    with pytest.raises(CancelledError):
        writer.close(timeout=30)
    os.close(w)
    reader.join(30)
    os.close(r)
    data = got[0].lstrip(b".")
    expected = b"".join(b"%05d;" % i for i in range(1500))
    assert data[:len(expected)] == expected
    assert data[len(expected):] == b"01500;"[:handles[1500].bytes_written]


def test_a_buffer_of_a_gathered_run_may_be_reused_once_its_write_is_done():
    out = io.BytesIO()
    writer = bgio.Writer(out, priority=1)
    buffers = [bytearray(b"abc"), bytearray(b"def"), bytearray(b"ghi")]
    gate = threading.Event()

    def held():
        gate.wait(30)
        yield b""

    writer.write(held())
    handles = [writer.write(buffer) for buffer in buffers]  # one pass
    errors = []

    def reuse(_):
        try:
            buffers[0].clear()  # a BufferError if a view of it were still held
        except BufferError as exc:
            errors.append(exc)

    handles[0].add_done_callback(reuse)
    gate.set()
    writer.close(timeout=30)
    assert errors == [] and buffers[0] == bytearray()
    assert out.getvalue() == b"abcdefghi"


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_with_workers_of_its_own(tmp_path):
    assert bgio.bgwrite(str(tmp_path / "parent"), b"p", priority=1).result(timeout=30) == 1
    script = textwrap.dedent(f"""
        import os, sys, bgio
        bgio.bgwrite({str(tmp_path / 'before')!r}, b"b", priority=1).result(timeout=30)
        pid = os.fork()
        if pid == 0:
            code = 0 if bgio.bgwrite({str(tmp_path / 'child')!r}, b"c", priority=1).result(
                timeout=20) == 1 else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert proc.returncode == 0
    assert (tmp_path / "child").read_bytes() == b"c"


class _Buffered(io.BufferedWriter):
    """Not a plain file: bgio writes through its buffer, as through any stream."""


def _expected_stream(handles, datas):
    """What a destination must hold given the handles' outcomes: every successful
    write whole, a cancelled one as far as it got, nothing of a ChainError's."""
    out = b""
    for handle, data in zip(handles, datas):
        assert handle.done()
        if handle.cancelled():
            out += data[:handle.bytes_written]
        elif handle.exception() is None:
            assert handle.bytes_written == len(data), (handle, len(data))
            out += data
        else:
            assert isinstance(handle.exception(), bgio.ChainError), handle.exception()
            assert handle.bytes_written == 0
    return out


@pytest.mark.parametrize("case", ["pause-flush", "chunk-flush", "gather-writev"])
def test_a_cancel_in_a_run_to_a_full_pipe_never_misreports_a_write(destination_waits, case):
    waiting = destination_waits
    r, w = full_pipe()
    filled = len(b"")  # the filler is stripped below
    if case == "pause-flush":
        profile = bgio.PRESETS[10]
        chunk = profile.default_chunk_size
        target = _Buffered(io.FileIO(w, "wb", closefd=False), buffer_size=4 * chunk)
        first = [b"A" * (chunk - 5), b""]  # a list: never gathered with the rest
    elif case == "chunk-flush":
        profile = bgio.BackgroundIOPriority(0.01, 4096, 100)
        target = _Buffered(io.FileIO(w, "wb", closefd=False), buffer_size=1 << 20)
        first = [b"A" * 4091, b""]
    else:
        profile = bgio.BackgroundIOPriority(0.01, 1 << 20, 100)
        target = w
        first = [b""]
    writer = bgio.Writer(target, priority=profile)
    datas = [b"".join(first), b"BBB", b"DDD", b"EEE"]
    handles = [writer.write(first)] + [writer.write(data) for data in datas[1:]]
    assert waiting.wait(30)
    cancelled = handles[1] if case == "gather-writev" else handles[2]
    cancelled.cancel()
    if case == "gather-writev":  # blocked in the gather write: the cancel cuts it short
        assert cancelled.wait(10) and cancelled.cancelled()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(drain(r)))
    reader.start()
    assert bgio.wait_all(timeout=30)
    if target is not w:
        try:
            target.flush()
        except OSError:
            pass
    os.close(w)
    reader.join(30)
    os.close(r)
    assert got[0].lstrip(b".")[filled:] == _expected_stream(handles, datas)


def test_run_delay_unreadable_never_fails_a_write(monkeypatch, tmp_path):
    from bgio import runqueue

    monkeypatch.setattr(runqueue, "_available", True)
    monkeypatch.setattr(runqueue, "_SCHEDSTAT", str(tmp_path / "no-such-file"))
    seen = []
    # A thread that has not read it yet tries to open the file, and fails.
    thread = threading.Thread(target=lambda: seen.append(runqueue.run_delay()))
    thread.start()
    thread.join(30)
    assert seen == [0.0]
    assert runqueue._available is False  # no thread tries again
    out = io.BytesIO()
    assert bgio.bgwrite(out, b"x" * 10, priority=FAST).result(timeout=30) == 10
    assert out.getvalue() == b"x" * 10


def _schedstat_fds() -> list[str]:
    """Where this process's open schedstat files point."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.endswith("/schedstat"):
            found.append(target)
    return found


def _mine(paths: list[str]) -> list[str]:
    return [path for path in paths
            if path.endswith(f"/task/{threading.get_native_id()}/schedstat")]


needs_schedstat = pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"),
                                     reason="no per-thread schedstat here")


@needs_schedstat
def test_run_delay_reads_this_threads_wait_and_release_closes_it():
    from bgio import runqueue

    readings = []
    files = []

    def reader():
        readings.append(runqueue.run_delay())
        files.append(_mine(_schedstat_fds()))
        readings.append(runqueue.run_delay())
        runqueue.release()
        files.append(_mine(_schedstat_fds()))
        readings.append(runqueue.run_delay())  # opened again
        runqueue.release()

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(30)
    assert 0.0 <= readings[0] <= readings[1] <= readings[2]
    assert len(files[0]) == 1 and files[1] == []


@needs_schedstat
def test_a_thread_that_ends_closes_its_run_delay_file():
    from bgio import runqueue

    ids: list[int] = []

    def read() -> None:
        ids.append(threading.get_native_id())
        runqueue.run_delay()

    threads = [threading.Thread(target=read) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    gc.collect()
    # Only these threads' files count: other tests' workers may come and go meanwhile.
    theirs = [path for path in _schedstat_fds()
              if any(path.endswith(f"/task/{ident}/schedstat") for ident in ids)]
    assert len(ids) == 5 and theirs == []


@needs_schedstat
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reads_its_own_run_delay():
    from bgio import runqueue

    runqueue.run_delay()  # this thread's file, opened in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report where its files point, then leave at once
        try:
            runqueue.run_delay()
            paths = _schedstat_fds()
            ok = len(_mine(paths)) == 1 and all(f"/{os.getpid()}/" in path for path in paths)
            os.write(write, b"ok" if ok else repr(paths).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read()
    os.waitpid(pid, 0)
    assert report == b"ok"
