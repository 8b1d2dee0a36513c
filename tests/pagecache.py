"""What the page cache holds of a file, and how much of memory is dirty: observed, for the
tests of write-back windows and direct I/O."""

from __future__ import annotations

import ctypes
import mmap
import os

__all__ = ["dirty_bytes", "resident_bytes"]


def resident_bytes(path, start: int = 0) -> int:
    """Bytes of ``path`` from ``start`` on in the page cache (mincore over a read-only
    mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    page = mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        try:
            pages = -(-size // page)
            vector = ctypes.create_string_buffer(pages)
            assert libc.mincore(address, size, vector) == 0, os.strerror(ctypes.get_errno())
            return sum(byte & 1 for byte in vector.raw[start // page:]) * page
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)


def dirty_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Dirty line in /proc/meminfo")
