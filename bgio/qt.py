"""Qt for Python: a write's or a writer's progress and outcome as signals in the GUI thread.

``bgio.qt`` is imported only by programs that use it (``import bgio`` does
not import Qt). It works with PySide6, or PyQt6 where that is the one
installed (``pip install "bgio[qt]"`` installs PySide6)::

    signals = bgio.qt.WriteSignals(writer)           # made in the GUI thread
    signals.progress.connect(lambda p: bar.setValue(p.frames_done))
    signals.finished.connect(lambda p: status.setText("saved"))
    signals.failed.connect(lambda error: status.setText(f"failed: {error}"))

bgio calls its progress callbacks in a thread of its own; a
:class:`WriteSignals` hands each record to the thread it lives in (the one
that made it) through a queued connection, and emits its signals there, so
the slots connected to them run in the GUI thread with nothing polling.
"""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

from .handle import BackgroundWriteProcess
from .progress import WriteProgress, check_interval
from .totals import CountsTotals

try:
    from PySide6 import QtCore

    _Signal: Any = QtCore.Signal
    BINDING = "PySide6"
except ImportError:  # pragma: no cover - where PyQt6 is the binding installed
    try:
        from PyQt6 import QtCore  # type: ignore[no-redef,import-not-found,unused-ignore]

        _Signal = QtCore.pyqtSignal  # type: ignore[attr-defined]
        BINDING = "PyQt6"
    except ImportError:
        raise ImportError("bgio.qt needs Qt for Python: PySide6 (pip install \"bgio[qt]\") or "
                          "PyQt6") from None

__all__ = ["BINDING", "WriteSignals"]

#: Signals whose last record is not delivered yet: kept alive until it is (a queued
#: record to an object that is gone is dropped by Qt).
_pending: set[WriteSignals] = set()


class WriteSignals(QtCore.QObject):
    """Signals for one handle or writer, emitted in the thread that made this object.

    Parameters
    ----------
    target : bgio.BackgroundWriteProcess or a bgio writer
        A handle (:func:`bgio.bgwrite`, :meth:`bgio.Writer.write`, a
        ``close(wait=False)``), or a writer (:class:`bgio.Writer`,
        :class:`bgio.h5.FrameWriter`, :class:`bgio.h5.RecordWriter`:
        its totals from now on, finished once it is closed).
    interval : float, default 0.1
        Seconds between ``progress`` signals at most.
    parent : QObject or None
        The Qt parent, as for any QObject.

    Signals
    -------
    progress(WriteProgress)
        As the write goes on, and once more at its end.
    finished(WriteProgress)
        The write is done (a writer: closed) and went well; after the last
        ``progress``.
    failed(BaseException)
        The write (a writer: one of its writes, or its close) failed, or a
        handle was cancelled (:class:`concurrent.futures.CancelledError`);
        after the last ``progress``, in place of ``finished``.

    Notes
    -----
    Make it in the thread whose event loop should run the slots (the GUI
    thread); it is kept alive until its last signal, so it need not be
    kept in a variable. If Qt deletes it first (with its parent), the
    signals still to come are dropped.
    """

    progress = _Signal(object)
    finished = _Signal(object)
    failed = _Signal(object)
    # From bgio's delivery thread to this object's thread (a queued connection).
    _relay = _Signal(object)

    def __init__(self, target: BackgroundWriteProcess | CountsTotals, interval: float = 0.1,
                 parent: Any = None) -> None:
        if not isinstance(target, (BackgroundWriteProcess, CountsTotals)):
            raise TypeError("target must be a bgio handle or writer, got "
                            f"{type(target).__qualname__}")
        interval = check_interval(interval)
        super().__init__(parent)
        self._handle = target if isinstance(target, BackgroundWriteProcess) else None
        self._relay.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)
        # Kept until the last record is delivered here: signals made for a write need
        # not be kept by the program.
        _pending.add(self)
        target.add_progress_callback(self._forward, interval)

    def _forward(self, record: WriteProgress) -> None:
        # In bgio's delivery thread: only hand the record over.
        try:
            self._relay.emit(record)
        except RuntimeError:  # deleted by Qt (with its parent): nobody to tell
            _pending.discard(self)

    def _deliver(self, record: WriteProgress) -> None:
        # In this object's thread (the GUI's), through the queued connection.
        self.progress.emit(record)
        if not record.finished:
            return
        _pending.discard(self)
        error = record.error
        handle = self._handle
        if error is None and handle is not None and handle.cancelled():
            error = CancelledError(f"{handle!r} was cancelled")
        if error is not None:
            self.failed.emit(error)
        else:
            self.finished.emit(record)
