"""Zarr v3 output through tensorstore (the ``zarr`` extra): :class:`FrameWriter`.

``import bgio.zarr`` does not import tensorstore; making a writer does.
"""

from __future__ import annotations

from .frames import FrameWriter, context

__all__ = ["FrameWriter", "context"]
