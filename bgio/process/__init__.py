"""The process backend: writes done by a long-lived writer process, fed through shared memory.

``bgio.bgwrite(path, data, backend="process")`` hands the write to
:mod:`bgio.process.parent`, which starts the writer process
(:mod:`bgio.process.child`) on first use and copies the data into shared
memory (:mod:`bgio.process.ring`). The handle is an ordinary
:class:`~bgio.BackgroundWriteProcess`, driven from the child's reports.
"""

from __future__ import annotations

import os

from ..errors import BgioError
from ..objects import is_object_url

__all__ = ["BACKENDS", "FeedCancelled", "check_backend", "default_backend", "portable",
           "set_default_backend"]

#: The backends a write may ask for.
BACKENDS = ("thread", "process")

_default = "thread"


def set_default_backend(backend: str) -> str:
    """Set the backend of writes to a path that name none; returns the previous one.

    ``bgio.set_default_backend("process")`` at the start of a program
    sends every :func:`bgio.bgwrite`, :func:`bgio.bgwrite_chunk`,
    :class:`bgio.Writer`, :func:`bgio.open`, :class:`bgio.h5.FrameWriter` and
    :class:`bgio.h5.RecordWriter` *to a path* that does not pass
    ``backend=`` to the writer process. Other destinations (file objects,
    descriptors, sockets, open h5py files) keep the threads unless
    ``backend="process"`` is passed: some of them cannot cross a process
    boundary, and code that passes them was not written for it. A
    subclass of :class:`bgio.Writer` keeps the threads too.

    Raises
    ------
    TypeError, ValueError
        If ``backend`` is not ``"thread"`` or ``"process"``.

    Examples
    --------
    >>> import bgio
    >>> bgio.set_default_backend("thread")
    'thread'
    >>> bgio.default_backend()
    'thread'
    """
    global _default
    if backend is None:  # (None means "the default" elsewhere: here it would mean nothing)
        raise TypeError("backend must be 'thread' or 'process', got NoneType")
    previous, _default = _default, check_backend(backend)
    return previous


def default_backend() -> str:
    """The backend of writes to a path that name none (see :func:`set_default_backend`)."""
    return _default


def check_backend(value: object, target: object = None) -> str:
    """Check a ``backend`` argument: ``"thread"``, ``"process"``, or None (the default
    of :func:`set_default_backend` for a ``target`` that is a path, else threads).

    Raises
    ------
    TypeError
        If it is not a str (nor None).
    ValueError
        If it names no backend.
    """
    if value is None:
        if is_object_url(target):  # (uploaded by threads)
            return "thread"
        return _default if isinstance(target, (str, bytes, os.PathLike)) else "thread"
    if not isinstance(value, str):
        raise TypeError(f"backend must be 'thread' or 'process', got {type(value).__qualname__}")
    if value not in BACKENDS:
        raise ValueError(f"backend must be 'thread' or 'process', got {value!r}")
    return value


class FeedCancelled(BgioError):
    """Raised, in the writer process, into a write whose data the parent stopped sending
    because it was cancelled (defined here, not in the child's main module, so that both
    processes can unpickle it)."""


def portable(error: BaseException, known_only: bool = False) -> BaseException:
    """``error`` if the other process can rebuild it from a pickle, else a
    :class:`~bgio.BgioError` that says what it was.

    An exception of a class defined in a program's main module, or whose
    constructor does not take what it keeps, pickles but cannot be unpickled
    on the other side; the copy made here shows the second. With
    ``known_only`` (the parent's errors, sent to the writer process, which
    has none of the program's modules) only built-in and bgio's own
    exceptions cross as they are.
    """
    import pickle

    try:
        copy = pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure means: send a description
        copy = None
    module = type(error).__module__
    unknown = known_only and module != "builtins" and module.split(".")[0] != "bgio"
    if copy is None or unknown or module in ("__main__", "__mp_main__"):
        return BgioError(f"{type(error).__qualname__}: {error}")
    return error
