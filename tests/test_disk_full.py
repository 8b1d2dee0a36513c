"""A disk that fills: HDF5 writers check before the run and before each store, and stop clean."""

from __future__ import annotations

import errno
import gc
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import h5py
import numpy as np
import pytest

import bgio
import bgio.h5
from bgio import space
from bgio.space import SpaceWatch, check_min_free

MIB = 1024 * 1024
FRAME = (256, 512)  # 256 KiB of uint16


@pytest.fixture
def small_disk():
    """An 8 MiB tmpfs (root only: skipped elsewhere)."""
    folder = tempfile.mkdtemp(prefix="bgio-small-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", folder],
                             check=False, capture_output=True)
    if mounted.returncode != 0:
        os.rmdir(folder)
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield folder
    finally:
        gc.collect()
        subprocess.run(["umount", "-l", folder], check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_unraisable(monkeypatch):
    """Fail if anything is raised where nothing can catch it (an h5py destructor)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    yield seen
    gc.collect()
    assert seen == []


def _frames(count: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 60000, (count, *FRAME), dtype="u2")


# -- the start ---------------------------------------------------------------------------


def test_a_disk_with_less_than_min_free_is_refused_before_anything_is_made(small_disk):
    path = os.path.join(small_disk, "f.h5")
    with pytest.raises(bgio.DiskFull, match=r"^FrameWriter 'frames': 8\.0 MiB free on the disk "
                       r"of '.*', less than min_free=16777216 bytes; nothing was written$") as info:
        bgio.h5.FrameWriter(path, "frames", FRAME, "u2", min_free=16 * MIB)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert (info.value.stored, info.value.free) == (0, 8 * MIB)
    with pytest.raises(bgio.DiskFull, match=r"^RecordWriter 'events': 8\.0 MiB free"):
        bgio.h5.RecordWriter(path, "events", {"x": ((), "f4")}, min_free=16 * MIB)
    assert os.listdir(small_disk) == []


def test_the_default_min_free_is_smaller_on_a_small_file_system(small_disk, tmp_path):
    assert space.default_min_free(small_disk) == space.SMALLEST_DEFAULT  # 8 MiB / 20 < 1 MiB
    total = os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    assert space.default_min_free(tmp_path) == min(space.DEFAULT_MIN_FREE,
                                                   max(space.SMALLEST_DEFAULT, total // 20))
    bgio.h5.FrameWriter(os.path.join(small_disk, "f.h5"), "frames", FRAME, "u2").close()


def test_an_expected_run_that_cannot_fit_is_refused_or_warned_about(small_disk):
    path = os.path.join(small_disk, "f.h5")
    with pytest.raises(bgio.DiskFull, match=r"^FrameWriter 'frames': the run expected "
                       r"\(10\.0 MiB before compression\) leaves less than min_free=1048576 "
                       r"bytes of the 8\.0 MiB free on the disk of '.*'; nothing was written$"):
        bgio.h5.FrameWriter(path, "frames", FRAME, "u2", expected_frames=40, min_free=MIB)
    with pytest.raises(bgio.DiskFull, match=r"the run expected \(10\.0 MiB"):
        bgio.h5.RecordWriter(path, "events", {"x": ((), "f4")}, expected_bytes=10 * MIB,
                             min_free=MIB)
    assert os.listdir(small_disk) == []
    with pytest.warns(RuntimeWarning, match=r"it fits only if compression saves the "
                      r"difference"):
        w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", compression="gzip",
                                expected_frames=40, min_free=MIB)
    w.append(np.zeros(FRAME, "u2"))
    w.close()
    with h5py.File(path, "r") as f:
        assert f["frames"].shape == (1, *FRAME)
    # What fits is let through without a word.
    bgio.h5.FrameWriter(path, "more", FRAME, "u2", expected_frames=4, min_free=MIB).close()


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"min_free": -1}, ValueError, "min_free must be >= 0, got -1"),
    ({"min_free": 1.5}, TypeError, r"min_free must be an int \(bytes\) or None, got float"),
    ({"expected_frames": 0}, ValueError, "expected_frames must be an int >= 1, got 0"),
])
def test_bad_space_options_are_refused(tmp_path, options, error, message):
    with pytest.raises(error, match=f"^{message}$"):
        bgio.h5.FrameWriter(tmp_path / "f.h5", "frames", (4,), "u1", **options)
    assert not list(tmp_path.iterdir())


def test_check_min_free():
    assert check_min_free(None) == space.DEFAULT_MIN_FREE
    assert check_min_free(np.int64(0)) == 0


# -- the run -----------------------------------------------------------------------------


def test_a_frame_writer_stops_before_the_disk_fills_and_closes_the_file_valid(
        small_disk, no_unraisable, capfd):
    path = os.path.join(small_disk, "f.h5")
    frames = _frames(40)  # 10 MiB: does not fit
    w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", chunk_frames=1, priority=1,
                            min_free=MIB)
    handles = [w.append(frame) for frame in frames]
    with pytest.raises(bgio.DiskFull) as info:
        w.close()
    stored = info.value.stored
    assert 20 < stored < 30
    assert re.fullmatch(
        rf"disk full: {stored} frames stored in '{re.escape(path)}', the rest not "
        r"\((1\.[0-9] MiB|[0-9.]+ KiB) free, a store of 256\.0 KiB would leave less than "
        r"min_free=1048576 bytes\); the file is left valid with those", str(info.value))
    assert info.value.free is not None and info.value.free - 256 * 1024 < MIB
    # Every frame before it stored, the one that did not fit says why, the rest
    # did not run.
    assert [h.exception() for h in handles[:stored]] == [None] * stored
    assert handles[stored].exception() is info.value
    assert all(isinstance(h.exception(), bgio.ChainError) for h in handles[stored + 1:])
    gc.collect()
    with h5py.File(path, "r") as f:  # plain h5py, no repair
        assert f["frames"].shape == (stored, *FRAME)
        assert f["frames"][...].tobytes() == frames[:stored].tobytes()
    if shutil.which("h5dump"):
        dumped = subprocess.run(["h5dump", "-H", path], check=False, capture_output=True,
                                text=True)
        assert dumped.returncode == 0, dumped.stderr
        assert f"( {stored}, 256, 512 )" in dumped.stdout
    assert capfd.readouterr().err == ""  # (the error went to the handle and the log)


def test_a_live_frame_writer_that_fills_the_disk_sets_its_flag_and_announces_what_it_stored(
        small_disk, no_unraisable):
    path = os.path.join(small_disk, "live.h5")
    frames = _frames(40)
    w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", priority=1, min_free=MIB, swmr=True)
    for frame in frames:
        w.append(frame)
    with pytest.raises(bgio.DiskFull) as info:
        w.close()
    stored = info.value.stored
    gc.collect()
    with h5py.File(path, "r") as f:
        assert f["frames"].shape[0] == stored
        assert f["frames"][...].tobytes() == frames[:stored].tobytes()
        assert bool(f["finished"][()])


def test_a_record_writer_stops_before_the_disk_fills(small_disk, no_unraisable):
    path = os.path.join(small_disk, "r.h5")
    rows = np.random.default_rng(2).random((40, 16384, 4)).astype("f4")  # 256 KiB a frame
    w = bgio.h5.RecordWriter(path, "events", {"x": ((4,), "f4")}, chunk_events=16384,
                             priority=1, min_free=MIB)
    handles = [w.append(i, {"x": rows[i]}) for i in range(40)]
    with pytest.raises(bgio.DiskFull, match=r"^disk full: \d+ frames stored in") as info:
        w.close()
    stored = info.value.stored
    assert 10 < stored < 30
    assert [h.exception() for h in handles[:stored]] == [None] * stored
    gc.collect()
    with h5py.File(path, "r") as f:
        assert list(f["events/nevents"]) == [16384] * stored
        assert f["events/x"][: stored * 16384].tobytes() == rows[:stored].tobytes()


def test_a_store_that_meets_a_full_disk_is_cut_back_to_what_hdf5_kept(
        small_disk, no_unraisable, monkeypatch, capfd):
    # Another program takes the space between the watch's look and the store: the
    # store fails with ENOSPC inside HDF5, which may then drop the chunk stored before
    # it when the dataset shrinks. The file is still closed valid, nothing new written
    # to the full disk, and the error's count is what the file holds.
    monkeypatch.setattr(SpaceWatch, "check", lambda self, nbytes, stored: None)
    path = os.path.join(small_disk, "f.h5")
    frames = _frames(40)
    w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", chunk_frames=1, priority=1,
                            min_free=0)
    handles = [w.append(frame) for frame in frames]
    with pytest.raises(bgio.DiskFull, match=r"^disk full: a store into .* failed after \d+ "
                       r"frames were stored \(another program took the space min_free "
                       r"kept\); the dataset is cut back to the frames HDF5 kept, which "
                       r"this error's stored counts once the file is closed$") as info:
        w.close()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    acknowledged = sum(handle.exception() is None for handle in handles)
    kept = info.value.stored
    assert acknowledged - 1 <= kept <= acknowledged and kept > 20
    gc.collect()
    with h5py.File(path, "r") as f:  # plain h5py, no repair
        assert f["frames"].shape[0] == kept
        assert f["frames"][...].tobytes() == frames[:kept].tobytes()
    assert capfd.readouterr().err == ""


def test_frames_written_out_of_order_that_never_stored_are_missing_not_zeros(
        small_disk, no_unraisable):
    path = os.path.join(small_disk, "f.h5")
    frames = _frames(40)
    w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", chunk_frames=1, priority=1,
                            min_free=MIB, on_missing="ignore")
    handles = {i: w.write_at(i, frames[i]) for i in range(39, -1, -1)}  # the last first
    with pytest.raises(bgio.DiskFull) as info:
        w.close()
    stored = sorted(i for i, handle in handles.items() if handle.exception() is None)
    assert info.value.stored == len(stored) > 20
    gc.collect()
    with h5py.File(path, "r") as f:
        dataset = f["frames"]
        assert dataset.shape[0] == max(stored) + 1 == 40  # frame 39 went first
        for i in stored:
            assert dataset[i].tobytes() == frames[i].tobytes()
        never = sorted(set(range(40)) - set(stored))
        ranges = f["frames_missing"][...].tolist()
        assert [i for start, stop in ranges for i in range(start, stop)] == never
    assert w.missing == never
    assert w.stats().missing_frames == len(never)


def test_a_relative_path_keeps_its_watch_when_the_program_changes_folder(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frames = _frames(3)
    w = bgio.h5.FrameWriter("rel.h5", "frames", FRAME, "u2", chunk_frames=1)
    w.append(frames[0]).result(timeout=30)
    os.mkdir("moved")
    os.rename("rel.h5", "moved/rel.h5")  # the file moves, the program goes elsewhere
    monkeypatch.chdir("/")
    monkeypatch.setattr(space, "RECHECK", 0.0)  # (asked at every store)
    for frame in frames[1:]:
        w.append(frame)
    w.close()
    with h5py.File(tmp_path / "moved" / "rel.h5", "r") as f:
        assert f["frames"][...].tobytes() == frames.tobytes()


def test_a_record_store_that_meets_a_full_disk_leaves_the_columns_even(
        small_disk, no_unraisable, monkeypatch):
    monkeypatch.setattr(SpaceWatch, "check", lambda self, nbytes, stored: None)
    path = os.path.join(small_disk, "r.h5")
    rows = np.random.default_rng(3).random((40, 16384, 2)).astype("f4")  # 128 KiB a column
    w = bgio.h5.RecordWriter(path, "events", {"x": ((2,), "f4"), "y": ((2,), "f4")},
                             chunk_events=16384, priority=1, min_free=0)
    for i in range(40):
        w.append(i, {"x": rows[i], "y": rows[i] + 1})
    with pytest.raises(bgio.DiskFull, match=r"^disk full: a store into") as info:
        w.close()
    gc.collect()
    with h5py.File(path, "r") as f:
        group = f["events"]
        frames = group["nevents"].shape[0]
        assert frames == info.value.stored > 10
        events = frames * 16384
        assert [group[name].shape[0] for name in ("x", "y")] == [events] * 2
        assert group["x"][...].tobytes() == rows[:frames].tobytes()
        assert group["y"][...].tobytes() == (rows[:frames] + 1).tobytes()
        # The store that met the full disk may leave HDF5 unable to resize that dataset
        # (logged): what nevents counts is right all the same.
        index = group["index"]
        assert index.shape[0] >= events
        assert (index[:events] == np.repeat(np.arange(frames), 16384)).all()


def test_disk_full_pickles_with_its_counts():
    error = bgio.DiskFull("disk full: 3 frames stored", 3, 1024)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.stored, copy.free, copy.errno) == (
        bgio.DiskFull, "disk full: 3 frames stored", 3, 1024, errno.ENOSPC)


# -- the watch ---------------------------------------------------------------------------


def test_the_watch_reads_the_disk_again_before_the_room_could_run_out(monkeypatch):
    readings = []
    free = [100 * MIB]

    def fake_free(path):
        readings.append(path)
        return free[0]

    monkeypatch.setattr(space, "free_bytes", fake_free)
    watch = SpaceWatch(f"/nowhere/{uuid.uuid4()}", 10 * MIB, "frames")
    watch.check(MIB, 0)
    watch.check(MIB, 1)
    assert len(readings) == 1  # (trusted for RECHECK seconds)
    for stored in range(44):  # 46 MiB taken: half the 90 MiB above min_free; read again
        watch.check(MIB, stored)
    assert len(readings) == 2
    free[0] = 10 * MIB + 100  # someone else filled the disk meanwhile
    monkeypatch.setattr(space, "RECHECK", 0.0)
    with pytest.raises(bgio.DiskFull, match=r"^disk full: 7 frames stored in '/nowhere/.*', "
                       r"the rest not \(10\.0 MiB free, a store of 1\.0 MiB would leave less "
                       r"than min_free=10485760 bytes\)"):
        watch.check(MIB, 7)
    free[0] = 100
    with pytest.raises(bgio.DiskFull, match=r"\(100 bytes free, a store of 2\.0 KiB would"):
        SpaceWatch("/x", 0, "frames").check(2048, 0)


@pytest.mark.slow  # (starts a writer process)
def test_the_writer_process_stops_before_the_disk_fills_too(small_disk, no_unraisable):
    path = os.path.join(small_disk, "p.h5")
    frames = _frames(40)
    with pytest.raises(bgio.DiskFull, match=r"less than min_free=16777216 bytes"):
        bgio.h5.FrameWriter(path, "frames", FRAME, "u2", backend="process", min_free=16 * MIB)
    with pytest.warns(RuntimeWarning, match="it fits only if compression"):  # (here, not there)
        bgio.h5.FrameWriter(path, "frames", FRAME, "u2", backend="process", min_free=MIB,
                            compression="gzip", expected_frames=40).close()
    os.unlink(path)
    w = bgio.h5.FrameWriter(path, "frames", FRAME, "u2", chunk_frames=1, backend="process",
                            min_free=MIB)
    for frame in frames:
        w.append(frame)
    with pytest.raises(bgio.DiskFull, match=r"^disk full: \d+ frames stored") as info:
        w.close()
    stored = info.value.stored
    with h5py.File(path, "r") as f:
        assert f["frames"].shape[0] == stored > 20
        assert f["frames"][...].tobytes() == frames[:stored].tobytes()
