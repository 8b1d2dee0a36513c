"""Zarr v3 output through tensorstore (the ``zarr`` extra): :class:`FrameWriter`, and for
readers :func:`follow` and :func:`recover`.

``import bgio.zarr`` does not import tensorstore; making a writer (or a
follower) does.
"""

from __future__ import annotations

from .follow import Follower, follow
from .frames import FrameWriter, context
from .recover import Recovery, recover

__all__ = ["Follower", "FrameWriter", "Recovery", "context", "follow", "recover"]
