"""bgio.h5.read: datasets and slabs read chunk by chunk, decoded by bgio or by h5py."""

from __future__ import annotations

import logging
import threading
import zlib
from concurrent.futures import CancelledError

import h5py
import numpy as np
import pytest
from conftest import flip_byte

import bgio
import bgio.h5
from bgio.h5 import reading as h5read

SHAPE = (23, 17, 19)
DATA = np.random.default_rng(8).integers(0, 4000, SHAPE).astype("<u2")


@pytest.fixture
def h5file(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as file:
        yield file


def _gzip(file: h5py.File, name: str = "x", **kwargs) -> h5py.Dataset:
    options = {"chunks": (4, 8, 8), "compression": "gzip", "shuffle": True, **kwargs}
    return file.create_dataset(name, data=DATA, **options)


@pytest.mark.parametrize("selection", [
    None, np.s_[...], np.s_[3:20], np.s_[5], np.s_[-1, 2:9], np.s_[:, 16, 3:], np.s_[2:2],
    np.s_[..., 4], np.s_[1, ..., 2:5],
])
def test_a_gzip_dataset_and_its_slabs_read_as_h5py_reads_them(h5file, selection):
    dataset = _gzip(h5file)
    expected = dataset[() if selection is None else selection]
    got = bgio.h5.read(dataset, selection, priority=bgio.BackgroundIOPriority(0, 4096, 100))
    result = got.result(timeout=30)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    assert (result == expected).all()
    assert got.bytes_read == expected.nbytes


@pytest.mark.parametrize("dtype", ["u1", ">i4", "<f8", ">c16"])
def test_shuffled_chunks_of_any_dtype_and_byte_order(h5file, dtype):
    data = (DATA * 3 - 500).astype(dtype)
    dataset = h5file.create_dataset("typed", data=data, chunks=(5, 6, 7), compression="gzip",
                                    shuffle=True)
    got = bgio.h5.read(dataset, np.s_[2:21, 1:16]).result(timeout=30)
    assert got.dtype == dataset.dtype and (got == data[2:21, 1:16]).all()


def test_bgio_decodes_deflate_and_shuffle_itself_and_leaves_the_rest_to_h5py(h5file):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    assert h5read._Decoder(_gzip(h5file)).steps == [2, 1]
    assert h5read._Decoder(_gzip(h5file, "y", shuffle=False)).steps == [1]
    others = {
        "lzf": {"chunks": (4, 8, 8), "compression": "lzf"},
        "zstd": {"chunks": (4, 8, 8), **hdf5plugin.Zstd()},
        "fletcher": {"chunks": (4, 8, 8), "fletcher32": True},
        "contiguous": {},
    }
    for name, options in others.items():
        dataset = h5file.create_dataset(name, data=DATA, **options)
        assert h5read._Decoder(dataset).steps is None
        assert (bgio.h5.read(dataset, np.s_[1:22, 3]).result(timeout=30) == DATA[1:22, 3]).all()


def test_chunks_never_written_read_as_the_fill_value(h5file):
    dataset = h5file.create_dataset("sparse", SHAPE, "<u2", chunks=(4, 8, 8), compression="gzip",
                                    fillvalue=77)
    dataset[4:8] = DATA[4:8]
    got = bgio.h5.read(dataset).result(timeout=30)
    assert (got[4:8] == DATA[4:8]).all()
    assert (got[:4] == 77).all() and (got[8:] == 77).all()


def test_a_chunk_whose_filters_were_skipped_is_decoded_by_its_mask(h5file):
    dataset = h5file.create_dataset("masked", (4, 8, 8), "<u2", chunks=(4, 8, 8),
                                    compression="gzip", shuffle=True)
    chunk = DATA[:4, :8, :8]
    shuffled = np.frombuffer(chunk.tobytes(), np.uint8).reshape(-1, 2).T.tobytes()
    dataset.id.write_direct_chunk((0, 0, 0), shuffled, filter_mask=0b10)  # deflate skipped
    assert (bgio.h5.read(dataset).result(timeout=30) == chunk).all()


def test_into_an_array_of_the_selections_shape(h5file):
    dataset = _gzip(h5file)
    out = np.zeros((10, 17, 19), "<u2")
    assert bgio.h5.read(dataset, np.s_[5:15], into=out).result(timeout=30) == out.nbytes
    assert (out == DATA[5:15]).all()


def test_a_damaged_chunk_fails_the_handle_and_is_logged(tmp_path, caplog):
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as file:
        offset = _gzip(file).id.get_chunk_info(3).byte_offset
    flip_byte(path, offset + 5)
    with h5py.File(path, "r") as file, caplog.at_level(logging.ERROR, logger="bgio"):
        handle = bgio.h5.read(file["x"])
        with pytest.raises(zlib.error):
            handle.result(timeout=30)
    assert f"background read of {path}:/x failed" in caplog.text


def test_cancel_stops_a_paced_read(h5file, monkeypatch):
    dataset = _gzip(h5file)
    waiting = threading.Event()
    real = threading.Event.wait

    def wait(self, timeout=None):
        if timeout is not None:
            waiting.set()  # (a pacing pause)
        return real(self, timeout)

    monkeypatch.setattr(threading.Event, "wait", wait)
    slow = bgio.BackgroundIOPriority(0, 4096, 100, max_rate=1000)
    handle = bgio.h5.read(dataset, priority=slow)
    assert waiting.wait(30)
    handle.cancel()
    with pytest.raises(CancelledError, match="read cancelled"):
        handle.result(timeout=30)


def test_bad_arguments_raise_in_the_caller(h5file):
    dataset = _gzip(h5file)
    with pytest.raises(TypeError, match="dataset: expected an h5py.Dataset"):
        bgio.h5.read(DATA)
    with pytest.raises(ValueError, match="step 2"):
        bgio.h5.read(dataset, np.s_[::2])
    with pytest.raises(ValueError, match="index 23 is out of range for axis 0"):
        bgio.h5.read(dataset, 23)
    with pytest.raises(ValueError, match="4 indices for a dataset of 3 dimensions"):
        bgio.h5.read(dataset, (1, 1, 1, 1))
    with pytest.raises(TypeError, match="expected slices and ints"):
        bgio.h5.read(dataset, 1.5)
    with pytest.raises(ValueError, match=r"into: expected shape \(23, 17, 19\) and dtype uint16"):
        bgio.h5.read(dataset, into=np.zeros((23, 17, 19), "f4"))
    with pytest.raises(ValueError, match="C-contiguous and writable"):
        bgio.h5.read(dataset, into=np.zeros((19, 17, 23), "<u2").T)
    with pytest.raises(TypeError, match="into: expected a numpy array"):
        bgio.h5.read(dataset, into=bytearray(10))
    strings = h5file.create_dataset("strings", (3,), h5py.string_dtype())
    with pytest.raises(TypeError, match="variable length or subarrays"):
        bgio.h5.read(strings)
    with pytest.raises(ValueError, match="a single ellipsis"):
        bgio.h5.read(dataset, np.s_[..., 1, ...])
    other = h5file.create_dataset("closed", data=DATA)
    h5file.close()
    with pytest.raises(ValueError, match="closed"):
        bgio.h5.read(other)


def test_a_shuffle_after_deflate_is_undone_in_its_order(h5file):
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((4, 8, 8))
    plist.set_deflate(4)
    plist.set_shuffle()  # (applied after deflate, undone before inflating)
    space = h5py.h5s.create_simple(SHAPE)
    dataset = h5py.Dataset(h5py.h5d.create(h5file.id, b"reversed", h5py.h5t.STD_U16LE, space,
                                           dcpl=plist))
    dataset[...] = DATA
    assert h5read._Decoder(dataset).steps == [1, 2]
    assert (bgio.h5.read(dataset).result(timeout=30) == DATA).all()
