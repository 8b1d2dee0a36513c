"""Progress callbacks on handles: records as the write goes on and one at the end, delivered
in bgio's own thread so that a slow or raising callback holds no write up."""

from __future__ import annotations

import io
import logging
import os
import threading
import time

import pytest
from conftest import Recorder

import bgio
from bgio.progress import WriteProgress

HANG = 60  # seconds: a bound that only catches hangs
CHUNK = 64 * 1024
#: Small chunks, unpaced: many chunks, each a progress point.
FAST = bgio.PRESETS[1].replace(default_chunk_size=CHUNK)


class Collector:
    """A progress callback that keeps every record and says when the last came."""

    def __init__(self) -> None:
        self.records: list[WriteProgress] = []
        self.threads: set[str] = set()
        self.finished = threading.Event()

    def __call__(self, record: WriteProgress) -> None:
        self.records.append(record)
        self.threads.add(threading.current_thread().name)
        if record.finished:
            self.finished.set()


def test_records_grow_and_the_last_says_all_is_written(tmp_path):
    data = os.urandom(64 * CHUNK)
    collect = Collector()
    rec = Recorder(gated=True)
    handle = bgio.bgwrite(rec, data, priority=FAST)
    handle.add_progress_callback(collect, interval=0)
    rec.gate.set()
    assert handle.result(timeout=HANG) == len(data)
    assert collect.finished.wait(HANG)
    done = [record.done for record in collect.records]
    assert done == sorted(done) and done[-1] == len(data)
    assert [record.finished for record in collect.records].count(True) == 1
    last = collect.records[-1]
    assert last == WriteProgress(len(data), len(data), last.rate, 0, None, True, unpaced_bytes=0)
    assert last.fraction == 1.0
    assert all(record.total == len(data) and record.pending == len(data) - record.done
               for record in collect.records)
    assert collect.threads == {"bgio-progress"}  # not the worker's thread


class HeldAfterFirst(io.BytesIO):
    """A destination whose second write waits until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.count = 0

    def write(self, data) -> int:  # type: ignore[override]
        self.count += 1
        if self.count == 2:
            self.go.wait()
        return super().write(data)


def test_a_slow_callback_holds_no_write_up_and_gets_the_latest_record():
    release = threading.Event()
    calls: list[WriteProgress] = []
    last = threading.Event()
    out = HeldAfterFirst()

    def slow(record: WriteProgress) -> None:
        calls.append(record)
        out.go.set()  # (the first call has begun: the write may go on)
        if record.finished:
            last.set()
        release.wait()  # a callback that takes as long as the test wants

    data = os.urandom(64 * CHUNK)
    handle = bgio.bgwrite(out, data, priority=FAST)
    handle.add_progress_callback(slow, interval=0)
    assert handle.result(timeout=HANG) == len(data)  # done while the callback is held
    assert not last.is_set()
    release.set()
    assert last.wait(HANG)
    # The records made while it was held gave way to the newest: the last, next.
    assert len(calls) == 2 and calls[1].finished and calls[1].done == len(data)
    assert calls[0].done == CHUNK and not calls[0].finished
    assert out.getvalue() == data


class Logged(logging.Handler):
    """The ``bgio`` logger's records, and a Condition to wait for them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.messages.append(record.getMessage() + f" ({record.exc_info[1]})")
            self.changed.notify_all()


def test_a_raising_callback_is_logged_and_called_again():
    calls: list[WriteProgress] = []

    def broken(record: WriteProgress) -> None:
        calls.append(record)
        raise RuntimeError("a bug in the progress bar")

    logged = Logged()
    logger = logging.getLogger("bgio")
    logger.addHandler(logged)
    try:
        handle = bgio.bgwrite(io.BytesIO(), os.urandom(16 * CHUNK), priority=FAST)
        handle.add_progress_callback(broken, interval=0)
        assert handle.result(timeout=HANG) == 16 * CHUNK
        with logged.changed:  # every call raised and was logged, the last one too
            assert logged.changed.wait_for(
                lambda: calls and calls[-1].finished and len(logged.messages) == len(calls),
                HANG)
    finally:
        logger.removeHandler(logged)
    expected = ("bgio: a progress callback raised (it will be called again) "
                "(a bug in the progress bar)")
    assert set(logged.messages) == {expected}


def test_added_once_done_it_gets_the_last_record_at_once():
    handle = bgio.bgwrite(io.BytesIO(), b"12345", priority=FAST)
    handle.result(timeout=HANG)
    collect = Collector()
    handle.add_progress_callback(collect)
    assert collect.finished.wait(HANG)
    assert collect.records == [WriteProgress(5, 5, handle.rate, 0, None, True, unpaced_bytes=0)]


def test_a_cancelled_write_ends_with_a_last_record_short_of_its_total():
    collect = Collector()
    rec = Recorder(gated=True)
    first = bgio.bgwrite(rec, b"first", priority=FAST)
    queued = bgio.bgwrite(rec, os.urandom(4 * CHUNK), priority=FAST)
    queued.add_progress_callback(collect)
    assert queued.cancel()
    assert collect.finished.wait(HANG)
    rec.gate.set()
    first.result(timeout=HANG)
    assert collect.records[-1].done == 0 and collect.records[-1].pending == 4 * CHUNK


def test_bad_arguments_are_refused_in_the_caller():
    handle = bgio.bgwrite(io.BytesIO(), b"x", priority=FAST)
    with pytest.raises(TypeError, match="^fn must be callable, got int$"):
        handle.add_progress_callback(3)
    with pytest.raises(ValueError, match="^interval must be finite and >= 0, got -1$"):
        handle.add_progress_callback(print, interval=-1)
    with pytest.raises(TypeError, match="^interval must be a number of seconds, got str$"):
        handle.add_progress_callback(print, interval="1")
    handle.result(timeout=HANG)


def test_a_writer_process_write_reports_progress_too(tmp_path):
    data = os.urandom(8 << 20)
    collect = Collector()
    handle = bgio.bgwrite(tmp_path / "f.bin", data, priority=1, backend="process")
    handle.add_progress_callback(collect, interval=0)
    assert handle.result(timeout=HANG) == len(data)
    assert collect.finished.wait(HANG)
    assert collect.records[-1].done == len(data) and collect.records[-1].finished
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_delivered_callback_is_not_kept_alive_by_the_delivery_thread():
    import gc
    import weakref

    collect = Collector()
    handle = bgio.bgwrite(io.BytesIO(), b"x" * CHUNK, priority=FAST)
    handle.add_progress_callback(collect)
    handle.result(timeout=HANG)
    assert collect.finished.wait(HANG)
    gone = weakref.ref(collect)
    del collect, handle
    # The thread lets go as soon as the call returns; it would keep it for as long as
    # it waits for the next record (up to progress.LINGER, a second) otherwise.
    deadline = time.monotonic() + 0.5  # half of LINGER
    while gone() is not None and time.monotonic() < deadline:
        threading.Event().wait(0.005)  # (a short yield to the delivery thread)
        gc.collect()
    assert gone() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_deliver_the_parents_records():
    from bgio import progress

    release = threading.Event()
    entered = threading.Event()

    def held(record: WriteProgress) -> None:
        entered.set()
        release.wait()

    first = bgio.bgwrite(io.BytesIO(), b"1", priority=FAST)
    first.add_progress_callback(held)
    second = bgio.bgwrite(io.BytesIO(), b"2", priority=FAST)
    second.add_progress_callback(held)
    first.result(timeout=HANG)
    second.result(timeout=HANG)
    assert entered.wait(HANG)  # one is being delivered, the other waits for the thread
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's left to deliver
        try:
            os.write(write, b"%d %d" % (len(progress._waiting), progress._thread is None))
        finally:
            os._exit(0)
    os.close(write)
    report = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    release.set()
    assert report == b"0 1"
