"""The engine: order per destination, chains, failure propagation, threads, exit drain."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from conftest import Recorder

import bgio

FAST = bgio.BackgroundIOPriority(0, 3, 100)


def test_writes_to_one_file_keep_call_order_without_chain(recorder):
    handles = [bgio.bgwrite(recorder, b"%04d" % i, priority=FAST) for i in range(300)]
    for h in handles:
        h.result(timeout=30)
    assert recorder.getvalue() == b"".join(b"%04d" % i for i in range(300))


def test_writes_from_many_threads_never_interleave(tmp_path):
    # Each thread's write is one block of its own byte; blocks must not mix.
    path = tmp_path / "mixed"
    with open(path, "wb") as f:
        handles: list[bgio.BackgroundWriteProcess] = []
        lock = threading.Lock()

        def producer(byte: int) -> None:
            for _ in range(20):
                h = bgio.bgwrite(f, bytes([byte]) * 1000, priority=FAST)
                with lock:
                    handles.append(h)

        threads = [threading.Thread(target=producer, args=(b,)) for b in range(65, 75)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in handles:
            h.result(timeout=30)
    content = path.read_bytes()
    assert len(content) == 10 * 20 * 1000
    blocks = [content[i : i + 1000] for i in range(0, len(content), 1000)]
    assert all(block == block[:1] * 1000 for block in blocks)


def test_writer_keeps_order_with_one_thread(recorder):
    before = threading.active_count()
    peak = before
    with bgio.Writer(recorder, priority=1) as w:
        for i in range(10_000):
            w.write(b"%05d," % i)
            if i % 1000 == 0:
                peak = max(peak, threading.active_count())
    assert recorder.getvalue() == b"".join(b"%05d," % i for i in range(10_000))
    assert peak - before <= 1


def test_chain_after_orders_writes_across_destinations():
    first, second = Recorder(gated=True), Recorder()
    order: list[str] = []
    h1 = bgio.bgwrite(first, b"one", priority=FAST)
    h1.add_done_callback(lambda h: order.append("first"))
    h2 = bgio.bgwrite(second, b"two", chain_after=h1, priority=FAST)
    h2.add_done_callback(lambda h: order.append("second"))
    first.entered.wait(5)
    assert not h2.done() and second.writes == []
    first.gate.set()
    assert h2.result(timeout=30) == 3
    assert order == ["first", "second"]


def test_failure_fails_every_later_write_with_chain_error():
    rec = Recorder(fail_after=10)
    h1 = bgio.bgwrite(rec, b"a" * 9, priority=FAST)
    h2 = bgio.bgwrite(rec, b"b" * 9, priority=FAST)  # fails midway
    h3 = bgio.bgwrite(rec, b"c" * 9, priority=FAST)
    h4 = bgio.bgwrite(io.BytesIO(), b"d", chain_after=h2, priority=FAST)
    assert h1.result(timeout=30) == 9
    with pytest.raises(OSError, match="No space left"):
        h2.result(timeout=30)
    assert h2.bytes_written == 0  # the chunk that failed was not counted
    with pytest.raises(bgio.ChainError, match="an earlier write to this destination failed") as e3:
        h3.result(timeout=30)
    assert isinstance(e3.value.__cause__, OSError)
    assert e3.value.predecessor is h2
    with pytest.raises(bgio.ChainError, match="the write it was chained after failed") as e4:
        h4.result(timeout=30)
    assert e4.value.__cause__ is h2.exception()
    assert rec.getvalue() == b"a" * 9  # nothing after the gap


def test_failure_is_remembered_for_later_writes_to_the_same_file():
    rec = Recorder(fail_after=0)
    h1 = bgio.bgwrite(rec, b"x", priority=FAST)
    assert isinstance(h1.exception(timeout=30), OSError)
    assert bgio.wait_all(timeout=30)
    later = bgio.bgwrite(rec, b"y", priority=FAST)
    with pytest.raises(bgio.ChainError):
        later.result(timeout=30)
    rec.fail_after = None
    assert bgio.bgwrite(Recorder(), b"z", priority=FAST).result(timeout=30) == 1  # others unaffected
    assert rec.writes == []


def test_cancelled_predecessor_fails_its_successors():
    rec = Recorder(gated=True)
    h1 = bgio.bgwrite(rec, b"first", priority=FAST)
    h2 = bgio.bgwrite(rec, b"second", priority=FAST)
    other = bgio.bgwrite(io.BytesIO(), b"other", chain_after=h2, priority=FAST)
    assert h2.cancel() is True
    assert h2.cancelled() and h2.done()
    rec.gate.set()
    assert h1.result(timeout=30) == 5
    with pytest.raises(bgio.ChainError, match="was cancelled") as err:
        other.result(timeout=30)
    assert isinstance(err.value.__cause__, CancelledError)
    assert rec.getvalue() == b"first"


def test_cancel_while_waiting_for_chain():
    rec = Recorder(gated=True)
    h1 = bgio.bgwrite(rec, b"slow", priority=FAST)
    out = io.BytesIO()
    h2 = bgio.bgwrite(out, b"never", chain_after=h1, priority=FAST)
    assert h2.cancel()
    with pytest.raises(CancelledError):
        h2.result(timeout=5)
    rec.gate.set()
    h1.result(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert out.getvalue() == b""


@pytest.mark.parametrize("outcome", ["success", "failure", "cancel"])
def test_close_when_finished_closes_in_every_case(outcome):
    rec = Recorder(fail_after=0 if outcome == "failure" else None, gated=outcome == "cancel")
    blocker = bgio.bgwrite(rec, b"" if outcome == "failure" else b"x", priority=FAST)
    handle = bgio.bgwrite(rec, b"data", close_when_finished=True, priority=FAST)
    if outcome == "cancel":
        handle.cancel()
        rec.gate.set()
    handle.wait(timeout=30)
    blocker.wait(timeout=30)
    assert bgio.wait_all(timeout=30)
    assert rec.closed is True


def test_close_error_is_reported_when_the_write_succeeded():
    class BadClose(Recorder):
        def close(self):
            raise OSError(5, "close failed")

    handle = bgio.bgwrite(BadClose(), b"x", close_when_finished=True, priority=FAST)
    with pytest.raises(OSError, match="close failed"):
        handle.result(timeout=30)


def test_errors_are_logged_on_the_bgio_logger_not_printed(caplog, capfd):
    caplog.set_level(logging.DEBUG, logger="bgio")
    rec = Recorder(fail_after=0)
    h = bgio.bgwrite(rec, b"x", priority=FAST)
    h2 = bgio.bgwrite(rec, b"y", priority=FAST)
    h.wait(30)
    h2.wait(30)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "bgio"]
    assert len(errors) == 1
    assert "failed after 0 bytes" in errors[0].getMessage()
    assert isinstance(errors[0].exc_info[1], OSError)
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "Traceback" not in out


def test_writer_flush_and_close_raise_the_first_error():
    rec = Recorder(fail_after=4)
    w = bgio.Writer(rec, priority=FAST, close_when_finished=True)
    w.write(b"1234")
    w.write(b"5678")
    w.write(b"9")
    with pytest.raises(OSError, match="No space"):
        w.flush(timeout=30)
    with pytest.raises(OSError, match="No space"):
        w.close(timeout=30)
    assert rec.closed
    assert rec.getvalue() == b"1234"
    w.close()  # a second close does nothing


def test_writer_rejects_writes_after_close(recorder):
    w = bgio.Writer(recorder)
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="closed bgio.Writer"):
        w.write(b"late")


def test_writer_closes_the_file_only_when_asked(recorder):
    with bgio.Writer(recorder) as w:
        w.write(b"a")
    assert not recorder.closed
    with bgio.Writer(recorder, close_when_finished=True) as w:
        w.write(b"b")
    assert recorder.closed and recorder.getvalue() == b"ab"


def test_writer_exit_with_an_exception_keeps_the_body_error():
    rec = Recorder(fail_after=0)
    with pytest.raises(KeyError), bgio.Writer(rec, priority=FAST) as w:
        w.write(b"x")
        w.flush = None  # not used on this path
        raise KeyError("body")


def test_writer_validates_in_the_caller(tmp_path):
    with pytest.raises(TypeError, match="file must be"):
        bgio.Writer(4.2)
    with pytest.raises(ValueError, match="priority"):
        bgio.Writer(io.BytesIO(), priority=12)
    w = bgio.Writer(io.BytesIO())
    with pytest.raises(TypeError, match="str cannot be written"):
        w.write("text")
    w.close()


def test_writer_and_bgwrite_share_the_file_order(recorder):
    w = bgio.Writer(recorder, priority=FAST)
    w.write(b"1")
    bgio.bgwrite(recorder, b"2", priority=FAST)
    w.write(b"3")
    w.close()
    assert bgio.wait_all(timeout=30)
    assert recorder.getvalue() == b"123"


def test_wait_all_times_out_while_a_write_is_stuck():
    rec = Recorder(gated=True)
    bgio.bgwrite(rec, b"x")
    assert bgio.wait_all(timeout=0.05) is False
    rec.gate.set()
    assert bgio.wait_all(timeout=30) is True


def test_many_destinations_then_threads_end():
    recs = [Recorder() for _ in range(20)]
    for r in recs:
        bgio.bgwrite(r, b"abc", priority=FAST)
    assert bgio.wait_all(timeout=30)
    assert all(r.getvalue() == b"abc" for r in recs)
    for t in threading.enumerate():
        if t.name.startswith("bgio-"):
            t.join(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("bgio-")]


def _run_script(code: str, tmp_path) -> subprocess.CompletedProcess:
    # The package under test, whether installed or not.
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )


def test_exit_drains_pending_writes(tmp_path):
    proc = _run_script(
        """
        import bgio
        data = bytes(range(256)) * 40_000          # ~10 MB
        f = open("out.bin", "wb")
        bgio.bgwrite(f, data, priority=10)          # paced: takes a while
        bgio.bgwrite(f, b"END", close_when_finished=True, priority=10)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "out.bin").read_bytes() == bytes(range(256)) * 40_000 + b"END"


def test_failure_in_a_script_leaves_no_traceback_on_stderr(tmp_path):
    proc = _run_script(
        """
        import bgio
        class Full:
            mode = "wb"
            def write(self, b):
                raise OSError(28, "No space left on device")
        h = bgio.bgwrite(Full(), b"x")
        bgio.bgwrite(Full(), b"y")
        print(type(h.exception(5)).__name__)
        """,
        tmp_path,
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == "OSError"
    assert proc.stderr == ""


# ---- small writes merged into one pass (the worker's group path) --------------------------

SMALL = bgio.BackgroundIOPriority(0, 1024, 100)


def _queue_behind_a_gate(dest, count, size=4):
    """Queue `count` small writes while the worker is held in a first write to `dest`."""
    gate = threading.Event()
    original = dest.write

    def held(data):
        gate.wait()
        return original(data)

    dest.write = held
    first = bgio.bgwrite(dest, b"<", priority=SMALL)
    handles = [bgio.bgwrite(dest, bytes([65 + i % 26]) * size, priority=SMALL)
               for i in range(count)]
    return gate, first, handles


def test_a_failure_inside_a_group_fails_the_rest_with_chain_error():
    rec = Recorder(fail_after=1 + 10 * 4)  # the 11th small write does not fit
    gate, first, handles = _queue_behind_a_gate(rec, 30)
    gate.set()
    first.result(timeout=30)
    for h in handles[:10]:
        assert h.result(timeout=30) == 4
    with pytest.raises(OSError):
        handles[10].result(timeout=30)
    for h in handles[11:]:
        with pytest.raises(bgio.ChainError):
            h.result(timeout=30)
    assert rec.getvalue() == b"<" + b"".join(bytes([65 + i]) * 4 for i in range(10))


def test_a_cancel_inside_a_group_stops_the_rest():
    rec = Recorder()
    gate, _first, handles = _queue_behind_a_gate(rec, 20)
    assert handles[7].cancel()
    gate.set()
    for h in handles[:7]:
        assert h.result(timeout=30) == 4
    assert handles[7].cancelled()
    for h in handles[8:]:
        with pytest.raises(bgio.ChainError, match="was cancelled"):
            h.result(timeout=30)
    assert rec.getvalue() == b"<" + b"".join(bytes([65 + i]) * 4 for i in range(7))


def _file_behind_a_gate(path, count, size=4):
    """Queue small writes to a real file while its lane waits (chain_after) on a held write."""
    f = open(path, "wb")  # noqa: SIM115 - the caller closes it
    gate = threading.Event()
    held = bgio.bgwrite(GateOnWrite(gate), b"x", priority=SMALL)
    first = bgio.bgwrite(f, b"<", chain_after=held, priority=SMALL)
    handles = [bgio.bgwrite(f, bytes([65 + i % 26]) * size, priority=SMALL) for i in range(count)]
    return f, gate, first, handles


class GateOnWrite:
    mode = "wb"

    def __init__(self, gate):
        self.gate = gate

    def write(self, data):
        self.gate.wait()
        return len(data)


def test_gathered_writes_to_a_file_are_exact(tmp_path):
    f, gate, _first, handles = _file_behind_a_gate(tmp_path / "g", 300)
    calls = []
    real = os.writev

    def spy(fd, blocks):
        calls.append(len(blocks))
        return real(fd, blocks)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", spy)
        gate.set()
        for h in handles:
            assert h.result(timeout=30) == 4
    f.close()
    expected = b"<" + b"".join(bytes([65 + i % 26]) * 4 for i in range(300))
    assert (tmp_path / "g").read_bytes() == expected
    assert calls and max(calls) > 100  # really gathered, not one call per write


def test_partial_gathered_write_resumes_exactly(tmp_path):
    f, gate, _first, handles = _file_behind_a_gate(tmp_path / "p", 50, size=10)
    real = os.writev

    def short(fd, blocks):
        # Take 2.5 blocks at most, as a full pipe or a signal would.
        data = b"".join(bytes(b) for b in blocks)[:25]
        return real(fd, [data])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", short)
        gate.set()
        for h in handles:
            assert h.result(timeout=30) == 10
    f.close()
    expected = b"<" + b"".join(bytes([65 + i % 26]) * 10 for i in range(50))
    assert (tmp_path / "p").read_bytes() == expected


def test_failed_gathered_write_fails_the_group_in_order(tmp_path):
    f, gate, first, handles = _file_behind_a_gate(tmp_path / "f", 20)

    def broken(fd, blocks):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", broken)
        gate.set()
        first.result(timeout=30)
        with pytest.raises(OSError, match="No space"):
            handles[0].result(timeout=30)
        for h in handles[1:]:
            with pytest.raises(bgio.ChainError):
                h.result(timeout=30)
    f.close()
    assert (tmp_path / "f").read_bytes() == b"<"


def test_writer_exposes_its_file_and_state(recorder):
    w = bgio.Writer(recorder)
    assert w.file is recorder and not w.closed
    assert "open" in repr(w)
    w.close()
    assert w.closed and "closed" in repr(w)
