"""The deflate (gzip) implementation bgio compresses chunks with: zlib-ng when installed, else zlib.

HDF5's deflate filter stores a chunk as one zlib stream (RFC 1950) and
reads any valid one back. zlib-ng (the optional ``zlib-ng`` package, in the
``codecs`` extra) writes such streams about 1.2-1.5 times as fast as the
standard library's zlib at the same level, and releases the interpreter
lock while it compresses, as zlib does. Its compressed bytes differ from
zlib's (the decompressed chunk is the same, byte for byte), so the setting
``BGIO_DEFLATE=zlib`` in the environment keeps the standard library's zlib,
for files whose stored chunks must match what HDF5 itself writes.

The package is imported on first use, not with bgio.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from importlib import import_module

__all__ = ["ENVIRONMENT", "choose", "compress", "implementation"]

#: The environment variable that chooses the implementation: "zlib" keeps the standard library's.
ENVIRONMENT = "BGIO_DEFLATE"

_Compress = Callable[[bytes | memoryview, int], bytes]
_chosen: tuple[str, _Compress] | None = None


def choose() -> str:
    """Choose the implementation again, from the environment and the packages installed now.

    Done once by itself, at the first :func:`compress`; call it after
    changing ``BGIO_DEFLATE`` or installing zlib-ng in a running program.

    Returns
    -------
    str
        ``"zlib-ng"`` or ``"zlib"``: what :func:`compress` uses from now on.
    """
    global _chosen
    chosen: tuple[str, _Compress] = ("zlib", zlib.compress)
    if os.environ.get(ENVIRONMENT, "").strip().lower() != "zlib":
        try:
            module = import_module("zlib_ng.zlib_ng")
        except ImportError:
            pass
        else:
            chosen = ("zlib-ng", module.compress)
    _chosen = chosen
    return chosen[0]


def implementation() -> str:
    """The name of the implementation :func:`compress` uses: ``"zlib-ng"`` or ``"zlib"``."""
    return _chosen[0] if _chosen is not None else choose()


def compress(data: bytes | memoryview, level: int) -> bytes:
    """One zlib stream of ``data`` at ``level`` (0-9), as HDF5's deflate filter stores a chunk.

    Parameters
    ----------
    data : bytes or memoryview
        The chunk's bytes (after any filter before deflate).
    level : int
        The filter's compression level.
    """
    if _chosen is None:
        choose()
    assert _chosen is not None
    return _chosen[1](data, level)
