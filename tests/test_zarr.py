"""bgio.zarr.FrameWriter: frames into a Zarr v3 array through tensorstore, in the background."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import numpy as np
import pytest

import bgio
import bgio.zarr
from bgio.zarr import sink as zarr_sink
from bgio.zarr.spec import array_spec, kvstore_of

ts = pytest.importorskip("tensorstore")

SHAPE = (32, 48)


def _frames(count: int) -> np.ndarray:
    return np.random.default_rng(4).integers(0, 4000, (count, *SHAPE), dtype="u2")


def _read(store) -> np.ndarray:
    array = ts.open({"driver": "zarr3", "kvstore": kvstore_of(store)},
                    context=bgio.zarr.context()).result()
    return array.read().result()


@pytest.fixture
def gate(monkeypatch) -> threading.Event:
    """Hold every store until the Event is set (a slow disk, no sleep)."""
    held = threading.Event()
    real = zarr_sink.ArraySink.write

    def write(self, block):
        held.wait()
        return real(self, block)

    monkeypatch.setattr(zarr_sink.ArraySink, "write", write)
    return held


@pytest.mark.parametrize("layout", [
    {},
    {"codec": "lz4", "chunk_frames": 4},
    {"codec": "gzip", "level": 1, "chunk_frames": 2, "shard_frames": 8},
    {"codec": None, "shard_frames": 5},
])
@pytest.mark.parametrize("copy", [True, False])
def test_frames_appended_and_placed_read_back_exactly(tmp_path, layout, copy):
    frames = _frames(23)
    store = tmp_path / "frames.zarr"
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", copy=copy, **layout)
    for frame in frames[:9]:
        w.append(frame)
    w.write_at(14, frames[14:])  # out of order, from another "thread"'s slots
    w.write_at(9, frames[9:14])
    w.close()
    assert (w.frames_written, w.extent, w.missing) == (23, 23, [])
    back = _read(store)
    assert back.shape == (23, *SHAPE) and back.tobytes() == frames.tobytes()


def test_the_array_grows_with_the_stores_and_starts_empty(tmp_path):
    store = tmp_path / "grow.zarr"
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", chunk_frames=4)
    assert _read(store).shape == (0, *SHAPE)  # no rows a reader could take for frames
    frames = _frames(6)
    for frame in frames:
        w.append(frame)
    assert w.append(frames[:0]).done()  # nothing: done at once
    w.append(frames[0])
    w.flush()  # (stores the chunk being filled too, as far as it is)
    assert _read(store).shape == (7, *SHAPE)
    w.close()


def test_a_memory_store_is_read_in_bgios_context():
    frames = _frames(3)
    with bgio.zarr.FrameWriter("memory://bgio-test/frames", SHAPE, "uint16") as w:
        w.append(frames)
    assert _read("memory://bgio-test/frames").tobytes() == frames.tobytes()


def test_a_slot_is_written_once(tmp_path):
    w = bgio.zarr.FrameWriter(tmp_path / "once.zarr", SHAPE, "uint16")
    w.append(_frames(2))
    with pytest.raises(ValueError, match=r"^index: frame 1 was already written$"):
        w.write_at(1, _frames(1))
    w.close()


def test_slots_never_written_are_reported(tmp_path):
    w = bgio.zarr.FrameWriter(tmp_path / "holes.zarr", SHAPE, "uint16")
    w.write_at(3, _frames(1))
    with pytest.warns(RuntimeWarning, match=r"^3 slot\(s\) below frame 4 of .* were never "
                      r"written \(they read as 0\)$"):
        w.close()
    assert w.missing == [0, 1, 2]
    strict = bgio.zarr.FrameWriter(tmp_path / "strict.zarr", SHAPE, "uint16",
                                   on_missing="raise")
    strict.write_at(1, _frames(1))
    with pytest.raises(ValueError, match=r"^1 slot\(s\) below frame 2"):
        strict.close()


def test_back_pressure_waits_or_refuses(tmp_path, gate):
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    w = bgio.zarr.FrameWriter(tmp_path / "bound.zarr", SHAPE, "uint16",
                              max_pending_bytes=2 * frame_bytes)
    frames = _frames(3)
    w.append(frames[0])
    w.append(frames[1])
    assert w.pending_bytes == 2 * frame_bytes
    with pytest.raises(bgio.QueueFull):
        w.append(frames[2], block=False)
    with pytest.raises(bgio.QueueFull):
        w.append(frames[2], timeout=0.01)
    gate.set()
    w.append(frames[2], timeout=30)  # room once the stores are done
    w.close()
    assert _read(tmp_path / "bound.zarr").tobytes() == frames.tobytes()


def test_a_failed_store_fails_its_handle_the_rest_and_the_close(tmp_path, monkeypatch):
    real = zarr_sink.ArraySink.write
    calls = []

    def write(self, block):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "the store went away")
        return real(self, block)

    monkeypatch.setattr(zarr_sink.ArraySink, "write", write)
    w = bgio.zarr.FrameWriter(tmp_path / "fail.zarr", SHAPE, "uint16")
    handles = [w.append(frame) for frame in _frames(4)]
    with pytest.raises(OSError, match="the store went away"):
        w.close()
    assert handles[0].exception() is None
    assert str(handles[1].exception()) == "[Errno 5] the store went away"
    assert all(isinstance(h.exception(), bgio.ChainError) for h in handles[2:])
    assert _read(tmp_path / "fail.zarr").shape[0] == 1  # what was stored, no more


def test_close_without_waiting_and_progress(tmp_path, gate):
    records = []
    ended = threading.Event()

    def tell(record):
        records.append(record)
        if record.finished:
            ended.set()

    w = bgio.zarr.FrameWriter(tmp_path / "later.zarr", SHAPE, "uint16")
    w.add_progress_callback(tell, interval=0)
    w.append(_frames(5))
    closing = w.close(wait=False)
    assert not closing.done()
    gate.set()
    assert closing.result(timeout=30) == 0
    assert ended.wait(30)
    assert (records[-1].frames_done, records[-1].frames_total) == (5, 5)
    with pytest.raises(ValueError, match=r"^write to a closed bgio.zarr.FrameWriter$"):
        w.append(_frames(1))


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"codec": "brotli"}, ValueError, r"codec must be one of 'zstd', 'lz4', 'gzip' or None"),
    ({"codec": 3}, TypeError, r"codec must be a str or None, got int"),
    ({"level": 30}, ValueError, r"level must be 1 to 22 for zstd, got 30"),
    ({"codec": None, "level": 1}, ValueError, r"level: no codec to give it to"),
    ({"chunk_frames": 2, "shard_frames": 5}, ValueError,
     r"shard_frames must be a multiple of chunk_frames \(2\), got 5"),
    ({"chunk_frames": 0}, ValueError, r"chunk_frames must be an int >= 1, got 0"),
    ({"on_missing": "shout"}, ValueError, r"on_missing must be 'warn', 'raise' or 'ignore'"),
    ({"max_pending_bytes": 0}, ValueError, r"max_pending_bytes"),
])
def test_bad_arguments_are_refused_before_anything_is_made(tmp_path, options, error, message):
    with pytest.raises(error, match=message):
        bgio.zarr.FrameWriter(tmp_path / "bad.zarr", SHAPE, "uint16", **options)
    assert not list(tmp_path.iterdir())


def test_stores_bgio_does_not_write_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^store: az:// is not a store bgio writes"):
        bgio.zarr.FrameWriter("az://account/frames", SHAPE, "uint16")
    with pytest.raises(TypeError, match=r"^store must be a path, a URL or a kvstore spec "
                                        r"\(dict\), got int$"):
        bgio.zarr.FrameWriter(3, SHAPE, "uint16")  # type: ignore[arg-type]
    bgio.zarr.FrameWriter(tmp_path / "taken.zarr", SHAPE, "uint16").close()
    with pytest.raises(ValueError, match=r"holds a Zarr array or group already$"):
        bgio.zarr.FrameWriter(tmp_path / "taken.zarr", SHAPE, "uint16")


def test_the_spec_names_what_zarr_readers_expect():
    spec = array_spec(kvstore_of("memory://x"), (4, 5), np.dtype("<u2"), "lz4", 5, 2, 8)
    metadata = spec["metadata"]
    assert metadata["shape"] == [0, 4, 5] and metadata["data_type"] == "uint16"
    assert metadata["chunk_grid"]["configuration"]["chunk_shape"] == [8, 4, 5]
    (sharding,) = metadata["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [2, 4, 5]
    assert [codec["name"] for codec in sharding["configuration"]["codecs"]] == ["bytes",
                                                                              "blosc"]


def test_a_store_that_fails_after_growing_leaves_no_rows_of_fill_values(tmp_path,
                                                                        monkeypatch):
    real = ts.TensorStore.__getitem__
    calls = []

    class Failing:
        def write(self, frames):
            raise OSError(28, "No space left on device")

    def getitem(self, key):
        calls.append(key)
        return Failing() if len(calls) == 3 else real(self, key)

    monkeypatch.setattr(ts.TensorStore, "__getitem__", getitem)
    store = tmp_path / "grown.zarr"
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16")
    frames = _frames(4)
    for frame in frames:
        w.append(frame)
    with pytest.raises(OSError, match="No space left"):
        w.close()
    monkeypatch.undo()
    back = _read(store)
    assert back.shape[0] == 2 and back.tobytes() == frames[:2].tobytes()


def test_appends_waiting_for_room_go_where_the_others_left_off(tmp_path, gate):
    frame_bytes = SHAPE[0] * SHAPE[1] * 2
    w = bgio.zarr.FrameWriter(tmp_path / "race.zarr", SHAPE, "uint16",
                              max_pending_bytes=frame_bytes)
    frames = _frames(9)
    w.append(frames[0])
    started = threading.Barrier(9)

    def append(frame):
        started.wait()
        w.append(frame, timeout=30)

    threads = [threading.Thread(target=append, args=(frame,)) for frame in frames[1:]]
    for thread in threads:
        thread.start()
    started.wait()
    gate.set()
    for thread in threads:
        thread.join(30)
    w.close()
    back = _read(tmp_path / "race.zarr")
    assert back.shape[0] == 9 and w.missing == []
    # Each frame once, whichever order the threads came in.
    assert sorted(frame.tobytes() for frame in back) == sorted(f.tobytes() for f in frames)


def test_a_chunk_flushed_half_full_is_stored_whole_once_full(tmp_path):
    frames = _frames(6)
    w = bgio.zarr.FrameWriter(tmp_path / "flush.zarr", SHAPE, "uint16", chunk_frames=4,
                              max_pending_bytes=4 * SHAPE[0] * SHAPE[1] * 2)
    w.append(frames[:2])
    w.flush()
    assert _read(tmp_path / "flush.zarr").shape[0] == 2
    handle = w.append(frames[2:4])  # completes the chunk flushed half full
    assert handle.result(timeout=30) >= 0
    w.append(frames[4], timeout=30)  # room: the chunk is stored and let go of
    w.close()
    assert _read(tmp_path / "flush.zarr").tobytes() == frames[:5].tobytes()


def test_the_handle_of_frames_in_several_chunks_waits_for_all_of_them(tmp_path, gate):
    w = bgio.zarr.FrameWriter(tmp_path / "span.zarr", SHAPE, "uint16", chunk_frames=4)
    frames = _frames(8)
    w.write_at(1, frames[1])
    handle = w.append(frames[2:6])  # the rest of chunk 0 (less slot 0), half of chunk 1
    w.write_at(6, frames[6:8])
    gate.set()
    w.write_at(0, frames[0])  # chunk 0 complete: stored
    w.flush()
    assert not handle.done() or handle.exception() is None
    w.close()
    assert handle.done() and handle.exception() is None
    assert _read(tmp_path / "span.zarr").tobytes() == frames.tobytes()


def test_nothing_written_moves_nothing(tmp_path):
    w = bgio.zarr.FrameWriter(tmp_path / "empty.zarr", SHAPE, "uint16")
    assert w.write_at(5, _frames(0)).done()
    assert w.extent == 0
    w.append(_frames(1))
    w.close()
    assert (w.extent, w.missing) == (1, [])


def test_a_call_that_completes_its_own_chunk_is_let_in(tmp_path):
    chunk = 4 * SHAPE[0] * SHAPE[1] * 2
    w = bgio.zarr.FrameWriter(tmp_path / "own.zarr", SHAPE, "uint16", chunk_frames=4,
                              max_pending_bytes=chunk * 3 // 2)
    frames = _frames(40)
    w.append(frames[:2])
    w.append(frames[2:6], timeout=30)  # completes chunk 0, opens chunk 1
    w.append(frames[6:], timeout=30)  # larger than the bound: let in once alone
    w.close()
    assert _read(tmp_path / "own.zarr").tobytes() == frames.tobytes()


@pytest.mark.parametrize("dtype", ["bool", "complex64", ">f8", "int8"])
def test_every_kind_of_number_reads_back(tmp_path, dtype):
    frames = (_frames(3) % 2).astype(dtype)
    with bgio.zarr.FrameWriter(tmp_path / "k.zarr", SHAPE, dtype) as w:
        w.append(frames)
    back = _read(tmp_path / "k.zarr")
    assert back.dtype == np.dtype(dtype).newbyteorder("=") and (back == frames).all()


@pytest.mark.parametrize("dtype", ["S4", "M8[s]", "float128"])
def test_dtypes_zarr_cannot_hold_as_given_are_refused(tmp_path, dtype):
    with pytest.raises(TypeError, match=r"^dtype: Zarr stores booleans, integers, floats"):
        bgio.zarr.FrameWriter(tmp_path / "d.zarr", SHAPE, dtype)
    assert not list(tmp_path.iterdir())


def test_the_index_must_fit_tensorstore(tmp_path):
    w = bgio.zarr.FrameWriter(tmp_path / "far.zarr", SHAPE, "uint16")
    with pytest.raises(ValueError, match=r"^index: frames up to \d+ fit in a Zarr array"):
        w.write_at(2**62, _frames(1))
    w.close()


@pytest.mark.parametrize("store", ["/", "memory://", "memory:///"])
def test_stores_that_name_no_folder_are_refused(store):
    with pytest.raises(ValueError, match=r"^store"):
        bgio.zarr.FrameWriter(store, SHAPE, "uint16")


def test_a_queued_store_is_cancelled_by_its_handle_and_the_ones_before_go_on(tmp_path, gate):
    store = tmp_path / "cancel.zarr"
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", priority=4)
    frames = _frames(3)
    handles = [w.append(frame) for frame in frames]
    assert handles[2].cancel() and handles[2].cancelled()
    gate.set()
    with pytest.raises(CancelledError):
        w.close()
    assert [handle.exception() for handle in handles[:2]] == [None, None]
    assert _read(store).tobytes() == frames[:2].tobytes()  # (the length: what was stored)


@pytest.mark.parametrize("layout", [{}, {"shard_frames": 8}, {"chunk_frames": 4}])
def test_a_handle_counts_its_own_frames_bytes_not_its_groups(layout):
    frames = np.arange(5 * 16, dtype="<u2").reshape(5, 4, 4)
    with bgio.zarr.FrameWriter(f"memory://own-bytes-{len(layout)}-{sorted(layout)}", (4, 4),
                               "<u2", **layout) as writer:
        stack = writer.append(frames[:3])
        one = writer.append(frames[3])
    assert (stack.result(timeout=60), one.result(timeout=60)) == (3 * 32, 32)


def test_object_store_urls_and_specs_name_their_kvstore():
    assert kvstore_of("s3://bucket/runs/run1.zarr") == {
        "driver": "s3", "bucket": "bucket", "path": "runs/run1.zarr/"}
    assert kvstore_of("gs://bucket/a.zarr/") == {"driver": "gcs", "bucket": "bucket",
                                                  "path": "a.zarr/"}
    spec = {"driver": "s3", "bucket": "b", "path": "x.zarr", "endpoint": "http://127.0.0.1:1"}
    assert kvstore_of(spec) == {**spec, "path": "x.zarr/"}
    assert kvstore_of({"driver": "file", "path": "/data/run.zarr"}) == {
        "driver": "file", "path": "/data/run.zarr/"}  # (a folder, as for a path)
    with pytest.raises(ValueError, match="needs a bucket and a path"):
        kvstore_of("s3://bucket")
    with pytest.raises(ValueError, match="needs a 'driver'"):
        kvstore_of({"path": "x"})
    with pytest.raises(ValueError, match="needs a 'path'"):
        kvstore_of({"driver": "s3", "bucket": "b"})


@pytest.mark.slow
def test_frames_go_to_an_s3_store_and_are_followed_there(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    bucket = s3_server.bucket()
    store = {"driver": "s3", "bucket": bucket, "path": "run.zarr", "endpoint": s3_server.endpoint,
             "aws_region": "us-east-1", "aws_credentials": {"type": "environment"}}
    frames = np.random.default_rng(5).integers(0, 4096, (12, 32, 32), dtype="<u2")
    with bgio.zarr.FrameWriter(store, (32, 32), "<u2", codec="zstd", shard_frames=4,
                               priority=1) as writer:
        assert "s3://" in repr(writer)
        for frame in frames:
            writer.append(frame)
    assert np.array_equal(_read(store), frames)
    followed = list(bgio.zarr.follow(store, timeout=30))
    assert [index for index, _ in followed] == list(range(12))
    assert np.array_equal(np.stack([frame for _, frame in followed]), frames)
    assert max(s3_server.keys(bucket)) == "run.zarr/zarr.json"
