"""bgio's own chunk filtering must be exactly what HDF5 would store: read back byte-exact."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest

from bgio.h5 import ChunkPipeline, deflate, pipeline_of
from bgio.h5.filters import DEFLATE, SHUFFLE

SHAPE = (64, 48)


def _frames(dtype: str, count: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    # Image-like content (a background, noise, a bright blob), not zeros.
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    blob = np.exp(-((yy - 30) ** 2 + (xx - 20) ** 2) / 50.0)
    frames = 100 + 20 * rng.standard_normal((count, *SHAPE)) + 3000 * blob
    return frames.clip(0, 60000).astype(dtype)


@pytest.mark.parametrize("dtype", ["u1", "<u2", "<f4", ">i4"])
@pytest.mark.parametrize(("compression", "shuffle"), [(None, False), ("gzip", False),
                                                       ("gzip", True), (None, True)])
def test_direct_chunks_read_back_exactly(tmp_path, dtype, compression, shuffle):
    frames = _frames(dtype)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("frames", shape=frames.shape, chunks=(1, *SHAPE), dtype=dtype,
                              compression=compression, shuffle=shuffle)
        pipeline = pipeline_of(ds)
        assert pipeline is not None
        for index, frame in enumerate(frames):
            ds.id.write_direct_chunk((index, 0, 0), pipeline.encode(frame))
    with h5py.File(tmp_path / "f.h5", "r") as f:
        ds = f["frames"]
        assert ds.compression == compression and ds.shuffle == shuffle
        assert ds.dtype == np.dtype(dtype)
        assert np.array_equal(ds[...], frames)
        assert ds[...].tobytes() == frames.tobytes()


def test_the_pipeline_follows_the_dataset(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("a", shape=(4, 8), chunks=(1, 8), dtype="<u2", compression="gzip",
                              compression_opts=7, shuffle=True)
        assert pipeline_of(ds) == ChunkPipeline(((SHUFFLE, (2,)), (DEFLATE, (7,))), 2)
        assert pipeline_of(ds).compresses
        plain = f.create_dataset("b", shape=(4, 8), chunks=(1, 8), dtype="<f8")
        assert pipeline_of(plain) == ChunkPipeline((), 8)
        assert not pipeline_of(plain).compresses


@pytest.mark.parametrize(
    "kwargs",
    [{"compression": "lzf"}, {"fletcher32": True}, {"scaleoffset": 0},
     {"compression": "gzip", "fletcher32": True}],
)
def test_filters_bgio_cannot_reproduce_are_left_to_hdf5(tmp_path, kwargs):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("a", shape=(4, 8), chunks=(1, 8), dtype="<i4", **kwargs)
        assert pipeline_of(ds) is None


def test_contiguous_datasets_have_no_pipeline(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        assert pipeline_of(f.create_dataset("a", shape=(4, 8), dtype="u1")) is None


def test_encode_refuses_a_strided_chunk():
    pipeline = ChunkPipeline(((DEFLATE, (4,)),), 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        pipeline.encode(np.zeros((8, 8), "<u2")[:, ::2])


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (Debian hdf5-tools) not installed")
def test_an_hdf5_reader_no_one_of_us_wrote_reads_the_chunks(tmp_path):
    frames = _frames("<u2", count=2)
    path = tmp_path / "f.h5"
    with h5py.File(path, "w", libver=("earliest", "v110")) as f:
        ds = f.create_dataset("frames", shape=frames.shape, chunks=(1, *SHAPE), dtype="<u2",
                              compression="gzip", shuffle=True)
        for index, frame in enumerate(frames):
            ds.id.write_direct_chunk((index, 0, 0), pipeline_of(ds).encode(frame))
    out = subprocess.run(["h5dump", "-d", "/frames", "-y", "-w", "0", str(path)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    values = [int(v) for v in out.split("DATA {", 1)[1].split("}", 1)[0].replace(",", " ").split()]
    assert values == frames.reshape(-1).tolist()


@pytest.fixture
def deflate_choice(monkeypatch):
    """Restores the deflate implementation chosen from the real environment afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    deflate.choose()


def _stored_chunks(path, frames, shuffle):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("frames", shape=frames.shape, chunks=(1, *SHAPE), dtype="<u2",
                              compression="gzip", compression_opts=4, shuffle=shuffle)
        for index, frame in enumerate(frames):
            ds.id.write_direct_chunk((index, 0, 0), pipeline_of(ds).encode(frame))
    with h5py.File(path, "r") as f:
        ds = f["frames"]
        assert ds[...].tobytes() == frames.tobytes()
        return [ds.id.read_direct_chunk((index, 0, 0)) for index in range(len(frames))]


@pytest.mark.parametrize("shuffle", [False, True])
def test_zlib_ng_chunks_read_back_exactly_through_hdf5s_deflate(tmp_path, deflate_choice,
                                                                 shuffle):
    zlib_ng = pytest.importorskip("zlib_ng.zlib_ng")
    deflate_choice.delenv(deflate.ENVIRONMENT, raising=False)
    assert deflate.choose() == "zlib-ng"
    frames = _frames("<u2")
    for index, (mask, stored) in enumerate(_stored_chunks(tmp_path / "f.h5", frames, shuffle)):
        assert mask == 0
        # zlib-ng's own stream, read by HDF5's (zlib's) inflate.
        plain = memoryview(frames[index].reshape(-1).view(np.uint8))
        if shuffle:
            plain = memoryview(frames[index].reshape(-1).view(np.uint8).reshape(-1, 2).T.copy())
        assert stored == zlib_ng.compress(plain, 4)
        assert zlib.decompress(stored) == bytes(plain)


def test_without_zlib_ng_deflate_is_the_standard_librarys(tmp_path, deflate_choice):
    def without_zlib_ng(name):
        if name.startswith("zlib_ng"):
            raise ImportError(f"No module named {name!r}")
        return importlib.import_module(name)

    deflate_choice.setattr(deflate, "import_module", without_zlib_ng)
    deflate_choice.delenv(deflate.ENVIRONMENT, raising=False)
    assert deflate.choose() == "zlib"
    assert deflate.implementation() == "zlib"
    frames = _frames("<u2")
    stored = _stored_chunks(tmp_path / "f.h5", frames, shuffle=False)
    assert [chunk for _, chunk in stored] == [zlib.compress(frame.tobytes(), 4) for frame in frames]


def test_the_environment_can_keep_the_standard_librarys_zlib(deflate_choice):
    pytest.importorskip("zlib_ng.zlib_ng")
    deflate_choice.setenv(deflate.ENVIRONMENT, "zlib")
    assert deflate.choose() == "zlib"
    data = _frames("<u2").tobytes()
    assert deflate.compress(data, 4) == zlib.compress(data, 4)
    deflate_choice.setenv(deflate.ENVIRONMENT, "")
    assert deflate.choose() == "zlib-ng"


def test_the_deflate_implementation_is_imported_by_the_caller_not_a_pool_thread(tmp_path):
    # An import in a pool thread when the program forks leaves the child
    # with the import lock held: the gzip pipeline imports zlib-ng where it
    # is built, in the thread that opened the dataset.
    pytest.importorskip("zlib_ng.zlib_ng")
    code = (
        "import sys, h5py\n"
        "from bgio.h5 import pipeline_of\n"
        f"f = h5py.File({str(tmp_path / 'f.h5')!r}, 'w')\n"
        "ds = f.create_dataset('x', shape=(4, 4), chunks=(1, 4), dtype='u2', compression='gzip')\n"
        "print('zlib_ng.zlib_ng' in sys.modules)\n"
        "pipeline_of(ds)\n"
        "print('zlib_ng.zlib_ng' in sys.modules)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != deflate.ENVIRONMENT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=env).stdout
    assert out.split() == ["False", "True"]
