"""bgwrite / bgwrite_chunk: byte-exact content for every data kind, and every input check."""

from __future__ import annotations

import array
import io
import threading
import time

import numpy as np
import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 5, 100)
FAST_1K = bgio.BackgroundIOPriority(0, 1000, 100)


def test_call_returns_a_handle_at_once_and_writes_bytes(tmp_path):
    path = tmp_path / "out.bin"
    data = bytes(range(256)) * 1000
    with open(path, "wb") as f:
        handle = bgio.bgwrite(f, data, priority=7)
        assert isinstance(handle, bgio.BackgroundWriteProcess)
        assert handle.result(timeout=30) == len(data)
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"plain bytes", b"plain bytes"),
        (bytearray(b"a bytearray"), b"a bytearray"),
        (memoryview(b"xx a memoryview xx")[3:-3], b"a memoryview"),
        (array.array("H", [1, 2, 0xFFFF]), array.array("H", [1, 2, 0xFFFF]).tobytes()),
        (np.arange(1000, dtype=np.uint16).reshape(10, 100),
         np.arange(1000, dtype=np.uint16).tobytes()),
        (np.linspace(0, 1, 77, dtype=np.float64), np.linspace(0, 1, 77).tobytes()),
        ([b"one ", bytearray(b"two "), np.frombuffer(b"three", np.uint8)], b"one two three"),
        ((b"tu", b"ple"), b"tuple"),
        ((bytes([i]) * i for i in range(1, 20)), b"".join(bytes([i]) * i for i in range(1, 20))),
        (iter([b"it", b"er"]), b"iter"),
        (b"", b""),
        ([], b""),
    ],
    ids=["bytes", "bytearray", "memoryview", "array", "numpy2d", "float64", "list", "tuple",
         "generator", "iterator", "empty", "empty-list"],
)
def test_every_binary_data_kind_is_written_exactly(tmp_path, data, expected):
    path = tmp_path / "out.bin"
    with open(path, "wb") as f:
        handle = bgio.bgwrite(f, data, priority=FAST)
        assert handle.result(timeout=30) == len(expected)
    assert path.read_bytes() == expected


def test_numpy_array_is_written_as_c_order_raw_bytes(tmp_path):
    arr = np.random.default_rng(1).integers(0, 2**16, size=(64, 48), dtype=np.uint16)
    path = tmp_path / "a.raw"
    with open(path, "wb") as f:
        bgio.bgwrite_chunk(f, arr, 1000).result(timeout=30)
    assert np.array_equal(np.fromfile(path, dtype=np.uint16).reshape(64, 48), arr)


def test_text_streams_take_str(tmp_path):
    path = tmp_path / "out.txt"
    text = "héllo wörld ✓\n" * 500
    with open(path, "w", encoding="utf-8") as f:
        assert bgio.bgwrite_chunk(f, text, 33).result(timeout=30) == len(text)
        bgio.bgwrite(f, ["a", "b", "c"], priority=FAST).result(timeout=30)
    assert path.read_text(encoding="utf-8") == text + "abc"


def test_in_memory_streams(fast):
    out = io.BytesIO()
    bgio.bgwrite(out, b"0123456789", priority=fast).result(timeout=30)
    assert out.getvalue() == b"0123456789"
    text = io.StringIO()
    bgio.bgwrite(text, "text " * 10, priority=fast).result(timeout=30)
    assert text.getvalue() == "text " * 10


def test_bgwrite_chunk_uses_its_chunk_size(recorder):
    bgio.bgwrite_chunk(recorder, b"y" * 10, 4, priority=1).result(30)
    assert [len(w) for w in recorder.writes] == [4, 4, 2]


def test_data_is_not_copied_before_it_is_written():
    # The worker reads the caller's memory: a change made before the write
    # starts is what gets written (hence the docs' rule: leave it alone).
    rec_gate = threading.Event()

    class Holder:
        mode = "wb"
        got = b""

        def write(self, data):
            rec_gate.wait()
            Holder.got += bytes(data)
            return len(data)

    buf = bytearray(b"before")
    handle = bgio.bgwrite(Holder(), buf, priority=1)
    buf[:] = b"AFTER!"
    rec_gate.set()
    handle.result(timeout=30)
    assert Holder.got == b"AFTER!"


@pytest.mark.parametrize("kind", ["bytearray", "numpy", "list", "generator"])
def test_copy_protects_a_buffer_changed_right_after_the_call(kind):
    rec = Recorder(gated=True)
    buf = bytearray(b"original")
    arr = np.frombuffer(buf, dtype=np.uint8)
    data = {"bytearray": buf, "numpy": arr, "list": [buf],
            "generator": (b for b in [buf])}[kind]
    handle = bgio.bgwrite(rec, data, copy=True, priority=FAST_1K)
    buf[:] = b"CHANGED!"
    rec.gate.set()
    handle.result(timeout=30)
    assert rec.getvalue() == b"original"


def test_without_copy_the_buffer_is_read_in_place():
    rec = Recorder(gated=True)
    buf = bytearray(b"original")
    handle = bgio.bgwrite(rec, buf, priority=FAST_1K)
    buf[:] = b"CHANGED!"
    rec.gate.set()
    handle.result(timeout=30)
    assert rec.getvalue() == b"CHANGED!"


def test_call_latency_does_not_grow_with_size(tmp_path):
    big = np.zeros(256 * 1024 * 1024, dtype=np.uint8)
    with open("/dev/null", "wb") as f:
        bgio.bgwrite(f, b"warm-up", priority=1).result(30)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            handle = bgio.bgwrite(f, big, priority=1)
            best = min(best, time.perf_counter() - t0)
            handle.result(timeout=60)
    assert best < 0.05  # generous: a copy of 256 MiB would take ~50-100 ms


# ---- every check happens in the caller's thread ------------------------------------------


def test_file_without_write_is_a_type_error():
    with pytest.raises(TypeError, match="file must be a writable file object"):
        bgio.bgwrite(object(), b"x")
    with pytest.raises(TypeError, match="file must be a writable file object"):
        bgio.bgwrite(None, b"x")


def test_closed_file_is_a_value_error(tmp_path):
    with open(tmp_path / "c", "wb") as f:
        pass
    with pytest.raises(ValueError, match="file is closed"):
        bgio.bgwrite(f, b"x")


def test_read_only_file_is_a_value_error(tmp_path):
    (tmp_path / "r").write_bytes(b"")
    with open(tmp_path / "r", "rb") as f, pytest.raises(ValueError, match="file is not writable"):
        bgio.bgwrite(f, b"x")


def test_str_to_binary_and_bytes_to_text_are_type_errors(tmp_path):
    with open(tmp_path / "b", "wb") as f, pytest.raises(TypeError, match="str cannot be written"):
        bgio.bgwrite(f, "text")
    with open(tmp_path / "t", "w") as f, pytest.raises(TypeError, match="bytes cannot be written"):
        bgio.bgwrite(f, b"bytes")
    with pytest.raises(TypeError, match="bytes cannot be written"):
        bgio.bgwrite(io.StringIO(), [b"bytes"])


@pytest.mark.parametrize("data", [12, 1.5, None, object(), {"a": b"x"}])
def test_unsupported_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="data"):
        bgio.bgwrite(io.BytesIO(), data)


def test_non_contiguous_array_is_a_value_error():
    with pytest.raises(ValueError, match="data: the numpy array is not C-contiguous"):
        bgio.bgwrite(io.BytesIO(), np.zeros((4, 4))[:, ::2])


@pytest.mark.parametrize(
    ("priority", "error", "message"),
    [(0, ValueError, "priority must be 1..10"), (11, ValueError, "priority"),
     ("high", TypeError, "priority must be an int"), (None, TypeError, "priority"),
     (2.0, TypeError, "priority")],
)
def test_invalid_priority(priority, error, message):
    with pytest.raises(error, match=message):
        bgio.bgwrite(io.BytesIO(), b"x", priority=priority)


@pytest.mark.parametrize(("size", "error"), [(0, ValueError), (-1, ValueError), ("8", TypeError),
                                             (None, TypeError)])
def test_invalid_chunk_size(size, error):
    with pytest.raises(error, match="chunk_size"):
        bgio.bgwrite_chunk(io.BytesIO(), b"x", size)


def test_fsync_needs_a_file_descriptor():
    with pytest.raises(ValueError, match="fsync=True needs a destination with a file descriptor"):
        bgio.bgwrite(io.BytesIO(), b"x", fsync=True)


def test_chain_after_must_be_a_handle():
    with pytest.raises(TypeError, match="chain_after must be a BackgroundWriteProcess"):
        bgio.bgwrite(io.BytesIO(), b"x", chain_after="previous")


def test_nothing_is_queued_when_a_check_fails(recorder):
    with pytest.raises(TypeError):
        bgio.bgwrite(recorder, ["ok?", b"no"])
    assert bgio.wait_all(timeout=5)
    assert recorder.writes == []


def test_errors_of_a_lazy_iterable_land_on_the_handle(recorder):
    def blocks():
        yield b"first"
        raise RuntimeError("producer broke")

    handle = bgio.bgwrite(recorder, blocks(), priority=1)
    with pytest.raises(RuntimeError, match="producer broke"):
        handle.result(timeout=30)
    assert recorder.getvalue() == b"first"
    assert handle.bytes_written == 5


def test_wrong_item_in_a_lazy_iterable_lands_on_the_handle(tmp_path):
    with open(tmp_path / "x", "wb") as f:
        handle = bgio.bgwrite(f, iter([b"ok", "not bytes"]))
        with pytest.raises(TypeError, match=r"data\[1\]: str cannot be written to a binary"):
            handle.result(timeout=30)
