"""bgio: throttled, ordered background writes (and reads) for interactive programs.

Call :func:`bgwrite` and go on: the data is written from a background
thread in chunks, paced by a priority profile, in order per destination,
and the returned handle tells when it is done or why it failed.
:func:`bgread` reads the same way.
"""

from __future__ import annotations

import logging

from . import compat
from .api import bgwrite, bgwrite_chunk, wait_all
from .bars import tqdm
from .errors import BgioError, ChainError, DiskFull, FramesDropped, QueueFull, ShortRead
from .files import BackgroundFile, open
from .handle import BackgroundWriteProcess
from .pool import FramePool
from .priority import PRESETS, BackgroundIOPriority
from .process import default_backend, set_default_backend
from .progress import WriteProgress
from .reads import BackgroundRead, bgread
from .source import chunk_data
from .version import __version__
from .writer import Writer

__all__ = [
    "PRESETS",
    "BackgroundFile",
    "BackgroundIOPriority",
    "BackgroundRead",
    "BackgroundWriteProcess",
    "BgioError",
    "ChainError",
    "DiskFull",
    "FramePool",
    "FramesDropped",
    "QueueFull",
    "ShortRead",
    "WriteProgress",
    "Writer",
    "__version__",
    "bgread",
    "bgwrite",
    "bgwrite_chunk",
    "chunk_data",
    "compat",
    "default_backend",
    "open",
    "set_default_backend",
    "tqdm",
    "wait_all",
]

# A library logs; the application decides where it goes.
logging.getLogger("bgio").addHandler(logging.NullHandler())
