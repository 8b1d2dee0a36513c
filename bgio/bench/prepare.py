"""Start every measurement alike: a collected heap, a fresh file, scratch space cleaned up."""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

__all__ = ["fresh_file", "scratch", "settle", "workdir"]


def settle() -> None:
    """Collect the garbage of the previous measurement before the next one starts.

    It is collected here, outside every timer and on both sides alike, rather
    than during the next loop.
    """
    gc.collect()


@contextmanager
def fresh_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """:func:`settle`, then open ``path`` for writing, truncated; closed on exit.

    Every timed write starts this way, so the sides compared differ only in
    how they write.
    """
    settle()
    with open(path, "wb") as f:
        yield f


@contextmanager
def scratch(directory: str | os.PathLike[str], name: str) -> Iterator[str]:
    """A file path in ``directory``, removed afterwards so repeated 512 MiB writes do not fill the disk."""
    path = os.path.join(os.fspath(directory), name)
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@contextmanager
def workdir(directory: str | os.PathLike[str] | None) -> Iterator[str]:
    """``directory`` itself, or a temporary directory removed afterwards when it is None."""
    if directory is not None:
        yield os.fspath(directory)
        return
    with tempfile.TemporaryDirectory(prefix="bgio-bench-") as temporary:
        yield temporary
