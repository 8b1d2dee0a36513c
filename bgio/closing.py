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
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from .handle import BackgroundWriteProcess
from .timeouts import check_timeout

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["Again", "ClosesOnExit", "Finish"]

logger = logging.getLogger("bgio")

#: The rest of a close, given the close's timeout: waits for the stores, raises their errors.
Finish = Callable[[float | None], None]

_handles_lock = threading.Lock()  # (closes are rare: one lock for all writers' close handles)


class ClosesOnExit:
    """``with obj:`` calls ``obj.close()`` on exit.

    If the block raised, a failure of ``close()`` (a background write's
    error, already on its handle and in the log) does not replace the
    block's exception; otherwise it propagates.
    """

    #: The handle of a close(wait=False), once there was one.
    _close_handle: BackgroundWriteProcess | None = None

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
            self._begin_close()(timeout)
            return None
        try:
            finish = self._begin_close()
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


class Again:
    """The rest of a close of a writer closed already (by another thread, or before):
    wait for that close's writes. A second ``close()`` raises nothing else, as ever;
    their error is kept in :attr:`error`, for the handle of a ``close(wait=False)``
    made meanwhile, which must not say the close went well when it did not.

    Parameters
    ----------
    wait : callable taking the timeout
        Waits for the writes and raises their error (a writer's ``flush``, say).
    """

    __slots__ = ("_wait", "error")

    def __init__(self, wait: Finish) -> None:
        self._wait = wait
        self.error: Exception | None = None

    def __call__(self, timeout: float | None) -> None:
        try:
            self._wait(timeout)
        except TimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - raised by the first close already
            self.error = exc


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
