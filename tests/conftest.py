"""Shared test helpers: destinations that record, block on demand, or fail."""

from __future__ import annotations

import os
import threading

import pytest

import bgio

_recorders: list[Recorder] = []


class Recorder:
    """A binary destination that records every write (as bytes) and can be held shut.

    ``gate`` is an Event: while clear, each write waits for it (a slow disk
    under the test's control). ``fail_after`` makes the write that would
    exceed that many bytes raise ``OSError``.
    """

    mode = "wb"

    def __init__(self, fail_after: int | None = None, gated: bool = False) -> None:
        self.writes: list[bytes] = []
        self.flushes = 0
        self.closed = False
        self.fail_after = fail_after
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()  # set when a write has started
        _recorders.append(self)

    def write(self, data: memoryview) -> int:
        self.entered.set()
        self.gate.wait()
        if self.fail_after is not None and self.size + len(data) > self.fail_after:
            raise OSError(28, "No space left on device")
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    @property
    def size(self) -> int:
        return sum(len(w) for w in self.writes)

    def getvalue(self) -> bytes:
        return b"".join(self.writes)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(autouse=True)
def _no_leftover_writes():
    """Every test must leave no write running behind it (gates are opened first)."""
    yield
    for rec in _recorders:
        rec.gate.set()
    _recorders.clear()
    assert bgio.wait_all(timeout=30), "background writes still pending after the test"


@pytest.fixture
def destination_waits(monkeypatch) -> threading.Event:
    """An Event set whenever a worker starts waiting for a full destination (in poll())."""
    from bgio.sinks.wait import Waiter

    waiting = threading.Event()
    real_wait = Waiter.wait_writable

    def wait_writable(self, *args, **kwargs):
        waiting.set()
        return real_wait(self, *args, **kwargs)

    monkeypatch.setattr(Waiter, "wait_writable", wait_writable)
    return waiting


@pytest.fixture
def fast() -> bgio.BackgroundIOPriority:
    """A profile with small chunks and no pacing, for tests about content and order."""
    return bgio.BackgroundIOPriority(0, 7, 100)


def full_pipe() -> tuple[int, int]:
    """A pipe whose non-blocking write end is full."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    while True:
        try:
            os.write(w, b"." * 65536)
        except BlockingIOError:
            return r, w


def drain(r: int) -> bytes:
    """Everything left in the pipe until its write end is closed."""
    got = bytearray()
    while chunk := os.read(r, 1 << 20):
        got += chunk
    return bytes(got)


def flip_byte(path: object, offset: int) -> None:
    """Damage one byte of a file in place (inverts its bits)."""
    with open(path, "r+b") as raw:  # type: ignore[call-overload]
        raw.seek(offset)
        byte = raw.read(1)
        raw.seek(offset)
        raw.write(bytes([byte[0] ^ 0xFF]))


class FifoReader:
    """Reads a FIFO to its end in a thread, once told to (:meth:`go`): until then, a
    writer of more than a pipe holds waits (a slow reader under the test's control).

    The thread opens the FIFO for reading at once, blocking until a writer opens it,
    so the writer's open goes on and the end is the writer's close, never a read
    made before any writer came.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self._path = path
        self._go = threading.Event()
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, name="test-fifo-reader",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self._path, "rb", buffering=0) as fifo:
            self._go.wait()
            while piece := fifo.read(1 << 16):
                self._data += piece

    def go(self) -> None:
        self._go.set()

    def data(self, timeout: float = 60) -> bytes:
        """Everything read, once the writer closed the FIFO."""
        self._go.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the FIFO's writer never closed it"
        return bytes(self._data)


def gate_stores(monkeypatch) -> threading.Event:
    """Hold every HDF5 chunk store until the returned Event is set (a slow disk, no sleep)."""
    from bgio.h5 import sink

    gate = threading.Event()
    real = sink.store_chunk

    def held_store(*args, **kwargs):
        gate.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(sink, "store_chunk", held_store)
    return gate


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto) for the session, on a free 127.0.0.1 port."""
    pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    from s3server import S3Server

    server = S3Server()
    yield server
    server.stop()
