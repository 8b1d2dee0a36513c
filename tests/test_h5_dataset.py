"""bgwrite(dataset, frames): appended or placed, byte-exact through plain h5py."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import bgio
from bgio.bench.h5 import realistic_frames


@pytest.mark.parametrize(("compression", "shuffle", "chunk"), [(None, False, 1), ("gzip", True, 1),
                                                                ("gzip", False, 4), ("lzf", False, 3)])
def test_appends_in_order(tmp_path, compression, shuffle, chunk):
    frames = realistic_frames(11, shape=(32, 32))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", shape=(0, 32, 32), maxshape=(None, 32, 32), dtype="<u2",
                              chunks=(chunk, 32, 32), compression=compression, shuffle=shuffle)
        handles = [bgio.bgwrite(ds, frames[0], priority=1),
                   bgio.bgwrite(ds, frames[1:6], priority=1),
                   bgio.bgwrite(ds, frames[6], priority=7),
                   bgio.bgwrite(ds, frames[7:], priority=1)]
        assert [h.result(timeout=30) for h in handles] == [frames[0].nbytes, frames[1:6].nbytes,
                                                           frames[6].nbytes, frames[7:].nbytes]
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert f["x"].shape == (11, 32, 32)
        assert f["x"][...].tobytes() == frames.tobytes()


def test_append_after_existing_frames_keeps_them(tmp_path):
    frames = realistic_frames(9, shape=(8, 8))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", data=frames[:3], maxshape=(None, 8, 8), chunks=(4, 8, 8),
                              compression="gzip")
        bgio.bgwrite(ds, frames[3:], fsync=True).result(timeout=30)
        assert np.array_equal(ds[...], frames)


def test_offset_into_a_fixed_dataset(tmp_path):
    frames = realistic_frames(6, shape=(8, 8))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", shape=(10, 8, 8), dtype="<u2", chunks=(2, 8, 8),
                              compression="gzip")
        bgio.bgwrite(ds, frames, offset=3).result(timeout=30)
        data = ds[...]
    assert np.array_equal(data[3:9], frames)
    assert (data[:3] == 0).all() and (data[9] == 0).all()


def test_dataset_checks_in_the_caller(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        grow = f.create_dataset("g", shape=(0, 4, 4), maxshape=(None, 4, 4), dtype="<i2",
                                chunks=(1, 4, 4))
        fixed = f.create_dataset("f", shape=(2, 4, 4), dtype="<i2", chunks=(1, 4, 4))
        with pytest.raises(TypeError, match="uint16 cannot be stored as int16"):
            bgio.bgwrite(grow, np.zeros((4, 4), "<u2"))
        with pytest.raises(TypeError, match="float64 cannot be stored as int16"):
            bgio.bgwrite(grow, np.zeros((4, 4)))
        with pytest.raises(ValueError, match=r"expected one frame of shape \(4, 4\)"):
            bgio.bgwrite(grow, np.zeros((4, 5), "<i2"))
        with pytest.raises(ValueError, match="cannot grow"):
            bgio.bgwrite(fixed, np.zeros((4, 4), "<i2"))
        with pytest.raises(ValueError, match="do not fit"):
            bgio.bgwrite(fixed, np.zeros((2, 4, 4), "<i2"), offset=1)
        with pytest.raises(ValueError, match="do not apply to an h5py dataset"):
            bgio.bgwrite(grow, np.zeros((4, 4), "<i2"), atomic=True)
    with pytest.raises(ValueError, match="offset applies to h5py datasets only"):
        bgio.bgwrite(tmp_path / "x.bin", b"x", offset=3)


def test_bgwrite_into_a_contiguous_dataset_at_an_offset(tmp_path):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = f.create_dataset("d", shape=(10, 4), dtype="i4")  # contiguous
        bgio.bgwrite(ds, np.ones((3, 4), "i4"), offset=2).result(timeout=30)
        assert ds[:, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]


def test_fsync_on_a_dataset_reaches_the_disk(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        ds = f.create_dataset("d", shape=(0, 4), maxshape=(None, 4), chunks=(2, 4), dtype="i4")
        bgio.bgwrite(ds, np.ones((3, 4), "i4"), fsync=True).result(timeout=30)
        assert synced == [f.id.get_vfd_handle()]


def test_a_chunk_written_alone_is_padded_with_the_fill_value(tmp_path):
    with h5py.File(tmp_path / "p.h5", "w") as f:
        ds = f.create_dataset("d", shape=(0, 2), maxshape=(None, 2), chunks=(4, 2), dtype="i4",
                              fillvalue=-1, compression="gzip")
        bgio.bgwrite(ds, np.ones((2, 2), "i4")).result(timeout=30)  # half a chunk, alone
        ds.resize(4, axis=0)
        assert ds[:, 0].tolist() == [1, 1, -1, -1]  # as h5py itself would have it
