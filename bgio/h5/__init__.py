"""HDF5 support: writing datasets in the background without holding h5py's lock for long.

h5py serialises every call into HDF5 on one process-wide lock. A thread that
hands h5py a gzip-compressed frame holds it for the whole compression
(~50 ms for a 2 MiB frame), and any other h5py call in the program, a GUI's
included, waits. bgio filters whole chunks itself, outside that lock, and
stores them with ``DatasetID.write_direct_chunk``, which holds it for about
a millisecond. :mod:`bgio.h5.filters` reproduces the pipelines it can.
"""

from __future__ import annotations

from .filters import ChunkPipeline, pipeline_of
from .followers import Follower, FollowTimeout, RecordFollower, follow, follow_records
from .frames import FrameWriter
from .live import open_live
from .reading import read
from .records import RecordWriter
from .superblock import recover

__all__ = [
           "ChunkPipeline",
           "FollowTimeout",
           "Follower",
           "FrameWriter",
           "RecordFollower",
           "RecordWriter",
           "follow",
           "follow_records",
           "open_live",
           "pipeline_of",
           "read",
           "recover",
]
