"""The worker thread's I/O priority follows the profile (bgio.ioprio)."""

from __future__ import annotations

import logging
import os
import sys
import threading

import psutil
import pytest

import bgio
from bgio import ioprio

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not ioprio.load(),
                                reason="per-thread I/O priorities are Linux's")


class _GateFile:
    """A file object whose write waits for ``release``, after telling which thread called."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.thread_id: int | None = None
        self.data = bytearray()

    def write(self, data):
        self.thread_id = threading.get_native_id()
        self.started.set()
        assert self.release.wait(30)
        self.data += data
        return len(data)


def _blocked_write(profile):
    """Start a write into a gated file object; return (handle, file, the worker thread's
    psutil.Process) once the worker is inside the write, at the priority it set."""
    file = _GateFile()
    handle = bgio.bgwrite(file, b"p" * 1000, priority=profile)
    assert file.started.wait(30)
    return handle, file, psutil.Process(file.thread_id)


def _drain(file, handle):
    file.release.set()
    handle.result(timeout=30)
    assert bytes(file.data) == b"p" * 1000


@pytest.mark.parametrize(("preset", "expected"), [
    (4, (psutil.IOPRIO_CLASS_BE, 4)), (7, (psutil.IOPRIO_CLASS_BE, 7)),
    (10, (psutil.IOPRIO_CLASS_IDLE, 0))])
def test_the_worker_writes_at_the_presets_io_priority(preset, expected):
    before = psutil.Process().ionice()
    handle, file, worker = _blocked_write(preset)
    try:
        got = worker.ionice()
        assert (got.ioclass, got.value) == expected
        assert psutil.Process().ionice() == before  # the program's own is untouched
    finally:
        _drain(file, handle)


def test_a_profile_without_one_gives_the_thread_its_own_back():
    original = psutil.Process().ionice()  # what a new thread starts with
    handle, file, first = _blocked_write(10)
    assert first.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
    _drain(file, handle)
    # Writes held open at once each take a worker of their own: parked ones first (the
    # last parked first), so ``first`` serves one of them once it has parked, whatever
    # other workers earlier tests left parked. Every one has the thread's own back.
    held = []
    try:
        for _ in range(8):
            handle, file, worker = _blocked_write(bgio.PRESETS[4].replace(io_priority=None))
            held.append((file, handle))
            assert worker.ionice() == original
            if worker.pid == first.pid:
                break
        else:
            pytest.fail("the worker that wrote at the idle priority served no later write")
    finally:
        for file, handle in held:
            _drain(file, handle)


def test_a_refused_priority_is_logged_once_and_the_write_goes_on(monkeypatch, caplog):
    def refuse(self, *args):
        if args:
            raise psutil.AccessDenied(self.pid)
        return psutil.Process.__dict__["_real_ionice"](self)

    monkeypatch.setattr(psutil.Process, "_real_ionice", psutil.Process.ionice, raising=False)
    monkeypatch.setattr(psutil.Process, "ionice", refuse)
    monkeypatch.setattr(ioprio, "_refused", set())
    caplog.set_level(logging.WARNING, logger="bgio")
    profile = bgio.PRESETS[4].replace(io_priority=("realtime", 3))
    for name in ("a", "b"):
        read_end, write_end = os.pipe()
        handle = bgio.bgwrite(write_end, name.encode() * 10, priority=profile,
                              close_when_finished=True)
        assert handle.result(timeout=30) == 10
        assert os.read(read_end, 100) == name.encode() * 10
        os.close(read_end)
        # Back to a preset between the two: the refused one is asked again.
        bgio.bgwrite(os.devnull, b"x", priority=4).result(timeout=30)
    messages = [r.getMessage() for r in caplog.records if "('realtime', 3)" in r.getMessage()]
    assert len(messages) == 1
    assert messages[0].startswith("bgio: could not set the I/O priority ('realtime', 3) on a "
                                  "worker thread")


def test_profiles_check_their_io_priority():
    make = bgio.BackgroundIOPriority
    assert make(0.001, 1 << 20, 50, io_priority="idle").io_priority == ("idle", 0)
    assert make(0.001, 1 << 20, 50, io_priority=("best-effort", 6)).io_priority == (
        "best-effort", 6)
    assert make(0.001, 1 << 20, 50).io_priority is None
    assert bgio.PRESETS[10].replace(bandwidth_pct=30).io_priority == ("idle", 0)
    assert [bgio.PRESETS[level].io_priority[1] for level in range(1, 10)] == [
        0, 2, 3, 4, 5, 6, 7, 7, 7]
    with pytest.raises(ValueError, match="io_priority: class must be one of realtime, "
                                         "best-effort, idle, got 'low'"):
        make(0.001, 1 << 20, 50, io_priority=("low", 1))
    with pytest.raises(ValueError, match="io_priority: level must be 0..7, got 8"):
        make(0.001, 1 << 20, 50, io_priority=("best-effort", 8))
    with pytest.raises(TypeError, match="io_priority must be None, 'idle' or a"):
        make(0.001, 1 << 20, 50, io_priority=3)
    with pytest.raises(ValueError, match="the idle class has no level"):
        make(0.001, 1 << 20, 50, io_priority=("idle", 2))
