"""What follows a tensorstore store, run in a thread of bgio's, in the order issued.

Tensorstore runs a Python ``add_done_callback`` in one of its own pool
threads, and drops its Python future there afterwards; both take the
interpreter lock. A pool thread that asks for the lock once the interpreter
is finalizing is ended by Python with ``pthread_exit``, whose unwinding
through tensorstore's C++ calls ``std::terminate``: the process aborts at
exit (SIGABRT, status 134), the frames stored. The callback in flight when
a writer closes just before the program ends is enough, on a loaded
machine. So bgio gives tensorstore no Python callback: :class:`Landing`
waits for each future with ``result()`` (woken by tensorstore's C++ alone)
in its own thread, and runs what follows there.

The futures are waited for in the order they were issued: a store that
lands early is told once those before it are. At interpreter exit no
thread is started (it would never be joined, see
:func:`bgio.engine.shutting_down`); the thread that waits for a store then
lands the stores itself (:meth:`Landing.wait_for`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import engine

__all__ = ["Landing"]

logger = logging.getLogger("bgio")

Then = Callable[[Any], None]


class Landing:
    """Waits for tensorstore futures in order and runs, for each, what follows it.

    Parameters
    ----------
    name : str
        The store, for the thread's name and messages.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._waiting: deque[tuple[Any, Then]] = deque()
        self._thread: threading.Thread | None = None
        self._inline = False  # (at exit) no thread: the waiters land the stores
        self._closing = False

    def follow(self, future: Any, then: Then) -> None:
        """Run ``then(future)`` once ``future`` is done (after those followed before it)."""
        with self._lock:
            if self._closing:
                raise RuntimeError(f"{self._name}: no store is followed after the close")
            self._waiting.append((future, then))
            if self._thread is None and not self._inline:
                self._start()
            self._arrived.notify()

    def _start(self) -> None:
        # (lock held) The thread is made with the first store, so a writer that never
        # stores (its array refused) holds none.
        if engine.shutting_down():
            self._inline = True
            return
        thread = threading.Thread(target=self._run, name=f"bgio-landing {self._name}",
                                  daemon=True)  # (a writer never closed keeps no exit waiting)
        try:
            thread.start()
        except RuntimeError:  # no new threads during interpreter shutdown
            self._inline = True
        else:
            self._thread = thread

    def _run(self) -> None:
        while True:
            with self._lock:
                self._arrived.wait_for(lambda: self._waiting or self._closing)
                if not self._waiting:
                    return
                future, then = self._waiting.popleft()
            self._land(future, then, None)

    def _land(self, future: Any, then: Then, timeout: float | None) -> bool:
        """Wait for ``future`` (False, put back, on timeout), then run ``then``."""
        try:
            future.result(timeout=timeout)
        except TimeoutError:
            with self._lock:
                self._waiting.appendleft((future, then))
            return False
        except Exception:  # noqa: BLE001, S110 - the store's failure: ``then`` reads it
            pass
        except BaseException:  # (a Ctrl-C in a waiter landing at exit): not lost
            with self._lock:
                self._waiting.appendleft((future, then))
            raise
        try:
            then(future)
        except Exception:  # a bug here must not stop the stores after it
            logger.exception("after a store in %s", self._name)
        return True

    def wait_for(self, condition: threading.Condition, predicate: Callable[[], object],
                 timeout: float | None = None) -> bool:
        """``condition.wait_for(predicate, timeout)`` (``condition`` held), landing the
        stores meanwhile when no thread of the landing's does (at exit)."""
        if not self._inline:
            return bool(condition.wait_for(predicate, timeout))
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            with self._lock:
                nothing = not self._waiting
                if not nothing:
                    future, then = self._waiting.popleft()
            if nothing:  # (what it waits for is another thread's to change)
                condition.wait(left)
                continue
            condition.release()
            try:
                self._land(future, then, left)
            finally:
                condition.acquire()
        return True

    def close(self) -> None:
        """End the thread once every store followed has landed (waited for here)."""
        with self._lock:
            self._closing = True
            self._arrived.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        while self._waiting:  # (inline: the rest is landed here)
            with self._lock:
                if not self._waiting:
                    break
                future, then = self._waiting.popleft()
            self._land(future, then, None)
