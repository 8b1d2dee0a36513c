"""The I/O priority of a worker thread: a profile's ``io_priority``, set on the thread itself.

On Linux an I/O priority belongs to a thread: the worker sets its own
(through psutil, on its native thread id) before it writes for a profile
that names one, and puts its original back before it writes for a profile
that does not. It governs the I/O the thread submits itself: reads,
``O_DIRECT`` writes, and the write-back that windows start
(:mod:`bgio.writeback`); the kernel's own flusher, which writes back
ordinary buffered writes later, keeps its own. Elsewhere (and where psutil
has no ``ionice``) nothing is set.

Classes, as ``ionice`` names them: ``"realtime"`` (levels 0-7; needs
privileges), ``"best-effort"`` (levels 0-7, 0 first; an ordinary process
is at level 4) and ``"idle"`` (served only when the disk has nothing else
to do; no level).
"""

from __future__ import annotations

import logging
import numbers
import sys
import threading
from types import ModuleType

__all__ = ["CLASSES", "IOPriority", "adopt", "apply", "check_io_priority", "load"]

logger = logging.getLogger("bgio")

#: The class names a profile may give.
CLASSES = ("realtime", "best-effort", "idle")

#: A profile's I/O priority: (class, level).
IOPriority = tuple[str, int]

_psutil: ModuleType | None = None
_loaded = False
_thread = threading.local()  # the worker thread's psutil.Process, original and applied priority
_refused: set[IOPriority] = set()  # said once each
_refused_lock = threading.Lock()


def check_io_priority(value: object, name: str = "io_priority") -> IOPriority | None:
    """Check a profile's ``io_priority``: None, ``"idle"``, or ``(class, level)``.

    Raises
    ------
    TypeError
        If it is none of those forms.
    ValueError
        If the class is unknown or the level is outside 0..7.
    """
    if value is None:
        return None
    if value == "idle":
        return ("idle", 0)
    if not isinstance(value, tuple) or len(value) != 2:
        raise TypeError(f"{name} must be None, 'idle' or a (class, level) tuple, got {value!r}")
    io_class, level = value
    if io_class not in CLASSES:
        raise ValueError(f"{name}: class must be one of {', '.join(CLASSES)}, got {io_class!r}")
    if isinstance(level, bool) or not isinstance(level, numbers.Integral):
        raise TypeError(f"{name}: level must be an int 0..7, got {type(level).__name__}")
    number = int(level)
    if not 0 <= number <= 7:
        raise ValueError(f"{name}: level must be 0..7, got {level!r}")
    if io_class == "idle" and number != 0:
        raise ValueError(f"{name}: the idle class has no level, got {level!r}")
    return (io_class, number)


def load() -> bool:
    """Import what setting priorities needs; True if this platform can.

    Called in the thread that starts a worker, never in the worker: an
    import running in a background thread when the program forks leaves
    the child with the import lock held.
    """
    global _psutil, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            try:
                import psutil
            except ImportError:  # a runtime dependency; without it, nothing is set
                psutil = None
            if psutil is not None and hasattr(psutil.Process, "ionice"):
                _psutil = psutil
    return _psutil is not None


def adopt() -> None:
    """Let :func:`apply` set the calling thread's priority (a worker thread calls it once).

    Other threads that serve a lane (the caller's own, writing inline while
    the interpreter shuts down) keep theirs: on Linux the main thread's is
    the process's.
    """
    _thread.adopted = True


def apply(wanted: IOPriority | None) -> None:
    """Give the calling worker thread the I/O priority ``wanted``, or its own back for None.

    Cheap when nothing changes; nothing in a thread that did not
    :func:`adopt`. A refusal (no permission for realtime, a platform
    without it) is logged once per priority, and the write goes on at the
    thread's current priority.
    """
    psutil = _psutil
    if (psutil is None or getattr(_thread, "applied", None) == wanted
            or not getattr(_thread, "adopted", False)):
        return
    process = getattr(_thread, "process", None)
    try:
        if process is None:
            process = _thread.process = psutil.Process(threading.get_native_id())
            _thread.original = process.ionice()
        if wanted is None:
            original = _thread.original
            process.ionice(original.ioclass, original.value)
        else:
            io_class, level = wanted
            if io_class == "idle":
                process.ionice(psutil.IOPRIO_CLASS_IDLE)
            else:
                code = psutil.IOPRIO_CLASS_RT if io_class == "realtime" else psutil.IOPRIO_CLASS_BE
                process.ionice(code, level)
    except (OSError, psutil.Error) as exc:
        _say_refused(wanted, exc)
    _thread.applied = wanted  # also when refused: asked once per change, not per chunk


def _say_refused(wanted: IOPriority | None, exc: BaseException) -> None:
    key = wanted or ("original", -1)
    with _refused_lock:
        if key in _refused:
            return
        _refused.add(key)
    logger.warning("bgio: could not set the I/O priority %s on a worker thread (%s); "
                   "writing at the thread's current priority", wanted or "back", exc)
