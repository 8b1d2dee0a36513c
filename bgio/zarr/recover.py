"""After a writer died: :func:`recover` finds the frames stored and makes ``zarr.json`` say so."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from .record import ATTRIBUTE, announcement
from .spec import kvstore_of, store_name

__all__ = ["Recovery", "recover"]

_MISSING = 2**64 - 1  # a shard index's entry for a chunk not stored


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found.

    Attributes
    ----------
    frames : int
        The array's length now: frames ``0..frames-1`` are stored.
    announced : int
        Frames the writer had announced when it stopped (all of them are
        among ``frames``).
    stranded : int
        Frames found stored past a slot that was not: left in their objects
        but outside the array's length (a store that had not landed when
        the writer died left the gap).
    finished : bool
        The writer had finished (nothing was changed).
    """

    frames: int
    announced: int
    stranded: int
    finished: bool


def _grid(document: dict[str, Any]) -> tuple[int, int, bool]:
    """Frames per object, frames per chunk, and whether objects are shards."""
    per_object = int(document["chunk_grid"]["configuration"]["chunk_shape"][0])
    codecs = document.get("codecs") or []
    if codecs and codecs[0].get("name") == "sharding_indexed":
        return per_object, int(codecs[0]["configuration"]["chunk_shape"][0]), True
    return per_object, per_object, False


def recover(store: str | os.PathLike[str] | dict[str, Any]) -> Recovery:
    """Make a Zarr array whose writer died show exactly the frames stored.

    Every frame the writer announced is stored (announcements follow the
    stores). Past them, frames in chunks of one frame (``chunk_frames=1``,
    the default) are found by their objects (a chunk object, or a shard's
    index, is written whole), and kept while they follow on without a gap;
    a chunk of several frames past the last announcement may have been
    stored only in part (at a flush), so those are not trusted. The
    array's length is set to the frames kept, and the ``"bgio"``
    attribute marks it finished, with ``"recovered"``. Run it only once
    the writer is gone: a writer still running would lose its record.

    Parameters
    ----------
    store : path or str
        As for :class:`bgio.zarr.FrameWriter`.

    Returns
    -------
    Recovery

    Raises
    ------
    ValueError
        If ``store`` holds no Zarr v3 array.
    OSError
        If the store cannot be read or written.
    """
    import tensorstore

    from .follow import image_array
    from .frames import context

    root = kvstore_of(store)
    name = store_name(store, root)
    spec = image_array(tensorstore, root, context())
    kvstore = tensorstore.KvStore.open(spec, context=context()).result()
    read = kvstore.read("zarr.json").result()
    if read.state != "value":
        raise ValueError(f"store: {name!r} holds no Zarr v3 array (no zarr.json)")
    document = json.loads(read.value)
    if document.get("node_type") != "array":
        raise ValueError(f"store: {name!r} is not a Zarr v3 array")
    state = announcement(document) or {}
    announced = int(document["shape"][0])
    if state.get("finished"):
        return Recovery(announced, announced, 0, True)
    per_object, per_chunk, sharded = _grid(document)
    stored: set[int] = set()  # chunks of one frame found, by frame
    if per_chunk == 1:
        for key in kvstore.list().result():
            parts = key.decode().split("/")
            if len(parts) < 2 or parts[0] != "c" or not parts[1].isdigit():
                continue
            first = int(parts[1]) * per_object
            if not sharded:
                stored.add(first)
                continue
            blob = kvstore.read(key).result().value
            entries = per_object // per_chunk
            tail = blob[-(16 * entries + 4):-4] if len(blob) >= 16 * entries + 4 else b""
            for position in range(len(tail) // 16):
                offset, size = struct.unpack_from("<QQ", tail, 16 * position)
                if (offset, size) != (_MISSING, _MISSING):
                    stored.add(first + position)
    frames = announced
    while frames in stored:
        frames += 1
    stranded = sum(1 for frame in stored if frame > frames)
    document["shape"] = [frames, *document["shape"][1:]]
    document["attributes"] = {**(document.get("attributes") or {}), ATTRIBUTE: {
        "frames": frames, "finished": True,
        "recovered": {"announced": announced, "stranded": stranded}}}
    written = kvstore.write("zarr.json", json.dumps(document, indent=2).encode(),
                            if_equal=read.stamp.generation).result()
    if not written.generation:
        raise OSError(f"{name!r}: zarr.json changed while it was recovered: "
                      f"is its writer still running?")
    return Recovery(frames, announced, stranded, False)
