"""Reading the parent's memory from the writer process (Linux ``process_vm_readv``).

A write's data already in memory (``bytes``, a numpy array, any buffer)
need not be copied by the parent at all: the parent sends the address and
length of each buffer, and the writer process reads it straight from the
parent's memory into a buffer of its own, one large copy per piece done in
the child. The parent then pays one message per buffer, whatever its size,
which is what keeps a busy program from starving the writer: every system
call the parent's threads make costs a round trip for the interpreter lock
(up to 5 ms while the main thread runs Python).

This needs the right to read the parent's memory: the same user, and where
the Yama security module restricts it (``ptrace_scope`` 1, Ubuntu's default)
the parent's leave, which :func:`allow` gives the writer process with
``prctl(PR_SET_PTRACER)``. Where it is refused (``ptrace_scope`` 2 or 3,
some containers, other systems), :func:`available` says so and the data
goes through the shared ring instead (:mod:`bgio.process.ring`).

The caller's buffer must stay unchanged until the write is done, as for the
thread backend (``copy=True`` snapshots it first).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import numpy as np

__all__ = ["address_of", "allow", "available", "read_into"]

_PR_SET_PTRACER = 0x59616D61


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


def _load() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.process_vm_readv.restype = ctypes.c_ssize_t
        libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_ulong,
                                          ctypes.POINTER(_IOVec), ctypes.c_ulong,
                                          ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                               ctypes.c_ulong]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load()


def available() -> bool:
    """True if this platform has ``process_vm_readv`` (whether it is allowed is tried)."""
    return _libc is not None


def allow(pid: int) -> None:
    """(In the parent) let process ``pid`` read this process's memory where Yama asks for
    leave; a no-op where it does not (the call then fails harmlessly)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PTRACER, pid, 0, 0, 0)


def address_of(block: memoryview) -> int:
    """The address of a contiguous buffer's first byte."""
    return int(np.frombuffer(block, dtype=np.uint8).ctypes.data)


def read_into(pid: int, address: int, into: np.ndarray) -> None:
    """Copy ``into.size`` bytes at ``address`` in process ``pid`` into ``into``.

    Raises
    ------
    OSError
        If the memory cannot be read (no leave, the process gone, a bad address).
    """
    assert _libc is not None
    size = into.size
    done = 0
    base = into.ctypes.data
    while done < size:
        local = _IOVec(base + done, size - done)
        remote = _IOVec(address + done, size - done)
        count = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if count <= 0:
            code = ctypes.get_errno() if count < 0 else 0
            raise OSError(code or 5, "cannot read the writer's data from the program's memory: "
                          + os.strerror(code or 5))
        done += count
