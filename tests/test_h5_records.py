"""RecordWriter: events stored in frame order, read back byte-exact through plain h5py."""

from __future__ import annotations

import random
import threading
import time

import h5py
import numpy as np
import pytest
from conftest import flip_byte

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
    with pytest.warns(RuntimeWarning, match=r"2 frame\(s\) were dropped"):  # (refused ones)
        w.close()
    assert w.dropped_frames == 2
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


RTDC_FEATURES = {"deform": ((), "<f4"), "area_um": ((), "<f4"), "frame": ((), "<u4"),
                 "image": ((80, 250), "u1")}
RTDC_METADATA = {
    "experiment:date": "2024-05-06", "experiment:event count": 0, "experiment:run index": 1,
    "experiment:sample": "blood", "experiment:time": "12:00:00",
    "imaging:flash device": "LED", "imaging:flash duration": 2.0,
    "imaging:frame rate": 2000.0, "imaging:pixel size": 0.34,
    "imaging:roi position x": 0, "imaging:roi position y": 0,
    "imaging:roi size x": 250, "imaging:roi size y": 80,
    "setup:channel width": 20.0, "setup:chip region": "channel", "setup:flow rate": 0.04,
    "setup:flow rate sample": 0.01, "setup:flow rate sheath": 0.03,
    "setup:medium": "CellCarrier", "setup:module composition": "AcCellerator",
    "setup:identifier": "bgio-test", "setup:software version": "bgio",
}


def rtdc_events(frame: int, counts: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(frame)
    count = counts[frame]
    return {"deform": rng.random(count, dtype="f4"), "area_um": rng.random(count, "f4") * 100,
            "frame": np.full(count, frame + 1, "<u4"),
            "image": rng.integers(0, 255, (count, 80, 250), dtype="u1")}


def write_rtdc(path, counts, **options):
    """An .rtdc file as dcnum writes one: root metadata, the features in events/, zstd-5
    and fletcher32 on every feature, frames from 4 producer threads out of order."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    with h5py.File(path, "w") as f:
        for key, value in {**RTDC_METADATA, "experiment:event count": sum(counts)}.items():
            f.attrs[key] = np.bytes_(value) if isinstance(value, str) else value
        with RecordWriter(f, "events", RTDC_FEATURES, fletcher32=True,
                          dataset_options={name: hdf5plugin.Zstd(clevel=5)
                                           for name in RTDC_FEATURES}, **options) as w:
            image = w.group["image"]
            for key, value in (("CLASS", "IMAGE"), ("IMAGE_VERSION", "1.2"),
                               ("IMAGE_SUBCLASS", "IMAGE_GRAYSCALE")):
                image.attrs[key] = np.bytes_(value)
            order = list(range(len(counts)))
            random.Random(3).shuffle(order)

            def producer(frames):
                for frame in frames:
                    w.append(frame, rtdc_events(frame, counts))

            threads = [threading.Thread(target=producer, args=(order[k::4],)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()


def violations(path):
    check = pytest.importorskip("dclab.rtdc_dataset.check")
    with check.IntegrityChecker(str(path)) as checker:
        return [cue.msg for cue in checker.check() if cue.level == "violation"]


@pytest.mark.slow  # importing dclab takes a second
@pytest.mark.parametrize("bookkeeping", [{"index_name": None, "nevents_name": None},
                                         {"index_name": "/bgio/index",
                                          "nevents_name": "/bgio/nevents"}])
def test_an_rtdc_file_that_dclab_accepts(tmp_path, bookkeeping):
    pytest.importorskip("dclab")
    counts = [int(n) for n in np.random.default_rng(7).integers(0, 5, 120)]
    path = tmp_path / "m.rtdc"
    write_rtdc(path, counts, **bookkeeping)
    assert violations(path) == []
    frames = [rtdc_events(frame, counts) for frame in range(len(counts))]
    with h5py.File(path, "r") as f:
        assert sorted(f["events"]) == sorted(RTDC_FEATURES)
        for name in RTDC_FEATURES:
            stored = f["events"][name]
            want = np.concatenate([events[name] for events in frames])
            assert stored.dtype == want.dtype and stored[...].tobytes() == want.tobytes(), name
            assert stored.fletcher32 and stored.id.get_create_plist().get_filter_by_id(32015)
        # Each dataset's chunks sized on their own: ~1 MiB, not the image's 52 events.
        assert f["events/deform"].chunks == (262144,)
        assert f["events/image"].chunks == (52, 80, 250)
        if bookkeeping["nevents_name"]:
            assert f["bgio/nevents"][:].tolist() == counts
            assert f["bgio/index"][:].tolist() == np.repeat(np.arange(len(counts)),
                                                            counts).tolist()
        else:
            assert list(f) == ["events"]
    import dclab

    with dclab.new_dataset(str(path)) as ds:
        assert len(ds) == sum(counts)
        assert ds["frame"][:].tolist() == np.repeat(np.arange(1, len(counts) + 1),
                                                    counts).tolist()


@pytest.mark.slow  # importing dclab takes a second
def test_the_default_bookkeeping_is_what_dclab_refuses(tmp_path):
    pytest.importorskip("dclab")
    counts = [2, 0, 3, 1]
    write_rtdc(tmp_path / "d.rtdc", counts)
    found = violations(tmp_path / "d.rtdc")
    assert "The index feature is not enumerated correctly" in found
    assert "Features: wrong event count: 'nevents' (4 of 6)" in found


def test_dataset_options_pass_through_per_feature(tmp_path):
    counts = [3, 0, 7, 1, 12, 5]
    options = {"area": {"compression": "gzip", "compression_opts": 9, "chunks": 5},
               "peak": {"scaleoffset": 0, "chunks": (4,)},
               "trace": {"compression": "lzf", "fletcher32": True, "chunks": (3, 8)}}
    path = tmp_path / "o.h5"
    with RecordWriter(path, "events", FEATURES, dataset_options=options, compression="gzip",
                      compression_opts=1, shuffle=True, priority=1) as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count))
    check_group(path, counts)
    with h5py.File(path, "r") as f:
        area, peak, trace = f["events/area"], f["events/peak"], f["events/trace"]
        assert (area.compression, area.compression_opts, area.shuffle, area.chunks) == (
            "gzip", 9, True, (5,))
        assert (peak.compression, peak.compression_opts, peak.scaleoffset, peak.chunks) == (
            "gzip", 1, 0, (4,))
        assert (trace.compression, trace.fletcher32, trace.shuffle, trace.chunks) == (
            "lzf", True, True, (3, 8))
        index = f["events/index"]
        assert (index.compression, index.compression_opts, index.chunks) == ("gzip", 1,
                                                                            (131072,))


def test_fletcher32_files_verify(tmp_path):
    counts = [40, 3, 0, 25]
    path = tmp_path / "f.h5"
    with RecordWriter(path, "events", FEATURES, fletcher32=True, compression="gzip",
                      chunk_events=16, priority=1) as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count))
    check_group(path, counts)
    with h5py.File(path, "r") as f:
        assert all(f["events"][name].fletcher32 for name in (*FEATURES, "index", "nevents"))
    # Damage one stored byte of the area chunks: HDF5's checksum catches it on reading.
    with h5py.File(path, "r") as f:
        offset = f["events/area"].id.get_chunk_info(0).byte_offset
    flip_byte(path, offset + 3)
    with h5py.File(path, "r") as f, pytest.raises(OSError, match="(?i)checksum|data error|filter"):
        f["events/area"][:16]


def test_hdf5plugin_filters_per_feature(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    counts = [5, 2, 9]
    path = tmp_path / "p.h5"
    with RecordWriter(path, "events", FEATURES,
                      dataset_options={"trace": hdf5plugin.Zstd(clevel=5),
                                       "area": {"compression": hdf5plugin.LZ4(), "shuffle": True}},
                      compression="gzip", compression_opts=4) as w:
        for frame, count in enumerate(counts):
            w.append(frame, make_events(frame, count))
    check_group(path, counts)
    with h5py.File(path, "r") as f:
        plist = f["events/trace"].id.get_create_plist()
        assert plist.get_filter_by_id(32015)[1] == (5,)
        assert f["events/area"].id.get_create_plist().get_filter_by_id(32004) is not None
        assert f["events/peak"].compression == "gzip"


def test_dataset_option_checks_in_the_caller(tmp_path):
    path = tmp_path / "c.h5"
    with pytest.raises(TypeError, match=r"dataset_options\['area'\]: unexpected keyword "
                                        r"argument 'fletcher'"):
        RecordWriter(path, "e", FEATURES, dataset_options={"area": {"fletcher": True}})
    with pytest.raises(TypeError, match=r"dataset_options\['area'\]: unexpected keyword "
                                        r"argument 'maxshape'"):
        RecordWriter(path, "e", FEATURES, dataset_options={"area": {"maxshape": (None,)}})
    with pytest.raises(ValueError, match=r"dataset_options: 'volume' is not one of the "
                                         r"features \['area', 'peak', 'trace'\]"):
        RecordWriter(path, "e", FEATURES, dataset_options={"volume": {}})
    with pytest.raises(TypeError, match=r"dataset_options\['area'\] must be a mapping"):
        RecordWriter(path, "e", FEATURES, dataset_options={"area": "gzip"})
    with pytest.raises(ValueError, match=r"dataset_options\['trace'\]\['chunks'\]: a chunk must "
                                         r"hold whole events, shape \(n, \*\(8,\)\) for this "
                                         r"feature; got \(4, 4\)"):
        RecordWriter(path, "e", FEATURES, dataset_options={"trace": {"chunks": (4, 4)}})
    with pytest.raises(TypeError, match="fletcher32 must be True or False"):
        RecordWriter(path, "e", FEATURES, fletcher32=1)
    with pytest.raises(ValueError, match=r"dataset_options\['trace'\]\['compression'\]: "
                                         r"'nope' is not one of gzip, lzf, szip"):
        RecordWriter(path, "e", FEATURES, dataset_options={"trace": {"compression": "nope"}})
    assert not path.exists()  # refused before the file was opened
    # What h5py itself refuses (a filter not available) leaves nothing behind, groups neither.
    with h5py.File(path, "w"):
        pass
    with pytest.raises(ValueError, match="(?i)compression|filter"):
        RecordWriter(path, "e/f", FEATURES, index_name="book/index",
                     dataset_options={"trace": {"compression": 32999}})
    with h5py.File(path, "r") as f:
        assert list(f) == []
    with pytest.raises(ValueError, match=r"index_name must be a dataset name or path"):
        RecordWriter(path, "e", FEATURES, index_name="a//b")
    with pytest.raises(TypeError, match=r"nevents_name must be a dataset name or path, or None"):
        RecordWriter(path, "e", FEATURES, nevents_name=3)
    with pytest.raises(ValueError, match="index_name, nevents_name and keys must differ"):
        RecordWriter(path, "e", FEATURES, index_name="/x/n", nevents_name="/x/n")
    with pytest.raises(ValueError, match="'area' is the name of the index, nevents or keys"):
        RecordWriter(path, "e", FEATURES, nevents_name="area")
    with pytest.raises(ValueError, match="index_name and nevents_name cannot both be None "
                                         "with swmr"):
        RecordWriter(tmp_path / "s.h5", "e", FEATURES, index_name=None, nevents_name=None,
                     swmr=True)
    RecordWriter(path, "e", FEATURES, nevents_name="/book/nevents").close()
    with pytest.raises(ValueError, match=r"nevents_name: '/book/nevents' already exists"):
        RecordWriter(path, "f", FEATURES, nevents_name="/book/nevents")


def test_chunks_of_different_lengths_fill_at_their_own_pace(tmp_path):
    rng = random.Random(5)
    counts = [rng.choice([0, 1, 3, 9, 40]) for _ in range(300)]
    order = list(range(len(counts)))
    rng.shuffle(order)
    path = tmp_path / "r.h5"
    options = {"area": {"chunks": 7}, "peak": {"chunks": 64}, "trace": {"chunks": 3}}
    handles = {}
    with RecordWriter(path, "events", FEATURES, dataset_options=options, chunk_events=50,
                      compression="gzip", shuffle=True, priority=1) as w:
        for frame in order:
            handles[frame] = w.append(frame, make_events(frame, counts[frame]))
            if frame % 97 == 0:
                w.flush()  # partial chunks stored, then filled and stored again
    check_group(path, counts)
    assert all(handles[frame].result() == counts[frame] * (4 + 2 + 8 + 8) for frame in handles)
    with h5py.File(path, "r") as f:
        assert [f["events"][name].chunks[0] for name in (*FEATURES, "index")] == [7, 64, 3, 50]


def test_bookkeeping_moved_or_left_out(tmp_path):
    counts = [2, 0, 4, 1, 0]
    layouts = {"moved": {"index_name": "bookkeeping/frame_of_event",
                         "nevents_name": "/counts/events_per_frame"},
               "none": {"index_name": None, "nevents_name": None},
               "index only": {"nevents_name": None}}
    for label, names in layouts.items():
        path = tmp_path / f"{label}.h5"
        with RecordWriter(path, "events", FEATURES, chunk_events=3, **names) as w:
            w.append(0, make_events(0, 2))
            w.append(3, make_events(3, 1))  # 1, 2 and 4 never come: ...
            w.append(5, {})
            for frame in (1, 2, 4):
                w.append(frame, make_events(frame, counts[frame]))
        want = expected(counts + [0])
        with h5py.File(path, "r") as f:
            for name in FEATURES:
                assert f["events"][name][...].tobytes() == want[name].tobytes(), (label, name)
            if label == "moved":
                assert sorted(f["events"]) == ["area", "bookkeeping", "peak", "trace"]
                assert f["events/bookkeeping/frame_of_event"][:].tolist() == \
                    want["index"].tolist()
                assert f["counts/events_per_frame"][:].tolist() == counts + [0]
            elif label == "none":
                assert sorted(f["events"]) == sorted(FEATURES) and list(f) == ["events"]
            else:
                assert sorted(f["events"]) == sorted([*FEATURES, "index"])


def test_missing_frames_without_nevents_are_listed_on_the_group(tmp_path):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES, nevents_name=None)
    w.append(0, make_events(0, 2))
    w.append(2, make_events(2, 1))
    with pytest.warns(RuntimeWarning, match="never appended"):
        w.close()
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events"].attrs["missing_frames"].tolist() == [1]
        assert f["events/index"][:].tolist() == [0, 0, 2]


def test_a_failed_store_leaves_no_rows_of_fill_values(tmp_path):
    path = tmp_path / "r.h5"
    w = RecordWriter(path, "events", FEATURES, chunk_events=2, compression="gzip")

    class Full:
        compresses = True

        def encode(self, chunk):
            raise OSError(28, "No space left on device")

    w._columns[1].pipeline = Full()  # peak: its chunk fails to encode
    with pytest.raises(OSError, match="No space"):
        w.append(0, make_events(0, 2)).result(timeout=30)
    with pytest.raises(OSError, match="No space"):
        w.close()
    with h5py.File(path, "r") as f:
        events = f["events"]
        # Every chunk of a store is encoded before any is stored: peak's failed,
        # so none grew, area neither: no rows of fill values a reader would take
        # for events, and no column ahead of the others.
        assert [events[name].shape[0]
                for name in ("area", "peak", "trace", "index", "nevents")] == [0, 0, 0, 0, 0]
        assert events["index"].fillvalue == -1


@pytest.mark.parametrize("fill", [-1, 0])
def test_follow_records_by_index_ignores_rows_no_frame_holds(tmp_path, fill):
    # What a store that failed in HDF5 leaves: the index grown by rows of its fill value.
    path = tmp_path / "f.h5"
    areas = np.arange(7, dtype="<f4")
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        group = f.create_group("events")
        group["area"] = areas
        group.create_dataset("index", data=[0, 0, 1, 2, 2, fill, fill], dtype="<i8",
                             fillvalue=fill)
        group["keys"] = np.array([1, 2, 3], "<i8")
        f["finished"] = np.array([1], "<i4")
    with bgio.h5.follow_records(path, "events", nevents=None, timeout=5) as follower:
        got = [(frame, events["area"].tolist()) for frame, events in follower]
    assert got == [(0, [0.0, 1.0]), (1, [2.0]), (2, [3.0, 4.0])]
    assert follower.finished


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"area": {"shuffle": "no"}}, TypeError,
     r"dataset_options\['area'\]\['shuffle'\] must be True or False, got 'no'"),
    ({"area": {"fletcher32": 1}}, TypeError,
     r"dataset_options\['area'\]\['fletcher32'\] must be True or False, got 1"),
    ({"area": {"track_times": None, "compression": 1.5}}, TypeError,
     (r"dataset_options\['area'\]\['compression'\] must be a name, a filter id or an "
     r"hdf5plugin filter object, got 1.5")),
    ({"peak": {"fillvalue": 70000}}, ValueError,
     (r"dataset_options\['peak'\]\['fillvalue'\]: 70000 is not a number that uint16 holds "
     r"exactly")),
    ({"peak": {"fillvalue": "x"}}, ValueError, r"\['fillvalue'\]: 'x' is not a number"),
    ({"peak": {"fillvalue": 1.5}}, ValueError, r"\['fillvalue'\]: 1.5 is not a number"),
    ({"area": {"scaleoffset": -1}}, ValueError, r"\['scaleoffset'\] must be >= 0, got -1"),
    ({"area": {"scaleoffset": "2"}}, TypeError, r"\['scaleoffset'\] must be an int or None"),
])
def test_dataset_options_are_checked_per_feature_before_anything_is_made(tmp_path, options,
                                                                         error, message):
    path = tmp_path / "c.h5"
    with pytest.raises(error, match=message):
        RecordWriter(path, "e", FEATURES, dataset_options=options)
    assert not path.exists()


def test_filter_objects_and_their_options(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    path = tmp_path / "c.h5"
    with pytest.raises(ValueError, match=r"compression: a filter object \(Zstd\) carries its "
                                         r"own options; leave out 'compression_opts'"):
        RecordWriter(path, "e", FEATURES, compression=hdf5plugin.Zstd(), compression_opts=3)
    with pytest.raises(ValueError, match=r"dataset_options\['area'\]: a filter object \(LZ4\) "
                                         r"carries its own options"):
        RecordWriter(path, "e", FEATURES, dataset_options={
            "area": {"compression": hdf5plugin.LZ4(), "compression_opts": (0,)}})
    with pytest.raises(ValueError, match="compression: 'zstd' is not one of gzip, lzf, szip"):
        RecordWriter(path, "e", FEATURES, compression="zstd")
    assert not path.exists()
    RecordWriter(path, "e", FEATURES, compression=hdf5plugin.Zstd(clevel=2),
                 dataset_options={"peak": {"fillvalue": 7, "scaleoffset": 0}}).close()


@pytest.mark.parametrize(("options", "message"), [
    ({"keys": "/finished"}, r"keys: '/finished' is the place of the finished flag"),
    ({"index_name": "/finished"}, r"index_name: '/finished' is the place of the finished"),
    ({"nevents_name": "area/nevents"},
     r"nevents_name: '/e/area/nevents' would go through the dataset '/e/area'"),
    ({"keys": "/e/index/keys"}, (r"keys: '/e/index/keys' would go through the dataset "
                                r"'/e/index'")),
    ({"index_name": "/cal/index"}, (r"index_name: '/cal/index' would go through '/cal', which "
                                   r"is not a group")),
])
def test_bookkeeping_places_that_cannot_be_are_refused(tmp_path, options, message):
    path = tmp_path / "b.h5"
    with bgio.h5.open_live(path, "w") as f:
        f["cal"] = 1
    with pytest.raises(ValueError, match=message):
        RecordWriter(path, "e", FEATURES, swmr=True, **options)
    with h5py.File(path, "r") as f:
        assert list(f) == ["cal"]  # nothing made, no group left behind


def test_a_waiting_frame_keeps_its_events_as_they_were_at_the_call(tmp_path):
    area = np.zeros(3, "<f4")
    peak = np.zeros(3, "<u2")
    trace = np.zeros((3, 8), "u1")
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES) as w:
        for frame in range(10, 0, -1):  # frames 10..1 wait for 0, from reused arrays
            area[...], peak[...], trace[...] = frame, frame, frame
            w.append(frame, {"area": area, "peak": peak, "trace": trace})
        w.append(0, {})
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/area"][:].tolist() == [float(i) for i in range(1, 11) for _ in range(3)]
        assert f["events/trace"][:].tobytes() == np.repeat(np.arange(1, 11, dtype="u1"), 24).tobytes()


def test_copy_false_keeps_a_waiting_frames_arrays_by_reference(tmp_path):
    events = make_events(1, 2)
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, copy=False) as w:
        w.append(1, events)
        events["peak"][...] = 9  # before its handle is done: the hazard copy=False documents
        w.append(0, {})
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/peak"][:].tolist() == [9, 9]
    with pytest.raises(TypeError, match="copy must be True or False"):
        w2 = RecordWriter(tmp_path / "s.h5", "events", FEATURES)
        try:
            w2.append(0, {}, copy="yes")
        finally:
            w2.close()


@pytest.mark.slow  # 100,000 appends
def test_many_missing_frames_are_ranges_beside_nevents(tmp_path):
    w = RecordWriter(tmp_path / "r.h5", "events", FEATURES)
    for start in range(100, 200_000, 200):  # 100,000 of 200,000 frames never come
        for frame in range(start, start + 100):
            w.append(frame, {})
    with pytest.warns(RuntimeWarning, match=r"100000 frame\(s\) of 200000 never appended"):
        w.close()
    expected = [i for start in range(0, 200_000, 200) for i in range(start, start + 100)]
    assert w.missing == expected
    with h5py.File(tmp_path / "r.h5", "r") as f:
        ranges = f["events_missing"][...]
        assert [i for start, stop in ranges for i in range(start, stop)] == expected
        assert "missing_frames" not in f["events/nevents"].attrs


def test_missing_frames_without_nevents_are_ranges_beside_the_group(tmp_path):
    with pytest.warns(RuntimeWarning), RecordWriter(tmp_path / "r.h5", "events", FEATURES,
                                                    nevents_name=None) as w:
        w.append(2, {})
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events_missing"][...].tolist() == [[0, 2]]
        assert sorted(f["events"]) == ["area", "index", "peak", "trace"]


@pytest.mark.parametrize("frame_index", [2**64, 2**70, 2**63 - 1])
def test_frame_indices_hdf5_cannot_hold_are_refused(tmp_path, frame_index):
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES) as w:
        with pytest.raises(ValueError, match=r"frame_index: frame \d+ is beyond"):
            w.append(frame_index, {})
        w.append(0, {})
    assert w.missing == []


@pytest.mark.parametrize("shape", [(2**64,), (2**40, 2**40)])
def test_feature_shapes_hdf5_cannot_hold_are_refused(tmp_path, shape):
    with pytest.raises(ValueError, match=r"features\['a'\] shape"):
        RecordWriter(tmp_path / "r.h5", "events", {"a": (shape, "u1")})
    assert not (tmp_path / "r.h5").exists()
