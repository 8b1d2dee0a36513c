"""``Writer(..., backend="process")``: a Writer whose destination the writer process holds open.

The writer process keeps an ordinary :class:`bgio.Writer` on the
destination (:class:`~bgio.process.parent.RemoteWriter`); this side checks
arguments in the caller, bounds pending bytes, and gives each write its
handle. Small writes travel inside their command (one message, no shared
memory), where the writer process's Writer gathers them as it does any
small writes; larger ones go as :func:`bgio.bgwrite`'s data does.
"""

from __future__ import annotations

import threading
from typing import Any

from ..api import PriorityLike, hand_over_frames
from ..closing import Finish
from ..handle import BackgroundWriteProcess, raise_root_error
from ..lag import refuse_in_process_writer
from ..priority import resolve_priority, validate_chunk_size
from ..room import wait_for_room
from ..source import WHOLE, make_source
from ..timeouts import check_timeout
from ..writer import Writer
from .destination import destination_for
from .parent import RemoteWriter, close_at_exit

__all__ = ["ProcessWriter"]

#: Writes of at most this many bytes go inside their command.
INLINE = 64 * 1024


class ProcessWriter(Writer):
    """A :class:`bgio.Writer` with ``backend="process"``: the same methods and meaning.

    Made by ``bgio.Writer(file, ..., backend="process")``; see
    :class:`bgio.Writer` for the parameters and :ref:`process-backend` for
    the destinations the writer process takes (paths, file descriptors,
    binary file objects with a ``fileno()``).
    """

    def __init__(
        self,
        file: object,
        priority: PriorityLike = 4,
        close_when_finished: bool = False,
        *,
        mode: str | None = None,
        fsync: bool = False,
        atomic: bool = False,
        copy: bool = False,
        max_pending_bytes: int | None = None,
        direct: bool = False,
        backend: str | None = "process",
        max_lag: float | None = None,
        max_lag_bytes: int | None = None,
        storage_options: dict[str, Any] | None = None,
        store: object = None,
        exclusive: bool = False,
    ) -> None:
        refuse_in_process_writer(max_lag, max_lag_bytes)
        if storage_options is not None or store is not None or exclusive:
            raise ValueError("storage_options, store and exclusive apply to object-store "
                             "URLs, which are written by threads (backend='thread')")
        profile = resolve_priority(priority)
        if max_pending_bytes is not None:
            max_pending_bytes = validate_chunk_size("max_pending_bytes", max_pending_bytes)
        destination = destination_for(file, mode, bool(atomic), bool(direct),
                                      bool(close_when_finished))
        self._target = None if destination.path is not None else file
        self._name = destination.name
        self._copy = bool(copy)
        self._max_pending = max_pending_bytes
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # signalled as pending bytes are written
        self._pending = 0
        self._last: BackgroundWriteProcess | None = None
        self._closed = False
        try:
            # The writer process's Writer: a path it opens itself, a descriptor it is
            # given (and lets go of at close; this process closes the caller's own).
            self._remote = RemoteWriter(destination, {
                "priority": profile, "mode": mode, "fsync": bool(fsync),
                "atomic": bool(atomic), "direct": bool(direct)})
        except BaseException:
            destination.discard()
            raise
        close_at_exit(self)  # a Writer left open is closed (written out) at exit
        self._remote.forget_when_freed(self)  # one freed unclosed lets go of its file

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<bgio.Writer {state} file={self._name!r} backend='process'>"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def file(self) -> object:
        """The destination as given (file object, fd, socket), or None for a path."""
        return self._target

    @property
    def kind(self) -> str | None:
        """What the destination takes: always ``"bytes"`` (text is refused at the start)."""
        return "bytes"

    @property
    def backend(self) -> str:
        """Who writes: ``"process"``."""
        return "process"

    @property
    def pending_bytes(self) -> int:
        """Bytes accepted by :meth:`write` and not yet written (counted with
        ``max_pending_bytes`` only; 0 without a bound)."""
        return self._pending

    def write(
        self, data: object, *, block: bool = True, timeout: float | None = None
    ) -> BackgroundWriteProcess:
        """Queue ``data`` after everything written so far; return its handle at once.

        See :meth:`bgio.Writer.write`.
        """
        source = make_source(data, "bytes", copy=self._copy)
        size = source.total or 0
        inline = None
        if not source.lazy and size <= INLINE:
            # Small: one copy, as pickling it would make anyway.
            blocks = source.chunks(WHOLE, "bytes")
            inline = b"".join(bytes(block) for block in blocks)  # type: ignore[arg-type]
        handle = BackgroundWriteProcess(source.total)
        bound = self._max_pending
        with self._lock:
            if bound is not None:
                def has_room() -> bool:
                    return self._closed or self._pending == 0 or self._pending + size <= bound

                wait_for_room(self._room, has_room, block, timeout, lambda: self._pending,
                              bound, f"{size} bytes")
            elif timeout is not None:
                check_timeout(timeout)
            if self._closed:
                raise ValueError("write to a closed bgio.Writer")
            hand_over_frames(source, handle)  # once nothing can refuse the write
            if bound is not None:
                self._pending += size
            # Queued under the lock: writes from several threads go in the order taken.
            self._remote.write(handle, None if inline is not None else source, inline)
            self._last = handle
            self._count_write(handle, source.total)
        if bound is not None:
            handle.add_done_callback(lambda _: self._written(size))
        return handle

    def _written(self, size: int) -> None:
        with self._lock:
            self._pending -= size
            self._room.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is in the file, or raise.

        See :meth:`bgio.Writer.flush`.
        """
        check_timeout(timeout)
        with self._lock:
            last = self._last
            if last is None:
                return
            if not self._closed:
                # An empty write behind every other: done once they are, even when the
                # last one was cancelled while queued (that one is done at once).
                last = self._last = BackgroundWriteProcess(0)
                self._remote.write(last, None, b"")
        if not last.wait(timeout):
            raise TimeoutError(f"writes not done after {timeout} s")
        raise_root_error(last)

    def _begin_close(self) -> Finish:
        # (close() is Writer's: the same meaning, wait=False too)
        with self._lock:
            if self._closed:
                return self._again()  # (waits for the first close)
            self._closed = True
            self._room.notify_all()  # writers waiting for room get their ValueError
            closing = self._last = BackgroundWriteProcess(0)
            self._remote.close(closing)

        def finish(timeout: float | None) -> None:
            if not closing.wait(timeout):
                raise TimeoutError(f"writes not done after {timeout} s")
            raise_root_error(closing)
        return finish
