"""The process backend: writes done by a long-lived writer process, fed through shared memory.

``bgio.bgwrite(path, data, backend="process")`` hands the write to
:mod:`bgio.process.parent`, which starts the writer process
(:mod:`bgio.process.child`) on first use and copies the data into shared
memory (:mod:`bgio.process.ring`). The handle is an ordinary
:class:`~bgio.BackgroundWriteProcess`, driven from the child's reports.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "check_backend"]

#: The backends a write may ask for.
BACKENDS = ("thread", "process")


def check_backend(value: object) -> str:
    """Check a ``backend`` argument: ``"thread"`` or ``"process"``.

    Raises
    ------
    TypeError
        If it is not a str.
    ValueError
        If it names no backend.
    """
    if not isinstance(value, str):
        raise TypeError(f"backend must be 'thread' or 'process', got {type(value).__qualname__}")
    if value not in BACKENDS:
        raise ValueError(f"backend must be 'thread' or 'process', got {value!r}")
    return value
