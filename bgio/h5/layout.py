"""Frame datasets' layout and input checks: chunk shape defaults, lossless dtypes, frame shapes."""

from __future__ import annotations

import functools
import math
from typing import Any, TypeGuard

import numpy as np

__all__ = ["CHUNK_BYTES", "FRAME_CHUNK_BYTES", "MAX_ELEMENTS", "as_frames", "check_copy",
           "check_count", "check_dtype", "check_extent", "check_frame_index", "check_lossless",
           "check_shape", "default_chunks", "from_values"]

#: A 2-D frame at least this large gets a chunk of its own.
FRAME_CHUNK_BYTES = 256 * 1024
#: Otherwise chunks hold about this many bytes of whole frames along axis 0.
CHUNK_BYTES = 1024 * 1024
#: Most elements a dataset (and so a frame, or an event's feature) can hold. HDF5's
#: sizes are 64-bit unsigned (hsize_t; h5py raises OverflowError from 2**64), but it
#: counts a dataset's elements signed: HDF5 2.0 grows a dataset to 2**63 rows of one
#: element and more, then fails every write to it ("can't retrieve number of elements").
MAX_ELEMENTS = 2**63 - 1


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


def check_shape(value: object, name: str) -> tuple[int, ...]:
    """A shape argument as a tuple of positive ints (an int ``n`` is ``(n,)``, ``()`` a scalar).

    Raises
    ------
    TypeError
        If it is not an int or a sequence of ints.
    ValueError
        If a size is below 1.

    Examples
    --------
    >>> check_shape(5, "frame_shape"), check_shape([2, 3], "frame_shape"), check_shape((), "shape")
    ((5,), (2, 3), ())
    """
    if _is_int(value):
        value = (value,)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    sizes = tuple(value)
    if not all(_is_int(size) for size in sizes):
        raise TypeError(f"{name} must be a tuple of ints, got {value!r}")
    shape = tuple(int(size) for size in sizes)
    if any(size < 1 for size in shape):
        raise ValueError(f"{name} must have sizes >= 1, got {shape}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ValueError(f"{name} {shape} has more than 2**63 - 1 elements, more than an HDF5 "
                         f"dataset holds")
    return shape


def check_extent(index: int, count: int, row_elements: int, name: str) -> None:
    """Refuse rows ``index .. index + count - 1`` of ``row_elements`` each if HDF5 cannot
    hold a dataset that long (see :data:`MAX_ELEMENTS`).

    Raises
    ------
    ValueError
        Naming ``name`` and the largest index the dataset can take.
    """
    last = MAX_ELEMENTS // max(row_elements, 1) - 1
    if index + count - 1 > last:
        raise ValueError(f"{name}: frame {index + count - 1} is beyond what an HDF5 dataset of "
                         f"these frames holds (frames 0 to {last})")


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """An int argument (numpy ints too, not bools) of at least ``minimum``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    count = int(value)
    if count < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {count}")
    return count


def check_dtype(value: object, name: str = "dtype") -> np.dtype:
    """A dtype HDF5 can store as numbers or fixed records (no Python objects)."""
    try:
        dtype: np.dtype = np.dtype(value)  # type: ignore[call-overload]  # (TypeError below)
    except TypeError as exc:
        raise TypeError(f"{name}: {value!r} is not a dtype") from exc
    if dtype.hasobject:
        raise TypeError(f"{name}: {dtype} holds Python objects, which cannot be stored this way")
    return dtype


def _is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def from_values(value: object, dtype: np.dtype, name: str) -> np.ndarray:
    """Plain values (lists, scalars) as an array of ``dtype``, if every value fits exactly.

    Python numbers have no dtype of their own (``[5.0]`` is float64), so
    they are judged by value, where an array is judged by its dtype.

    Raises
    ------
    TypeError
        If it is not array-like, or a value would change in ``dtype``.
    """
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected an array, got {type(value).__name__}") from exc
    if array.dtype == object:
        raise TypeError(f"{name}: expected numbers, got {type(value).__name__} of objects")
    if array.dtype == dtype or array.size == 0:
        return array.astype(dtype, copy=False)
    if np.can_cast(array.dtype, dtype, casting="safe"):
        return array.astype(dtype)
    try:
        with np.errstate(all="ignore"):
            converted = array.astype(dtype)
            exact = np.array_equal(converted.astype(array.dtype), array,
                                   equal_nan=array.dtype.kind in "fc")
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise TypeError(f"{name}: these values cannot be stored as {dtype} without loss; "
                        f"convert them yourself if that is what you want")
    return converted


@functools.lru_cache(maxsize=256)
def _safe_cast(source: np.dtype, target: np.dtype) -> bool:
    # Asked for every feature of every record: a few dtype pairs, many times.
    return bool(np.can_cast(source, target, casting="safe"))


def check_lossless(source: np.dtype, target: np.dtype, name: str = "frames") -> None:
    """Refuse to store ``source`` values in a ``target`` dataset if any could change.

    Raises
    ------
    TypeError
        If the cast is not safe (uint16 into int16, float into int, ...).
    """
    if not _safe_cast(np.dtype(source), np.dtype(target)):
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
    if isinstance(array, np.ndarray):
        if array.dtype != dtype:  # (equal, the common case: nothing to look up)
            check_lossless(array.dtype, dtype, name)
    else:
        array = from_values(array, dtype, name)
    frame_shape = tuple(frame_shape)
    if array.shape == frame_shape:
        array = array[np.newaxis]
    elif array.shape[1:] != frame_shape:
        raise ValueError(
            f"{name}: expected one frame of shape {frame_shape} or a stack (n, *{frame_shape}), "
            f"got shape {array.shape}"
        )
    if array.dtype != dtype or not array.flags.c_contiguous:
        # A safe cast (uint8 into uint16) or a strided view: the one copy is needed.
        array = np.ascontiguousarray(array, dtype=dtype)
    return array


def check_copy(value: object) -> bool:
    """Check a ``copy`` argument: True or False, nothing else (a TypeError)."""
    if not isinstance(value, bool):
        raise TypeError(f"copy must be True or False, got {value!r}")
    return value


def check_frame_index(value: object) -> int:
    """Check a record writer's ``frame_index``: an int >= 0 that HDF5 can hold.

    Raises
    ------
    TypeError
        If it is not an integer (bool included).
    ValueError
        If it is negative or too large.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"frame_index must be an int, got {type(value).__name__}")
    index = int(value)
    if index < 0:
        raise ValueError(f"frame_index must be >= 0, got {index}")
    check_extent(index, 1, 1, "frame_index")
    return index
