"""A run's summary: what an HDF5 writer stored, lost and held back (``writer.stats()``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WriterStats"]


@dataclass(frozen=True, slots=True)
class WriterStats:
    """The summary of an HDF5 writer's run so far (complete once it is closed).

    Attributes
    ----------
    frames_written : int
        Frames accepted (all stored once the writer is closed without error).
    dropped_frames : int
        Frames lost before they reached the writer (see ``on_drop``).
    missing_frames : int
        Slots below the last frame never written (known once closed).
    bytes : int
        Bytes of data accepted, before compression (frames times the frame's
        bytes; events times an event's bytes).
    seconds : float
        From the writer's creation to the end of its close (or to now).
    peak_backlog_bytes : int or None
        The most memory held at once for stores not yet done, as seen at
        each append: a FrameWriter's chunks being filled count whole (their
        buffers are), a RecordWriter's events held and queued by their
        bytes. None with ``backend="process"``, where the appends do not
        look.
    closed : bool
        Whether the close has ended (the figures are final).
    unpaced_bytes, unpaced_seconds, unpaced_episodes : int, float, int
        With a ``max_lag``: the bytes stored, and the seconds spent, with
        pacing suspended because the writer was behind, and how many times
        that began (0 without; see :class:`bgio.lag.LagStatus`).
    """

    frames_written: int
    dropped_frames: int
    missing_frames: int
    bytes: int
    seconds: float
    peak_backlog_bytes: int | None
    closed: bool
    unpaced_bytes: int = 0
    unpaced_seconds: float = 0.0
    unpaced_episodes: int = 0
