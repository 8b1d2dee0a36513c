"""What a report stores beside the figures: machine and version facts, results as JSON."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import psutil

from ..version import __version__

__all__ = ["environment", "to_jsonable"]


def _filesystem(directory: str | os.PathLike[str]) -> str | None:
    """File system type of the mount holding ``directory`` (ext4, tmpfs, ...), if known."""
    target = os.path.realpath(os.fspath(directory))
    best: tuple[int, str] | None = None
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:
        return None
    # The longest mount point that contains the directory is the one it lives on.
    for part in partitions:
        mount = part.mountpoint.rstrip("/") or "/"
        inside = target == mount or target.startswith(mount if mount == "/" else mount + "/")
        if inside and (best is None or len(mount) > best[0]):
            best = (len(mount), part.fstype)
    return best[1] if best else None


def environment(directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Versions and machine facts to store beside the figures.

    Parameters
    ----------
    directory : path-like or None
        The measurement directory, to record its file system type.

    Returns
    -------
    dict
        ``python``, ``numpy``, ``bgio``, ``platform``, ``machine``,
        ``cpu_count``, ``memory_total_bytes``, ``switch_interval_s`` and,
        with a directory, ``directory`` and ``filesystem``.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "bgio": __version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        # The GIL switch interval governs how long a writer thread waits for
        # the GIL beside a busy main thread; record it with the figures.
        "switch_interval_s": sys.getswitchinterval(),
    }
    if directory is not None:
        info["directory"] = os.fspath(directory)
        info["filesystem"] = _filesystem(directory)
    return info


def to_jsonable(obj: object) -> Any:
    """Turn results (dataclasses, dicts, lists of them) into plain JSON-ready values.

    Parameters
    ----------
    obj : object
        A result record, or dicts, lists and tuples of them.

    Returns
    -------
    object
        The same data as dicts with str keys, lists and plain Python scalars.
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    if isinstance(obj, np.generic):
        # numpy scalars (e.g. from a median of an array) are not JSON-serialisable.
        return obj.item()
    return obj
