"""Closing writers: on leaving a ``with`` block, and without waiting (``close(wait=False)``).

:class:`ClosesOnExit` is what bgio's writers share: ``with writer:`` closes
on exit without hiding the exception that ended the block, and
:meth:`ClosesOnExit._close` gives every writer's ``close()`` the same
meaning of ``wait``. A writer defines :meth:`ClosesOnExit._begin_close`, the
part of its close done in the caller (no more writes accepted, what is left
queued); that returns the rest, which waits for the stores and raises their
errors. ``close()`` runs the rest in the caller; ``close(wait=False)`` runs it
in a thread of its own and returns a handle that ends with it, so a GUI
thread is not held for the backlog.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .handle import BackgroundWriteProcess
from .lag import KeepsUp
from .timeouts import check_timeout
from .totals import CountsTotals

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["Again", "ClosesOnExit", "Finish"]

logger = logging.getLogger("bgio")

#: The rest of a close, given the close's timeout: waits for the stores, raises their errors.
Finish = Callable[[float | None], None]

_handles_lock = threading.Lock()  # (closes are rare: one lock for all writers' close handles)


class ClosesOnExit(CountsTotals, KeepsUp):
    """``with obj:`` calls ``obj.close()`` on exit.

    If the block raised, a failure of ``close()`` (a background write's
    error, already on its handle and in the log) does not replace the
    block's exception; otherwise it propagates. Its progress callbacks
    (:class:`~bgio.totals.CountsTotals`) get their last record once the
    close has ended.
    """

    #: The handle of a close(wait=False), once there was one.
    _close_handle: BackgroundWriteProcess | None = None
    #: The rest of the close, once a close began (see _Rest).
    _close_rest: _Rest | None = None

    def _closed_rest(self, error: BaseException | None) -> None:
        # The close has ended: a writer is not behind its max_lag any more, and its
        # progress callbacks get their last record.
        self._lag_closed()
        self._totals_closed(error)

    def close(self) -> None:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def _begin_close(self) -> Finish:  # pragma: no cover - every user defines it
        """Stop accepting writes and queue what is left, in the caller; the rest of the
        close (a second close: what a second close does)."""
        raise NotImplementedError

    def _close(self, timeout: float | None, wait: object) -> BackgroundWriteProcess | None:
        """``close(timeout, wait=wait)`` for every writer: see the writers' ``close``."""
        check_timeout(timeout)
        if not isinstance(wait, bool):
            raise TypeError(f"wait must be True or False, got {wait!r}")
        if not wait and timeout is not None:
            raise ValueError("timeout: close(wait=False) does not wait; give the timeout to "
                             "the result() of the handle it returns")
        mine = False
        with _handles_lock:
            if self._close_rest is None:  # (before any _begin_close: see _again)
                self._close_rest = _Rest(self._closed_rest)
            rest = self._close_rest
            handle = self._close_handle
            if handle is None and not wait:
                handle = self._close_handle = BackgroundWriteProcess(0)
                handle.set_running_or_notify_cancel()
                mine = True
        if handle is not None and not mine:  # closing in the background already
            if not wait:
                return handle
            if not handle.wait(timeout):
                raise TimeoutError(f"{self!r} not closed after {timeout} s")
            handle.result()  # its error, if the close failed
            return None
        if handle is None:
            self._rest_of(self._begin_close(), rest)(timeout)
            return None
        try:
            finish = self._rest_of(self._begin_close(), rest)
        except BaseException as exc:  # (a KeyboardInterrupt): the handle says so too
            handle.set_exception(exc)
            raise
        thread = threading.Thread(target=_finish_in_background, args=(self, finish, handle),
                                  name="bgio-close", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had (at exit, or out of them): wait here
            _finish_in_background(self, finish, handle)
        return handle

    @staticmethod
    def _rest_of(finish: Finish, rest: _Rest) -> Finish:
        # The close that closed the writer hands its rest over; any close runs it.
        if not isinstance(finish, Again):
            rest.set(finish)
            return rest
        return finish

    def _again(self) -> Again:
        """What :meth:`_begin_close` returns for a writer closed already."""
        assert self._close_rest is not None  # (made by _close before _begin_close)
        return Again(self._close_rest)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_error:  # noqa: BLE001 - already on the handle and logged
            logger.debug("closing %r after an exception in its block: %r", self, close_error)


def _ours(exc: TimeoutError) -> bool:
    """True for a timeout of bgio's own waits, not a store's (an ``OSError`` with an
    errno, ETIMEDOUT, on a network file system)."""
    return exc.errno is None


class _Rest:
    """The rest of a writer's close (what its :meth:`ClosesOnExit._begin_close`
    returned), run to its end once, whichever close calls it: one that timed out
    leaves it to the next; closes meanwhile wait for the one running it; once ended,
    every later call raises its error (or returns)."""

    def __init__(self, ended: Callable[[BaseException | None], None]) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._on_end: Callable[[BaseException | None], None] | None = ended  # told once the
        # close has ended, with its error
        self._finish: Finish | None = None
        self._given = False  # (set() was called)
        self._running = False
        self._ended = False
        self._error: BaseException | None = None
        self._raised = False  # (its error was raised to a caller)

    def set(self, finish: Finish) -> None:
        with self._changed:
            self._finish, self._given = finish, True
            self._changed.notify_all()

    @property
    def error(self) -> BaseException | None:
        """How the close failed, once it ended (None: it went well, or has not ended)."""
        return self._error

    def __call__(self, timeout: float | None, again: bool = False) -> None:
        """Run the rest, or wait for it; raise its error. ``again``: a close of a writer
        closed already, which raises only an error no close has raised yet."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waited = False
        with self._changed:
            while True:
                if self._ended:
                    if self._error is not None and not (again and self._raised):
                        self._raised = True
                        raise self._error
                    return
                finish = self._finish
                if self._given and not self._running:
                    self._running = True
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"not closed after {timeout} s")
                self._changed.wait(left)
                waited = True
        if waited and deadline is not None:  # (else the timeout as given, for messages)
            timeout = max(0.0, deadline - time.monotonic())
        try:
            finish(timeout)  # type: ignore[misc]
        except TimeoutError as exc:
            self._stop(exc if not _ours(exc) else None, ended=not _ours(exc))
            raise
        except Exception as exc:
            self._stop(exc, ended=True)
            raise
        except BaseException:  # (a KeyboardInterrupt): the next close goes on
            self._stop(None, ended=False)
            raise
        self._stop(None, ended=True)

    def _stop(self, error: BaseException | None, ended: bool) -> None:
        with self._changed:
            self._running = False
            self._ended = ended
            self._error = error
            self._raised = error is not None  # (raised by the close that ran it)
            self._changed.notify_all()
        if ended:
            # Dropped once ended: both are the writer's (which holds this), no cycle left.
            self._finish = None
            on_end, self._on_end = self._on_end, None
            if on_end is not None:
                on_end(error)


class Again:
    """The rest of a close of a writer closed already (by another thread, or before):
    wait for that close to end, running what a close that timed out left. It raises
    only an error no close has raised yet (a second ``close()`` raises nothing else,
    as ever); :attr:`error` says how the close went, for the handle of a
    ``close(wait=False)``, which must not say it went well when it did not.
    """

    __slots__ = ("_rest",)

    def __init__(self, rest: _Rest) -> None:
        self._rest = rest

    def __call__(self, timeout: float | None) -> None:
        self._rest(timeout, again=True)

    @property
    def error(self) -> BaseException | None:
        """The close's error, once it ended."""
        return self._rest.error


def _finish_in_background(writer: object, finish: Finish,
                          handle: BackgroundWriteProcess) -> None:
    try:
        finish(None)
        if isinstance(finish, Again) and finish.error is not None:
            raise finish.error
    except BaseException as exc:  # noqa: BLE001 - the handle's to raise
        logger.error("bgio: closing %r in the background failed: %s: %s", writer,
                     type(exc).__name__, exc)
        handle.set_exception(exc)
    else:
        handle.set_result(0)
