"""bgio.copying.copy_frames: byte-exact copies, whatever the dtype and layout."""

from __future__ import annotations

import numpy as np
import pytest

from bgio.copying import PIECE_BYTES, copy_frames


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "?", "c16", "f4", "i8", "u1"])
def test_contiguous_copies_are_byte_exact(dtype: str) -> None:
    # More than a piece, and not a whole number of them: the last piece is short.
    count = (PIECE_BYTES * 2 + 12345) // np.dtype(dtype).itemsize + 1
    frames = (np.arange(count) % 251).astype(dtype).reshape(-1, 1)
    into = np.zeros_like(frames)
    copy_frames(into, frames)
    assert into.tobytes() == frames.tobytes()


def test_strided_and_cast_copies_go_through_numpy() -> None:
    frames = np.arange(400, dtype="u2").reshape(20, 20)
    into = np.zeros((20, 10), "u2")
    copy_frames(into, frames[:, ::2])
    assert np.array_equal(into, frames[:, ::2])
    wider = np.zeros((20, 20), "u4")
    copy_frames(wider, frames)
    assert np.array_equal(wider, frames)


def test_empty_copy_is_a_no_op() -> None:
    into = np.ones((0, 4))
    copy_frames(into, np.zeros((0, 4)))
    assert into.shape == (0, 4)
