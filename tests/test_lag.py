"""max_lag: a paced writer behind its producer writes unpaced until it catches up."""

from __future__ import annotations

import gc
import threading
import weakref

import h5py
import numpy as np
import pytest
from conftest import Recorder, gate_stores

import bgio
import bgio.h5
import bgio.lag
from bgio.h5.filters import EncodingPool
from bgio.lag import LagGauge, check_max_lag
from bgio.throttle import Throttle

CHUNK = 256 * 1024
#: Preset 10's chunks, capped at 4 MB/s: 16 writes of a chunk take 1 s paced.
SLOW = bgio.PRESETS[10].replace(default_chunk_size=CHUNK, max_rate=4e6)


# -- the arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"max_lag": "1"}, TypeError, "max_lag must be a number of seconds or None, got str"),
    ({"max_lag": True}, TypeError, "max_lag must be a number of seconds or None, got bool"),
    ({"max_lag": 0}, ValueError, "max_lag must be finite and > 0 seconds, got 0"),
    ({"max_lag": float("inf")}, ValueError, "max_lag must be finite and > 0 seconds, got inf"),
    ({"max_lag_bytes": 1.5}, TypeError, "max_lag_bytes must be an int or None, got float"),
    ({"max_lag_bytes": 0}, ValueError, "max_lag_bytes must be >= 1, got 0"),
])
def test_bad_max_lag_is_refused_in_the_caller_by_every_writer(tmp_path, options, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        bgio.Writer(tmp_path / "out.bin", **options)
    with pytest.raises(error, match=f"^{message}$"):
        bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4,), "u1", **options)
    with pytest.raises(error, match=f"^{message}$"):
        bgio.h5.RecordWriter(tmp_path / "r.h5", "events", {"x": ((), "f4")}, **options)
    assert not list(tmp_path.iterdir())  # refused before anything was opened


def test_check_max_lag_converts():
    assert check_max_lag(None, None) == (None, None)
    assert check_max_lag(1, np.int64(5)) == (1.0, 5)


@pytest.mark.parametrize("option", ["max_lag", "max_lag_bytes"])
def test_a_process_writer_has_no_max_lag(tmp_path, option):
    with pytest.raises(ValueError, match=rf"^{option}: a bgio.Writer with backend='process' "
                       r"has no max_lag \(bound its backlog with max_pending_bytes\)"):
        bgio.Writer(tmp_path / "out.bin", backend="process", **{option: 1})
    with pytest.raises(TypeError, match=rf"^{option} must be"):  # (checked first)
        bgio.Writer(tmp_path / "out.bin", backend="process", **{option: "1"})
    with pytest.raises(TypeError, match=r"^max_lag_bytes must be an int or None, got str$"):
        bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4,), "u1", backend="process",
                            max_lag_bytes="1")
    assert not list(tmp_path.iterdir())


def test_a_huge_max_lag_is_a_value_error():
    with pytest.raises(ValueError, match=r"^max_lag must be finite and > 0 seconds"):
        check_max_lag(10**400, None)


@pytest.mark.slow
def test_the_writer_process_applies_an_hdf5_writers_max_lag_and_reports_it(tmp_path):
    frames = np.arange(16 * 256 * 512, dtype="u2").reshape(16, 256, 512)
    f = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (256, 512), "u2", chunk_frames=1,
                            priority=SLOW, backend="process", max_lag=1e-9)
    assert f.lag == bgio.lag.LagStatus(1e-9, None, False, 0, 0.0, 0)  # nothing reported yet
    for frame in frames:
        f.append(frame)
    f.close(timeout=60)
    assert f.lag.unpaced_bytes == 16 * CHUNK and f.lag.behind is False
    assert f.stats().unpaced_bytes == 16 * CHUNK and f.stats().unpaced_episodes >= 1
    with h5py.File(tmp_path / "f.h5", "r") as h:
        assert h["frames"][...].tobytes() == frames.tobytes()
    r = bgio.h5.RecordWriter(tmp_path / "r.h5", "events", {"x": ((64,), "f4")},
                             priority=SLOW, chunk_events=1024, backend="process",
                             max_lag_bytes=1)
    rows = np.ones((16, 1024, 64), "f4")
    for i in range(16):
        r.append(i, {"x": rows[i]})
    r.close(timeout=60)
    assert r.lag.max_lag_bytes == 1 and r.lag.behind is False
    with h5py.File(tmp_path / "r.h5", "r") as h:
        assert h["events/x"].shape == (16 * 1024, 64)


# -- the pacing maths ---------------------------------------------------------------------


def test_a_hurried_chunk_leaves_no_debt_for_the_paced_ones_after_it():
    now = [0.0]
    profile = bgio.BackgroundIOPriority(0, 1024, 25, 1)

    def schedule(hurried: bool) -> float:
        throttle = Throttle(profile, clock=lambda: now[0])
        now[0] = 0.0
        throttle.record(1024, 0.0, 1.0, busy=1.0)  # paced: the next is due at 4
        now[0] = 1.0
        assert throttle.delay() == 3.0
        # Written at once all the same (hurried: behind its max_lag), busy 1 s.
        throttle.record(1024, 1.0, 2.0, busy=1.0, hurried=hurried)
        now[0] = 2.0
        first = throttle.delay()
        throttle.record(1024, 2.0 + first, 3.0 + first, busy=1.0)  # paced again
        now[0] = 3.0 + first
        return first + throttle.delay()

    assert schedule(hurried=True) == 3.0  # paced from the hurried chunk on: 1 s busy, 3 idle
    assert schedule(hurried=False) == 9.0  # the chunk counted as paced: its 3 s are owed


def test_a_hurried_chunk_restarts_the_rate_schedule():
    now = [0.0]
    throttle = Throttle(bgio.BackgroundIOPriority(0, 1000, 100, 1, max_rate=1000.0),
                        clock=lambda: now[0])
    for start in (0.0, 0.1, 0.2):  # three chunks of a second's worth, each in 0.1 s
        throttle.record(1000, start, start + 0.1, busy=0.1, hurried=True)
    now[0] = 0.3
    assert throttle.delay() == pytest.approx(0.9)  # one interval after the last, no more


def test_the_gauge_counts_episodes_and_seconds():
    queued = [0]
    gauge = LagGauge(1.0, 100, lambda: queued[0], "w")
    assert not gauge.behind(accepted=0.0, now=0.5, in_hand=10)
    assert gauge.behind(accepted=0.0, now=1.5, in_hand=10)  # too old
    gauge.wrote(10, 2.0)
    queued[0] = 60
    assert gauge.active
    assert gauge.behind(accepted=2.5, now=3.0, in_hand=10) is False  # caught up: ended
    assert not gauge.active
    queued[0] = 111
    assert gauge.behind(accepted=3.0, now=3.0, in_hand=10)  # 101 behind the 10 in hand
    assert not gauge.behind(accepted=3.0, now=3.0, in_hand=11)  # 100: not over
    gauge.behind(accepted=3.0, now=3.0, in_hand=10)
    gauge.wrote(20, 3.5)
    status = gauge.status()
    assert (status.episodes, status.unpaced_bytes, status.behind) == (3, 30, True)
    assert status.unpaced_seconds == pytest.approx(0.5 + 0.0 + 0.5)
    gauge.settle(in_hand=50)  # 61 queued behind: still behind, with max_lag set
    assert gauge.active
    gauge.settle(in_hand=111)  # nothing behind the run: caught up
    assert not gauge.status().behind
    assert gauge.status().unpaced_seconds == pytest.approx(1.0)


def test_with_only_max_lag_bytes_an_episode_ends_once_under_it():
    queued = [500]
    gauge = LagGauge(None, 100, lambda: queued[0], "w")
    assert gauge.behind(accepted=0.0, now=0.0, in_hand=100)
    gauge.settle(in_hand=100)  # 400 behind the run
    assert gauge.active
    queued[0] = 150
    gauge.settle(in_hand=100)  # 50: under the bound
    assert not gauge.active


class _Records(list):
    """A progress callback that keeps its records; ``ended`` is set by the last."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def __call__(self, record: bgio.WriteProgress) -> None:
        self.append(record)
        if record.finished:
            self.ended.set()


# -- Writer ------------------------------------------------------------------------------


class _HoldAt(Recorder):
    """A Recorder that stops before its ``at``-th write until ``go`` is set."""

    def __init__(self, at: int) -> None:
        super().__init__(gated=True)
        self.at = at
        self.reached = threading.Event()
        self.go = threading.Event()

    def write(self, data: memoryview) -> int:
        if len(self.writes) + 1 == self.at:
            self.reached.set()
            self.go.wait()
        return super().write(data)


@pytest.mark.slow  # (paced on purpose: a few tenths of a second)
def test_a_writer_behind_its_max_lag_bytes_goes_unpaced_then_paced_again():
    count = 16
    out = _HoldAt(at=3)
    records = _Records()
    w = bgio.Writer(out, SLOW, max_lag_bytes=4 * CHUNK)
    w.add_progress_callback(records, interval=0)
    blocks = [bytes([i]) * CHUNK for i in range(count)]
    handles = [w.write(block) for block in blocks]
    assert w.pending_bytes == count * CHUNK
    out.gate.set()  # the first chunk was held back until everything was queued
    assert out.reached.wait(30)
    assert w.lag.behind  # the third chunk, hurried: 14 chunks pending
    out.go.set()
    w.close(timeout=60)
    assert out.getvalue() == b"".join(blocks)
    unpaced = [handle.unpaced_bytes for handle in handles]
    # Behind while more than 4 chunks were queued behind the write in hand (the
    # writes from the second on; the first may have been looked at before the rest
    # came), paced after.
    assert unpaced[1:count - 5] == [CHUNK] * (count - 6)
    assert unpaced[count - 5:] == [0] * 5
    status = w.lag
    assert (status.max_lag, status.max_lag_bytes) == (None, 4 * CHUNK)
    assert (status.behind, status.episodes) == (False, 1)
    assert status.unpaced_bytes == sum(unpaced)
    assert status.unpaced_seconds > 0
    assert records.ended.wait(30)
    last = records[-1]
    assert last.finished and last.behind is False
    assert last.unpaced_bytes == status.unpaced_bytes


def test_a_writer_behind_its_max_lag_seconds_writes_unpaced():
    # Every write is older than a nanosecond when its turn comes: none is paced
    # (16 chunks at 4 MB/s would take a second).
    out = Recorder()
    w = bgio.Writer(out, SLOW, max_lag=1e-9)
    handles = [w.write(bytes([i]) * CHUNK) for i in range(16)]
    last = _Records()
    handles[-1].add_progress_callback(last)
    w.close(timeout=60)
    assert last.ended.wait(30)
    assert [handle.unpaced_bytes for handle in handles] == [CHUNK] * 16
    assert w.lag.unpaced_bytes == 16 * CHUNK
    assert last[-1].unpaced_bytes == CHUNK
    assert out.getvalue() == b"".join(bytes([i]) * CHUNK for i in range(16))


@pytest.mark.slow  # (paced on purpose: a few tenths of a second)
def test_each_burst_is_an_episode_and_an_idle_writer_is_not_behind(caplog):
    caplog.set_level("INFO", logger="bgio")
    out = Recorder()
    w = bgio.Writer(out, SLOW, max_lag_bytes=CHUNK)
    for burst in range(2):
        for i in range(8):
            w.write(bytes([i]) * CHUNK)
        w.flush(timeout=60)
        status = w.lag
        assert (status.behind, status.episodes) == (False, burst + 1)
    w.close(timeout=60)
    # 16 chunks, the last two of each burst paced (at most one chunk behind them).
    assert w.lag.unpaced_bytes == 12 * CHUNK
    said = [record.getMessage() for record in caplog.records if record.name == "bgio"]
    assert sum("is behind" in line for line in said) == 2
    assert sum("caught up after" in line for line in said) == 2


@pytest.mark.slow  # (paced on purpose: a few tenths of a second)
def test_one_write_larger_than_max_lag_bytes_is_paced():
    # Nothing is queued behind it: the writer is not behind (the write in hand is not
    # a backlog), and 4 chunks at 4 MB/s are paced.
    out = Recorder()
    w = bgio.Writer(out, SLOW, max_lag_bytes=1)
    handle = w.write(b"x" * 4 * CHUNK)
    w.close(timeout=60)
    assert handle.unpaced_bytes == 0
    assert w.lag.unpaced_bytes == 0 and w.lag.episodes == 0


def test_small_writes_written_together_are_each_credited():
    out = Recorder(gated=True)
    w = bgio.Writer(out, SLOW, max_lag=1e-9)
    handles = [w.write(bytes([i]) * 16384) for i in range(64)]
    out.gate.set()
    w.close(timeout=60)
    assert [handle.unpaced_bytes for handle in handles] == [16384] * 64
    assert w.lag.unpaced_bytes == 64 * 16384


def test_data_of_unknown_size_goes_unpaced_and_the_episode_ends():
    out = Recorder()
    w = bgio.Writer(out, SLOW, max_lag=1e-9)
    handle = w.write(bytes([i]) * CHUNK for i in range(8))
    w.close(timeout=60)
    assert handle.unpaced_bytes == 8 * CHUNK
    assert (w.lag.behind, w.lag.episodes, w.lag.unpaced_bytes) == (False, 1, 8 * CHUNK)


def test_a_run_that_stops_short_ends_the_episode():
    def data():
        for i in range(4):
            yield bytes([i]) * CHUNK
        raise RuntimeError("the camera went away")

    w = bgio.Writer(Recorder(), SLOW, max_lag=1e-9)
    handle = w.write(data())
    with pytest.raises(RuntimeError, match="the camera went away"):
        w.close(timeout=60)
    assert handle.unpaced_bytes == 4 * CHUNK
    assert w.lag.behind is False and w.lag.episodes == 1


def test_a_closed_writer_is_not_behind(tmp_path):
    w = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (64, 64), "u2", priority=SLOW,
                            max_lag=1e-9)
    w.append(np.zeros((64, 64), "u2"))  # one frame of a chunk of many, stored at close
    w.close(timeout=60)
    assert w.lag.behind is False


def test_without_max_lag_nothing_changes():
    out = Recorder()
    w = bgio.Writer(out, 1)
    records = _Records()
    w.add_progress_callback(records, interval=0)
    handle = w.write(b"x" * 1000)
    w.close(timeout=30)
    assert records.ended.wait(30)
    assert w.lag is None
    assert handle.unpaced_bytes == 0
    assert w.pending_bytes == 0
    assert (records[-1].unpaced_bytes, records[-1].behind) == (None, None)


def test_max_lag_works_beside_max_pending_bytes():
    out = Recorder()
    w = bgio.Writer(out, SLOW, max_pending_bytes=8 * CHUNK, max_lag=1e-9)
    for i in range(16):
        w.write(bytes([i]) * CHUNK)  # waits for room once 8 are pending
        assert w.pending_bytes <= 8 * CHUNK
    w.close(timeout=60)
    assert w.lag.unpaced_bytes == 16 * CHUNK


def test_a_writer_with_max_lag_is_freed_without_the_cyclic_collector(tmp_path):
    gc.disable()
    try:
        w = bgio.Writer(tmp_path / "out.bin", 1, max_lag=1.0, max_lag_bytes=10)
        w.write(b"abc")
        w.close(timeout=30)
        gone = weakref.ref(w)
        del w
        assert gone() is None
    finally:
        gc.enable()
    assert (tmp_path / "out.bin").read_bytes() == b"abc"


# -- HDF5 writers ------------------------------------------------------------------------


@pytest.mark.slow  # (paced on purpose: a few tenths of a second)
def test_a_frame_writer_behind_its_max_lag_bytes_catches_up(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    path = tmp_path / "frames.h5"
    frames = np.arange(32 * 256 * 512, dtype="u2").reshape(32, 256, 512)  # 256 KiB each
    w = bgio.h5.FrameWriter(path, "frames", (256, 512), "u2", chunk_frames=1,
                            priority=SLOW, max_lag_bytes=4 * CHUNK)
    for frame in frames:
        w.append(frame)
    gate.set()
    w.close(timeout=60)
    status = w.lag
    assert status.episodes == 1
    # Unpaced while more than 4 chunks were queued behind the one in hand: the 5 last
    # are paced (the first may have been looked at before the others came).
    assert 26 * CHUNK <= status.unpaced_bytes <= 27 * CHUNK
    stats = w.stats()
    assert stats.unpaced_bytes == status.unpaced_bytes
    assert stats.unpaced_episodes == 1
    with h5py.File(path, "r") as f:
        assert f["frames"][...].tobytes() == frames.tobytes()


def test_a_frame_writer_is_not_behind_while_it_fills_a_chunk(tmp_path):
    frames = np.zeros((41, 64, 64), "u2")
    w = bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (64, 64), "u2", chunk_frames=4,
                            priority=SLOW, max_lag=1e-9)
    handles = [w.append(frame) for frame in frames[:40]]
    for handle in handles:
        handle.result(timeout=60)
    w.append(frames[40])  # a chunk being filled: nothing queued
    assert w.lag.behind is False
    assert w.lag.episodes >= 1
    w.close(timeout=60)


def test_a_record_writer_with_max_lag_writes_unpaced(tmp_path):
    path = tmp_path / "events.h5"
    w = bgio.h5.RecordWriter(path, "events", {"x": ((64,), "f4")}, priority=SLOW,
                             chunk_events=64, max_lag=1e-9)
    rows = np.arange(4096 * 64, dtype="f4").reshape(4096, 64)
    for frame, start in enumerate(range(0, 4096, 256)):
        w.append(frame, {"x": rows[start:start + 256]})
    w.close(timeout=60)
    assert w.lag.unpaced_bytes > 0
    assert w.lag.behind is False
    with h5py.File(path, "r") as f:
        assert f["events/x"][...].tobytes() == rows.tobytes()


def test_the_encoding_pool_hurries_with_the_writer():
    now = [0.0]
    rests: list[float] = []
    behind = [True]

    class Gauge:
        @property
        def active(self) -> bool:
            return behind[0]

    def rest(seconds: float) -> None:
        rests.append(seconds)
        now[0] += seconds

    def encode(chunk):
        now[0] += 0.1
        return chunk.nbytes

    pool = EncodingPool(1, bgio.PRESETS[10], clock=lambda: now[0], rest=rest)
    pool.hurry_when(Gauge())  # type: ignore[arg-type]
    try:
        for _ in range(3):
            pool.submit(encode, np.zeros(8, "u1")).result(timeout=30)
        assert rests == []  # behind: no rest between chunks
        behind[0] = False
        for _ in range(2):
            pool.submit(encode, np.zeros(8, "u1")).result(timeout=30)
    finally:
        pool.shutdown()
    assert rests == [pytest.approx(0.4)]  # paced again, from the last hurried chunk: 20 %
