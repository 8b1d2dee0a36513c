"""The plugin filters bgio applies itself: Zstd, LZ4, Blosc and Bitshuffle, as hdf5plugin's filters store them.

Each chunk is encoded exactly as the HDF5 filter would frame it, through an
optional codec package imported on first use (the ``codecs`` extra:
numcodecs for Zstd, LZ4 and Blosc, bitshuffle for Bitshuffle). All of them
release the interpreter lock while they compress, so chunks are encoded in
parallel with the program and outside h5py's lock. Without its package, or
with options bgio cannot reproduce exactly, a filter is left to HDF5
(:func:`unsupported_reason` says why).

The stored forms, by filter id (``cd`` is the dataset's client data for the
filter, as HDF5 keeps it after the filter's ``set_local`` filled it in):

- 32015 Zstd: one Zstandard frame with the content size in its header
  (the filter's reader sizes its buffer from it); ``cd[0]`` is the level.
- 32004 LZ4: a 12-byte header (big-endian: total size as 8 bytes, block
  size as 4), then per block a big-endian 4-byte size and the LZ4 block,
  or the block's raw bytes when compressing did not make it smaller;
  ``cd[0]`` is the block size in bytes (0: one block for the chunk).
- 32001 Blosc: one Blosc (version 1 format) frame; ``cd`` is (filter
  revision, format version, type size, chunk bytes, level, shuffle,
  compressor code).
- 32008 Bitshuffle: the chunk bit-transposed in blocks; compressed (LZ4
  or Zstd, ``cd[4]`` 2 or 3) it has a 12-byte header (big-endian: total
  size as 8 bytes, block bytes as 4) and per block a big-endian 4-byte size
  and the compressed block; ``cd`` is (version major, minor, element size,
  block size in elements or 0, compression, Zstd level).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Buffer  # (numpy's arrays have the buffer protocol)

__all__ = ["BITSHUFFLE", "BLOSC", "CODEC_MODULES", "LZ4", "ZSTD", "bitshuffle_block",
           "encode_step", "unsupported_reason"]

#: hdf5plugin's filter ids.
ZSTD = 32015
LZ4 = 32004
BLOSC = 32001
BITSHUFFLE = 32008

#: The module each filter is encoded with; pip extra ``codecs`` installs them.
CODEC_MODULES = {
    ZSTD: "numcodecs.zstd",
    LZ4: "numcodecs.lz4",
    BLOSC: "numcodecs.blosc",
    BITSHUFFLE: "bitshuffle.ext",
}

#: Blosc's compressor codes (``cd[6]``) and their names.
_BLOSC_NAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}
#: The LZ4 filter's block size when ``cd[0]`` is 0 (larger than any chunk HDF5 allows).
_LZ4_DEFAULT_BLOCK = 1 << 30
#: Bitshuffle's compression codes (``cd[4]``).
_BSHUF_NONE, _BSHUF_LZ4, _BSHUF_ZSTD = 0, 2, 3
#: Bitshuffle's default block: about 8 KiB of elements, a multiple of 8, at least 128.
_BSHUF_TARGET_BYTES = 8192
_BSHUF_MIN_BLOCK = 128
_BSHUF_MULTIPLE = 8

_Buffer = bytes | memoryview


def _module(filter_id: int) -> ModuleType | None:
    """The codec module of ``filter_id``, or None if it is not installed."""
    try:
        return import_module(CODEC_MODULES[filter_id])
    except ImportError:
        return None


def _signed(value: int) -> int:
    # Client data is unsigned; the Zstd filter reads its level as a C int.
    return value - (1 << 32) if value >= 1 << 31 else value


def _blosc_settings(options: tuple[int, ...]) -> tuple[int, int, int]:
    """Blosc's level, shuffle and compressor code, with the filter's defaults (5, 1, 0)."""
    level, shuffle, code = 5, 1, 0
    if len(options) > 4:
        level = options[4]
    if len(options) > 5:
        shuffle = options[5]
    if len(options) > 6:
        code = options[6]
    return level, shuffle, code


def bitshuffle_block(elem_size: int, requested: int = 0) -> int:
    """Elements per Bitshuffle block: ``requested``, or the filter's own default for 0."""
    if requested:
        return requested
    block = (_BSHUF_TARGET_BYTES // elem_size) // _BSHUF_MULTIPLE * _BSHUF_MULTIPLE
    return max(block, _BSHUF_MIN_BLOCK)


def unsupported_reason(filter_id: int, options: tuple[int, ...], itemsize: int) -> str | None:
    """Why bgio cannot store ``filter_id`` with these client data itself, or None if it can.

    Parameters
    ----------
    filter_id : int
        An HDF5 filter id (one of :data:`CODEC_MODULES`' keys is needed).
    options : tuple of int
        The filter's client data as the dataset stores them.
    itemsize : int
        Bytes per element of the dataset's dtype.
    """
    if filter_id not in CODEC_MODULES:
        return f"filter {filter_id} is not one bgio applies"
    module = _module(filter_id)
    if module is None:
        return (f"filter {filter_id} needs the {CODEC_MODULES[filter_id].split('.')[0]} "
                "package (pip extra 'codecs')")
    if filter_id == BLOSC:
        if len(options) < 4:
            return "blosc: client data not filled in by the filter"
        level, shuffle, code = _blosc_settings(options)
        name = _BLOSC_NAMES.get(code)
        if name is None or name not in module.list_compressors():
            return f"blosc: compressor code {code} not available"
        if not 0 <= level <= 9 or shuffle not in (0, 1, 2) or not 1 <= options[2] <= 255:
            return f"blosc: options {options} out of range"
    elif filter_id == BITSHUFFLE:
        if len(options) < 3 or options[2] != itemsize:
            return "bitshuffle: element size not the dataset's"
        block = bitshuffle_block(itemsize, options[3] if len(options) > 3 else 0)
        if block % _BSHUF_MULTIPLE:
            return f"bitshuffle: block size {block} is not a multiple of 8"
        compression = options[4] if len(options) > 4 else _BSHUF_NONE
        if compression not in (_BSHUF_NONE, _BSHUF_LZ4, _BSHUF_ZSTD):
            return f"bitshuffle: compression {compression} unknown"
        if compression == _BSHUF_ZSTD and (len(options) < 6 or not module.__zstd__):
            return "bitshuffle: zstd level missing, or bitshuffle built without zstd"
    return None


def encode_step(filter_id: int, options: tuple[int, ...], itemsize: int,
                data: _Buffer) -> _Buffer:
    """Apply one plugin filter to a chunk's bytes, as the HDF5 filter stores them.

    Only for filters and options :func:`unsupported_reason` accepts.
    """
    encoder = _ENCODERS[filter_id]
    module = _module(filter_id)
    if module is None:
        raise ImportError(f"{CODEC_MODULES[filter_id]} is no longer importable")
    return encoder(module, options, itemsize, data)


def _zstd(module: ModuleType, options: tuple[int, ...], itemsize: int,
          data: _Buffer) -> _Buffer:
    # Level 0 is Zstandard's default, as the filter's own with no client data.
    return module.compress(data, _signed(options[0]) if options else 0)  # type: ignore[no-any-return]


def _lz4(module: ModuleType, options: tuple[int, ...], itemsize: int,
         data: _Buffer) -> _Buffer:
    view = memoryview(data).cast("B")
    total = len(view)
    block = min(options[0] if options and options[0] else _LZ4_DEFAULT_BLOCK, total)
    parts: list[_Buffer] = [struct.pack(">QI", total, block)]
    for start in range(0, total, block):
        piece = view[start : start + block]
        # numcodecs frames a block with its size (4 bytes, little-endian): drop that.
        packed: _Buffer = memoryview(module.compress(piece, 1))[4:]
        if len(packed) >= len(piece):
            packed = piece  # the filter stores such a block raw: size == block size
        parts.append(struct.pack(">I", len(packed)))
        parts.append(packed)
    return _joined(parts)


def _blosc(module: ModuleType, options: tuple[int, ...], itemsize: int,
           data: _Buffer) -> _Buffer:
    level, shuffle, code = _blosc_settings(options)
    name = _BLOSC_NAMES[code].encode()
    return module.compress(data, name, level, shuffle, 0, options[2])  # type: ignore[no-any-return]


def _bitshuffle(module: ModuleType, options: tuple[int, ...], itemsize: int,
                data: _Buffer) -> _Buffer:
    block = bitshuffle_block(itemsize, options[3] if len(options) > 3 else 0)
    compression = options[4] if len(options) > 4 else _BSHUF_NONE
    elements = np.frombuffer(data, dtype=np.dtype((np.void, itemsize)))
    if compression == _BSHUF_NONE:
        return memoryview(module.bitshuffle(elements, block)).cast("B")
    if compression == _BSHUF_LZ4:
        body = module.compress_lz4(elements, block)
    else:
        body = module.compress_zstd(elements, block, _signed(options[5]))
    header = struct.pack(">QI", elements.nbytes, block * itemsize)
    return _joined([header, memoryview(body)])


def _joined(parts: list[_Buffer]) -> memoryview:
    # b"".join would copy the chunk holding the interpreter lock (about a
    # millisecond per MiB, stalling the worker's and the program's h5py
    # calls); numpy's copy into one new array releases it.
    views = [np.frombuffer(part, dtype=np.uint8) for part in parts]
    joined = np.empty(sum(len(view) for view in views), dtype=np.uint8)
    start = 0
    for view in views:
        np.copyto(joined[start : start + len(view)], view)
        start += len(view)
    return memoryview(cast("Buffer", joined))


_ENCODERS: dict[int, Callable[[ModuleType, tuple[int, ...], int, _Buffer], _Buffer]] = {
    ZSTD: _zstd,
    LZ4: _lz4,
    BLOSC: _blosc,
    BITSHUFFLE: _bitshuffle,
}
