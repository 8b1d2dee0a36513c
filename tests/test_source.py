"""Data in, chunks out: every accepted kind, without copying."""

from __future__ import annotations

import array

import numpy as np
import pytest

import bgio
from bgio.source import as_block, make_source


def _shares_memory(view: memoryview, base: object) -> bool:
    return np.shares_memory(np.asarray(view), np.asarray(base))


def test_chunk_data_of_bytes_is_zero_copy_views():
    data = bytearray(b"0123456789")
    chunks = bgio.chunk_data(data, 4)
    assert [bytes(c) for c in chunks] == [b"0123", b"4567", b"89"]
    assert all(isinstance(c, memoryview) for c in chunks)
    data[0:1] = b"X"  # the chunks see the caller's memory
    assert bytes(chunks[0]) == b"X123"


def test_chunk_data_of_str():
    assert bgio.chunk_data("abcdefg", 3) == ["abc", "def", "g"]


def test_chunk_data_of_numpy_is_its_raw_c_order_bytes():
    arr = np.arange(6, dtype="<u2").reshape(2, 3)
    chunks = bgio.chunk_data(arr, 5)
    assert b"".join(bytes(c) for c in chunks) == arr.tobytes()
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert _shares_memory(chunks[0], arr)


def test_chunk_data_of_empty_data():
    assert bgio.chunk_data(b"", 4) == []


@pytest.mark.parametrize(("size", "error"), [(0, ValueError), (-3, ValueError), ("4", TypeError)])
def test_chunk_data_rejects_bad_chunk_size(size, error):
    with pytest.raises(error, match="chunk_size"):
        bgio.chunk_data(b"abc", size)


def test_chunk_data_rejects_other_types():
    with pytest.raises(TypeError, match="data: expected bytes"):
        bgio.chunk_data(12345, 2)


@pytest.mark.parametrize(
    "obj",
    [
        b"abc",
        bytearray(b"abc"),
        memoryview(b"abcdef")[1:4],
        array.array("i", [1, 2, 3]),
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array(7, dtype=np.int64),  # 0-d
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
    ],
    ids=["bytes", "bytearray", "memoryview", "array", "numpy2d", "numpy0d", "datetime64",
         "structured"],
)
def test_as_block_gives_a_flat_byte_view_without_copying(obj):
    block = as_block(obj)
    assert isinstance(block, memoryview)
    assert block.format == "B" and block.ndim == 1
    expected = obj.tobytes() if hasattr(obj, "tobytes") else bytes(obj)
    assert bytes(block) == expected
    if isinstance(obj, np.ndarray):
        assert _shares_memory(block, obj.reshape(-1).view(np.uint8))


def test_non_contiguous_numpy_is_a_clear_error():
    arr = np.arange(20).reshape(4, 5)
    with pytest.raises(ValueError, match="data: the numpy array is not C-contiguous"):
        as_block(arr[:, 1])
    with pytest.raises(ValueError, match="ascontiguousarray"):
        as_block(np.asfortranarray(arr))


def test_non_contiguous_buffer_is_a_clear_error():
    with pytest.raises(ValueError, match="not C-contiguous"):
        as_block(memoryview(b"abcdef")[::2])


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="Python objects"):
        as_block(np.array([object()]))


def test_make_source_sizes_and_kinds():
    assert (make_source(b"abc").kind, make_source(b"abc").total) == ("bytes", 3)
    assert (make_source("héllo").kind, make_source("héllo").total) == ("text", 5)
    src = make_source([b"ab", bytearray(b"cde"), np.zeros(2, np.uint16)])
    assert (src.kind, src.total) == ("bytes", 9)
    gen = make_source(b for b in [b"x"])
    assert (gen.kind, gen.total) == (None, None)


def test_lists_are_checked_in_the_caller():
    with pytest.raises(TypeError, match=r"data\[1\]: expected bytes"):
        make_source([b"ok", 3])
    with pytest.raises(TypeError, match="mixes str and bytes"):
        make_source([b"ok", "text"])
    with pytest.raises(TypeError, match=r"data\[0\]: str cannot be written to a binary stream"):
        make_source(["text"], expected="bytes")


@pytest.mark.parametrize("data", [{b"a": 1}, {b"a"}, frozenset()], ids=["dict", "set", "frozenset"])
def test_unordered_collections_are_refused(data):
    with pytest.raises(TypeError, match="no defined order"):
        make_source(data)


def test_lazy_iterables_are_checked_as_consumed():
    src = make_source(iter([b"ab", "cd"]), expected="bytes")
    chunks = src.chunks(10, "bytes")
    assert bytes(next(chunks)) == b"ab"
    with pytest.raises(TypeError, match=r"data\[1\]: str cannot be written to a binary stream"):
        next(chunks)


def test_lazy_iterable_of_unknown_kind_must_not_mix():
    chunks = make_source(iter(["ab", b"cd"])).chunks(10)
    assert next(chunks) == "ab"
    with pytest.raises(TypeError, match="bytes cannot be written to a text stream"):
        next(chunks)


def test_chunks_split_big_blocks_and_skip_empty_ones():
    src = make_source([b"", b"abcdefg", b"", b"hi"])
    assert [bytes(c) for c in src.chunks(3)] == [b"abc", b"def", b"g", b"hi"]
