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

__all__ = ["CODECS", "OME_VERSION", "array_spec", "check_codec", "check_ome", "kvstore_of",
           "ome_group", "store_name"]

#: The OME-Zarr (NGFF) version of the metadata bgio writes.
OME_VERSION = "0.5"
_AXIS_TYPES = ("time", "space", "channel")

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


#: Object-store URL schemes and tensorstore's kvstore drivers for them.
_BUCKET_DRIVERS = {"s3": "s3", "gs": "gcs"}


def kvstore_of(store: object) -> dict[str, Any]:
    """The tensorstore key-value store a ``store`` names: a local path (``str`` or
    path-like, made absolute), ``file://PATH``, ``memory://NAME``, ``s3://BUCKET/PATH``
    or ``gs://BUCKET/PATH`` (credentials, region and endpoint as tensorstore finds
    them), or a tensorstore kvstore spec (a dict with ``"driver"``: for S3 with
    ``"endpoint"``, ``"aws_region"``, ``"aws_credentials"`` and the like).

    Raises
    ------
    TypeError
        If ``store`` is not a str, path-like or dict.
    ValueError
        For another URL scheme, an empty path, a spec without a driver or path.
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if isinstance(store, dict):
        spec = dict(store)
        if "driver" not in spec:
            raise ValueError("store: a kvstore spec needs a 'driver'")
        if not isinstance(spec["driver"], str):
            raise TypeError(f"store: the spec's driver must be a str, "
                            f"got {type(spec['driver']).__qualname__}")
        path = spec.get("path", "")
        if not isinstance(path, str) or not path.strip("/"):
            raise ValueError("store: a kvstore spec needs a 'path' naming the array's folder")
        if spec["driver"] == "file":  # (as for a path: absolute, a folder)
            spec["path"] = os.path.abspath(path).rstrip("/") + "/"
        else:
            spec["path"] = path.strip("/") + "/"
        return spec
    if not isinstance(store, str):
        raise TypeError(f"store must be a path, a URL or a kvstore spec (dict), "
                        f"got {type(store).__qualname__}")
    scheme = store.split("://", 1)[0].lower() if "://" in store else ""
    if scheme in _BUCKET_DRIVERS:
        bucket, _, path = store.split("://", 1)[1].partition("/")
        if not bucket or not path.strip("/"):
            raise ValueError(f"store: {store!r} needs a bucket and a path "
                             f"({scheme}://BUCKET/PATH)")
        return {"driver": _BUCKET_DRIVERS[scheme], "bucket": bucket,
                "path": path.strip("/") + "/"}
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
                         f"file://, memory://, s3://, gs:// or a kvstore spec)")
    if not store:
        raise ValueError("store must not be empty")
    path = os.path.abspath(store)
    if path == os.path.dirname(path):
        raise ValueError(f"store must name a folder below the root, got {store!r}")
    return {"driver": "file", "path": path.rstrip("/") + "/"}


def store_name(store: object, kvstore: dict[str, Any]) -> str:
    """``store`` as messages name it (a spec by its driver, bucket and path)."""
    if isinstance(store, dict):
        bucket = kvstore.get("bucket")
        return f"{kvstore['driver']}://{bucket + '/' if bucket else ''}{kvstore['path']}"
    return str(os.fspath(store)) if isinstance(store, os.PathLike) else str(store)


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


def check_ome(ome: object, frame_ndim: int) -> dict[str, Any] | None:
    """``ome`` (None, True, or a dict of ``axes``, ``scale``, ``name``), checked and filled in.

    ``axes`` lists one axis per array dimension (time first, then the
    frame's), each a dict with ``name``, ``type`` ("time", "space",
    "channel" or another word) and ``unit``, or a ``(name, type, unit)``
    tuple; by default ``t`` (time, second) then ``y``, ``x`` (or ``z``,
    ``y``, ``x``; space, micrometer). ``scale`` gives each axis's step (1 by
    default).
    """
    if ome is None or ome is False:
        return None
    ndim = frame_ndim + 1
    if ome is True:
        ome = {}
    if not isinstance(ome, dict):
        raise TypeError(f"ome must be a dict, True or None, got {type(ome).__qualname__}")
    unknown = set(ome) - {"axes", "scale", "name"}
    if unknown:
        raise ValueError(f"ome: unknown key(s) {sorted(unknown)} (axes, scale, name)")
    axes = ome.get("axes")
    if axes is None:
        if frame_ndim > 3:
            raise ValueError(f"ome: give axes for frames of {frame_ndim} dimensions")
        names = ["z", "y", "x"][3 - frame_ndim:]
        axes = [("t", "time", "second"), *((name, "space", "micrometer") for name in names)]
    if not isinstance(axes, (list, tuple)) or len(axes) != ndim:
        raise ValueError(f"ome: axes must list {ndim} axes (time, then the frame's), "
                         f"got {axes!r}")
    checked: list[dict[str, str]] = []
    for axis in axes:
        if isinstance(axis, (list, tuple)) and len(axis) in (2, 3):
            axis = dict(zip(("name", "type", "unit"), axis, strict=False))
        if not isinstance(axis, dict) or not isinstance(axis.get("name"), str) \
                or not axis["name"]:
            raise ValueError(f"ome: an axis is a (name, type, unit) tuple or a dict with a "
                             f"name, got {axis!r}")
        entry = {key: value for key, value in axis.items() if value is not None}
        if set(entry) - {"name", "type", "unit"}:
            raise ValueError(f"ome: axis {entry['name']!r} has unknown keys")
        checked.append(entry)
    if checked[0].get("type") != "time":
        raise ValueError("ome: the first axis (the one frames grow along) must be of type "
                         "'time'")
    if len({axis["name"] for axis in checked}) != ndim:
        raise ValueError("ome: axis names must differ")
    scale = ome.get("scale", [1.0] * ndim)
    if not isinstance(scale, (list, tuple)) or len(scale) != ndim or not all(
            isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0
            for step in scale):
        raise ValueError(f"ome: scale must be {ndim} numbers > 0, got {scale!r}")
    name = ome.get("name", "frames")
    if not isinstance(name, str):
        raise TypeError(f"ome: name must be a str, got {type(name).__qualname__}")
    return {"axes": checked, "scale": [float(step) for step in scale], "name": name}


def ome_group(ome: dict[str, Any]) -> dict[str, Any]:
    """The ``zarr.json`` of an OME-Zarr image group whose one level is the array ``0``."""
    return {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {
        "version": OME_VERSION,
        "multiscales": [{
            "name": ome["name"],
            "axes": ome["axes"],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": ome["scale"]}]}],
        }]}}}


def array_spec(kvstore: dict[str, Any], frame_shape: tuple[int, ...], dtype: np.dtype,
               codec: str | None, level: int | None, chunk_frames: int,
               shard_frames: int | None, names: list[str] | None = None) -> dict[str, Any]:
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
            "dimension_names": names or ["t", *(f"d{axis}" for axis in range(len(frame_shape)))],
        },
        "create": True,
    }
