"""bgio.qt: progress and outcome as Qt signals in the GUI thread, and the example window run
offscreen (skipped where Qt for Python is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest
from conftest import Recorder

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip("PySide6.QtCore")

import bgio
import bgio.h5
import bgio.qt

HANG = 60  # seconds: a bound that only catches hangs
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXAMPLES = os.path.join(ROOT, "docs", "examples")


@pytest.fixture(scope="module")
def app():
    return QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])


class Outcome:
    """What a WriteSignals emitted, and in which thread; runs the event loop until the end."""

    def __init__(self, signals: bgio.qt.WriteSignals) -> None:
        self.progress: list[bgio.WriteProgress] = []
        self.threads: set[str] = set()
        self.ended: list[tuple[str, object]] = []
        self.loop = QtCore.QEventLoop()
        signals.progress.connect(self._progress)
        signals.finished.connect(lambda record: self._end("finished", record))
        signals.failed.connect(lambda error: self._end("failed", error))

    def _progress(self, record: bgio.WriteProgress) -> None:
        self.progress.append(record)
        self.threads.add(threading.current_thread().name)

    def _end(self, kind: str, payload: object) -> None:
        self.threads.add(threading.current_thread().name)
        self.ended.append((kind, payload))
        self.loop.quit()

    def wait(self) -> tuple[str, object]:
        if not self.ended:
            QtCore.QTimer.singleShot(HANG * 1000, self.loop.quit)  # (a hang ends the loop)
            self.loop.exec()
        assert len(self.ended) == 1, self.ended
        return self.ended[0]


def test_a_handles_signals_come_in_the_thread_that_made_them(app, tmp_path):
    data = os.urandom(4 << 20)
    handle = bgio.bgwrite(tmp_path / "f.bin", data, priority=4)
    outcome = Outcome(bgio.qt.WriteSignals(handle, interval=0))  # (not kept: kept alive)
    kind, record = outcome.wait()
    assert kind == "finished" and record.done == len(data) and record.finished
    assert outcome.progress[-1] is record and outcome.threads == {"MainThread"}
    assert (tmp_path / "f.bin").read_bytes() == data


def test_a_failed_write_is_the_failed_signal(app):
    handle = bgio.bgwrite(Recorder(fail_after=10), b"x" * 100, priority=1)
    kind, error = Outcome(bgio.qt.WriteSignals(handle)).wait()
    assert kind == "failed" and isinstance(error, OSError) and error.errno == 28


def test_a_cancelled_write_is_the_failed_signal_with_a_cancelled_error(app):
    recorder = Recorder(gated=True)
    handle = bgio.bgwrite_chunk(recorder, b"x" * 100, 10, priority=1)  # (ten chunks)
    outcome = Outcome(bgio.qt.WriteSignals(handle))
    assert recorder.entered.wait(HANG)
    assert handle.cancel()  # (running: it stops before the next chunk)
    recorder.gate.set()
    kind, error = outcome.wait()
    assert kind == "failed" and isinstance(error, CancelledError)


def test_a_writers_signals_end_once_it_is_closed_without_waiting(app, tmp_path):
    writer = bgio.h5.FrameWriter(tmp_path / "f.h5", "x", (8, 8), "uint16", priority=1)
    outcome = Outcome(bgio.qt.WriteSignals(writer, interval=0))
    for index in range(5):
        writer.append(np.full((8, 8), index, dtype=np.uint16))
    closing = writer.close(wait=False)
    kind, record = outcome.wait()
    assert kind == "finished" and (record.frames_done, record.frames_total) == (5, 5)
    assert closing.done() and closing.exception() is None


def test_a_bad_target_or_interval_is_refused(app):
    with pytest.raises(TypeError, match="^target must be a bgio handle or writer, got int$"):
        bgio.qt.WriteSignals(3)
    handle = bgio.bgwrite(Recorder(), b"x", priority=1)
    with pytest.raises(ValueError, match="^interval must be finite and >= 0, got -1$"):
        bgio.qt.WriteSignals(handle, interval=-1)
    handle.result(timeout=HANG)


def _offscreen() -> dict[str, str]:
    return {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


@pytest.mark.slow
def test_the_example_window_saves_every_frame_with_the_event_loop_ticking(tmp_path):
    path = tmp_path / "frames.h5"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "bench_qt.py"), "--child", "bgio",
         "--frames", "40", "--path", str(path)],
        capture_output=True, text=True, timeout=HANG * 5, env=_offscreen(), check=True)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["outcome"] == "saved" and result["main_thread"] is True
    assert result["bar"] == 40 and result["status"] == f"saved 40 frames to {path}"
    # The 16 ms timer went on while the frames were taken and stored (a bound on hangs
    # only: the figures are the benchmark's).
    assert result["ticks"] > 0 and result["max_ms"] < 10_000
    sys.path.insert(0, EXAMPLES)
    try:
        import qt_frames
    finally:
        sys.path.remove(EXAMPLES)
    import h5py

    with h5py.File(path, "r") as file:
        stored = file["frames"]
        assert stored.shape == (40, *qt_frames.SHAPE) and stored.compression == "gzip"
        for index in range(40):
            np.testing.assert_array_equal(stored[index], qt_frames.camera_frame(index % 8))


@pytest.mark.slow
def test_the_example_program_runs_by_itself(tmp_path):
    path = tmp_path / "frames.h5"
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "qt_frames.py"), "--auto", "--frames", "12",
         "--path", str(path)],
        capture_output=True, text=True, timeout=HANG * 5, env=_offscreen(), check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"saved 12 frames to {path}"
