"""The HDF5 measuring helpers behind the benchmarks run, on small frames."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bgio.bench import h5


def test_realistic_frames_are_not_flat():
    frames = h5.realistic_frames(2, shape=(32, 48), seed=3)
    assert frames.shape == (2, 32, 48) and frames.dtype == np.dtype("<u2")
    assert frames.std() > 10 and frames.max() > 1000
    assert not np.array_equal(frames[0], frames[1])


@pytest.mark.parametrize("writer", [h5.plain_thread, h5.direct_chunk_thread])
def test_both_writers_store_the_frames(tmp_path, writer):
    frames = h5.realistic_frames(3, shape=(32, 48))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", shape=frames.shape, dtype=frames.dtype, chunks=(1, 32, 48),
                              compression="gzip", shuffle=True)
        writer(ds, frames)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert np.array_equal(f["x"][...], frames)


def test_direct_chunks_need_one_frame_per_chunk(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", shape=(4, 8, 8), dtype="u1", chunks=(2, 8, 8), compression="gzip")
        with pytest.raises(ValueError, match="one frame per chunk"):
            h5.direct_chunk_thread(ds, np.zeros((4, 8, 8), "u1"))


@pytest.mark.slow
def test_every_side_runs_and_cleans_up(tmp_path):
    frames = h5.realistic_frames(3, shape=(64, 64))
    steps = []
    runs = h5.h5_scenario(str(tmp_path), frames, repeat=1, on_step=steps.append)
    assert list(runs) == list(h5.ARMS)
    assert len(steps) == 2 * len(h5.ARMS)  # a warm-up and one round
    for label, run in runs.items():
        assert run.label == label and run.seconds > 0
        if "main" in label:
            assert run.max_ms >= run.p99_ms > 0
        else:
            assert run.p99_ms is None and run.mib_s > 0
    assert list(tmp_path.iterdir()) == []
