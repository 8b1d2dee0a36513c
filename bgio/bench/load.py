"""The load a write is measured beside: an idle machine, other processes spinning, or busy Python.

A *condition* names one such load. :func:`loaded` puts the machine in it for
the length of a ``with`` block, and :func:`wait_under` waits for a write the
way that condition's main thread would: blocked (the GIL free) or running a
pure-Python loop (the GIL held, handed over only at the switch interval).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import psutil

__all__ = ["CONDITIONS", "Condition", "describe", "loaded", "others_cpu", "python_until",
           "spinners", "wait_for_quiet", "wait_under"]

#: ``"idle"``: nothing else runs. ``"cpu"``: two other processes each spin a
#: core. ``"python"``: the main thread runs a pure-Python loop for the whole write.
Condition = Literal["idle", "cpu", "python"]
CONDITIONS: tuple[Condition, ...] = ("idle", "cpu", "python")

#: Other processes spun in the ``"cpu"`` condition: one per core of the
#: 2-core machine the targets were set on (PEERS.md, "This machine").
SPINNERS = 2

#: Additions between two looks at the write in the busy loop: ~30 µs of
#: bytecode, short beside the 5 ms switch interval that sets the writer's pace.
_SUM_BLOCK = 1000

#: A spinner prints this once it is about to spin, so the measurement starts loaded.
_READY = "spinning"
_SPIN = f"import sys\nsys.stdout.write({_READY!r} + '\\n')\nsys.stdout.flush()\nwhile True:\n    pass\n"

_DESCRIPTIONS = {
    "idle": "idle machine",
    "cpu": f"{SPINNERS} other processes spinning",
    "python": "main thread running Python",
}


def describe(condition: str) -> str:
    """A short phrase naming ``condition`` for tables ("idle machine", ...)."""
    return _DESCRIPTIONS[condition]


@contextmanager
def spinners(count: int = SPINNERS) -> Iterator[list[subprocess.Popen[str]]]:
    """Run ``count`` other Python processes, each spinning a core, until the block ends.

    Each is known to be spinning before the block starts; all are stopped
    (terminated, then killed if they linger) when it ends, on an error too.

    Parameters
    ----------
    count : int, default :data:`SPINNERS`
        How many processes.

    Yields
    ------
    list of subprocess.Popen
        The running processes.
    """
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, text=True))
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != _READY:
                raise RuntimeError(f"spinner process {proc.pid} did not start "
                                   f"(exit status {proc.poll()})")
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@contextmanager
def loaded(condition: Condition) -> Iterator[list[subprocess.Popen[str]]]:
    """Hold the machine in ``condition`` for the block (only ``"cpu"`` needs anything started).

    The ``"python"`` load runs in the caller's own thread: see :func:`wait_under`.

    Yields
    ------
    list of subprocess.Popen
        The processes started for the load (empty but for ``"cpu"``).
    """
    if condition == "cpu":
        with spinners() as procs:
            yield procs
    elif condition in ("idle", "python"):
        yield []
    else:
        raise ValueError(f"unknown condition {condition!r}; expected one of {CONDITIONS}")


def others_cpu(ours: Sequence[subprocess.Popen[str]] = ()) -> float:
    """CPU seconds the whole machine has used so far, less this process's and ``ours``.

    The difference of two readings is what processes outside the benchmark
    used in between: on a shared machine, the load nobody asked for.
    """
    times = psutil.cpu_times()
    used: float = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    own = psutil.Process().cpu_times()
    used -= own.user + own.system
    for proc in ours:
        try:
            child = psutil.Process(proc.pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        used -= child.user + child.system
    return used


def python_until(done: Callable[[], bool], timeout: float) -> int:
    """Run a pure-Python loop (summing integers) in the calling thread until ``done()``.

    The loop never releases the GIL of its own accord, so another thread
    gets it back only when the interpreter's switch interval forces a
    hand-over (PEERS.md, "The GIL convoy"): what a busy GUI or processing
    loop does to a writer thread.

    Parameters
    ----------
    done : callable returning bool
        Checked every :data:`_SUM_BLOCK` additions.
    timeout : float
        Seconds after which :class:`TimeoutError` is raised.

    Returns
    -------
    int
        The sum (so the work cannot be seen as dead).

    Raises
    ------
    TimeoutError
        If ``done()`` is still False after ``timeout`` seconds.
    """
    clock = time.perf_counter
    give_up = clock() + timeout
    total = 0
    block = range(_SUM_BLOCK)
    while not done():
        for i in block:
            total += i
        if clock() > give_up:
            raise TimeoutError(f"still not done after {timeout:g} s of busy Python")
    return total


def wait_under(condition: Condition, done: Callable[[], bool], wait: Callable[[float], bool],
               timeout: float) -> None:
    """Wait for a write as the main thread of ``condition`` would.

    Parameters
    ----------
    condition : {"idle", "cpu", "python"}
        ``"python"`` spins :func:`python_until`; the others block in ``wait``.
    done : callable returning bool
        Whether the write is over (``handle.done``).
    wait : callable taking a timeout, returning bool
        Blocks until the write is over or the timeout passes; True if it is
        over (``handle.wait``).
    timeout : float
        Seconds.

    Raises
    ------
    TimeoutError
        If the write is not over within ``timeout``.
    """
    if condition == "python":
        python_until(done, timeout)
    elif not wait(timeout):
        raise TimeoutError(f"write not done after {timeout:g} s")


def wait_for_quiet(ours: Sequence[subprocess.Popen[str]] = (), cores: float = 0.2,
                   timeout: float = 20.0, sample: float = 0.25) -> float:
    """Wait until processes outside the benchmark use less than ``cores`` for ``sample`` seconds.

    On a shared machine other people's work (a test run, a build) would
    turn "idle" into "loaded" behind the benchmark's back; a measurement
    started in a quiet moment is far more likely to stay quiet.

    Parameters
    ----------
    ours : sequence of subprocess.Popen
        Processes of the benchmark itself (the spinners), not counted.
    cores : float, default 0.2
        The most others may use, in cores.
    timeout : float, default 20
        Seconds to wait at most; then the caller goes ahead anyway.
    sample : float, default 0.25
        Seconds each reading lasts.

    Returns
    -------
    float
        Cores the others used in the last sample (above ``cores`` if the
        wait timed out).
    """
    give_up = time.perf_counter() + timeout
    while True:
        before, started = others_cpu(ours), time.perf_counter()
        time.sleep(sample)
        seen = (others_cpu(ours) - before) / (time.perf_counter() - started)
        if seen < cores or time.perf_counter() >= give_up:
            return seen
