"""What a Zarr v3 array of frames is, as tensorstore is told: the store, the codecs, the grid.

Pure: nothing here imports tensorstore or touches a store, so the
arguments of :class:`bgio.zarr.FrameWriter` are checked in the caller
before anything is opened.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

__all__ = ["CODECS", "array_spec", "check_codec", "kvstore_of"]

#: The codecs a FrameWriter compresses chunks with, and their default levels.
#: ``"lz4"`` is Blosc's LZ4 with byte shuffle, what Blosc calls ``lz4``.
CODECS: dict[str | None, int | None] = {"zstd": 3, "lz4": 5, "gzip": 4, None: None}


def check_codec(codec: object, level: object) -> tuple[str | None, int | None]:
    """``codec`` (one of :data:`CODECS`; ``"none"`` is None) and its ``level`` (None: the
    codec's default), checked; ``TypeError``/``ValueError`` naming them."""
    if codec == "none":
        codec = None
    if codec is not None and not isinstance(codec, str):
        raise TypeError(f"codec must be a str or None, got {type(codec).__qualname__}")
    if codec not in CODECS:
        names = ", ".join(repr(name) for name in CODECS if name is not None)
        raise ValueError(f"codec must be one of {names} or None, got {codec!r}")
    if level is None:
        return codec, CODECS[codec]
    if codec is None:
        raise ValueError("level: no codec to give it to (codec=None)")
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"level must be an int, got {type(level).__qualname__}")
    low, high = (1, 22) if codec == "zstd" else (1, 9) if codec == "lz4" else (0, 9)
    if not low <= int(level) <= high:
        raise ValueError(f"level must be {low} to {high} for {codec}, got {level}")
    return codec, int(level)


def kvstore_of(store: object) -> dict[str, Any]:
    """The tensorstore key-value store a ``store`` names: a local path (``str`` or
    path-like, made absolute), ``file://PATH`` or ``memory://NAME``.

    Raises
    ------
    TypeError
        If ``store`` is not a str or path-like.
    ValueError
        For another URL scheme, or an empty path.
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise TypeError(f"store must be a path or a URL, got {type(store).__qualname__}")
    if store.startswith("memory://"):
        name = store[len("memory://"):].strip("/")
        if not name:
            raise ValueError("store: memory:// needs a name (memory://NAME)")
        return {"driver": "memory", "path": name + "/"}
    if store.startswith("file://"):
        store = store[len("file://"):]
    elif "://" in store:
        scheme = store.split("://", 1)[0]
        raise ValueError(f"store: {scheme}:// is not a store bgio writes (a local path, "
                         f"file:// or memory://)")
    if not store:
        raise ValueError("store must not be empty")
    path = os.path.abspath(store)
    if path == os.path.dirname(path):
        raise ValueError(f"store must name a folder below the root, got {store!r}")
    return {"driver": "file", "path": path.rstrip("/") + "/"}


def _compressor(codec: str | None, level: int | None, itemsize: int) -> list[dict[str, Any]]:
    if codec is None:
        return []
    if codec == "zstd":
        return [{"name": "zstd", "configuration": {"level": level}}]
    if codec == "gzip":
        return [{"name": "gzip", "configuration": {"level": level}}]
    return [{"name": "blosc", "configuration": {"cname": "lz4", "clevel": level,
                                                 "shuffle": "shuffle", "typesize": itemsize,
                                                 "blocksize": 0}}]


def array_spec(kvstore: dict[str, Any], frame_shape: tuple[int, ...], dtype: np.dtype,
               codec: str | None, level: int | None, chunk_frames: int,
               shard_frames: int | None) -> dict[str, Any]:
    """The tensorstore spec that creates an empty array of ``frame_shape`` frames.

    It grows along axis 0 (from 0 frames: no fill values a reader could
    take for data). Chunks hold ``chunk_frames`` frames; with
    ``shard_frames``, ``shard_frames`` of them (a multiple of
    ``chunk_frames``) go in one object, with a checksummed index.
    """
    chunk = [chunk_frames, *frame_shape]
    leaf = [{"name": "bytes", "configuration": {"endian": "little"}},
            *_compressor(codec, level, dtype.itemsize)]
    if shard_frames is None:
        grid, codecs = chunk, leaf
    else:
        grid = [shard_frames, *frame_shape]
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": chunk, "codecs": leaf,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                             {"name": "crc32c"}],
            "index_location": "end"}}]
    return {
        "driver": "zarr3",
        "kvstore": kvstore,
        "metadata": {
            "shape": [0, *frame_shape],
            "data_type": np.dtype(dtype).name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": codecs,
            "fill_value": (False if dtype.kind == "b" else [0.0, 0.0] if dtype.kind == "c"
                           else 0),
            "dimension_names": ["t", *(f"d{axis}" for axis in range(len(frame_shape)))],
        },
        "create": True,
    }
