"""Making a file whose SWMR writer died open normally again.

A writer marks the file's superblock "open for (SWMR) write" and clears the
mark when it closes. If it is killed, the mark stays: SWMR readers still
open the file (and read every frame flushed before the crash), but a normal
open fails with "file is already open for write". HDF5's ``h5clear -s
--increment=0`` repairs that; h5py offers no way to, so :func:`recover` does
the same: it rewrites the superblock's status flags, its end-of-file address
and its checksum (Bob Jenkins' lookup3, as HDF5 computes it), after checking
that the stored checksum is the one it computes.
"""

from __future__ import annotations

import fcntl
import os
import struct

__all__ = ["lookup3", "recover"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF
# Superblock addresses by their size in bytes (little-endian).
_ADDRESS_FORMATS = {2: "<H", 4: "<I", 8: "<Q"}


def _rotate(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, the checksum of HDF5's metadata.

    Examples
    --------
    >>> hex(lookup3(b""))
    '0xdeadbeef'
    >>> hex(lookup3(b"Four score and seven years ago"))
    '0x17770551'
    """
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    position = 0
    while length > 12:
        x, y, z = struct.unpack_from("<3I", data, position)
        a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
        # mix(a, b, c)
        a = (a - c) & _MASK ^ _rotate(c, 4)
        c = (c + b) & _MASK
        b = (b - a) & _MASK ^ _rotate(a, 6)
        a = (a + c) & _MASK
        c = (c - b) & _MASK ^ _rotate(b, 8)
        b = (b + a) & _MASK
        a = (a - c) & _MASK ^ _rotate(c, 16)
        c = (c + b) & _MASK
        b = (b - a) & _MASK ^ _rotate(a, 19)
        a = (a + c) & _MASK
        c = (c - b) & _MASK ^ _rotate(b, 4)
        b = (b + a) & _MASK
        length -= 12
        position += 12
    if length == 0:
        return c
    # The last 1..12 bytes, as little-endian words padded with zeros.
    x, y, z = struct.unpack("<3I", bytes(data[position:]) + bytes(12 - length))
    a, b, c = (a + x) & _MASK, (b + y) & _MASK, (c + z) & _MASK
    # final(a, b, c)
    c = (c ^ b) - _rotate(b, 14) & _MASK
    a = (a ^ c) - _rotate(c, 11) & _MASK
    b = (b ^ a) - _rotate(a, 25) & _MASK
    c = (c ^ b) - _rotate(b, 16) & _MASK
    a = (a ^ c) - _rotate(c, 4) & _MASK
    b = (b ^ a) - _rotate(a, 14) & _MASK
    c = (c ^ b) - _rotate(b, 24) & _MASK
    return c


def _find_superblock(fd: int) -> int:
    """Offset of the superblock: 0, or after a user block of 512, 1024, 2048 ... bytes."""
    size = os.fstat(fd).st_size
    offset = 0
    while offset + len(_SIGNATURE) <= size:
        if os.pread(fd, len(_SIGNATURE), offset) == _SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    raise ValueError("path: not an HDF5 file (no superblock signature)")


def recover(path: str | os.PathLike[str]) -> bool:
    """Clear the "open for write" marks a crashed writer left, so the file opens normally.

    Only for a file whose writer is gone: a SWMR writer that is still
    running cannot be detected, and would then be corrupting its own file.
    Equivalent to HDF5's ``h5clear -s --increment=0``: the marks are
    cleared and the end-of-file address the superblock records is raised
    to the file's size (a SWMR writer leaves it short; ``h5clear -s``
    alone then cuts the file there, losing the frames). Everything the
    writer had flushed stays readable.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    bool
        True if the superblock was repaired, False if it needed nothing.

    Raises
    ------
    ValueError
        The file is locked by a writer that has it open, not an HDF5 file, a superblock version without status flags (files
        written for SWMR have version 3), or a superblock whose checksum
        does not verify (nothing is changed then).
    """
    fd = os.open(os.fspath(path), os.O_RDWR)
    try:
        try:
            # A writer that has the file open (and not yet in SWMR mode) holds
            # HDF5's lock on it: refuse, as h5clear does.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError("path: the file is open in a writer (it holds HDF5's lock); "
                             "recover only a file whose writer is gone") from None
        base = _find_superblock(fd)
        head = os.pread(fd, 12, base)
        version, offset_size, flags = head[8], head[9], head[11]
        if version not in (2, 3):
            raise ValueError(f"path: superblock version {version} keeps no write marks to clear")
        if offset_size not in _ADDRESS_FORMATS:
            raise ValueError(f"path: unexpected size of offsets {offset_size} in the superblock")
        length = 12 + 4 * offset_size  # signature ... root group address; the checksum follows
        block = bytearray(os.pread(fd, length + 4, base))
        (stored,) = struct.unpack_from("<I", block, length)
        if lookup3(bytes(block[:length])) != stored:
            raise ValueError("path: the superblock's checksum does not verify; not changing it")
        # The end-of-file address: a SWMR writer does not update it as the
        # file grows, so after a crash it lies short of the data. Opened as
        # it stands, HDF5 would read nothing past it (and a write would cut
        # the file there); it becomes the file's real size.
        address_format = _ADDRESS_FORMATS[offset_size]
        eoa_at = 12 + 2 * offset_size
        (eoa,) = struct.unpack_from(address_format, block, eoa_at)
        real = os.fstat(fd).st_size  # the address counts the user block too, as HDF5's does
        if flags == 0 and eoa >= real:
            return False
        block[11] = 0
        struct.pack_into(address_format, block, eoa_at, max(eoa, real))
        struct.pack_into("<I", block, length, lookup3(bytes(block[:length])))
        os.pwrite(fd, bytes(block[8 : length + 4]), base + 8)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)
