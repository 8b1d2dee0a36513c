"""Making a file whose writer died (or ran out of disk) open normally again.

A writer marks the file's superblock "open for (SWMR) write" and clears the
mark when it closes. If it is killed, the mark stays: SWMR readers still
open the file (and read every frame flushed before the crash), but a normal
open fails with "file is already open for write". HDF5's ``h5clear -s
--increment=0`` repairs that; h5py offers no way to, so :func:`recover` does
the same: it rewrites the superblock's status flags, its end-of-file address
and its checksum (Bob Jenkins' lookup3, as HDF5 computes it), after checking
that the stored checksum is the one it computes. A file that a full disk
left shorter than its end-of-file address ("truncated file") is extended to
it, as ``h5clear --increment=0`` does.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import cast

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
    x, y, z = cast("tuple[int, int, int]",
                   struct.unpack("<3I", bytes(data[position:]) + bytes(12 - length)))
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
    """Make a file whose writer failed or died open normally again, keeping what it stored.

    Two things keep such a file from opening, and both are repaired:

    - The writer's "open for write" marks (a SWMR writer that was killed):
      they are cleared, and the end-of-file address the superblock records
      is raised to the file's size (a SWMR writer leaves it short; HDF5's
      ``h5clear -s`` alone then cuts the file there, losing the frames).
      Equivalent to ``h5clear -s --increment=0``.
    - A file shorter than its end-of-file address ("truncated file"): HDF5
      had reserved space it could not write (the disk was full, a file size
      limit). The file is extended to that address with zeros, as
      ``h5clear --increment=0`` does: what was stored before the failure
      reads back intact; the chunk that failed reads as zeros, or fails to
      decompress.

    Only for a file whose writer is gone: a SWMR writer that is still
    running cannot be detected, and would then be corrupting its own file.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    bool
        True if the file was repaired, False if it needed nothing.

    Raises
    ------
    ValueError
        The file is locked by a writer that has it open, is not an HDF5
        file, or has a superblock whose checksum does not verify (nothing
        is changed then).
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
        head = os.pread(fd, 14, base)
        version = head[8]
        if version in (0, 1):
            return _extend_to_end(fd, base, head[13], 24 if version == 0 else 28)
        if version not in (2, 3):
            raise ValueError(f"path: unknown superblock version {version}")
        return _clear_marks(fd, base, head[9], head[11])
    finally:
        os.close(fd)


def _extend_to_end(fd: int, base: int, offset_size: int, addresses_at: int) -> bool:
    """Superblock versions 0 and 1 (no write marks, no checksum): extend a truncated file."""
    if offset_size not in _ADDRESS_FORMATS:
        raise ValueError(f"path: unexpected size of offsets {offset_size} in the superblock")
    # Base address, free-space address, then the end-of-file address.
    eoa_at = base + addresses_at + 2 * offset_size
    (eoa,) = struct.unpack(_ADDRESS_FORMATS[offset_size], os.pread(fd, offset_size, eoa_at))
    if eoa <= os.fstat(fd).st_size:
        return False
    os.ftruncate(fd, eoa)
    os.fsync(fd)
    return True


def _clear_marks(fd: int, base: int, offset_size: int, flags: int) -> bool:
    """Superblock versions 2 and 3: clear the write marks, set the end-of-file address to
    the file's size, extend a truncated file; the checksum is checked and rewritten."""
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
    # the file there); it becomes the file's real size. A file shorter
    # than the address (space reserved, never written) is extended to it.
    address_format = _ADDRESS_FORMATS[offset_size]
    eoa_at = 12 + 2 * offset_size
    (eoa,) = struct.unpack_from(address_format, block, eoa_at)
    real = os.fstat(fd).st_size  # the address counts the user block too, as HDF5's does
    if flags == 0 and eoa == real:
        return False
    if eoa > real:
        os.ftruncate(fd, eoa)
    if flags != 0 or eoa < real:
        block[11] = 0
        struct.pack_into(address_format, block, eoa_at, max(eoa, real))
        struct.pack_into("<I", block, length, lookup3(bytes(block[:length])))
        os.pwrite(fd, bytes(block[8 : length + 4]), base + 8)
    os.fsync(fd)
    return True
