"""Destination adapters: pick the sink for what the caller passed as ``file``."""

from __future__ import annotations

from .base import Sink
from .stream import StreamSink

__all__ = ["Sink", "StreamSink", "sink_for"]


def sink_for(file: object, name: str = "file") -> Sink:
    """Return the sink that writes into ``file``, checked in the caller's thread.

    Raises
    ------
    TypeError
        If ``file`` has no ``write`` method.
    ValueError
        If ``file`` is closed or not writable.
    """
    return StreamSink(file, name)
