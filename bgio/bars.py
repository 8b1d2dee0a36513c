"""``bgio.tqdm``: a live :mod:`tqdm` bar for a write or a writer, fed by its progress callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .handle import BackgroundWriteProcess
from .progress import WriteProgress, check_interval
from .totals import CountsTotals

if TYPE_CHECKING:
    import tqdm as tqdm_module

__all__ = ["tqdm"]


def tqdm(target: BackgroundWriteProcess | CountsTotals, *, interval: float = 0.1,
         **options: Any) -> tqdm_module.tqdm[Any]:
    """A :class:`tqdm.tqdm` bar that follows ``target`` until it is done, then closes.

    ``target`` is a handle (the bar counts its bytes, towards its total if
    known) or a writer (:class:`bgio.Writer`: its bytes; a
    :class:`bgio.h5.FrameWriter` or :class:`bgio.h5.RecordWriter`: its
    frames, towards the frames accepted so far), through
    ``add_progress_callback``: the bar is updated from bgio's delivery
    thread at most every ``interval`` seconds, nothing polls, and the bar is
    closed with the last record (a writer's once it is closed; a failure is
    shown after the bar). A writer's bar counts what was accepted from this
    call on.

    Parameters
    ----------
    target : bgio.BackgroundWriteProcess or a bgio writer
    interval : float, keyword-only, default 0.1
        Seconds between updates at most.
    **options
        Passed to :class:`tqdm.tqdm` (``desc``, ``leave``, ``file``, ...);
        ``unit``, ``unit_scale`` and ``total`` have defaults that fit the target.

    Returns
    -------
    tqdm.tqdm
        The bar (already following the target).

    Raises
    ------
    TypeError
        If ``target`` is neither a handle nor a bgio writer.
    """
    if not isinstance(target, (BackgroundWriteProcess, CountsTotals)):
        raise TypeError("target must be a bgio handle or writer, got "
                        f"{type(target).__qualname__}")
    interval = check_interval(interval)
    from tqdm import tqdm as make_bar  # (only programs that want a bar import tqdm)

    frames = isinstance(target, CountsTotals) and _counts_frames(target)
    if frames:
        options.setdefault("unit", "frame")
    else:
        options.setdefault("unit", "B")
        options.setdefault("unit_scale", True)
        options.setdefault("unit_divisor", 1024)
    if isinstance(target, BackgroundWriteProcess):
        options.setdefault("total", target.total_bytes)
    bar = make_bar(**options)

    def update(record: WriteProgress) -> None:
        done, total = ((record.frames_done, record.frames_total) if frames
                       else (record.done, record.total))
        if total is not None:
            bar.total = total
        bar.n = done or 0
        if record.error is not None:
            bar.set_postfix_str(f"failed: {type(record.error).__name__}", refresh=False)
        bar.refresh()
        if record.finished:
            bar.close()

    target.add_progress_callback(update, interval)
    return bar


def _counts_frames(writer: CountsTotals) -> bool:
    from .h5.base import H5Writer  # (imported already when writer is one)

    return isinstance(writer, H5Writer)
