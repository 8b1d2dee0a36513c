"""Frame datasets' layout and input checks: chunk shape defaults, lossless dtypes, frame shapes."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CHUNK_BYTES", "FRAME_CHUNK_BYTES", "as_frames", "check_lossless", "default_chunks"]

#: A 2-D frame at least this large gets a chunk of its own.
FRAME_CHUNK_BYTES = 256 * 1024
#: Otherwise chunks hold about this many bytes of whole frames along axis 0.
CHUNK_BYTES = 1024 * 1024


def default_chunks(frame_shape: tuple[int, ...], dtype: np.dtype | str) -> tuple[int, ...]:
    """The chunk shape bgio uses for frames of ``frame_shape`` stacked along axis 0.

    A 2-D frame of 256 KiB or more is one chunk (writing a frame touches one
    chunk, and a reader of one frame decompresses nothing else). Smaller
    frames are grouped, about 1 MiB per chunk, whole frames only.

    Examples
    --------
    >>> default_chunks((1024, 1024), "uint16")
    (1, 1024, 1024)
    >>> default_chunks((64, 64), "uint8")
    (256, 64, 64)
    """
    frame_shape = tuple(int(n) for n in frame_shape)
    if any(n < 1 for n in frame_shape):
        raise ValueError(f"frame_shape must have positive sizes, got {frame_shape}")
    frame_bytes = math.prod(frame_shape) * np.dtype(dtype).itemsize
    if len(frame_shape) == 2 and frame_bytes >= FRAME_CHUNK_BYTES:
        return (1, *frame_shape)
    return (max(1, CHUNK_BYTES // max(1, frame_bytes)), *frame_shape)


def check_lossless(source: np.dtype, target: np.dtype, name: str = "frames") -> None:
    """Refuse to store ``source`` values in a ``target`` dataset if any could change.

    Raises
    ------
    TypeError
        If the cast is not safe (uint16 into int16, float into int, ...).
    """
    if not np.can_cast(source, target, casting="safe"):
        raise TypeError(
            f"{name}: {np.dtype(source)} cannot be stored as {np.dtype(target)} without loss; "
            f"convert the data yourself if that is what you want"
        )


def as_frames(array: object, frame_shape: tuple[int, ...], dtype: np.dtype,
              name: str = "frames") -> np.ndarray:
    """``array`` as a C-contiguous stack of frames (one frame gains a leading axis).

    Raises
    ------
    TypeError
        If it is not array-like, or its dtype would lose values in ``dtype``.
    ValueError
        If its frames do not have ``frame_shape``.
    """
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: expected an array of frames, got {type(array).__name__}") from exc
    assert isinstance(array, np.ndarray)
    frame_shape = tuple(frame_shape)
    if array.shape == frame_shape:
        array = array[np.newaxis]
    elif array.shape[1:] != frame_shape:
        raise ValueError(
            f"{name}: expected one frame of shape {frame_shape} or a stack (n, *{frame_shape}), "
            f"got shape {array.shape}"
        )
    check_lossless(array.dtype, dtype, name)
    if array.dtype != dtype or not array.flags.c_contiguous:
        # A safe cast (uint8 into uint16) or a strided view: the one copy is needed.
        array = np.ascontiguousarray(array, dtype=dtype)
    return array
