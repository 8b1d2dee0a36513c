"""FrameWriter: frames read back byte-exact through plain h5py, whatever the chunking and filters."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest
from conftest import gate_stores

import bgio
from bgio.bench.h5 import realistic_frames
from bgio.h5 import FrameWriter


@pytest.mark.parametrize("dtype", ["uint8", "<u2", "<f4"])
@pytest.mark.parametrize(("compression", "shuffle"), [(None, False), ("gzip", False), ("gzip", True)])
def test_a_chunk_per_frame(tmp_path, dtype, compression, shuffle):
    frames = realistic_frames(5, shape=(512, 512)).astype(dtype)  # >= 256 KiB: own chunks
    with FrameWriter(tmp_path / "f.h5", "frames", (512, 512), dtype, compression=compression,
                     shuffle=shuffle, priority=1) as w:
        handles = [w.append(frame) for frame in frames]
        assert w.dataset.chunks == (1, 512, 512)
    assert all(h.done() and h.exception() is None for h in handles)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        ds = f["frames"]
        assert ds.dtype == np.dtype(dtype) and ds.compression == compression and ds.shuffle == shuffle
        assert ds[...].tobytes() == frames.tobytes()


def test_small_frames_are_gathered_into_chunks(tmp_path):
    frames = realistic_frames(10, shape=(16, 16))
    with FrameWriter(tmp_path / "f.h5", "frames", (16, 16), "<u2", compression="gzip",
                     chunk_frames=4, priority=1) as w:
        w.append(frames[0])
        w.append(frames[1:4])  # fills the first chunk
        w.flush()  # nothing partial
        w.append(frames[4:9])
        w.flush()  # a partial chunk is stored, then completed below
        assert w.dataset.shape == (9, 16, 16)
        assert np.array_equal(w.dataset[...], frames[:9])
        w.append(frames[9])
        assert w.frames_written == 10
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].shape == (10, 16, 16)  # no trailing fill frames
        assert np.array_equal(f["frames"][...], frames)


def test_filters_bgio_cannot_apply_go_through_h5py(tmp_path):
    frames = realistic_frames(6, shape=(32, 32))
    with FrameWriter(tmp_path / "f.h5", "frames", (32, 32), "<u2", compression="lzf",
                     chunk_frames=4) as w:
        w.append(frames)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].compression == "lzf"
        assert np.array_equal(f["frames"][...], frames)


def test_an_open_file_is_left_open(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        group = f.create_group("run1")
        with FrameWriter(group, "frames", (8, 8), "u1", chunk_frames=2) as w:
            w.append(np.ones((3, 8, 8), "u1"))
        assert f  # still open
        assert np.array_equal(group["frames"][...], np.ones((3, 8, 8), "u1"))


def test_checks_in_the_caller(tmp_path):
    with FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "<i2") as w:
        with pytest.raises(TypeError, match="uint16 cannot be stored as int16"):
            w.append(np.zeros((8, 8), "<u2"))
        with pytest.raises(TypeError, match="float64 cannot be stored as int16"):
            w.append(np.zeros((8, 8)))
        with pytest.raises(ValueError, match=r"expected one frame of shape \(8, 8\)"):
            w.append(np.zeros((8, 9), "<i2"))
    with pytest.raises(ValueError, match="write to a closed FrameWriter"):
        w.append(np.zeros((8, 8), "<i2"))
    with pytest.raises(ValueError, match="already exists"):
        FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "<i2")
    with pytest.raises(TypeError, match="target must be a path"):
        FrameWriter(42, "frames", (8, 8), "<i2")
    with pytest.raises(ValueError, match="chunk_frames"):
        FrameWriter(tmp_path / "g.h5", "frames", (8, 8), "<i2", chunk_frames=0)


def test_a_storage_error_surfaces_on_close(tmp_path, monkeypatch):
    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=1,
                    compression="gzip")

    class Full:
        compresses = True  # encoded on the pool (every preset has one on two cores)

        def encode(self, chunk):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(w._sink, "pipeline", Full())
    handle = w.append(np.zeros((8, 8), "u1"))
    with pytest.raises(OSError, match="No space"):
        handle.result(timeout=30)
    later = w.append(np.zeros((8, 8), "u1"))
    with pytest.raises(bgio.ChainError):
        later.result(timeout=30)
    with pytest.raises(OSError, match="No space"):
        w.close()
    assert bgio.wait_all(timeout=30)
    with h5py.File(tmp_path / "f.h5", "r") as f:  # closed and valid after the failure
        assert f["frames"].shape[1:] == (8, 8)


def test_frames_out_of_order_from_several_threads(tmp_path):

    frames = realistic_frames(40, shape=(16, 16))
    with FrameWriter(tmp_path / "f.h5", "frames", (16, 16), "<u2", compression="gzip",
                     shuffle=True, chunk_frames=8) as w:

        def producer(indices):
            for i in indices:
                w.write_at(i, frames[i])

        threads = [threading.Thread(target=producer, args=(range(k, 40, 4)[::-1],))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert w.frames_written == 40
    assert w.missing == []
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert np.array_equal(f["frames"][...], frames)


@pytest.mark.parametrize("chunk_frames", [1, 4])
def test_slots_never_written_are_reported(tmp_path, chunk_frames):
    w = FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", chunk_frames=chunk_frames)
    w.write_at(0, np.full((4, 4), 1, "u1"))
    w.write_at(5, np.full((2, 4, 4), 5, "u1"))  # 5 and 6; 1..4 never come
    with pytest.warns(RuntimeWarning, match=r"4 frame\(s\) of 7 never written"):
        w.close()
    assert w.missing == [1, 2, 3, 4]
    with h5py.File(tmp_path / "f.h5", "r") as f:
        data = f["frames"][...]
    assert data.shape == (7, 4, 4)  # trimmed to the last frame written
    assert (data[0] == 1).all() and (data[5:] == 5).all() and (data[1:5] == 0).all()


def test_missing_slots_can_raise(tmp_path):
    w = FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", on_missing="raise")
    w.write_at(2, np.zeros((4, 4), "u1"))
    with pytest.raises(ValueError, match="never written"):
        w.close()
    with h5py.File(tmp_path / "f.h5", "r") as f:  # closed all the same
        assert f["frames"].shape == (3, 4, 4)


def test_write_at_checks(tmp_path):
    with FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", on_missing="ignore") as w:
        with pytest.raises(ValueError, match="index must be an int >= 0"):
            w.write_at(-1, np.zeros((4, 4), "u1"))
        with pytest.raises(TypeError, match="index must be an int"):
            w.write_at(1.5, np.zeros((4, 4), "u1"))
    with pytest.raises(ValueError, match="on_missing"):
        FrameWriter(tmp_path / "g.h5", "frames", (4, 4), "u1", on_missing="shout")


def test_handles_of_a_partial_chunk_complete_on_close(tmp_path):
    w = FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", chunk_frames=4)
    handles = [w.append(np.full((4, 4), i, "u1")) for i in range(6)]  # 1 whole chunk + 2
    w.flush()
    assert handles[0].done() and not handles[5].done()  # its chunk is not whole yet
    w.close()
    assert all(h.done() and h.exception() is None for h in handles)
    assert w.pending_bytes == 0


def test_missing_slots_are_an_attribute_of_the_dataset(tmp_path):
    with (pytest.warns(RuntimeWarning),
          FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1", chunk_frames=2) as w):
        w.write_at(3, np.zeros((4, 4), "u1"))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].attrs["missing_frames"].tolist() == [0, 1, 2]


def test_max_pending_bytes_bounds_a_fast_producer(tmp_path, monkeypatch):
    import time

    from bgio.h5 import sink

    real_write = sink.DatasetSink.write

    def slow_write(self, chunk):
        time.sleep(0.002)  # a slow disk: the pace of the stores, not a synchronisation
        return real_write(self, chunk)

    monkeypatch.setattr(sink.DatasetSink, "write", slow_write)
    frames = realistic_frames(60, shape=(16, 16))
    chunk_bytes = 4 * frames[0].nbytes
    bound = 3 * chunk_bytes
    w = FrameWriter(tmp_path / "f.h5", "frames", (16, 16), "<u2", chunk_frames=4,
                    max_pending_bytes=bound)
    peak = 0
    for frame in frames:
        w.append(frame)
        peak = max(peak, w.pending_bytes)
    w.close()
    assert bound // 2 < peak <= bound
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert np.array_equal(f["frames"][...], frames)


def test_no_room_raises_queue_full_and_the_awaited_frame_is_let_in(tmp_path):

    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=2,
                    max_pending_bytes=2 * 64)  # one chunk
    w.write_at(1, np.ones((8, 8), "u1"))  # opens chunk 0, which waits for frame 0
    with pytest.raises(bgio.QueueFull, match="no room for 1 frame"):
        w.write_at(2, np.ones((8, 8), "u1"), block=False)
    with pytest.raises(bgio.QueueFull, match="after 0.05 s"):
        w.append(np.ones((8, 8), "u1"), timeout=0.05)
    later = []
    thread = threading.Thread(target=lambda: later.append(w.write_at(2, np.full((8, 8), 2, "u1"))))
    thread.start()
    w.write_at(0, np.zeros((8, 8), "u1"))  # goes into the open chunk: no room needed
    thread.join(timeout=30)
    assert later and not thread.is_alive()
    with pytest.warns(RuntimeWarning, match=r"1 frame\(s\) were dropped"):  # (the refused one)
        w.close()
    assert w.dropped_frames == 1
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert [int(frame[0, 0]) for frame in f["frames"]] == [0, 1, 2]
        assert f["frames"].attrs["dropped_frames"] == 1
    with pytest.raises(ValueError, match="max_pending_bytes"):
        FrameWriter(tmp_path / "g.h5", "frames", (8, 8), "u1", max_pending_bytes=-1)


def test_a_write_far_ahead_costs_no_memory_per_skipped_slot(tmp_path):
    w = FrameWriter(tmp_path / "f.h5", "frames", (2, 2), "u1", on_missing="ignore")
    w.write_at(10**9, np.ones((2, 2), "u1"))  # a billion slots skipped: one range
    w.write_at(5, np.ones((2, 2), "u1"))
    assert len(w._holes) == 10**9 - 1 and 5 not in w._holes and 6 in w._holes


def test_writing_a_frame_again_is_refused_not_stored_over_its_neighbours(tmp_path):
    with FrameWriter(tmp_path / "f.h5", "frames", (2, 2), "u1", chunk_frames=4) as w:
        w.append(np.arange(1, 5, dtype="u1").repeat(4).reshape(4, 2, 2))  # chunk 0, stored
        with pytest.raises(ValueError, match="index: frame 2 was already written"):
            w.write_at(2, np.full((2, 2), 99, "u1"))
        w.write_at(5, np.full((2, 2), 6, "u1"))
        w.write_at(4, np.full((2, 2), 5, "u1"))  # a hole: fine
        with pytest.raises(ValueError, match="frame 5 was already written"):
            w.write_at(5, np.zeros((2, 2, 2), "u1"))  # 5 and 6: 5 is taken
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert [int(frame[0, 0]) for frame in f["frames"]] == [1, 2, 3, 4, 5, 6]


def test_room_is_free_before_the_callbacks_of_a_chunks_handle_run(tmp_path):
    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=4,
                    max_pending_bytes=4 * 64)  # one chunk
    seen = []

    def appended_from_callback(handle):
        seen.append(w.pending_bytes)
        w.append(np.full((8, 8), 9, "u1"), block=False)  # QueueFull if the room were not free

    first = w.append(np.zeros((4, 8, 8), "u1"))  # a whole chunk
    first.add_done_callback(appended_from_callback)
    first.result(timeout=30)
    w.close()
    assert seen == [0]
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].shape == (5, 8, 8) and (f["frames"][4] == 9).all()


def test_close_with_a_timeout_raises_and_a_second_close_waits(tmp_path, monkeypatch):

    from bgio.h5 import sink

    release = threading.Event()
    real = sink.DatasetSink.write

    def slow(self, chunk):
        release.wait(30)
        return real(self, chunk)

    monkeypatch.setattr(sink.DatasetSink, "write", slow)
    w = FrameWriter(tmp_path / "f.h5", "frames", (8, 8), "u1", chunk_frames=1)
    w.append(np.zeros((8, 8), "u1"))
    with pytest.raises(TimeoutError, match="frames not stored after 0.05 s"):
        w.close(timeout=0.05)
    release.set()
    w.close(timeout=30)  # waits for the stores this time
    assert w._last.done()


def test_a_new_file_at_the_same_path_does_not_inherit_an_old_failure(tmp_path):
    path = tmp_path / "f.h5"
    old = FrameWriter(path, "frames", (8, 8), "u1", chunk_frames=1, compression="gzip")

    class Broken:
        compresses = True

        def encode(self, chunk):
            raise OSError(5, "Input/output error")

    old._sink.pipeline = Broken()
    with pytest.raises(OSError):
        old.append(np.zeros((8, 8), "u1")).result(timeout=30)
    with pytest.raises(OSError):
        old.close()
    path.unlink()  # `old` stays referenced: its lane and its failure live on
    for swmr in (False, True, False):
        with FrameWriter(path, "frames", (8, 8), "u1", swmr=swmr) as new:
            for i in range(30):
                new.append(np.full((8, 8), i, "u1"))
        with h5py.File(path, "r") as f:
            assert [int(frame[0, 0]) for frame in f["frames"]] == list(range(30))
        path.unlink()


def test_a_reused_buffer_stores_each_frame_as_it_was_at_the_call(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    buffer = np.empty((256, 512), "<u2")  # 256 KiB: a chunk per frame, stored by reference
    with FrameWriter(tmp_path / "f.h5", "frames", buffer.shape, "<u2", priority=1) as w:
        handles = []
        for i in range(40):
            buffer[...] = i  # a camera refilling its one buffer
            handles.append(w.write_at(i, buffer) if i % 2 else w.append(buffer))
        assert sum(not h.done() for h in handles) >= 39  # queued behind the held store
        assert w.pending_bytes >= 39 * buffer.nbytes  # the snapshots count
        gate.set()
    with h5py.File(tmp_path / "f.h5", "r") as f:
        stored = f["frames"][...]
    expected = np.repeat(np.arange(40, dtype="<u2"), buffer.size).reshape(40, *buffer.shape)
    assert stored.tobytes() == expected.tobytes()


def test_copy_false_takes_the_callers_array_by_reference(tmp_path, monkeypatch):
    gate = gate_stores(monkeypatch)
    buffer = np.zeros((256, 512), "<u2")
    with FrameWriter(tmp_path / "f.h5", "frames", buffer.shape, "<u2", copy=False) as w:
        handle = w.append(buffer)
        buffer[...] = 7  # before its handle is done: the hazard copy=False documents
        gate.set()
        handle.result()
        w.append(buffer, copy=True).result()
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert (f["frames"][...] == 7).all() and f["frames"].shape[0] == 2
    with pytest.raises(TypeError, match="copy must be True or False"):
        FrameWriter(tmp_path / "g.h5", "frames", (4, 4), "u1", copy=1)


@pytest.mark.slow  # (one of the longest of the quick run)
def test_many_missing_slots_are_ranges_beside_the_dataset(tmp_path):
    # 100,000 of 200,000 slots missing, in 1,000 runs: as an attribute, HDF5's
    # 64 KiB object header limit made close() fail from ~5,000 slots.
    frames = np.arange(100, dtype="u1").reshape(100, 1)
    w = FrameWriter(tmp_path / "f.h5", "frames", (1,), "u1")
    for start in range(100, 200_000, 200):
        w.write_at(start, frames)
    with pytest.warns(RuntimeWarning, match=r"100000 frame\(s\) of 200000 never written"):
        w.close()
    expected = [i for start in range(0, 200_000, 200) for i in range(start, start + 100)]
    assert w.missing == expected
    with h5py.File(tmp_path / "f.h5", "r") as f:
        ranges = f["frames_missing"][...]
        assert ranges.dtype == np.int64 and ranges.shape == (1000, 2)
        assert ranges[:2].tolist() == [[0, 100], [200, 300]]
        assert [i for start, stop in ranges for i in range(start, stop)] == expected
        assert "missing_frames" not in f["frames"].attrs  # only for a few slots
        assert f["frames"].shape == (200_000, 1)


def test_a_live_files_missing_slots_are_recorded(tmp_path):
    path = tmp_path / "live.h5"
    w = FrameWriter(path, "frames", (4,), "u1", swmr=True)
    w.write_at(2, np.ones(4, "u1"))
    w.write_at(5, np.ones(4, "u1"))
    with pytest.warns(RuntimeWarning, match="never written"):
        w.close()
    with h5py.File(path, "r") as f:
        assert f["frames_missing"][...].tolist() == [[0, 2], [3, 5]]
    assert w.missing == [0, 1, 3, 4]


def test_the_missing_ranges_place_must_be_free(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["frames_missing"] = [1]
        with pytest.raises(ValueError, match="name: /frames_missing exists already"):
            FrameWriter(f, "frames", (4,), "u1")
        assert "frames" not in f


@pytest.mark.parametrize("index", [2**64, 2**70, 2**63, 2**63 // 16])
def test_indices_hdf5_cannot_hold_are_refused(tmp_path, index):
    with FrameWriter(tmp_path / "f.h5", "frames", (4, 4), "u1") as w:
        with pytest.raises(ValueError, match=r"index: frame \d+ is beyond what an HDF5 dataset"):
            w.write_at(index, np.zeros((4, 4), "u1"))
        w.append(np.zeros((4, 4), "u1"))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["frames"].shape == (1, 4, 4)


def test_the_last_index_hdf5_holds():
    from bgio.h5.layout import check_extent

    check_extent(2**63 // 16 - 2, 1, 16, "index")  # 2**63 - 16 elements: held
    with pytest.raises(ValueError, match=r"index: frame 576460752303423487 is beyond .* "
                                         r"\(frames 0 to 576460752303423486\)"):
        check_extent(2**63 // 16 - 1, 1, 16, "index")


@pytest.mark.parametrize("shape", [(2**64,), (2**63,), (2**32, 2**32), (-1,)])
def test_frame_shapes_hdf5_cannot_hold_are_refused(tmp_path, shape):
    with pytest.raises(ValueError, match="frame_shape"):
        FrameWriter(tmp_path / "f.h5", "frames", shape, "u1")
