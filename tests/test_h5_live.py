"""Live files: a SWMR writer in another process, followed here; crash consistency."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import subprocess
import threading
import time

import h5py
import live_writers
import numpy as np
import pytest
from conftest import flip_byte
from live_writers import FEATURES, FRAME_SHAPE, events, frame

import bgio.h5
from bgio.h5 import FollowTimeout, FrameWriter, RecordWriter

spawn = multiprocessing.get_context("spawn")


def start(target, *args, **kwargs):
    process = spawn.Process(target=target, args=args, kwargs=kwargs)
    process.start()
    return process


def plain_follow(path, name, keys, finished, timeout=20.0):
    """A follower written against h5py and the key convention only (no bgio)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            f = h5py.File(path, "r", swmr=True)
            break
        except OSError:
            assert time.monotonic() < deadline, "file never became readable"
            time.sleep(0.01)  # the writer (another process) has not created it yet
    got = {}
    with f:
        data, key, flag = f[name], f[keys], f[finished]
        position = 0
        while time.monotonic() < deadline:
            key.refresh()
            complete = key[position:]
            ready = int(np.argmax(complete == 0)) if (complete == 0).any() else len(complete)
            if ready:
                data.refresh()
                for index in range(position, position + ready):
                    got[index] = data[index]
                position += ready
                continue
            flag.refresh()
            if flag[0]:
                key.refresh()
                if (key[position:] == 0).all():
                    return got
                continue
            # SWMR tells a reader nothing: it polls, as any reader of the convention does.
            time.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_follow_a_bgio_writer_in_another_process(tmp_path):
    path = str(tmp_path / "live.h5")
    writer = start(live_writers.bgio_frames, path, 40, 0.005)
    seen = []
    with bgio.h5.follow(path, "frames", timeout=30) as follower:
        for index, image in follower:
            assert image.tobytes() == frame(index).tobytes()
            seen.append(index)
    writer.join(60)
    assert writer.exitcode == 0
    assert seen == list(range(40))
    assert follower.finished and not follower.timed_out and follower.frames_read == 40
    with h5py.File(path, "r") as f:  # closed properly: a normal open works
        assert f["frames"].shape == (40, *FRAME_SHAPE) and f["frames"].compression == "gzip"
        assert f["frames_keys"][:].tolist() == list(range(1, 41))
        assert f["finished"][:].tolist() == [1]


@pytest.mark.slow
def test_a_reader_knowing_only_h5py_follows_a_bgio_file(tmp_path):
    path = str(tmp_path / "live.h5")
    writer = start(live_writers.bgio_frames, path, 25, 0.005)
    got = plain_follow(path, "frames", "frames_keys", "finished")
    writer.join(60)
    assert sorted(got) == list(range(25))
    assert all(got[index].tobytes() == frame(index).tobytes() for index in got)


@pytest.mark.slow
def test_follow_a_plain_h5py_writer_of_the_convention(tmp_path):
    path = str(tmp_path / "plain.h5")
    writer = start(live_writers.plain_h5py_frames, path, 25, 0.005)
    with bgio.h5.follow(path, "data/images", keys="/keys/images", finished="/finished",
                        timeout=30) as follower:
        seen = [(index, image.tobytes()) for index, image in follower]
    writer.join(60)
    assert [index for index, _ in seen] == list(range(25))
    assert all(data == frame(index).tobytes() for index, data in seen)
    assert follower.finished


@pytest.mark.slow
def test_follow_records_from_another_process(tmp_path):
    path = str(tmp_path / "events.h5")
    writer = start(live_writers.bgio_records, path, 30, 0.005)
    seen = []
    with bgio.h5.follow_records(path, "events", timeout=30) as follower:
        for index, got in follower:
            want = events(index)
            assert set(got) == set(FEATURES)
            for name in FEATURES:
                assert got[name].tobytes() == want[name].tobytes(), (index, name)
            seen.append(index)
    writer.join(60)
    assert seen == list(range(30)) and follower.finished


@pytest.mark.slow
def test_a_stalled_writer_times_out_and_a_killed_one_leaves_its_frames(tmp_path):
    path = str(tmp_path / "stalled.h5")
    stalled, resumed = spawn.Event(), spawn.Event()
    # 6 frames, flushed; a pause; then more frames, slowly, until it is killed.
    writer = start(live_writers.bgio_frames, path, 100000, 0.002, flush_interval=0.05,
                   stall_after=6, stalled=stalled, stall=1.5, resumed=resumed)
    try:
        assert stalled.wait(60)
        started = time.monotonic()
        follower = bgio.h5.follow(path, "frames", timeout=0.5)
        assert [index for index, _ in follower] == list(range(6))
        assert follower.timed_out and not follower.finished
        assert time.monotonic() - started < 1.4  # ended by the timeout, within the pause
        with pytest.raises(FollowTimeout, match="no new frame for 0.3 s"):
            list(bgio.h5.follow(path, "frames", timeout=0.3, on_timeout="raise"))
        assert resumed.wait(60)  # the writer is appending again
    finally:
        writer.kill()
        writer.join(60)
    # SIGKILL mid-write: a SWMR reader gets every frame announced, byte-exact, in order.
    with bgio.h5.follow(path, "frames", timeout=0.5) as follower:
        seen = [(index, image.tobytes()) for index, image in follower]
    assert len(seen) > 6 and [index for index, _ in seen] == list(range(len(seen)))
    assert all(data == frame(index).tobytes() for index, data in seen)
    assert follower.timed_out and not follower.finished
    # A normal open fails until the crashed writer's marks are cleared.
    copy = str(tmp_path / "copy.h5")
    shutil.copy(path, copy)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    assert bgio.h5.recover(path) is True
    assert bgio.h5.recover(path) is False  # nothing left to do
    with h5py.File(path, "r") as f:
        frames = f["frames"]
        assert frames.shape[0] >= len(seen)
        for index, data in seen:
            assert frames[index].tobytes() == data
    if shutil.which("h5clear"):  # HDF5's own tool makes the same repair
        subprocess.run(["h5clear", "-s", "--increment=0", copy], check=True, capture_output=True)
        with open(path, "rb") as ours, open(copy, "rb") as theirs:
            assert ours.read() == theirs.read()


def test_recover_refuses_what_it_cannot_check(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all" * 100)
    with pytest.raises(ValueError, match="not an HDF5 file"):
        bgio.h5.recover(tmp_path / "x.h5")
    with h5py.File(tmp_path / "old.h5", "w") as f:  # libver earliest: superblock version 0
        f["x"] = 1
    assert bgio.h5.recover(tmp_path / "old.h5") is False  # no marks, not truncated
    with open(tmp_path / "old.h5", "r+b") as f:
        f.seek(8)
        f.write(b"\x07")  # a superblock version HDF5 never wrote
    with pytest.raises(ValueError, match="unknown superblock version 7"):
        bgio.h5.recover(tmp_path / "old.h5")
    with h5py.File(tmp_path / "new.h5", "w", libver="latest") as f:
        f["x"] = 1
    assert bgio.h5.recover(tmp_path / "new.h5") is False
    with open(tmp_path / "new.h5", "r+b") as f:
        f.seek(20)
        f.write(b"\x01")  # damage an address: the checksum no longer verifies
    with pytest.raises(ValueError, match="checksum does not verify"):
        bgio.h5.recover(tmp_path / "new.h5")


def test_several_writers_share_one_live_file(tmp_path):
    path = tmp_path / "run.h5"
    with bgio.h5.open_live(path, "w") as f:
        frames = FrameWriter(f, "frames", FRAME_SHAPE, "<u2", swmr=True)
        records = RecordWriter(f, "events", FEATURES, swmr=True)
        assert not f.swmr_mode  # until the first append
        frames.append(frame(0))
        assert f.swmr_mode
        with pytest.raises(ValueError, match="already in SWMR mode"):
            FrameWriter(f, "late", FRAME_SHAPE, "<u2", swmr=True)
        records.append(0, events(1))
        frames.close()
        assert f["finished"][0] == 0  # the records are still being written
        records.close()
        assert f["finished"][0] == 1
        assert f["events/keys"][:].tolist() == [1]
        assert f["frames_keys"][:].tolist() == [1]


def test_frames_are_announced_by_time_and_by_count(tmp_path, monkeypatch):
    from bgio.h5.live import Announcer

    fired = threading.Event()  # the announcer's timer has queued its stores
    real_on_timer = Announcer._on_timer

    def on_timer(self):
        real_on_timer(self)
        fired.set()

    monkeypatch.setattr(Announcer, "_on_timer", on_timer)
    with FrameWriter(tmp_path / "a.h5", "frames", FRAME_SHAPE, "<u2", swmr=True,
                     flush_interval=None, flush_every=3) as w:
        for index in range(3):
            w.append(frame(index))
        w._last.wait(30)  # the announcement queued by the third frame
        assert w.dataset.parent["frames_keys"][:].tolist() == [1, 2, 3]
        w.append(frame(3))
        w._last.wait(30)
        assert w.dataset.parent["frames_keys"][:].tolist() == [1, 2, 3]  # one of three
    with FrameWriter(tmp_path / "b.h5", "frames", FRAME_SHAPE, "<u2", swmr=True,
                     flush_interval=0.05, chunk_frames=4) as w:
        w.append(frame(0))  # a partial chunk: stored and announced by the timer
        keys = w.dataset.parent["frames_keys"]
        assert fired.wait(10)
        w._last.wait(30)  # the announcement the timer queued
        assert keys[:].tolist() == [1]
        assert w.dataset[0].tobytes() == frame(0).tobytes()


def test_live_options_are_checked(tmp_path):
    with h5py.File(tmp_path / "old.h5", "w") as f:
        with pytest.raises(ValueError, match="SWMR needs a file opened with a libver low "
                                             "bound of 'v110' or newer"):
            FrameWriter(f, "frames", FRAME_SHAPE, "<u2", swmr=True)
        with pytest.raises(ValueError, match="SWMR needs"):
            RecordWriter(f, "events", FEATURES, swmr=True)
    for option in ({"flush_interval": 0}, {"flush_interval": "1s"}, {"flush_every": 0},
                   {"flush_interval": None, "flush_every": None}):
        with pytest.raises(ValueError, match="flush_"):
            FrameWriter(tmp_path / "x.h5", "frames", FRAME_SHAPE, "<u2", swmr=True, **option)
    with pytest.raises(ValueError, match="on_timeout"):
        bgio.h5.follow(tmp_path / "x.h5", "frames", on_timeout="shout")
    with pytest.raises(ValueError, match="timeout must be seconds > 0"):
        bgio.h5.follow(tmp_path / "x.h5", "frames", timeout=0)
    with FrameWriter(tmp_path / "done.h5", "frames", FRAME_SHAPE, "<u2", swmr=True) as w:
        w.append(frame(0))
    with pytest.raises(ValueError, match="keys: no dataset 'nope'"):
        bgio.h5.follow(tmp_path / "done.h5", "frames", keys="nope")
    with pytest.raises(ValueError, match="group: no group 'nope'"):
        bgio.h5.follow_records(tmp_path / "done.h5", "nope")
    # A finished file is followed to its end at once.
    with bgio.h5.follow(tmp_path / "done.h5", "frames", timeout=5) as follower:
        assert [index for index, _ in follower] == [0]
    assert follower.finished


@pytest.mark.slow
def test_an_idle_follower_does_not_spin(tmp_path):
    with FrameWriter(tmp_path / "idle.h5", "frames", FRAME_SHAPE, "<u2", swmr=True,
                     finished="done") as w:
        w.append(frame(0))
        w.flush()
        # Never finished while followed: the follower waits out its timeout.
        started, cpu = time.monotonic(), time.process_time()
        seen = list(bgio.h5.follow(tmp_path / "idle.h5", "frames", finished="done", timeout=1.0))
        wall, used = time.monotonic() - started, time.process_time() - cpu
    assert [index for index, _ in seen] == [0]
    assert wall >= 1.0
    assert used / wall < 0.1  # a generous bound: spinning would be near 1.0


@pytest.mark.slow
def test_a_shared_flag_is_set_after_every_sharers_last_store(tmp_path, monkeypatch):
    from bgio.h5 import base, sink

    released = threading.Event()  # a's close has handed the flag on
    real_release = base.release_finished

    def release_finished(*args, **kwargs):
        after = real_release(*args, **kwargs)
        released.set()
        return after

    monkeypatch.setattr(base, "release_finished", release_finished)

    slow = threading.Event()
    real = sink.DatasetSink.write

    def held(self, chunk):
        if self.dataset.name == "/a":
            slow.wait(30)  # writer a's stores lag behind
        return real(self, chunk)

    monkeypatch.setattr(sink.DatasetSink, "write", held)
    with bgio.h5.open_live(tmp_path / "run.h5", "w") as f:
        a = FrameWriter(f, "a", FRAME_SHAPE, "<u2", swmr=True)
        b = FrameWriter(f, "b", FRAME_SHAPE, "<u2", swmr=True)
        for index in range(5):
            a.append(frame(index))
            b.append(frame(index))
        closing_a = threading.Thread(target=a.close)
        closing_a.start()  # a's close waits for its stores
        assert released.wait(10)
        closing_b = threading.Thread(target=b.close)
        closing_b.start()  # the last to close: the flag must wait for a's stores too
        time.sleep(0.2)  # b's store would be done within this if it did not wait for a
        assert not b._last.done()  # b's closing store waits for a
        slow.set()
        closing_a.join(30)
        closing_b.join(30)
        assert f["finished"][0] == 1
        assert f["a_keys"][:].tolist() == [1, 2, 3, 4, 5]


def test_recover_keeps_a_user_block_and_refuses_a_locked_file(tmp_path):
    path = str(tmp_path / "ub.h5")
    with h5py.File(path, "w", libver="latest", userblock_size=512) as f:
        f.create_dataset("x", data=np.arange(10))
        f.swmr_mode = True
        # Mark the file as a killed writer would leave it: copy it while open.
        shutil.copy(path, path + ".crashed")
    assert bgio.h5.recover(path + ".crashed") is True
    with h5py.File(path + ".crashed", "r") as f:
        assert f["x"][:].tolist() == list(range(10))
    with (h5py.File(path, "a", libver="latest"),  # a writer holds HDF5's lock
          pytest.raises(ValueError, match="open in a writer")):
        bgio.h5.recover(path)


def test_nested_record_groups_get_their_flag_beside_them(tmp_path):
    with RecordWriter(tmp_path / "n.h5", "run1/events", FEATURES, swmr=True) as w:
        w.append(0, events(1))
    with bgio.h5.follow_records(tmp_path / "n.h5", "run1/events", timeout=5) as follower:
        assert [index for index, _ in follower] == [0]
    assert follower.finished


def test_a_follower_reads_few_keys_of_a_presized_key_dataset(tmp_path, monkeypatch):
    from bgio.h5 import followers as follow_module

    path = str(tmp_path / "big.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("frames", data=np.zeros((3, 2, 2), "u1"), maxshape=(None, 2, 2),
                         chunks=(1, 2, 2))
        keys = f.create_dataset("frames_keys", shape=(100_000,), dtype="i4", fillvalue=0)
        keys[:3] = 1
        f.create_dataset("finished", shape=(1,), dtype="i4")
    monkeypatch.setattr(follow_module, "KEY_WINDOW", 16)
    seen = list(bgio.h5.follow(path, "frames", finished=None, timeout=0.2))
    assert [index for index, _ in seen] == [0, 1, 2]


@pytest.mark.slow  # (one of the longest of the quick run)
def test_a_live_file_is_not_bloated_by_announcements(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.normal(1000, 30, (256, 32, 32)).astype("<u2")
    sizes = {}
    for swmr in (False, True):
        path = tmp_path / f"{swmr}.h5"
        options = {"swmr": True, "flush_every": 2, "flush_interval": None} if swmr else {}
        with FrameWriter(path, "frames", (32, 32), "<u2", compression="gzip", **options) as w:
            for image in frames:
                w.append(image)
        with h5py.File(path, "r") as f:
            assert f["frames"][...].tobytes() == frames.tobytes()
        sizes[swmr] = path.stat().st_size
    assert sizes[True] < 1.5 * sizes[False]  # it was 16x, with every re-store left behind
    records = {}
    for swmr in (False, True):
        path = tmp_path / f"r{swmr}.h5"
        options = {"swmr": True, "flush_every": 2, "flush_interval": None} if swmr else {}
        with RecordWriter(path, "events", FEATURES, compression="gzip", chunk_events=64,
                          **options) as w:
            for index in range(400):
                w.append(index, events(index))
        if swmr:
            with bgio.h5.follow_records(path, "events", timeout=5) as follower:
                for index, got in follower:
                    assert got["area"].tobytes() == events(index)["area"].tobytes()
            assert follower.frames_read == 400
        records[swmr] = path.stat().st_size
    from bgio.h5.live import KEY_CHUNK
    from bgio.h5.record_sink import LIVE_NEVENTS_CHUNK as NEVENTS_CHUNK

    raw = sum(index % 4 for index in range(400)) * (4 + 8 + 8)
    # Chunks announced partly are stored raw, once; plus the unfiltered nevents
    # and key chunks of a live group.
    assert records[True] < records[False] + 2 * raw + 8 * (NEVENTS_CHUNK + KEY_CHUNK)


def test_live_arguments_are_checked_before_anything_is_created(tmp_path):
    path = tmp_path / "c.h5"
    for options, error, message in [
        ({"keys": 5}, TypeError, "keys must be a str"),
        ({"finished": "a/b"}, ValueError, "finished must be a dataset name"),
        ({"keys": "frames"}, ValueError, "is the name of the frames or the flag"),
        ({"flush_interval": float("inf")}, ValueError, "flush_interval must be finite"),
    ]:
        with pytest.raises(error, match=message):
            FrameWriter(path, "frames", FRAME_SHAPE, "<u2", swmr=True, **options)
    with pytest.raises(TypeError, match="swmr must be True or False"):
        FrameWriter(path, "frames", FRAME_SHAPE, "<u2", swmr="yes")
    with h5py.File(path, "r") as f:
        assert list(f) == []  # nothing left behind by the refused writers
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["calibration"] = 1
    with pytest.raises(ValueError, match="older format"):
        FrameWriter(tmp_path / "old.h5", "frames", FRAME_SHAPE, "<u2", swmr=True)
    with pytest.raises(TypeError, match="features must be a list of dataset names"):
        bgio.h5.follow_records(path, "events", features="area")
    with pytest.raises(TypeError, match="name must be a str"):
        bgio.h5.follow(path, 123)


def gated_writer(path):
    """A writer process that has switched the file to SWMR mode and announced nothing yet;
    set the returned Event to let it write its 20 frames."""
    switched, go = spawn.Event(), spawn.Event()
    writer = start(live_writers.bgio_frames_gated, path, 20, switched, go)
    assert switched.wait(60)
    return writer, go


@pytest.mark.slow
def test_swmr_tools_started_before_the_first_announcement_reads_every_frame(tmp_path):
    swmr_tools = pytest.importorskip("swmr_tools")
    path = str(tmp_path / "early.h5")
    writer, go = gated_writer(path)
    got: dict[int, bytes] = {}
    try:
        with h5py.File(path, "r", swmr=True) as f:
            keys, data = f["frames_keys"], f["frames"]
            # In SWMR mode, nothing announced yet: the key dataset is not empty.
            assert keys.shape == (1,) and keys[:].tolist() == [0]
            follower = swmr_tools.KeyFollower([keys], timeout=5, finished_dataset=f["finished"])
            follower.check_datasets()
            assert follower.refresh() is False  # it raised ValueError on an empty key dataset
            go.set()
            for index in follower:
                data.refresh()
                got[index] = data[index].tobytes()
            assert not follower.timed_out
        writer.join(60)
        assert writer.exitcode == 0
    finally:
        writer.kill()
        writer.join(60)
    assert sorted(got) == list(range(20))
    assert [index for index in got if got[index] != frame(index).tobytes()] == []
    with h5py.File(path, "r") as f:
        assert f["frames_keys"][:].tolist() == list(range(1, 21))


@pytest.mark.slow
def test_follow_started_before_the_first_announcement_reads_every_frame(tmp_path):
    path = str(tmp_path / "early.h5")
    writer, go = gated_writer(path)
    try:
        with bgio.h5.follow(path, "frames", timeout=30) as follower:
            looked = follower.keys[0][:].tolist()
            go.set()
            seen = [(index, image.tobytes()) for index, image in follower]
        writer.join(60)
        assert writer.exitcode == 0
    finally:
        writer.kill()
        writer.join(60)
    assert looked == [0]
    assert [index for index, _ in seen] == list(range(20)) and follower.finished
    assert all(data == frame(index).tobytes() for index, data in seen)


def test_a_key_dataset_is_never_empty_and_ends_at_the_frame_count(tmp_path):
    with FrameWriter(tmp_path / "a.h5", "frames", FRAME_SHAPE, "<u2", swmr=True) as w:
        assert w.dataset.parent["frames_keys"][:].tolist() == [0]
        for index in range(3):
            w.append(frame(index))
    with RecordWriter(tmp_path / "b.h5", "events", FEATURES, swmr=True) as w:
        assert w.group["keys"][:].tolist() == [0]
        w.append(0, events(1))
        w.append(1, events(2))
    with FrameWriter(tmp_path / "c.h5", "frames", FRAME_SHAPE, "<u2", swmr=True) as w:
        pass  # no frame: the one key stays 0 ("not yet"), never set
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["frames_keys"][:].tolist() == [1, 2, 3]
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert f["events/keys"][:].tolist() == [1, 2]
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["frames_keys"][:].tolist() == [0] and f["frames"].shape[0] == 0
    with bgio.h5.follow(tmp_path / "c.h5", "frames", timeout=5) as follower:
        assert list(follower) == []
    assert follower.finished


def scan_file(path, keys_shapes, filled=None, data_shape=(3, 4, 2, 2)):
    """A finished file of a 3 x 4 scan: data[i, j] is all 4 * i + j; each key dataset
    of the given shape is 1 at the points in ``filled`` (flat C-order positions), else 0."""
    with h5py.File(path, "w", libver="latest") as f:
        points = np.arange(math.prod(data_shape[:2]), dtype="u1").reshape(data_shape[:2])
        f["data"] = np.broadcast_to(points[:, :, None, None], data_shape).copy()
        for name, shape in keys_shapes.items():
            flat = np.zeros(math.prod(shape), "i4")
            flat[list(filled.get(name, range(flat.size))) if filled else slice(None)] = 1
            f[name] = flat.reshape(shape)
        f["finished"] = np.ones(1, "i4")


@pytest.mark.parametrize("shape", [(3, 4, 1, 1), (3, 4)])
def test_scan_keys_yield_the_points_in_order(tmp_path, shape):
    path = tmp_path / "scan.h5"
    scan_file(path, {"keys": shape})
    with bgio.h5.follow(path, "data", keys="keys", timeout=5) as follower:
        seen = [(point, image.tobytes()) for point, image in follower]
    assert [point for point, _ in seen] == [(i, j) for i in range(3) for j in range(4)]
    assert all(data == bytes([4 * i + j] * 4) for (i, j), data in seen)
    assert follower.finished and follower.scan_shape == (4,) and follower.frames_read == 12


def test_several_key_datasets_a_frame_is_complete_when_all_are_set(tmp_path):
    path = tmp_path / "two.h5"
    # Detector a has done 7 points, detector b 5: points 0..4 are complete.
    scan_file(path, {"a": (3, 4, 1, 1), "b": (3, 4, 1, 1)}, {"a": range(7), "b": range(5)})
    with bgio.h5.follow(path, "data", keys=["a", "b"], timeout=5) as follower:
        assert [key.name for key in follower.keys] == ["/a", "/b"]
        seen = [point for point, _ in follower]
    assert seen == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f["frames"] = np.arange(6, dtype="u1").reshape(6, 1)
        f["k1"] = np.array([1, 1, 1, 1, 0, 0], "i8")
        f["k2"] = np.array([1, 1, 1], "i4")  # shorter: frames past it are not complete
        f["finished"] = np.ones(1, "i4")
    with bgio.h5.follow(path, "frames", keys=("k1", "k2"), timeout=5) as follower:
        assert [(index, image.tolist()) for index, image in follower] == [
            (0, [0]), (1, [1]), (2, [2])]


def test_scan_keys_that_cannot_be_followed_in_order_are_refused(tmp_path):
    path = tmp_path / "bad.h5"
    scan_file(path, {"a": (3, 4, 1, 1), "b": (3, 5), "c": (12,)})
    with pytest.raises(ValueError, match=r"keys: '/a' and '/b' do not have the same scan shape "
                                         r"\(\(n, 4\) and \(n, 5\)\)"):
        bgio.h5.follow(path, "data", keys=["a", "b"])
    with pytest.raises(ValueError, match=r"keys: '/a' and '/c' do not have the same scan shape "
                                         r"\(\(n, 4\) and \(n\)\)"):
        bgio.h5.follow(path, "data", keys=["a", "c"])
    with pytest.raises(ValueError, match=r"name: '/data' has shape \(3, 4, 2, 2\), which does "
                                         r"not start with the scan shape \(n, 5\)"):
        bgio.h5.follow(path, "data", keys="b")
    with pytest.raises(TypeError, match="keys must be a dataset name or a list of them"):
        bgio.h5.follow(path, "data", keys=5)
    with pytest.raises(ValueError, match="keys must name at least one key dataset"):
        bgio.h5.follow(path, "data", keys=[])
    # A scan axis after the first that grows while followed: refused, not skipped over.
    with h5py.File(tmp_path / "grow.h5", "w", libver="latest") as f:
        data = f.create_dataset("data", shape=(1, 2, 3), maxshape=(None, None, 3), dtype="u1")
        keys = f.create_dataset("data_keys", shape=(1, 2), maxshape=(None, None), dtype="i4")
        keys[...] = 1
        f.create_dataset("finished", shape=(1,), dtype="i4")
        follower = bgio.h5.follow(f, "data", timeout=5)
        assert [next(follower)[0], next(follower)[0]] == [(0, 0), (0, 1)]
        keys.resize((1, 4))
        data.resize((1, 4, 3))
        keys[...] = 1
        with pytest.raises(ValueError, match=r"the scan shape of '/data_keys' changed from "
                                             r"\(n, 2\) to \(n, 4\) while it was followed"):
            next(follower)


@pytest.mark.parametrize("names", [
    {"keys": "/live/keys", "nevents_name": "/live/nevents", "index_name": None},
    {"keys": "/live/keys", "nevents_name": None, "index_name": "/live/index"},
])
def test_follow_records_told_where_the_bookkeeping_went(tmp_path, names):
    path = tmp_path / "moved.h5"
    options = {"area": {"chunks": 3}, "trace": {"chunks": 5}}
    with RecordWriter(path, "events", FEATURES, swmr=True, flush_interval=None, flush_every=4,
                      dataset_options=options, compression="gzip", **names) as w:
        for index in range(41):
            w.append(index, events(index))
    with h5py.File(path, "r") as f:
        assert sorted(f["events"]) == sorted(FEATURES)
        assert f["live/keys"][:].tolist() == list(range(1, 42))
    follower = bgio.h5.follow_records(path, "events", keys=names["keys"],
                                      nevents=names["nevents_name"], index=names["index_name"],
                                      timeout=5)
    with follower:
        assert sorted(follower.features) == sorted(FEATURES)
        for index, got in follower:
            want = events(index)
            for name in FEATURES:
                assert got[name].tobytes() == want[name].tobytes(), (index, name)
    assert follower.frames_read == 41 and follower.finished


def test_follow_records_needs_nevents_or_index(tmp_path):
    path = tmp_path / "r.h5"
    with RecordWriter(path, "events", FEATURES, swmr=True, nevents_name=None) as w:
        w.append(0, events(1))
    with pytest.raises(ValueError, match="nevents and index cannot both be None"):
        bgio.h5.follow_records(path, "events", nevents=None, index=None)
    with pytest.raises(ValueError, match=r"nevents: no dataset 'nevents' in '/events' .*; if "
                                         r"its writer left it out \(nevents_name=None\), pass "
                                         r"nevents=None"):
        bgio.h5.follow_records(path, "events")
    with bgio.h5.follow_records(path, "events", nevents=None) as follower:
        assert [(index, got["area"].tolist()) for index, got in follower] == [
            (0, events(1)["area"].tolist())]


def test_live_files_are_written_in_the_hdf5_1_10_format_by_default(tmp_path):
    with FrameWriter(tmp_path / "f.h5", "frames", FRAME_SHAPE, "<u2", swmr=True) as w:
        assert w.dataset.file.libver == ("v110", "v110")
        w.append(frame(0))
    with RecordWriter(tmp_path / "r.h5", "events", FEATURES, swmr=True) as w:
        assert w.group.file.libver == ("v110", "v110")
    with bgio.h5.open_live(tmp_path / "o.h5", "w") as f:
        assert f.libver == ("v110", "v110")
    with bgio.h5.open_live(tmp_path / "l.h5", "w", libver="latest") as f:
        latest = h5py.h5f.LIBVER_LATEST
        assert f.id.get_access_plist().get_libver_bounds() == (latest, latest)
        FrameWriter(f, "frames", FRAME_SHAPE, "<u2", swmr=True, libver="latest").close()
    with FrameWriter(tmp_path / "n.h5", "frames", FRAME_SHAPE, "<u2", swmr=True,
                     libver=("v112", "v114")) as w:
        assert w.dataset.file.libver == ("v112", "v114")
        w.append(frame(0))
    with bgio.h5.follow(tmp_path / "n.h5", "frames", timeout=5) as follower:
        assert [index for index, _ in follower] == [0]
    # Without swmr the writer opens a path with h5py's bounds, or the ones it is given.
    with FrameWriter(tmp_path / "p.h5", "frames", FRAME_SHAPE, "<u2") as w:
        assert w.dataset.file.libver == h5py.File(tmp_path / "q.h5", "w").libver
    with FrameWriter(tmp_path / "e.h5", "frames", FRAME_SHAPE, "<u2", libver="earliest") as w:
        assert w.dataset.file.libver[0] == "earliest"


def test_libver_is_checked_in_the_caller(tmp_path):
    path = tmp_path / "never.h5"
    for libver, error, message in [
        (110, TypeError, (r"libver must be a format name or a \(low, high\) pair of them "
                          r"\(as for h5py.File\), got 110")),
        (("v110",), TypeError, "libver must be a format name"),
        (("v110", 110), TypeError, "libver must be a format name"),
        ("v1.10", ValueError, "libver: 'v1.10' is not one of earliest, v108, v110"),
        (("latest", "v110"), ValueError,
         "libver: the low bound 'latest' is newer than the high bound 'v110'"),
        ("earliest", ValueError, ("libver: a live file \\(SWMR\\) needs the format of HDF5 "
                                  "1.10 or newer, a low bound of 'v110', 'v112'.*; got "
                                  "'earliest', whose files cannot switch to SWMR mode")),
        (("v108", "v110"), ValueError, "libver: a live file"),
    ]:
        with pytest.raises(error, match=message):
            FrameWriter(path, "frames", FRAME_SHAPE, "<u2", swmr=True, libver=libver)
        with pytest.raises(error, match=message):
            RecordWriter(path, "events", FEATURES, swmr=True, libver=libver)
        with pytest.raises(error, match=message):
            bgio.h5.open_live(path, "w", libver=libver)
    assert not path.exists()  # refused before anything was opened
    # Not live: any format h5py knows.
    with pytest.raises(ValueError, match="libver: 'v1.10' is not one of"):
        FrameWriter(path, "frames", FRAME_SHAPE, "<u2", libver="v1.10")
    assert not path.exists()
    # An open file keeps the bounds it was opened with: libver may only agree with them.
    with bgio.h5.open_live(tmp_path / "open.h5", "w") as f:
        with pytest.raises(ValueError, match=r"libver: '.*open.h5' is open already, with "
                                             r"libver \('v110', 'v110'\), not 'latest'; libver "
                                             r"applies to a path the writer opens"):
            FrameWriter(f, "frames", FRAME_SHAPE, "<u2", swmr=True, libver="latest")
        with pytest.raises(ValueError, match="is open already"):
            RecordWriter(f, "events", FEATURES, swmr=True, libver="latest")
        assert list(f) == []
        RecordWriter(f, "events", FEATURES, swmr=True, libver=["v110", "v110"]).close()


def _h5dump_bytes(path, name, tmp_path):
    """A dataset's values as Debian's h5dump (HDF5 1.10) reads them: raw little-endian bytes."""
    out = tmp_path / f"dump{name.replace('/', '_')}.bin"
    done = subprocess.run(["h5dump", "-d", name, "-b", "LE", "-o", str(out), str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "error" not in done.stdout + done.stderr, done
    return out.read_bytes()


def _h5ls_values(path, name):
    """A dataset's values as ``h5ls -d`` prints them (HDF5 1.10), as a list of numbers."""
    done = subprocess.run(["h5ls", "-d", f"{path}/{name}"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and "*ERROR*" not in done.stdout, done
    text = done.stdout.split("Data:", 1)[1]
    return [float(token) for line in text.splitlines()
            for token in line.split(")", 1)[-1].replace(",", " ").split()]


def _expected_records(count):
    per_frame = [events(index) for index in range(count)]
    return (np.concatenate([e["area"] for e in per_frame]),
            np.concatenate([e["trace"] for e in per_frame]),
            [len(e["area"]) for e in per_frame])


def _check_with_hdf5_1_10_tools(path, count, tmp_path):
    frames = _h5dump_bytes(path, "/frames", tmp_path)
    assert frames == b"".join(frame(index).tobytes() for index in range(count))
    area, trace, nevents = _expected_records(count)
    assert _h5dump_bytes(path, "/events/area", tmp_path) == area.tobytes()
    assert _h5dump_bytes(path, "/events/trace", tmp_path) == trace.tobytes()
    assert _h5ls_values(path, "events/nevents") == nevents
    # (h5ls prints 6 significant digits; h5dump's bytes above are the exact check.)
    assert _h5ls_values(path, "events/area") == pytest.approx(area.tolist(), rel=1e-5)
    assert _h5ls_values(path, "events/index") == [
        index for index, n in enumerate(nevents) for _ in range(n)]
    assert _h5ls_values(path, "frames_keys") == list(range(1, count + 1))


needs_hdf5_tools = pytest.mark.skipif(
    not (shutil.which("h5dump") and shutil.which("h5ls")),
    reason="needs h5dump and h5ls (Debian's hdf5-tools)")


@pytest.mark.slow
@needs_hdf5_tools
def test_hdf5_1_10_tools_read_a_finished_live_file(tmp_path):
    path = tmp_path / "run.h5"
    count = 21  # records: chunks of 8 events, the last one announced partly (stored raw)
    with bgio.h5.open_live(path, "w") as f:
        frames = FrameWriter(f, "frames", FRAME_SHAPE, "<u2", compression="gzip",
                             shuffle=True, swmr=True, flush_every=4)
        records = RecordWriter(f, "events", FEATURES, compression="gzip", shuffle=True,
                               chunk_events=8, swmr=True, flush_every=4)
        for index in range(count):
            frames.append(frame(index))
            records.append(index, events(index))
        frames.close()
        records.close()
    _check_with_hdf5_1_10_tools(path, count, tmp_path)
    assert _h5ls_values(path, "finished") == [1]


@pytest.mark.slow
@needs_hdf5_tools
def test_hdf5_1_10_tools_read_a_recovered_live_file(tmp_path):
    path = tmp_path / "crashed.h5"
    done = spawn.Event()
    writer = start(live_writers.bgio_crashing, str(path), 13, done)
    writer.join(60)
    assert done.is_set() and writer.exitcode == 0
    opened = subprocess.run(["h5dump", "-H", str(path)], capture_output=True, text=True,
                            check=False)
    assert opened.returncode != 0  # the crashed writer's marks: only SWMR readers open it
    assert bgio.h5.recover(path) is True
    _check_with_hdf5_1_10_tools(path, 13, tmp_path)
    assert _h5ls_values(path, "finished") == [0]


@pytest.mark.slow
@needs_hdf5_tools
def test_hdf5_1_10_tools_cannot_read_the_newest_format(tmp_path):
    # Why the default is not "latest": h5py 3.16 bundles HDF5 2.0, and HDF5 1.10 cannot
    # read a chunked dataset in 2.0's format.
    path = tmp_path / "latest.h5"
    with FrameWriter(path, "frames", FRAME_SHAPE, "<u2", compression="gzip", swmr=True,
                     libver="latest") as w:
        w.append(frame(0))
    if h5py.version.hdf5_version_tuple < (2, 0):
        pytest.skip("this HDF5's newest format is one 1.10 may read")
    done = subprocess.run(["h5dump", "-d", "/frames", str(path)], capture_output=True,
                          text=True, check=False)
    assert "error" in done.stdout + done.stderr


def _bytes_written() -> int:
    """Bytes this process has handed to write() so far (Linux's /proc/self/io ``wchar``)."""
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("wchar")).split()[1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
def test_a_live_record_group_writes_its_events_a_few_times_not_hundreds(tmp_path):
    features = {f"f{i}": ((), "<f4") for i in range(6)}
    rng = np.random.default_rng(0)
    frames, per_frame = 1000, 30
    values = [{name: rng.normal(size=per_frame).astype("<f4") for name in features}
              for _ in range(frames)]
    before = _bytes_written()
    # An announcement every 300 events: each stores every column's partly filled chunk.
    with RecordWriter(tmp_path / "r.h5", "events", features, compression="gzip", shuffle=True,
                      swmr=True, flush_interval=None, flush_every=10) as w:
        for index, events in enumerate(values):
            w.append(index, events)
    written = _bytes_written() - before
    event_bytes = frames * per_frame * (6 * 4 + 8) + frames * 8  # features, index, nevents
    # ~9.5x here; 700x with 1 MiB chunks (each rewritten whole at every announcement).
    assert written < 15 * event_bytes
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["events/f0"].chunks == (2048,) and f["events/nevents"].chunks == (1024,)
        assert f["events/f3"][...].tobytes() == np.concatenate(
            [events["f3"] for events in values]).tobytes()


def test_chunks_announced_partly_keep_their_checksum(tmp_path):
    from bgio.h5.filters import fletcher32

    path = tmp_path / "c.h5"
    with RecordWriter(path, "events", FEATURES, compression="gzip", fletcher32=True,
                      chunk_events=64, swmr=True, flush_interval=None, flush_every=2) as w:
        for index in range(5):
            w.append(index, events(index))
    area = np.concatenate([events(index)["area"] for index in range(5)])
    with h5py.File(path, "r") as f:
        dataset = f["events/area"]
        assert dataset[...].tobytes() == area.tobytes()
        mask, stored = dataset.id.read_direct_chunk((0,))
        assert mask == 0b01  # gzip skipped for this chunk, fletcher32 applied
        body = stored[:-4]
        assert len(body) == 64 * 4 and body[: area.nbytes] == area.tobytes()
        assert stored[-4:] == fletcher32(body)
        offset = dataset.id.get_chunk_info(0).byte_offset
    flip_byte(path, offset + 1)  # a damaged byte is caught on reading
    with h5py.File(path, "r") as f, pytest.raises(OSError, match="(?i)checksum|data error|filter"):
        f["events/area"][:4]


def test_keys_must_be_numbers_and_nan_is_not_complete(tmp_path):
    path = tmp_path / "k.h5"
    with h5py.File(path, "w", libver=("v110", "v110")) as f:
        f["frames"] = np.arange(4 * 2, dtype="<u2").reshape(4, 2)
        f["frames_keys"] = np.array([1.0, 2.0, np.nan, 4.0])
        f["text_keys"] = np.array([b"done", b"done", b"", b""])
        f["finished"] = np.array([1], "<i4")
    with bgio.h5.follow(path, "frames", timeout=5) as follower:
        assert [index for index, _ in follower] == [0, 1]  # stops at the NaN
    with pytest.raises(TypeError, match=r"keys: '/text_keys' holds \|S4, not numbers"):
        bgio.h5.follow(path, "frames", keys="text_keys")
