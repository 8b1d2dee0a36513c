"""Frame layout defaults and the checks made before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from bgio.h5.layout import as_frames, check_lossless, default_chunks


@pytest.mark.parametrize(
    ("shape", "dtype", "chunks"),
    [
        ((1024, 1024), "uint16", (1, 1024, 1024)),  # 2 MiB: a chunk per frame
        ((512, 256), "uint16", (1, 512, 256)),      # exactly 256 KiB
        ((256, 256), "uint16", (8, 256, 256)),      # 128 KiB: ~1 MiB chunks
        ((10,), "float64", (13107, 10)),            # records
        ((2048, 2048, 3), "uint8", (1, 2048, 2048, 3)),
    ],
)
def test_default_chunks(shape, dtype, chunks):
    assert default_chunks(shape, dtype) == chunks


def test_default_chunks_refuses_empty_frames():
    with pytest.raises(ValueError, match="positive"):
        default_chunks((0, 4), "u1")


@pytest.mark.parametrize(("source", "target"), [("u2", "i2"), ("f4", "i4"), ("i8", "f4"),
                                                ("u2", "u1"), ("f8", "f4")])
def test_lossy_dtypes_are_refused(source, target):
    with pytest.raises(TypeError, match=f"{np.dtype(source)} cannot be stored as"):
        check_lossless(np.dtype(source), np.dtype(target))


@pytest.mark.parametrize(("source", "target"), [("u1", "u2"), ("u2", "u2"), ("i2", "f4"),
                                                ("u2", "i4")])
def test_safe_dtypes_pass(source, target):
    check_lossless(np.dtype(source), np.dtype(target))


def test_as_frames_adds_the_frame_axis_without_copying():
    frame = np.arange(12, dtype="<u2").reshape(3, 4)
    stack = as_frames(frame, (3, 4), np.dtype("<u2"))
    assert stack.shape == (1, 3, 4) and np.shares_memory(stack, frame)
    many = np.zeros((5, 3, 4), "<u2")
    assert as_frames(many, (3, 4), np.dtype("<u2")) is many


def test_as_frames_casts_safely_and_refuses_wrong_shapes():
    converted = as_frames(np.ones((2, 3, 4), "u1"), (3, 4), np.dtype("<u2"))
    assert converted.dtype == np.dtype("<u2") and converted.flags.c_contiguous
    with pytest.raises(ValueError, match=r"expected one frame of shape \(3, 4\)"):
        as_frames(np.zeros((4, 3)), (3, 4), np.dtype("f8"))
    with pytest.raises(TypeError, match="uint16 cannot be stored as int16"):
        as_frames(np.zeros((3, 4), "u2"), (3, 4), np.dtype("i2"))
