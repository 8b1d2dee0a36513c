"""RecordWriter: events stored in frame order, read back byte-exact through plain h5py."""

from __future__ import annotations

import random
import threading
import time

import h5py
import numpy as np
import pytest

import bgio
from bgio.h5 import RecordWriter
from bgio.h5.records import NEVENTS_CHUNK, default_chunk_events

FEATURES = {"area": ((), "<f4"), "peak": ((), "<u2"), "trace": ((8,), "u1")}


def make_events(frame: int, count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(frame)
    return {
        "area": rng.normal(100, 20, count).astype("<f4"),
        "peak": rng.integers(0, 65535, count, dtype="<u2"),
        "trace": rng.integers(0, 255, (count, 8), dtype="u1"),
    }


def expected(counts: list[int]) -> dict[str, np.ndarray]:
    """What the group must hold for frames 0..n-1 with these event counts."""
    frames = [make_events(frame, count) for frame, count in enumerate(counts)]
    columns = {name: np.concatenate([events[name] for events in frames]) for name in FEATURES}
    columns["index"] = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    columns["nevents"] = np.asarray(counts, dtype=np.int64)
    return columns


def waiting_for_room(monkeypatch) -> threading.Event:
    """An Event set when an append starts to wait for room under max_pending_bytes.

    It is set under the writer's lock, which the waiting producer lets go
    of only inside its wait: an append made after the Event is seen comes
    after the producer is waiting.
    """
    from bgio.h5 import records

    waiting = threading.Event()
    real = records.wait_for_room

    def wait_for_room(room, has_room, block, *args, **kwargs):
        if block and not has_room():
            waiting.set()
        return real(room, has_room, block, *args, **kwargs)

    monkeypatch.setattr(records, "wait_for_room", wait_for_room)
    return waiting


def check_group(path, counts, group="events"):
    want = expected(counts)
    with h5py.File(path, "r") as f:
        for name, values in want.items():
            stored = f[group][name]
            assert stored.dtype == values.dtype, name
            assert stored.shape == values.shape, name
            assert stored[...].tobytes() == values.tobytes(), name


@pytest.mark.parametrize(("compression", "shuffle"), [(None, False), ("gzip", False), ("gzip", True)])
@pytest.mark.parametrize("priority", [1, 7])
def test_events_in_order_read_back_exactly(tmp_path, compression, shuffle, priority):
    counts = [3, 0, 7, 1, 0, 0, 12, 5]
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, compression=compression,
                      shuffle=shuffle, chunk_events=4, priority=priority) as w:
        handles = [w.append(frame, make_events(frame, count)) for frame, count in enumerate(counts)]
        assert w.frames_written == len(counts) and w.events_written == sum(counts)
    assert all(h.done() and h.exception() is None for h in handles)
    assert [h.result() for h in handles] == [count * (4 + 2 + 8 + 8) for count in counts]
    check_group(tmp_path / "r.h5", counts)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        for name in (*FEATURES, "index", "nevents"):
            assert f["events"][name].compression == compression
            assert f["events"][name].shuffle == shuffle
        assert f["events/area"].chunks == (4,) and f["events/trace"].chunks == (4, 8)
        assert f["events/nevents"].chunks == (NEVENTS_CHUNK,)


def test_a_reader_finds_a_frames_events_by_offset(tmp_path):
    counts = [2, 0, 4, 1]
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES) as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count))
    with h5py.File(tmp_path / "r.h5", "r") as f:
        nevents = f["events/nevents"][:]
        offsets = np.concatenate([[0], np.cumsum(nevents)])
        for frame in range(len(counts)):
            rows = slice(offsets[frame], offsets[frame + 1])
            assert np.array_equal(f["events/peak"][rows], make_events(frame, counts[frame])["peak"])
            assert (f["events/index"][rows] == frame).all()


def test_frames_from_several_threads_in_any_order(tmp_path):
    rng = random.Random(1)
    counts = [rng.choice([0, 1, 2, 5, 30]) for _ in range(400)]
    order = list(range(len(counts)))
    rng.shuffle(order)
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, compression="gzip", shuffle=True,
                      chunk_events=64, priority=1) as w:
        def producer(frames):
            for frame in frames:
                w.append(frame, make_events(frame, counts[frame]))

        threads = [threading.Thread(target=producer, args=(order[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert w.missing == []
    check_group(tmp_path / "r.h5", counts)


def test_a_frame_larger_than_a_chunk_spans_chunks(tmp_path):
    counts = [1, 10, 2]
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, chunk_events=3,
                      compression="gzip") as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count))
    check_group(tmp_path / "r.h5", counts)


def test_flush_stores_a_partial_chunk_that_later_fills(tmp_path):
    counts = [2, 1]
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, chunk_events=8,
                      compression="gzip", shuffle=True) as w:
        early = w.append(1, make_events(1, 1))  # waits for frame 0: not stored by flush
        w.append(0, make_events(0, 2))
        w.flush()
        assert early.done()
        assert w.group["nevents"][:].tolist() == [2, 1]
        assert w.group["area"].shape == (3,)
        for frame in range(2, 6):
            counts.append(frame)
            w.append(frame, make_events(frame, frame))
    check_group(tmp_path / "r.h5", counts)


@pytest.mark.slow
def test_nevents_past_one_chunk(tmp_path):
    counts = [frame % 3 for frame in range(NEVENTS_CHUNK + 10)]
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, priority=1) as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count) if count else {})
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/nevents"][:].tolist() == counts
        assert f["events/index"].shape == (sum(counts),)


def test_frames_that_never_came_are_reported(tmp_path):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES)
    w.append(0, make_events(0, 2))
    w.append(3, make_events(3, 1))  # 1 and 2 never come
    with pytest.warns(RuntimeWarning, match=r"2 frame\(s\) of 4 never appended \(first: \[1, 2\]\)"):
        w.close()
    assert w.missing == [1, 2]
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/nevents"][:].tolist() == [2, 0, 0, 1]
        assert f["events/nevents"].attrs["missing_frames"].tolist() == [1, 2]
        assert f["events/index"][:].tolist() == [0, 0, 3]


def test_missing_frames_can_raise(tmp_path):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, on_missing="raise")
    w.append(1, {})
    with pytest.raises(ValueError, match="never appended"):
        w.close()
    with h5py.File(tmp_path / "r.h5", "r") as f:  # closed all the same
        assert f["events/nevents"][:].tolist() == [0, 0]


def test_an_open_group_is_used_and_left_open(tmp_path):
    with h5py.File(tmp_path / "r.h5", "w") as f:
        run = f.create_group("run1")
        run.create_group("events").attrs["instrument"] = "cytometer"
        with RecordWriter(run, "events", {"x": ((), "i4")}) as w:
            w.append(0, {"x": np.array([1, 2], "i4")})
            w.group.attrs["rate"] = 10.0
        assert f  # still open
        assert f["run1/events/x"][:].tolist() == [1, 2]
        assert f["run1/events"].attrs["instrument"] == "cytometer"
        assert f["run1/events"].attrs["rate"] == 10.0


def test_checks_in_the_caller(tmp_path):
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, on_missing="ignore") as w:
        good = make_events(0, 2)
        with pytest.raises(TypeError, match="events must be a mapping"):
            w.append(0, [1, 2])
        with pytest.raises(ValueError, match=r"missing features \['trace'\], unknown features \['x'\]"):
            w.append(0, {"area": good["area"], "peak": good["peak"], "x": good["trace"]})
        with pytest.raises(ValueError, match=r"events\['trace'\]: expected shape \(n, \*\(8,\)\)"):
            w.append(0, {**good, "trace": np.zeros((2, 7), "u1")})
        with pytest.raises(ValueError, match="'area' has 2, 'trace' has 3"):
            w.append(0, {**good, "trace": np.zeros((3, 8), "u1")})
        with pytest.raises(TypeError, match=r"events\['peak'\]: int32 cannot be stored as uint16"):
            w.append(0, {**good, "peak": good["peak"].astype("i4")})
        with pytest.raises(TypeError, match=r"events\['peak'\]: these values cannot be stored"):
            w.append(0, {**good, "peak": [1.5, 2]})
        with pytest.raises(TypeError, match=r"events\['peak'\]: these values cannot be stored"):
            w.append(0, {**good, "peak": [-1, 2]})
        w.append(0, {**good, "peak": [1, 2], "area": [0.5, 2.0]})  # exact values are fine
        with pytest.raises(ValueError, match="frame 0 was already appended"):
            w.append(0, good)
        w.append(5, {})
        with pytest.raises(ValueError, match="frame 5 was already appended"):
            w.append(5, {})
        with pytest.raises(ValueError, match="frame_index must be >= 0"):
            w.append(-1, good)
        with pytest.raises(TypeError, match="frame_index must be an int"):
            w.append(1.0, good)
    with pytest.raises(ValueError, match="append to a closed RecordWriter"):
        w.append(9, good)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/peak"][:2].tolist() == [1, 2]


def test_feature_and_option_checks(tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(TypeError, match="features must be a non-empty mapping"):
        RecordWriter(path, "e", {})
    with pytest.raises(TypeError, match=r"features\['a'\] must be a \(shape, dtype\) tuple"):
        RecordWriter(path, "e", {"a": "f4"})
    with pytest.raises(ValueError, match="'a/b' is not a dataset name"):
        RecordWriter(path, "e", {"a/b": ((), "f4")})
    with pytest.raises(ValueError, match="'index' is the name of the index, nevents or keys dataset"):
        RecordWriter(path, "e", {"index": ((), "f4")})
    with pytest.raises(ValueError, match=r"features\[.a.\] shape must have sizes >= 1"):
        RecordWriter(path, "e", {"a": ((0,), "f4")})
    with pytest.raises(TypeError, match="holds Python objects"):
        RecordWriter(path, "e", {"a": ((), object)})
    with pytest.raises(ValueError, match="chunk_events must be an int >= 1"):
        RecordWriter(path, "e", {"a": ((), "f4")}, chunk_events=0)
    with pytest.raises(ValueError, match="max_pending_bytes"):
        RecordWriter(path, "e", {"a": ((), "f4")}, max_pending_bytes=0)
    with pytest.raises(ValueError, match="on_missing"):
        RecordWriter(path, "e", {"a": ((), "f4")}, on_missing="shout")
    with pytest.raises(TypeError, match="target must be a path"):
        RecordWriter(3, "e", {"a": ((), "f4")})
    RecordWriter(path, "e", {"a": (2, "f4")}).close()  # an int shape is a vector
    with h5py.File(path, "r") as f:
        assert f["e/a"].shape == (0, 2)
    with pytest.raises(ValueError, match=r"'/e' already has \['a', 'index', 'nevents'\]"):
        RecordWriter(path, "e", {"a": ((), "f4")})
    assert default_chunk_events(4) == 262144 and default_chunk_events(8) == 131072


def test_a_producer_ahead_of_a_missing_frame_waits(tmp_path, monkeypatch):
    size = 1000 * (4 + 2 + 8 + 8)  # one frame of 1000 events
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, max_pending_bytes=2 * size)
    w.append(1, make_events(1, 1000))
    w.append(2, make_events(2, 1000))
    assert w.pending_bytes == 2 * size
    with pytest.raises(bgio.QueueFull, match="no room for frame 3"):
        w.append(3, make_events(3, 1000), block=False)
    with pytest.raises(bgio.QueueFull, match="after 0.05 s"):
        w.append(3, make_events(3, 1000), timeout=0.05)
    waiting = []
    blocked = waiting_for_room(monkeypatch)
    thread = threading.Thread(target=lambda: waiting.append(w.append(3, make_events(3, 1000))))
    thread.start()
    assert blocked.wait(10)
    assert not waiting  # still waiting for room
    w.append(0, make_events(0, 1000))  # the missing frame is let in over the bound
    thread.join(timeout=30)
    assert waiting and not thread.is_alive()
    w.close()
    check_group(tmp_path / "r.h5", [1000] * 4)


def test_close_wakes_a_waiting_producer(tmp_path, monkeypatch):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, max_pending_bytes=1,
                     on_missing="ignore")
    w.append(1, make_events(1, 5))
    errors = []

    def producer():
        try:
            w.append(2, make_events(2, 5))
        except ValueError as exc:
            errors.append(exc)

    blocked = waiting_for_room(monkeypatch)
    thread = threading.Thread(target=producer)
    thread.start()
    assert blocked.wait(10)
    w.close()
    thread.join(timeout=30)
    assert [str(e) for e in errors] == ["append to a closed RecordWriter"]


@pytest.mark.slow
def test_memory_stays_bounded_while_stores_lag(tmp_path, monkeypatch):
    from bgio.h5 import record_sink

    real_write = record_sink.RecordSink.write

    def slow_write(self, block):
        time.sleep(0.002)  # a slow disk: the pace of the stores, not a synchronisation
        return real_write(self, block)

    monkeypatch.setattr(record_sink.RecordSink, "write", slow_write)
    frame_bytes = 100 * (4 + 2 + 8 + 8)
    bound = 20 * frame_bytes
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, chunk_events=100,
                     max_pending_bytes=bound)
    peak = 0
    for frame in range(200):
        w.append(frame, make_events(frame, 100))
        peak = max(peak, w.pending_bytes)
    w.close()
    assert peak <= bound + frame_bytes
    check_group(tmp_path / "r.h5", [100] * 200)


def test_a_storage_error_surfaces_on_handles_and_close(tmp_path):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, chunk_events=2, compression="gzip")

    class Full:
        compresses = True

        def encode(self, chunk):
            raise OSError(28, "No space left on device")

    w._columns[1].pipeline = Full()
    first = w.append(0, make_events(0, 2))  # fills a chunk: stored now
    with pytest.raises(OSError, match="No space"):
        first.result(timeout=30)
    later = w.append(1, make_events(1, 2))
    with pytest.raises(bgio.ChainError):
        later.result(timeout=30)
    with pytest.raises(OSError, match="No space"):
        w.close()
    with h5py.File(tmp_path / "r.h5", "r") as f:  # closed and valid after the failure
        assert f["events/peak"].dtype == np.dtype("<u2")


def test_h5dump_reads_the_records(tmp_path):
    import shutil
    import subprocess

    if shutil.which("h5dump") is None:
        pytest.skip("h5dump (Debian's hdf5-tools) is not installed")
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, compression="gzip", shuffle=True) as w:
        w.append(0, make_events(0, 2))
        w.append(1, {})
        w.append(2, make_events(2, 1))
    out = subprocess.run(["h5dump", "-d", "/events/nevents", str(tmp_path / "r.h5")],
                         capture_output=True, text=True, check=True).stdout
    assert "(0): 2, 0, 1" in out
    out = subprocess.run(["h5dump", "-d", "/events/peak", str(tmp_path / "r.h5")],
                         capture_output=True, text=True, check=True).stdout
    peaks = [*make_events(0, 2)["peak"], *make_events(2, 1)["peak"]]
    assert "(0): " + ", ".join(str(p) for p in peaks) in out


def test_the_producer_of_the_awaited_record_frame_is_woken(tmp_path, monkeypatch):
    w = RecordWriter(tmp_path / "r.h5", "ev", {"a": ((), "f8")}, max_pending_bytes=1000)
    w.append(7, {"a": np.zeros(50)})  # held (800 bytes), waiting for 0..6
    accepted = threading.Event()
    blocked = waiting_for_room(monkeypatch)

    def producer():
        w.append(5, {"a": np.zeros(20)})  # 800 + 320 > 1000: waits, as frame 5 is not next
        accepted.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert blocked.wait(10)
    for frame in range(5):  # 0..4 in order: frame 5 is now the awaited one
        w.append(frame, {"a": np.zeros(1)})
    assert accepted.wait(10)
    thread.join()
    w.append(6, {"a": np.zeros(1)})
    w.close()
