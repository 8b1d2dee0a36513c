"""bgio.compat: the older nonblock.BackgroundWrite API, camelCase and all."""

from __future__ import annotations

import io

import pytest
from conftest import Recorder

import bgio
from bgio import compat


def test_names_match_the_older_module():
    for name in ("BackgroundIOPriority", "BackgroundWriteProcess", "bgwrite", "bgwrite_chunk",
                 "chunk_data", "BG_IO_PRIOS"):
        assert hasattr(compat, name)
    assert bgio.compat is compat


def test_bgwrite_with_camel_case_keywords(tmp_path):
    path = tmp_path / "out"
    f = open(path, "wb")  # noqa: SIM115 - closed by the write (closeWhenFinished)
    first = compat.bgwrite(f, b"hello ", closeWhenFinished=False, ioPrio=3)
    second = compat.bgwrite(fileObj=f, data=b"world", closeWhenFinished=True, chainAfter=first,
                            ioPrio=10)
    second.join()
    assert second.finished and second.startedWriting and not second.is_alive()
    assert f.closed
    assert path.read_bytes() == b"hello world"


def test_bgwrite_chunk_and_chunk_data():
    rec = Recorder()
    compat.bgwrite_chunk(rec, b"abcdefg", chunkSize=3, ioPrio=1).join()
    assert rec.writes == [b"abc", b"def", b"g"]
    assert [bytes(c) for c in compat.chunk_data(b"abcdefg", chunkSize=3)] == [b"abc", b"def", b"g"]
    assert compat.chunk_data("abcde", 2) == ["ab", "cd", "e"]
    with pytest.raises(ValueError, match="chunkSize"):
        compat.bgwrite_chunk(rec, b"x", chunkSize=0)


def test_profile_with_camel_case_fields_and_item_access():
    p = compat.BackgroundIOPriority(chainPollTime=0.001, defaultChunkSize=2,
                                    bandwidthPct=100, numChunksRateSmoothing=3)
    assert p["defaultChunkSize"] == 2
    p["defaultChunkSize"] = 4
    assert p.defaultChunkSize == 4
    with pytest.raises(KeyError):
        p["nope"]
    rec = Recorder()
    compat.bgwrite(rec, b"12345678", ioPrio=p).join()
    assert rec.writes == [b"1234", b"5678"]
    with pytest.raises(ValueError, match="bandwidth_pct"):
        compat.BackgroundIOPriority(0.001, 1024, 0)


def test_presets_have_the_older_values():
    assert compat.BG_IO_PRIOS[10].bandwidthPct == 20
    assert compat.BG_IO_PRIOS[5].defaultChunkSize == int(1024 * 1024 * 1.6)
    assert compat.BG_IO_PRIOS[1].chainPollTime == 0.0009


def test_process_created_directly_starts_on_start():
    rec = Recorder()
    proc = compat.BackgroundWriteProcess(rec, [b"a", b"b"], ioPrio=2)
    assert not proc.startedWriting and not proc.finished
    proc.start()
    proc.join()
    assert proc.finished and rec.getvalue() == b"ab"
    with pytest.raises(RuntimeError, match="started once"):
        proc.start()


def test_bad_arguments_raise_in_the_caller():
    with pytest.raises(ValueError, match="ioPrio"):
        compat.bgwrite(io.BytesIO(), b"x", ioPrio=0)
    with pytest.raises(TypeError, match="chain_after"):
        compat.bgwrite(io.BytesIO(), b"x", chainAfter=object())
    with pytest.raises(TypeError, match="fileObj"):
        compat.bgwrite(object(), b"x")


def test_errors_finish_the_process_instead_of_hanging():
    proc = compat.bgwrite(Recorder(fail_after=0), b"x", ioPrio=1)
    proc.join(timeout=30)
    assert proc.finished
    assert isinstance(proc.exception(), OSError)
    chained = compat.bgwrite(io.BytesIO(), b"y", chainAfter=proc)
    chained.join(timeout=30)
    assert chained.finished and isinstance(chained.exception(), bgio.ChainError)


def test_the_handle_is_a_thread_without_an_os_thread_per_write():
    import io
    import threading

    from bgio.compat import BackgroundWriteProcess, bgwrite

    before = threading.active_count()
    out = io.BytesIO()
    handles = [bgwrite(out, b"%03d" % i, ioPrio=1) for i in range(100)]
    assert threading.active_count() <= before + 2  # bgio's worker, not one thread a write
    for handle in handles:
        assert isinstance(handle, threading.Thread)
        handle.join(30)
        assert not handle.is_alive() and not handle.isAlive()
        assert handle.finished and handle.startedWriting
        assert isinstance(handle.ident, int) and handle.ident != threading.get_ident()
        assert handle.name.startswith("bgio-write-") and handle.daemon is False
    assert out.getvalue() == b"".join(b"%03d" % i for i in range(100))
    unstarted = BackgroundWriteProcess(io.BytesIO(), b"x")
    assert not unstarted.is_alive() and unstarted.ident is None
    unstarted.start()
    unstarted.join(30)
    assert unstarted.result() == 1


def test_dropped_handles_keep_no_file_alive():
    import gc
    import io
    import weakref

    import bgio
    from bgio.compat import bgwrite

    files = [io.BytesIO() for _ in range(100)]
    refs = [weakref.ref(f) for f in files]
    handles = [bgwrite(f, b"data", ioPrio=1) for f in files[:50]]
    handles += [bgio.bgwrite(f, b"data", priority=1) for f in files[50:]]
    for handle in handles:
        handle.join(30)
    assert bgio.wait_all(timeout=30)
    del files, handles, handle
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []


def test_join_and_daemon_behave_as_a_threads_do():
    import io

    import pytest

    from bgio.compat import BackgroundWriteProcess

    process = BackgroundWriteProcess(io.BytesIO(), b"x")
    with pytest.raises(RuntimeError, match="before it is started"):
        process.join(0.1)
    process.daemon = True  # allowed before start
    process.start()
    process.join(-1)  # a negative timeout waits not at all, as Thread.join
    process.join()
    with pytest.raises(RuntimeError, match="daemon"):
        process.daemon = False
    with pytest.raises(RuntimeError, match="once"):
        process.start()
    assert process.result() == 1
