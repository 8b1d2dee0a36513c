"""Arrays named in a command to the writer process, by where their memory is (not copied).

The parent puts these in a call's arguments instead of the arrays: a
:class:`SharedArray` is in a :class:`bgio.FramePool` the child has mapped,
a :class:`RemoteArray` in the parent's own memory (read with
``process_vm_readv``, :mod:`bgio.process.remote`). :func:`resolve` in the
child turns them back into arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mmap

    import numpy as np

__all__ = ["RemoteArray", "SharedArray", "resolve"]


class SharedArray:
    """An array at ``offset`` in the pool ``pool`` (the parent's id for it)."""

    __slots__ = ("dtype", "offset", "pool", "shape")

    def __init__(self, pool: int, offset: int, shape: tuple[int, ...], dtype: str) -> None:
        self.pool = pool
        self.offset = offset
        self.shape = shape
        self.dtype = dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return SharedArray, (self.pool, self.offset, self.shape, self.dtype)


class RemoteArray:
    """A C-contiguous array at ``address`` in the parent's memory."""

    __slots__ = ("address", "dtype", "shape")

    def __init__(self, address: int, shape: tuple[int, ...], dtype: str) -> None:
        self.address = address
        self.shape = shape
        self.dtype = dtype

    def __reduce__(self) -> tuple[Any, ...]:
        return RemoteArray, (self.address, self.shape, self.dtype)


def resolve(ref: SharedArray | RemoteArray, pools: dict[int, mmap.mmap],
            parent: int) -> np.ndarray:
    """The array ``ref`` names: a view of a mapped pool, or a fresh copy of the parent's."""
    import numpy as np

    from . import remote

    dtype = np.dtype(ref.dtype)
    if isinstance(ref, SharedArray):
        count = int(np.prod(ref.shape, dtype=np.int64))
        return np.frombuffer(pools[ref.pool], dtype=dtype, count=count,
                             offset=ref.offset).reshape(ref.shape)
    array = np.empty(ref.shape, dtype=dtype)
    remote.read_into(parent, ref.address, array.reshape(-1).view(np.uint8))
    return array
