"""bgio's own Zstd, LZ4, Blosc and Bitshuffle chunks: read back byte-exact by hdf5plugin's filters,
left to HDF5 when bgio cannot reproduce them, and encoded on a pool that keeps order and pace."""

from __future__ import annotations

import contextlib
import logging
import struct
import subprocess
import sys
import threading
from concurrent.futures import CancelledError

import h5py
import numpy as np
import pytest

from bgio import PRESETS, ChainError, cores
from bgio.h5 import FrameWriter, codecs, filters, pipeline_of
from bgio.h5.filters import EncodingPool, encoding_pool

hdf5plugin = pytest.importorskip("hdf5plugin")

SHAPE = (96, 80)


def _frames(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    blob = np.exp(-((yy - 40) ** 2 + (xx - 30) ** 2) / 60.0)
    smooth = 100 + 20 * rng.standard_normal((3, *SHAPE)) + 3000 * blob
    noise = rng.integers(0, 250, size=(1, *SHAPE))  # incompressible: raw LZ4 blocks, memcpy'd Blosc
    return np.concatenate([smooth.clip(0, 250), noise]).astype(dtype)


def _needs(filter_id: int) -> None:
    pytest.importorskip(codecs.CODEC_MODULES[filter_id])


CODECS = {
    "zstd-3": lambda: hdf5plugin.Zstd(clevel=3),
    "zstd by id, no options": lambda: {"compression": 32015},
    "lz4": lambda: hdf5plugin.LZ4(),
    "lz4 in 4000-byte blocks": lambda: hdf5plugin.LZ4(nbytes=4000),
    "blosc lz4 shuffle": lambda: hdf5plugin.Blosc("lz4", 5, hdf5plugin.Blosc.SHUFFLE),
    "blosc zstd bitshuffle": lambda: hdf5plugin.Blosc("zstd", 3, hdf5plugin.Blosc.BITSHUFFLE),
    "blosc blosclz no shuffle": lambda: hdf5plugin.Blosc("blosclz", 9, hdf5plugin.Blosc.NOSHUFFLE),
    "bitshuffle lz4": lambda: hdf5plugin.Bitshuffle(),
    "bitshuffle alone": lambda: hdf5plugin.Bitshuffle(cname="none"),
    "bitshuffle zstd-5": lambda: hdf5plugin.Bitshuffle(cname="zstd", clevel=5),
    "bitshuffle lz4, 1024-element blocks": lambda: hdf5plugin.Bitshuffle(nelems=1024),
}


def _options(name: str) -> dict:
    return dict(CODECS[name]())


@pytest.mark.parametrize("dtype", ["u1", "<u2", "<f4", ">i8"])
@pytest.mark.parametrize("name", list(CODECS))
def test_hdf5plugin_reads_the_chunks_bgio_encodes_exactly(tmp_path, name, dtype):
    options = _options(name)
    _needs(options["compression"])
    frames = _frames(dtype)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        # The same frames through the HDF5 filter itself, beside bgio's.
        f.create_dataset("filter", data=frames, chunks=(1, *SHAPE), **options)
        ds = f.create_dataset("bgio", shape=frames.shape, dtype=dtype, chunks=(1, *SHAPE),
                              **options)
        pipeline = pipeline_of(ds)
        assert pipeline is not None and pipeline.compresses
        for index, frame in enumerate(frames):
            ds.id.write_direct_chunk((index, 0, 0), pipeline.encode(frame))
    with h5py.File(path, "r") as f:
        ours, theirs = f["bgio"][...], f["filter"][...]
        assert ours.dtype == np.dtype(dtype)
        assert ours.tobytes() == frames.tobytes()
        assert theirs.tobytes() == ours.tobytes()


def test_lz4_chunks_have_the_filters_block_framing(tmp_path):
    _needs(codecs.LZ4)
    random = np.random.default_rng(5).integers(0, 1 << 16, size=(1, *SHAPE), dtype="<u2")
    frames = np.concatenate([_frames("<u2")[:3], random])
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("a", shape=frames.shape, dtype="<u2", chunks=(1, *SHAPE),
                              **hdf5plugin.LZ4(nbytes=4000))
        for frame, compressible in zip(frames, (True, True, True, False), strict=True):
            data = bytes(pipeline_of(ds).encode(frame))
            total, block = struct.unpack(">QI", data[:12])
            assert (total, block) == (frame.nbytes, 4000)
            position, sizes = 12, []
            while position < len(data):
                (size,) = struct.unpack(">I", data[position : position + 4])
                sizes.append(size)
                position += 4 + size
            assert position == len(data)
            assert len(sizes) == -(-frame.nbytes // 4000)  # ceil: the last block is shorter
            if not compressible:  # stored raw: the block's own size, the frame's bytes
                assert sizes[:-1] == [4000] * (len(sizes) - 1)
                assert sizes[-1] == frame.nbytes % 4000
                assert data[16 : 16 + 4000] == frame.tobytes()[:4000]
            else:
                assert all(size < 4000 for size in sizes[:-1])


def test_the_pipeline_reads_the_filters_options(tmp_path):
    _needs(codecs.BLOSC)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("a", shape=(4, 64), chunks=(1, 64), dtype="<u2",
                              **hdf5plugin.Blosc("zstd", 7, hdf5plugin.Blosc.BITSHUFFLE))
        # Filled in by the filter: revision, format, type size, chunk bytes, then ours.
        assert pipeline_of(ds).steps == ((codecs.BLOSC, (2, 2, 2, 128, 7, 2, 5)),)
        ds = f.create_dataset("b", shape=(4, 64), chunks=(1, 64), dtype="<u2",
                              compression=32015, compression_opts=(9,), shuffle=True)
        assert pipeline_of(ds).steps == ((filters.SHUFFLE, (2,)), (codecs.ZSTD, (9,)))


def test_a_missing_codec_package_leaves_the_filter_to_hdf5(tmp_path, monkeypatch, caplog):
    real = codecs.import_module

    def without_numcodecs(name):
        if name.startswith("numcodecs"):
            raise ImportError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(codecs, "import_module", without_numcodecs)
    frames = _frames("<u2")
    path = tmp_path / "f.h5"
    with (caplog.at_level(logging.DEBUG, logger="bgio"),
          FrameWriter(path, "frames", SHAPE, "<u2", compression=hdf5plugin.Zstd(clevel=3),
                      priority=1) as w):
        assert pipeline_of(w.dataset) is None
        w.append(frames)
    assert "filter 32015 needs the numcodecs package (pip extra 'codecs')" in caplog.text
    with h5py.File(path, "r") as f:
        assert f["frames"][...].tobytes() == frames.tobytes()
        assert f["frames"].id.get_create_plist().get_filter(0)[0] == codecs.ZSTD


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"compression": 32015, "fletcher32": True}, None),  # a chain bgio cannot reproduce
     ({"compression": 32000}, None),  # LZF: a filter bgio does not know
     ({"compression": 32001, "compression_opts": (0, 0, 0, 0, 5, 1, 3)},
      "blosc: compressor code 3 not available")],  # snappy: not in numcodecs' blosc
)
def test_filters_bgio_cannot_reproduce_fall_back(tmp_path, kwargs, reason, caplog):
    _needs(codecs.BLOSC)
    with h5py.File(tmp_path / "f.h5", "w") as f, caplog.at_level(logging.DEBUG, logger="bgio"):
        ds = f.create_dataset("a", shape=(4, 64), chunks=(1, 64), dtype="<u2", **kwargs)
        assert pipeline_of(ds) is None
    if reason is not None:
        assert reason in caplog.text


@pytest.mark.parametrize(
    ("filter_id", "options", "reason"),
    [(codecs.BLOSC, (2, 2, 2, 128, 10, 1, 1), "blosc: options (2, 2, 2, 128, 10, 1, 1) out of range"),
     (codecs.BLOSC, (2, 2), "blosc: client data not filled in by the filter"),
     (codecs.BITSHUFFLE, (0, 4, 4, 0, 2), "bitshuffle: element size not the dataset's"),
     (codecs.BITSHUFFLE, (0, 4, 2, 100, 2), "bitshuffle: block size 100 is not a multiple of 8"),
     (codecs.BITSHUFFLE, (0, 4, 2, 0, 7), "bitshuffle: compression 7 unknown"),
     (codecs.BITSHUFFLE, (0, 4, 2, 0, 3),
      "bitshuffle: zstd level missing, or bitshuffle built without zstd"),
     (4, (), "filter 4 is not one bgio applies")],
)
def test_options_bgio_cannot_reproduce_are_named(filter_id, options, reason):
    _needs(filter_id if filter_id in codecs.CODEC_MODULES else codecs.ZSTD)
    assert codecs.unsupported_reason(filter_id, options, 2) == reason


def test_frame_writer_takes_the_codec_as_h5py_does(tmp_path):
    _needs(codecs.ZSTD)
    frames = _frames("<u2")
    for kwargs in ({"compression": hdf5plugin.Zstd(clevel=5)},
                   {"compression": 32015, "compression_opts": (5,)}):
        path = tmp_path / "f.h5"
        with FrameWriter(path, "frames", SHAPE, "<u2", **kwargs) as w:
            assert pipeline_of(w.dataset).steps == ((codecs.ZSTD, (5,)),)
            w.append(frames)
        with h5py.File(path, "r") as f:
            assert f["frames"][...].tobytes() == frames.tobytes()
        path.unlink()


def test_the_pool_stores_chunks_in_order_whatever_order_they_are_encoded_in(tmp_path, monkeypatch):
    _needs(codecs.LZ4)
    monkeypatch.setattr(cores, "available", lambda: 2)
    frames = _frames("<u2")[:2]
    second_done = threading.Event()
    real = filters.ChunkPipeline.encode

    def encode(self, chunk):
        if np.array_equal(chunk.reshape(SHAPE), frames[0]):
            assert second_done.wait(30)  # the first chunk is encoded last
            return real(self, chunk)
        try:
            return real(self, chunk)
        finally:
            second_done.set()

    monkeypatch.setattr(filters.ChunkPipeline, "encode", encode)
    path = tmp_path / "f.h5"
    with FrameWriter(path, "frames", SHAPE, "<u2", compression=hdf5plugin.LZ4(),
                     chunk_frames=1, priority=1) as w:
        # Two cores: one pool thread, which holds the first chunk; the
        # worker, waiting for it, encodes the second meanwhile.
        assert w._pool.threads == 1
        first, second = w.append(frames[0]), w.append(frames[1])
        second.result(timeout=30)
        assert first.done()  # stored before the second, though encoded after it
    assert second_done.is_set()
    with h5py.File(path, "r") as f:
        assert f["frames"][...].tobytes() == frames.tobytes()


class _FakeTime:
    """A clock that moves only when told, and a rest that records the pauses asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rests: list[float] = []

    def clock(self) -> float:
        return self.now

    def rest(self, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("preset", [1, 4, 10])
def test_each_pool_thread_is_busy_at_most_the_profiles_fraction(preset):
    fake = _FakeTime()
    pool = EncodingPool(1, PRESETS[preset], clock=fake.clock, rest=fake.rest)

    def encode(chunk):  # 0.1 s of work
        fake.now += 0.1
        return chunk.nbytes

    try:
        for _ in range(3):
            assert pool.submit(encode, np.zeros(1024, "u1")).result(timeout=30) == 1024
    finally:
        pool.shutdown()
    pct = PRESETS[preset].bandwidth_pct
    expected = [] if pct == 100 else [pytest.approx(0.1 * (100 - pct) / pct)] * 2
    assert fake.rests == expected
    assert pool.profile.max_rate is None  # the worker caps the bytes stored, not the pool


def test_every_preset_has_a_pool_on_two_cores_and_none_on_one(monkeypatch):
    monkeypatch.setattr(cores, "available", lambda: 8)
    pools = [encoding_pool(PRESETS[preset]) for preset in (1, 4, 10)]
    try:
        assert [pool.threads for pool in pools] == [filters.MAX_POOL] * 3
        assert [pool.profile.bandwidth_pct for pool in pools] == [100.0, 72.0, 20.0]
    finally:
        for pool in pools:
            pool.shutdown()
    monkeypatch.setattr(cores, "available", lambda: 1)
    assert encoding_pool(PRESETS[4]) is None


def test_the_writer_process_leaves_a_core_to_its_caller(monkeypatch):
    # Two cores, one reserved (as the writer process does): the worker
    # compresses alone, no pool thread beside it.
    monkeypatch.setattr(cores, "available", lambda: 2)
    monkeypatch.setattr(cores, "_reserved", 0)
    cores.reserve(1)
    assert cores.usable() == 1
    assert encoding_pool(PRESETS[1]) is None
    monkeypatch.setattr(cores, "available", lambda: 4)
    pool = encoding_pool(PRESETS[1])
    try:
        assert pool is not None and pool.threads == 2
    finally:
        pool.shutdown()


def test_a_turn_whose_chunk_the_worker_took_leaves_no_credit_behind():
    # A pool thread rests before its turn; meanwhile the worker takes the
    # chunk. After the program then goes quiet, the next chunks are paced as
    # after any idle gap, not run back to back as if they were late.
    fake = _FakeTime()
    stolen = []
    pool = None

    def rest(seconds):
        fake.rest(seconds)
        if not stolen:
            stolen.append(1)
            assert pool.encode_one()  # the worker takes the chunk this turn was for

    def encode(chunk):  # 10 ms of work
        fake.now += 0.01
        return int(chunk[0])

    pool = EncodingPool(1, PRESETS[10], clock=fake.clock, rest=rest)
    try:
        assert pool.submit(encode, np.array([0], "u1")).result(timeout=30) == 0
        assert pool.submit(encode, np.array([1], "u1")).result(timeout=30) == 1
        pool._executor.submit(lambda: None).result(timeout=30)  # chunk 1's turn has ended
        assert stolen
        fake.now += 10.0  # quiet for 10 s
        fake.rests.clear()
        for number in range(2, 9):
            assert pool.submit(encode, np.array([number], "u1")).result(timeout=30) == number
    finally:
        pool.shutdown(wait=True)
    assert fake.rests == [pytest.approx(0.04)] * 6  # 10 ms of work at 20 %: 40 ms of rest


def test_a_resting_thread_wakes_when_the_pool_shuts_down():
    fake = _FakeTime()
    pool = EncodingPool(1, PRESETS[10], clock=fake.clock)  # rests for real (an Event's wait)

    def an_hour(chunk):
        fake.now += 3600.0
        return 0

    pool.submit(an_hour, np.zeros(1, "u1")).result(timeout=30)
    later = pool.submit(lambda chunk: 1, np.zeros(1, "u1"))  # due in four hours
    pool.shutdown(wait=True)  # wakes it: the chunk is encoded now
    assert later.result(timeout=30) == 1


def test_importing_bgio_imports_no_codec_package():
    code = ("import sys, bgio, bgio.h5, bgio.h5.codecs, bgio.h5.deflate; "
            "print([m for m in ('numcodecs', 'bitshuffle', 'hdf5plugin', 'zlib_ng')"
            " if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


@contextlib.contextmanager
def _gated_pool(threads: int, lead: int):
    """A pool whose chunk ``n`` sets ``began[n]`` when it starts and finishes once
    ``gates[n]`` is set; yields (pool, submit, gates, began), and lets every chunk
    finish and shuts the pool down at the end."""
    began: dict[int, threading.Event] = {}
    gates: dict[int, threading.Event] = {}

    def encode(chunk):
        number = int(chunk[0])
        began[number].set()
        assert gates[number].wait(30)
        return number

    pool = EncodingPool(threads, PRESETS[1], lead=lead)

    def submit(number: int):
        began[number], gates[number] = threading.Event(), threading.Event()
        return pool.submit(encode, np.array([number], "u1"))

    try:
        yield pool, submit, gates, began
    finally:
        for gate in gates.values():
            gate.set()
        pool.shutdown(wait=True)


#: How long a chunk that must not start is given to start anyway.
_NOT_STARTING = 0.1


def test_a_lead_bound_lets_the_pool_run_only_so_far_past_the_worker():
    with _gated_pool(threads=2, lead=2) as (_, submit, gates, began):
        encodings = [submit(number) for number in range(6)]
        assert began[0].wait(30) and began[1].wait(30)
        gates[1].set()
        assert encodings[1].result(timeout=30) == 1
        # Chunk 1 is done, but chunk 0, the one the worker needs, is not
        # taken: chunk 2 does not start, though a thread is free.
        assert not began[2].wait(_NOT_STARTING)
        gates[0].set()
        assert encodings[0].take() == 0
        assert began[2].wait(30)  # 0 taken: 2 may start, not 3
        assert not began[3].wait(_NOT_STARTING)
        encodings[1].drop()  # a store that gave its chunk up counts as taken
        assert began[3].wait(30)
        for number in range(2, 6):
            gates[number].set()
        assert [encodings[number].take() for number in range(2, 6)] == [2, 3, 4, 5]


def test_the_chunk_the_worker_waits_for_always_starts():
    # The worker takes chunks in order, and chunks finish out of order (one
    # in three held until the worker wants it, the others at once): the
    # bound never keeps the chunk waited for from starting.
    with _gated_pool(threads=2, lead=2) as (_, submit, gates, _began):
        encodings = [submit(number) for number in range(40)]
        for number in range(40):
            if number % 3:
                gates[number].set()
        for number in range(40):
            gates[number].set()
            assert encodings[number].take() == number


def test_shutdown_lets_a_thread_waiting_for_room_go():
    with _gated_pool(threads=1, lead=1) as (pool, submit, gates, began):
        first, second = submit(0), submit(1)
        gates[0].set()
        assert first.result(timeout=30) == 0  # never taken: the second may not start
        assert not began[1].wait(_NOT_STARTING)
        gates[1].set()
        pool.shutdown(wait=True)
        assert second.result(timeout=30) == 1


class _HeldFirst:
    """An encode function whose chunk 0 waits for ``release``; every chunk records the
    thread that encoded it, and chunk numbers listed in ``failing`` raise."""

    def __init__(self, failing=()):
        self.release = threading.Event()
        self.started = threading.Event()  # chunk 0 began
        self.ran_in: dict[int, str] = {}
        self.failing = set(failing)

    def __call__(self, chunk):
        number = int(chunk[0])
        self.ran_in[number] = threading.current_thread().name
        if number == 0:
            self.started.set()
            assert self.release.wait(30)
        if number in self.failing:
            raise ValueError(f"chunk {number} does not encode")
        return number


def _wait_helping_in_a_thread(encoding):
    """Run ``encoding.wait_helping()`` in a thread named "worker"; returns the thread and
    a list that gets the waited seconds."""
    waited: list[float] = []
    worker = threading.Thread(target=lambda: waited.append(encoding.wait_helping()),
                              name="worker")
    worker.start()
    return worker, waited


def test_a_worker_waiting_for_its_chunk_encodes_the_queued_ones():
    encode = _HeldFirst()
    pool = EncodingPool(1, PRESETS[1], lead=8)
    try:
        encodings = [pool.submit(encode, np.array([n], "u1")) for n in range(4)]
        assert encode.started.wait(30)  # the pool's thread holds chunk 0
        worker, waited = _wait_helping_in_a_thread(encodings[0])
        # The worker encodes 1, 2 and 3 meanwhile, in order, then waits for 0.
        assert [encodings[n].result(timeout=30) for n in (1, 2, 3)] == [1, 2, 3]
        assert worker.is_alive()
        encode.release.set()
        worker.join(30)
        assert not worker.is_alive() and waited and waited[0] >= 0.0
        assert encodings[0].take() == 0
        assert encode.ran_in[0].startswith("bgio-h5-filter")
        assert [encode.ran_in[n] for n in (1, 2, 3)] == ["worker"] * 3
        for encoding in encodings[1:]:
            encoding.drop()
        # The pool's turns for chunks the worker took found nothing and
        # ended: the pool goes on with the next chunk.
        assert pool.submit(encode, np.array([4], "u1")).result(timeout=30) == 4
        assert encode.ran_in[4].startswith("bgio-h5-filter")
    finally:
        encode.release.set()
        pool.shutdown(wait=True)


def test_a_waiting_worker_encodes_only_what_the_lead_bound_allows():
    encode = _HeldFirst()
    pool = EncodingPool(1, PRESETS[1], lead=2)
    try:
        encodings = [pool.submit(encode, np.array([n], "u1")) for n in range(4)]
        assert encode.started.wait(30)
        worker, _ = _wait_helping_in_a_thread(encodings[0])
        assert encodings[1].result(timeout=30) == 1  # 0 not taken: only 1 may start
        worker.join(_NOT_STARTING)
        assert worker.is_alive() and 2 not in encode.ran_in
        encode.release.set()
        worker.join(30)
        assert encodings[0].take() == 0 and encodings[1].take() == 1
        assert [encodings[n].take() for n in (2, 3)] == [2, 3]
    finally:
        encode.release.set()
        pool.shutdown(wait=True)


def test_a_chunk_that_fails_in_the_waiting_worker_fails_alone():
    encode = _HeldFirst(failing={1})
    pool = EncodingPool(1, PRESETS[1], lead=8)
    try:
        encodings = [pool.submit(encode, np.array([n], "u1")) for n in range(3)]
        assert encode.started.wait(30)
        worker, _ = _wait_helping_in_a_thread(encodings[0])
        assert encodings[2].result(timeout=30) == 2
        encode.release.set()
        worker.join(30)
        assert not worker.is_alive()
        assert encode.ran_in[1] == "worker"
        assert encodings[0].take() == 0
        with pytest.raises(ValueError, match="chunk 1 does not encode"):
            encodings[1].take()
        assert encodings[2].take() == 2
    finally:
        encode.release.set()
        pool.shutdown(wait=True)


def test_a_shut_down_pool_leaves_the_waiting_worker_to_wait():
    encode = _HeldFirst()
    pool = EncodingPool(1, PRESETS[1], lead=8)
    encodings = [pool.submit(encode, np.array([n], "u1")) for n in range(2)]
    assert encode.started.wait(30)
    pool.shutdown()
    worker, _ = _wait_helping_in_a_thread(encodings[0])
    worker.join(_NOT_STARTING)
    assert 1 not in encode.ran_in or encode.ran_in[1] != "worker"
    encode.release.set()
    worker.join(30)
    assert not worker.is_alive()
    assert encodings[0].take() == 0 and encodings[1].result(timeout=30) == 1
    assert encode.ran_in[1].startswith("bgio-h5-filter")  # queued chunks are still encoded


def test_a_submit_that_fails_leaves_the_lead_bound_free(monkeypatch):
    pool = EncodingPool(1, PRESETS[1], lead=2)
    real = pool._executor.submit
    calls = []

    def refuse_the_second(fn, *args):
        calls.append(fn)
        if len(calls) == 2:
            raise RuntimeError("can't start new thread")
        return real(fn, *args)

    monkeypatch.setattr(pool._executor, "submit", refuse_the_second)
    try:
        first = pool.submit(lambda chunk: 0, np.zeros(1, "u1"))
        with pytest.raises(RuntimeError, match="can't start new thread"):
            pool.submit(lambda chunk: 1, np.zeros(1, "u1"))
        later = [pool.submit(lambda chunk, n=n: n, np.zeros(1, "u1")) for n in (2, 3)]
        assert first.take() == 0
        # The failed chunk's number does not hold the bound: 3 may start.
        assert [encoding.take() for encoding in later] == [2, 3]
        assert pool.outstanding == 0
    finally:
        pool.shutdown(wait=True)


def test_a_chunk_given_up_before_it_started_is_not_encoded():
    encode = _HeldFirst()
    pool = EncodingPool(1, PRESETS[1], lead=8)
    try:
        encodings = [pool.submit(encode, np.array([n], "u1")) for n in range(3)]
        assert encode.started.wait(30)  # the pool's thread holds chunk 0
        encodings[1].drop()  # its store was cancelled
        worker, _ = _wait_helping_in_a_thread(encodings[0])
        assert encodings[2].result(timeout=30) == 2
        encode.release.set()
        worker.join(30)
        assert 1 not in encode.ran_in and encodings[1].cancelled()
        assert encodings[0].take() == 0 and encodings[2].take() == 2
    finally:
        encode.release.set()
        pool.shutdown(wait=True)


def test_a_lead_must_be_positive():
    with pytest.raises(ValueError, match="lead must be at least 1"):
        EncodingPool(1, PRESETS[1], lead=0)


def test_frame_stores_that_end_without_their_chunk_give_it_up(tmp_path, monkeypatch):
    # FrameWriter's pool runs a bounded lead: chunks whose stores are
    # cancelled before the worker reaches them (and the stores after them,
    # which then fail to keep the order) release their places.
    from bgio.h5 import sink

    frames = np.arange(60 * 16 * 16, dtype="<u2").reshape(60, 16, 16)
    held, go = threading.Event(), threading.Event()
    store = sink.store_chunk

    def store_first_one_late(*args, **kwargs):
        if not held.is_set():
            held.set()
            assert go.wait(30)
        return store(*args, **kwargs)

    monkeypatch.setattr(sink, "store_chunk", store_first_one_late)
    w = FrameWriter(tmp_path / "f.h5", "frames", (16, 16), "<u2", compression="gzip",
                    chunk_frames=1, priority=1, on_missing="ignore")
    assert w._pool is not None and w._pool.outstanding == 0
    first = w.append(frames[0])
    assert held.wait(30)  # the worker is storing chunk 0
    handles = [w.append(frame) for frame in frames[1:]]
    for handle in handles[:30]:
        assert handle.cancel()
    go.set()
    assert first.result(timeout=30) == frames[0].nbytes
    assert all(handle.cancelled() for handle in handles[:30])
    for handle in handles[30:]:
        assert isinstance(handle.exception(timeout=30), ChainError)
    assert w._pool.outstanding == 0
    with pytest.raises(CancelledError):
        w.close()


def test_a_pool_failure_outside_the_codec_fails_the_store_instead_of_hanging(tmp_path,
                                                                            monkeypatch):
    # The pool's own work around the encoding raises (a bug, say): the
    # chunk's Encoding carries the error, so the worker does not wait for it
    # forever.
    calls = []
    wait_for_room = filters._Lead.wait_for_room

    def failing_wait(self, encoding):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in the pool")
        return wait_for_room(self, encoding)

    monkeypatch.setattr(filters._Lead, "wait_for_room", failing_wait)
    # Only the pool encodes (chunks the worker takes skip the pool's wait).
    monkeypatch.setattr(filters.EncodingPool, "encode_one", lambda self: False)
    w = FrameWriter(tmp_path / "f.h5", "frames", (16, 16), "<u2", compression="gzip",
                    chunk_frames=1, priority=1)
    handles = [w.append(np.ones((16, 16), "<u2")) for _ in range(6)]
    with pytest.raises(RuntimeError, match="boom in the pool"):
        w.close(timeout=30)
    assert all(handle.done() for handle in handles)
    assert w._pool is not None and w._pool.outstanding == 0
