"""Turn what the caller passes as data into a lazy stream of chunks, without copying it."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Literal, overload

from .priority import validate_chunk_size

__all__ = ["WHOLE", "Block", "Kind", "Source", "as_block", "chunk_data", "chunks_of",
           "make_source", "only_chunk_of"]

#: A chunk size larger than any buffer: ``source.chunks(WHOLE)`` gives a source's
#: blocks as they are.
WHOLE = 1 << 60

#: What a sink receives: a flat byte view, or a piece of text.
Block = memoryview | str
#: "bytes" or "text"; ``None`` where it is only known once a lazy iterable is consumed.
Kind = Literal["bytes", "text"]


def _describe(obj: object) -> str:
    return type(obj).__qualname__


def as_block(obj: object, name: str = "data") -> Block:
    """Return ``obj`` as a flat unsigned-byte memoryview (no copy), or unchanged if it is a str.

    Raises
    ------
    TypeError
        If ``obj`` is neither str nor an object with the buffer protocol, or
        is a numpy array of Python objects.
    ValueError
        If the buffer is not C-contiguous (bgio never copies behind your back).
    """
    if isinstance(obj, str):
        return obj
    numpy = sys.modules.get("numpy")  # an ndarray cannot exist unless numpy is imported
    if numpy is not None and isinstance(obj, numpy.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(f"{name}: a numpy array of Python objects has no raw bytes to write")
        if not obj.flags.c_contiguous:
            raise ValueError(
                f"{name}: the numpy array is not C-contiguous (a strided view or Fortran order); "
                "pass numpy.ascontiguousarray(array) to write a C-order copy"
            )
        # reshape(-1) and view(uint8) of a C-contiguous array are views, never copies;
        # going through uint8 also covers dtypes with no buffer format (datetime64).
        return memoryview(obj.reshape(-1).view(numpy.uint8))
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name}: expected bytes, a buffer (bytearray, memoryview, numpy array, ...), str, "
            f"or an iterable of those, got {_describe(obj)}"
        ) from None
    if not view.c_contiguous:
        raise ValueError(
            f"{name}: the buffer is not C-contiguous; pass a contiguous copy to write it"
        )
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")


def _kind(block: Block) -> Kind:
    return "text" if isinstance(block, str) else "bytes"


@overload
def _chunks(blocks: Iterable[Block], chunk_size: int) -> Iterator[Block]: ...


@overload
def _chunks(blocks: Iterable[Block | bytes], chunk_size: int) -> Iterator[Block | bytes]: ...


def _chunks(blocks: Iterable[Block | bytes], chunk_size: int) -> Iterator[Block | bytes]:
    for block in blocks:
        size = len(block)
        if size <= chunk_size:
            if size:
                yield block
            continue
        if type(block) is bytes:
            block = memoryview(block)  # slicing bytes would copy
        for start in range(0, size, chunk_size):
            yield block[start : start + chunk_size]


class Source:
    """Data prepared for writing: its kind, its size if known, and its blocks.

    ``blocks`` is either a list of ready blocks (checked in the caller) or a
    lazy iterable whose items are checked as the worker consumes them.
    """

    __slots__ = ("_blocks", "_largest", "_lazy", "kind", "total")

    def __init__(
        self,
        blocks: Iterable[object],
        kind: Kind | None,
        total: int | None,
        lazy: bool,
        largest: int = 0,
    ) -> None:
        self.kind = kind
        self.total = total
        self._blocks = blocks
        self._lazy = lazy
        self._largest = largest  # the longest block, when known

    @classmethod
    def of_bytes(cls, data: bytes) -> Source:
        """A source of one bytes object (the common case, kept cheap: no tuple around it)."""
        source = cls.__new__(cls)
        source.kind = "bytes"
        source.total = source._largest = len(data)
        source._blocks = data
        source._lazy = False
        return source

    def chunks(self, chunk_size: int, expected: Kind | None = None) -> Iterator[Block | bytes]:
        """Yield chunks of at most ``chunk_size`` bytes (characters for text).

        Items of a lazy iterable are converted here, in the worker; one of
        the wrong type or kind raises ``TypeError`` there, which ends the
        write with that error on its handle. A bytes object that fits in a
        chunk comes out as it is.
        """
        blocks = self._blocks
        if type(blocks) is bytes:
            blocks = (blocks,)
        if self._lazy:
            return _chunks(self._checked(expected), chunk_size)
        if self._largest <= chunk_size and self.total:
            return iter(blocks)  # type: ignore[arg-type]  # already chunk-sized
        return _chunks(blocks, chunk_size)  # type: ignore[arg-type]

    @property
    def lazy(self) -> bool:
        """True for an iterable consumed as the worker goes (its size is unknown)."""
        return self._lazy

    def only_chunk(self, chunk_size: int) -> Block | bytes | None:
        """The data as one chunk, if it is a single non-empty block of at most ``chunk_size``."""
        if self._lazy or self._largest != self.total or not 0 < self._largest <= chunk_size:
            return None
        blocks = self._blocks
        if type(blocks) is bytes:
            return blocks
        return blocks[0] if len(blocks) == 1 else None  # type: ignore[index, arg-type]

    def _checked(self, expected: Kind | None) -> Iterator[Block]:
        for index, item in enumerate(self._blocks):
            block = as_block(item, f"data[{index}]")
            kind = _kind(block)
            if expected is None:
                expected = kind
            elif kind != expected:
                raise TypeError(_kind_message(f"data[{index}]", kind, expected))
            yield block


def _kind_message(name: str, got: Kind, expected: Kind) -> str:
    if got == "text":
        return f"{name}: str cannot be written to a binary stream; encode it first"
    return f"{name}: bytes cannot be written to a text stream; decode it or use the binary buffer"


def make_source(
    data: object, expected: Kind | None = None, name: str = "data", copy: bool = False
) -> Source:
    """Check ``data`` in the caller's thread and wrap it as a :class:`Source`.

    ``expected`` is the destination's kind when known; a mismatch raises.
    With ``copy`` the data is snapshotted now (bytes and str are immutable
    and kept as they are; a lazy iterable is consumed now).

    Raises
    ------
    TypeError
        Unsupported type, a set or mapping (no defined order), mixed str and
        bytes blocks, or a kind the destination cannot take.
    ValueError
        A buffer that is not C-contiguous.
    """
    if type(data) is bytes:
        # The common case, kept short: bytes are immutable, so the block can
        # stay as it is (chunking slices it through a memoryview).
        if expected == "text":
            raise TypeError(_kind_message(name, "bytes", "text"))
        return Source.of_bytes(data)
    if copy and not isinstance(data, (str, bytes, list, tuple)) and isinstance(data, Iterable) \
            and not _has_buffer(data):
        data = list(data)  # a lazy iterable: consumed now, then copied block by block
    if isinstance(data, (str, bytearray, memoryview)) or _has_buffer(data):
        block = _snapshot(as_block(data, name)) if copy else as_block(data, name)
        block_kind = _kind(block)
        _check_kind(name, block_kind, expected)
        return Source((block,), block_kind, len(block), False, len(block))
    if isinstance(data, (list, tuple)):
        blocks = [as_block(item, f"{name}[{index}]") for index, item in enumerate(data)]
        if copy:
            blocks = [_snapshot(block) for block in blocks]
        kind = expected
        for index, block in enumerate(blocks):
            block_kind = _kind(block)
            if kind is None:
                kind = block_kind
            elif block_kind != kind:
                raise TypeError(
                    _kind_message(f"{name}[{index}]", block_kind, kind)
                    if expected is not None
                    else f"{name}: mixes str and bytes blocks ({name}[{index}] differs from the first)"
                )
        blocks = [block for block in blocks if len(block)]
        total = sum(len(block) for block in blocks)
        return Source(blocks, kind, total, False, max(map(len, blocks), default=0))
    if isinstance(data, (Mapping, AbstractSet)):
        raise TypeError(f"{name}: a {_describe(data)} has no defined order; pass a list of blocks")
    if isinstance(data, Iterable):
        return Source(data, expected, None, lazy=True)
    return Source((as_block(data, name),), None, None, lazy=False)  # raises TypeError


def only_chunk_of(source: Source | bytes, chunk_size: int) -> Block | bytes | None:
    """:meth:`Source.only_chunk` of a source, or of a bytes object standing for one."""
    if type(source) is bytes:
        return source if 0 < len(source) <= chunk_size else None
    return source.only_chunk(chunk_size)  # type: ignore[union-attr]


def chunks_of(source: Source | bytes, chunk_size: int,
              expected: Kind | None = None) -> Iterator[Block | bytes]:
    """:meth:`Source.chunks` of a source, or of a bytes object standing for one.

    A :class:`bgio.Writer` queues a bytes object as its own source: one
    object less per write, and small writes are mostly that.
    """
    if type(source) is bytes:
        return _chunks((source,), chunk_size)
    return source.chunks(chunk_size, expected)  # type: ignore[union-attr]


def _snapshot(block: Block) -> Block:
    """A copy the caller cannot change (str is immutable already)."""
    return block if isinstance(block, str) else memoryview(block.tobytes())


def _has_buffer(obj: object) -> bool:
    try:
        memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def _check_kind(name: str, kind: Kind, expected: Kind | None) -> None:
    if expected is not None and kind != expected:
        raise TypeError(_kind_message(name, kind, expected))


def chunk_data(data: object, chunk_size: int) -> list[Block]:
    """Split ``data`` into chunks of at most ``chunk_size`` without copying.

    Parameters
    ----------
    data : bytes-like, numpy array or str
        Buffers give ``memoryview`` slices of the original memory (keep the
        data unchanged until written); str gives str slices.
    chunk_size : int
        Bytes (characters for str) per chunk, >= 1. Floats are truncated.

    Returns
    -------
    list of memoryview or str

    Raises
    ------
    TypeError
        If ``data`` is not a buffer or str, or ``chunk_size`` is not a number.
    ValueError
        If ``chunk_size`` < 1 or the buffer is not C-contiguous.

    Examples
    --------
    >>> import bgio
    >>> [bytes(c) for c in bgio.chunk_data(b"123456789", 2)]
    [b'12', b'34', b'56', b'78', b'9']
    >>> bgio.chunk_data("abcde", 2)
    ['ab', 'cd', 'e']
    """
    size = validate_chunk_size("chunk_size", chunk_size)
    block = as_block(data)
    return list(_chunks((block,), size))
