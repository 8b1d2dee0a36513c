"""bgio.zarr for readers: the length and the announcements in zarr.json, follow(), and
recover() after a writer was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import bgio.zarr
from bgio.h5.followers import FollowTimeout
from bgio.zarr import record as zarr_record

ts = pytest.importorskip("tensorstore")

SHAPE = (16, 24)


def _frames(count: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (count, *SHAPE), dtype="u2")


def _metadata(store) -> dict:
    with open(os.path.join(store, "zarr.json")) as file:
        return json.load(file)


def _state(store) -> tuple[int, dict]:
    document = _metadata(store)
    return document["shape"][0], document["attributes"]["bgio"]


def test_a_flush_announces_the_frames_and_the_close_finishes(tmp_path):
    store = str(tmp_path / "a.zarr")
    frames = _frames(9)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", flush_interval=None, flush_every=1000)
    w.append(frames[:5])
    w.flush()
    assert _state(store) == (5, {"frames": 5, "finished": False})
    w.append(frames[5:])
    w.close()
    assert _state(store) == (9, {"frames": 9, "finished": True})


def test_the_length_stops_at_the_first_slot_not_stored(tmp_path):
    store = str(tmp_path / "gap.zarr")
    frames = _frames(10)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", on_missing="ignore")
    w.write_at(5, frames[5:])
    w.flush()
    assert _state(store) == (0, {"frames": 0, "finished": False})  # 0..4 would read as 0
    w.write_at(0, frames[:3])
    w.flush()
    assert _state(store) == (3, {"frames": 3, "finished": False})
    w.close()  # 3 and 4 never written: the close says so
    assert _state(store) == (10, {"frames": 10, "finished": True, "missing": [[3, 5]]})


def test_zarr_python_sees_only_frames_stored(tmp_path):
    zarr = pytest.importorskip("zarr")
    store = str(tmp_path / "zp.zarr")
    frames = _frames(7)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", codec="lz4", chunk_frames=2)
    w.append(frames[:3])
    w.write_at(4, frames[4:])
    w.flush()
    array = zarr.open_array(store, mode="r")
    assert array.shape == (3, *SHAPE)
    assert array[:].tobytes() == frames[:3].tobytes()
    assert array.attrs["bgio"] == {"frames": 3, "finished": False}
    w.write_at(3, frames[3])  # (the slot left free, filled)
    w.close()
    array = zarr.open_array(store, mode="r")
    assert array[:].tobytes() == frames.tobytes()


def test_frames_are_announced_every_flush_every_frames_without_a_flush(tmp_path,
                                                                       monkeypatch):
    store = str(tmp_path / "every.zarr")
    announced = threading.Event()
    real = zarr_record.Record._written

    def written(self, *args):
        real(self, *args)
        if self.announced >= 4:
            announced.set()

    monkeypatch.setattr(zarr_record.Record, "_written", written)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", flush_interval=None, flush_every=2)
    frames = _frames(5)
    for frame in frames:
        w.append(frame)
    assert announced.wait(30)
    length, state = _state(store)
    assert length in (4, 5) and state == {"frames": length, "finished": False}
    w.close()


def test_a_failed_writer_announces_what_it_stored_and_why_it_stopped(tmp_path,
                                                                     monkeypatch):
    from bgio.zarr import sink as zarr_sink

    real = zarr_sink.ArraySink.write
    calls = []

    def write(self, block):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(5, "the store went away")
        return real(self, block)

    monkeypatch.setattr(zarr_sink.ArraySink, "write", write)
    store = str(tmp_path / "failed.zarr")
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16")
    for frame in _frames(5):
        w.append(frame)
    with pytest.raises(OSError, match="the store went away"):
        w.close()
    assert _state(store) == (2, {"frames": 2, "finished": True,
                                 "error": "OSError: [Errno 5] the store went away"})


@pytest.mark.parametrize("layout", [{}, {"shard_frames": 4, "codec": "lz4"}])
def test_follow_yields_every_frame_in_order_while_it_is_written(tmp_path, layout):
    store = str(tmp_path / "followed.zarr")
    frames = _frames(30)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", flush_interval=0.01, **layout)

    def produce() -> None:
        for frame in frames:
            w.append(frame)
        w.close()

    producer = threading.Thread(target=produce)
    with bgio.zarr.follow(store, timeout=30) as follower:
        producer.start()
        seen = list(follower)
    producer.join()
    assert [index for index, _ in seen] == list(range(30))
    assert np.stack([frame for _, frame in seen]).tobytes() == frames.tobytes()
    assert follower.finished and not follower.timed_out and follower.error is None


def test_follow_stops_or_raises_when_nothing_comes(tmp_path):
    store = str(tmp_path / "quiet.zarr")
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16")
    w.append(_frames(2))
    w.flush()
    follower = bgio.zarr.follow(store, timeout=0.2)
    assert [index for index, _ in follower] == [0, 1]
    assert follower.timed_out and not follower.finished
    with pytest.raises(FollowTimeout, match="no new frame in"):
        list(bgio.zarr.follow(str(tmp_path / "never.zarr"), timeout=0.1, on_timeout="raise"))
    w.close()


@pytest.mark.parametrize("options, message", [
    ({"timeout": 0}, r"^timeout must be seconds > 0, got 0$"),
    ({"on_timeout": "wait"}, r"^on_timeout must be 'stop' or 'raise', got 'wait'$"),
    ({"batch": 0}, r"^batch must be an int >= 1, got 0$"),
])
def test_follow_refuses_bad_options(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        bgio.zarr.follow(str(tmp_path / "x.zarr"), **options)


_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import bgio.zarr
    store, shard = sys.argv[1], int(sys.argv[2]) or None
    frames = np.random.default_rng(5).integers(0, 4000, (100, 16, 24), dtype="u2")
    w = bgio.zarr.FrameWriter(store, (16, 24), "uint16", shard_frames=shard,
                              flush_interval=None, flush_every=10)
    handles = [w.append(frame) for frame in frames[:60]]
    for handle in handles[:int(sys.argv[3])]:  # (a shard being filled is not stored)
        handle.result()
    print("stored", flush=True)
    sys.stdin.read()  # (killed here)
""")


@pytest.mark.slow  # (a process started per case)
@pytest.mark.parametrize("shard, kept", [(0, 60), (8, 56)])
def test_after_sigkill_announced_frames_read_back_and_recover_finds_the_rest(
        tmp_path, shard, kept):
    store = str(tmp_path / "killed.zarr")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, store, str(shard), str(kept)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "stored\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(60)
    frames = _frames(100)
    announced, state = _state(store)
    assert not state["finished"] and state["frames"] == announced <= kept
    array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert array.read().result().tobytes() == frames[:announced].tobytes()
    found = bgio.zarr.recover(store)
    assert found == bgio.zarr.Recovery(kept, announced, 0, False)
    assert _state(store) == (kept, {"frames": kept, "finished": True, "recovered": {
        "announced": announced, "stranded": 0}})
    array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert array.read().result().tobytes() == frames[:kept].tobytes()
    assert bgio.zarr.recover(store) == bgio.zarr.Recovery(kept, kept, 0, True)  # (again: no-op)


def test_recover_refuses_what_is_not_an_array(tmp_path):
    with pytest.raises(ValueError, match=r"holds no Zarr v3 array \(no zarr.json\)$"):
        bgio.zarr.recover(str(tmp_path / "nothing.zarr"))


def test_two_shared_writers_fill_one_array_and_the_record_merges_them(tmp_path):
    store = str(tmp_path / "shared.zarr")
    frames = _frames(12)
    one = bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True, shard_frames=4)
    other = bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True, codec=None)
    for index in range(0, 12, 2):
        one.write_at(index, frames[index])
        other.write_at(index + 1, frames[index + 1])
    one.flush()
    other.flush()
    length, state = _state(store)
    assert length == state["frames"] == state["through"] == 12 and not state["finished"]
    one.close()
    assert not _state(store)[1]["finished"]  # (the other is still open)
    other.write_at(14, frames[0])
    other.close()
    length, state = _state(store)
    assert (length, state["finished"], state["missing"]) == (15, True, [[12, 14]])
    assert sorted(entry["extent"] for entry in state["writers"].values()) == [11, 15]
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert back[:12].read().result().tobytes() == frames.tobytes()
    assert _metadata(store)["chunk_grid"]["configuration"]["chunk_shape"][0] == 4  # the first's


def test_joining_an_array_of_other_frames_is_refused(tmp_path):
    store = str(tmp_path / "other.zarr")
    first = bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True)
    with pytest.raises(ValueError, match=r"holds an array of uint16 frames of shape "
                                         r"\(16, 24\), not uint8 \(16, 24\)$"):
        bgio.zarr.FrameWriter(store, SHAPE, "uint8", shared=True)
    with pytest.raises(ValueError, match=r"holds a Zarr array or group already$"):
        bgio.zarr.FrameWriter(store, SHAPE, "uint16")  # (not shared: a second writer)
    first.close()


_SHARER = textwrap.dedent("""
    import sys
    import numpy as np
    import bgio.zarr
    store, first, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    frames = np.random.default_rng(5).integers(0, 4000, (64, 16, 24), dtype="u2")
    with bgio.zarr.FrameWriter(store, (16, 24), "uint16", shared=True, shard_frames=8,
                               codec="zstd") as w:
        for index in range(first, 64, step):
            w.write_at(index, frames[index])
""")


@pytest.mark.slow  # (four processes)
def test_four_processes_write_interleaved_slots_into_shared_shards(tmp_path):
    store = str(tmp_path / "four.zarr")
    bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True, shard_frames=8,
                          codec="zstd").close()  # (made first: every writer joins it)
    children = [subprocess.Popen([sys.executable, "-c", _SHARER, store, str(k), "4"])
                for k in range(4)]
    assert [child.wait(120) for child in children] == [0, 0, 0, 0]
    length, state = _state(store)
    assert (length, state["finished"], state["through"]) == (64, True, 64)
    assert "missing" not in state and len(state["writers"]) == 5
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert back.read().result().tobytes() == _frames(64).tobytes()


@pytest.mark.slow
def test_an_ome_zarr_image_validates_and_opens_in_zarr_python(tmp_path):
    zarr = pytest.importorskip("zarr")
    models = pytest.importorskip("ome_zarr_models.v05.image")
    store = str(tmp_path / "image.zarr")
    frames = _frames(4)
    ome = {"axes": [("t", "time", "millisecond"), ("y", "space", "micrometer"),
                    {"name": "x", "type": "space", "unit": "micrometer"}],
           "scale": [100, 0.65, 0.65], "name": "camera"}
    with bgio.zarr.FrameWriter(store, SHAPE, "uint16", ome=ome) as w:
        w.append(frames)
    image = models.Image.from_zarr(zarr.open_group(store, mode="r"))
    (multiscale,) = image.attributes.ome.multiscales
    assert [(axis.name, axis.type, axis.unit) for axis in multiscale.axes] == [
        ("t", "time", "millisecond"), ("y", "space", "micrometer"), ("x", "space", "micrometer")]
    assert multiscale.datasets[0].path == "0"
    assert list(multiscale.datasets[0].coordinateTransformations[0].scale) == [100, 0.65, 0.65]
    level = zarr.open_group(store, mode="r")["0"]
    assert level.metadata.dimension_names == ("t", "y", "x")
    assert level[:].tobytes() == frames.tobytes()
    assert [index for index, _ in bgio.zarr.follow(store, timeout=5)] == [0, 1, 2, 3]
    assert bgio.zarr.recover(store).finished


@pytest.mark.parametrize("ome, error, message", [
    ("yes", TypeError, r"^ome must be a dict, True or None, got str$"),
    ({"axes": ["t"]}, ValueError, r"^ome: axes must list 3 axes"),
    ({"axes": [("y", "space"), ("t", "time"), ("x", "space")]}, ValueError,
     r"^ome: the first axis \(the one frames grow along\) must be of type 'time'$"),
    ({"scale": [1, 0, 1]}, ValueError, r"^ome: scale must be 3 numbers > 0"),
    ({"units": "um"}, ValueError, r"^ome: unknown key\(s\) \['units'\]"),
])
def test_bad_ome_metadata_is_refused(tmp_path, ome, error, message):
    with pytest.raises(error, match=message):
        bgio.zarr.FrameWriter(str(tmp_path / "bad.zarr"), SHAPE, "uint16", ome=ome)
    assert not os.path.exists(tmp_path / "bad.zarr")


class _Broken:
    """Stands for a store that fails: every write through it is refused."""

    def __getitem__(self, key):
        raise ValueError("the store went away")


def test_shared_writers_in_one_process_fail_alone(tmp_path):
    store = str(tmp_path / "alone.zarr")
    one = bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True)
    other = bgio.zarr.FrameWriter(store, SHAPE, "uint16", shared=True)
    one._sink.chunks = _Broken()
    with pytest.raises(OSError, match="the store went away"):
        one.write_at(0, _frames(1)).result(30)
    assert other.write_at(1, _frames(2)[1]).result(30) == SHAPE[0] * SHAPE[1] * 2
    with pytest.raises(OSError, match="the store went away"):
        one.close()
    other.close()  # (its frames are stored: one's failure is not its own)


def test_a_flush_waits_for_what_came_before_it_not_for_what_comes_after(tmp_path):
    w = bgio.zarr.FrameWriter(tmp_path / "busy.zarr", SHAPE, "uint16", priority=1,
                              codec=None, max_pending_bytes=16 * SHAPE[0] * SHAPE[1] * 2)
    stop = threading.Event()
    started = threading.Event()
    frame = _frames(1)[0]

    def camera() -> None:
        while not stop.is_set():
            w.append(frame)
            started.set()

    thread = threading.Thread(target=camera)
    thread.start()
    try:
        assert started.wait(30)
        last = w.append(frame)
        w.flush(timeout=60)  # (waited for every store in flight before: hung)
        assert last.done()
    finally:
        stop.set()
        thread.join()
    w.close()


def test_recover_keeps_dark_frames_and_a_writer_recovered_under_it_says_so(tmp_path):
    store = str(tmp_path / "dark.zarr")
    frames = _frames(6)
    frames[2] = 0  # (tensorstore would leave out a chunk equal to the fill value)
    w = bgio.zarr.FrameWriter(store, SHAPE, "uint16", flush_interval=None, flush_every=1000)
    for handle in [w.append(frame) for frame in frames]:
        handle.result(30)
    assert bgio.zarr.recover(store) == bgio.zarr.Recovery(6, 0, 0, False)
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert back.read().result().tobytes() == frames.tobytes()
    with pytest.raises(OSError, match="zarr.json was changed by someone else"):
        w.close()


_AT_EXIT = textwrap.dedent("""
    import atexit, sys
    import numpy as np
    import bgio.zarr

    def at_exit():
        w = bgio.zarr.FrameWriter(sys.argv[1], (16, 24), "uint16", codec=None)
        for i in range(300):
            w.append(np.full((16, 24), i, "u2"))
        w.close()
        print("closed", w.frames_written, flush=True)

    atexit.register(at_exit)
""")


@pytest.mark.slow  # (a process)
def test_frames_written_at_exit_are_stored_by_the_exiting_thread(tmp_path):
    store = str(tmp_path / "exit.zarr")
    done = subprocess.run([sys.executable, "-c", _AT_EXIT, store], check=False, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "closed 300\n")  # (deadlocked before)
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert (back.read().result()[:, 0, 0] == np.arange(300)).all()


# -- what follows a store runs in bgio's thread, never in tensorstore's ----------------------


def test_stores_and_rewrites_land_in_bgios_landing_thread(tmp_path, monkeypatch):
    # Tensorstore's pool threads must run no Python: one asking for the interpreter lock
    # while the interpreter finalizes aborts the process (std::terminate) at exit.
    from bgio.zarr import record, sink

    seen = set()
    for cls, name in ((sink.ArraySink, "land"), (record.Record, "_written")):
        original = getattr(cls, name)

        def noted(*args, _original=original, **kwargs):
            seen.add(threading.current_thread().name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, name, noted)
    store = str(tmp_path / "where.zarr")
    writer = bgio.zarr.FrameWriter(store, SHAPE, "uint16", codec=None, chunk_frames=3)
    frames = _frames(20)
    for frame in frames:
        writer.append(frame)
    writer.close()
    assert seen == {f"bgio-landing {writer._name}"}
    assert not [thread for thread in threading.enumerate() if thread.name in seen]
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert (back.read().result() == frames).all()


def test_at_exit_the_waiting_threads_land_the_stores_themselves(tmp_path, monkeypatch):
    # At interpreter exit no thread may start: the worker and the closing thread land
    # the stores as they wait for them.
    from bgio import engine

    monkeypatch.setattr(engine, "shutting_down", lambda: True)
    before = set(threading.enumerate())
    store = str(tmp_path / "inline.zarr")
    writer = bgio.zarr.FrameWriter(store, SHAPE, "uint16", codec=None, chunk_frames=2)
    frames = _frames(15)
    for frame in frames:
        writer.append(frame)
    writer.flush()
    assert _state(store)[0] == 15
    writer.close()
    assert not [thread for thread in set(threading.enumerate()) - before
                if thread.name.startswith("bgio-landing")]
    back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": store}}).result()
    assert (back.read().result() == frames).all()
    assert _metadata(store)["attributes"]["bgio"]["finished"] is True
