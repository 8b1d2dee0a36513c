"""Object-store destinations: bgwrite, Writer and bgio.open to s3:// (a local moto server),
file:// and an obstore MemoryStore; all or nothing on every failure path."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError

import pytest

import bgio
from bgio.objects import describe, is_object_url, object_target
from bgio.sinks.objects import upload_error

obstore = pytest.importorskip("obstore")
from obstore.store import MemoryStore

MIB = 1 << 20


def _stored(store: object, key: str) -> bytes:
    return bytes(obstore.get(store, key).bytes())


def _keys(store: object) -> list[str]:
    return sorted(item["path"] for item in obstore.list(store).collect())


def _payload(size: int) -> bytes:
    return os.urandom(size)


# -- destinations -----------------------------------------------------------------------


def test_a_write_to_a_store_is_the_object_byte_exact_in_parts():
    store = MemoryStore()
    data = _payload(20 * MIB + 123)  # three 8 MiB parts, the last short
    handle = bgio.bgwrite("frames/run1.bin", data, priority=1, store=store)
    assert handle.result(timeout=60) == len(data)
    assert handle.bytes_written == len(data)
    assert handle.bytes_on_disk == len(data)  # acknowledged by the store: all of it
    assert _stored(store, "frames/run1.bin") == data


def test_a_file_url_is_written_whole(tmp_path):
    data = _payload(3 * MIB)
    handle = bgio.bgwrite(f"file://{tmp_path}/out.bin", data, priority=1)
    assert handle.result(timeout=60) == len(data)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no temporary left


def test_a_file_url_is_a_path_written_whole_and_exclusive_creates(tmp_path):
    target = tmp_path / "made.bin"
    assert bgio.bgwrite(f"file://{target}", b"one", exclusive=True).result(timeout=30) == 3
    with pytest.raises(FileExistsError):
        bgio.bgwrite(f"file://{target}", b"two", exclusive=True).result(timeout=30)
    assert target.read_bytes() == b"one"
    failed = bgio.bgwrite(f"file://{target}", _failing(MIB))
    with pytest.raises(RuntimeError):
        failed.result(timeout=30)
    assert target.read_bytes() == b"one"  # written whole or not at all
    assert sorted(os.listdir(tmp_path)) == ["made.bin"]
    # A folder where no file can be made fails the handle (obstore's local store hangs
    # there: file URLs are bgio's own paths).
    with pytest.raises(OSError):
        bgio.bgwrite("file:///proc/bgio-test", b"x").result(timeout=30)


def test_an_empty_write_makes_an_empty_object():
    store = MemoryStore()
    assert bgio.bgwrite("empty", b"", store=store).result(timeout=30) == 0
    assert _stored(store, "empty") == b""


def test_a_writer_appends_its_writes_in_order_as_one_object():
    store = MemoryStore()
    big = _payload(9 * MIB)
    with bgio.Writer("log", store=store, priority=1) as writer:
        for index in range(2000):
            writer.write(b"%05d\n" % index)
        writer.write(big)
        writer.write(b"end\n")
    expected = b"".join(b"%05d\n" % index for index in range(2000)) + big + b"end\n"
    assert _stored(store, "log") == expected


def _reused_buffer_writes(destination: str, **options: object) -> bytes:
    """Write one buffer several times over through a Writer, refilled once each write's
    handle is done (as bgio copy does); return what was written."""
    buffer = bytearray(6 * MIB)
    expected = bytearray()
    with bgio.Writer(destination, priority=1, **options) as writer:
        for fill in b"abc":
            buffer[:] = bytes([fill]) * len(buffer)
            expected += buffer
            writer.write(buffer).result(timeout=60)  # done: the buffer may be reused
    return bytes(expected)


def test_a_writers_buffer_may_be_reused_once_its_write_is_done():
    store = MemoryStore()
    expected = _reused_buffer_writes("reused", store=store)
    assert _stored(store, "reused") == expected


def test_bgio_open_text_mode_writes_an_object():
    store = MemoryStore()
    with bgio.open("notes.txt", "w", store=store, encoding="utf-8") as out:
        out.write("température\n")
    assert _stored(store, "notes.txt") == "température\n".encode()


def test_nothing_is_stored_until_the_writer_closes():
    store = MemoryStore()
    writer = bgio.Writer("later", store=store, priority=1)
    writer.write(b"x" * 1000).result(timeout=30)
    assert _keys(store) == []  # the upload has the bytes; the object is not there yet
    writer.close()
    assert _stored(store, "later") == b"x" * 1000


def test_exclusive_refuses_an_existing_object_and_leaves_it():
    store = MemoryStore()
    bgio.bgwrite("k", b"old", store=store).result(timeout=30)
    handle = bgio.bgwrite("k", b"new", store=store, exclusive=True)
    with pytest.raises(FileExistsError, match=r"k: the object exists \(exclusive=True\)"):
        handle.result(timeout=30)
    with pytest.raises(FileExistsError):
        bgio.bgwrite("k", b"new", store=store, mode="xb").result(timeout=30)
    assert _stored(store, "k") == b"old"
    assert bgio.bgwrite("fresh", b"new", store=store, exclusive=True).result(timeout=30) == 3
    assert _stored(store, "fresh") == b"new"


# -- all or nothing ---------------------------------------------------------------------


class Held:
    """Data that stops after its first piece until :attr:`go_on` is set: ``taken`` says
    the upload has the first piece; then it fails or goes on with a last piece."""

    def __init__(self, first: int, last: int, fail: bool = False) -> None:
        self.taken = threading.Event()
        self.go_on = threading.Event()
        self._sizes = (first, last)
        self._fail = fail

    def __iter__(self) -> Iterator[bytes]:
        yield b"a" * self._sizes[0]
        self.taken.set()
        self.go_on.wait(60)
        if self._fail:
            raise RuntimeError("the producer broke")
        yield b"b" * self._sizes[1]


def _failing(after: int) -> Iterator[bytes]:
    yield b"a" * after
    raise RuntimeError("the producer broke")


def test_a_failed_write_stores_nothing_and_later_writes_fail_in_order():
    store = MemoryStore()
    first = bgio.bgwrite("broken", _failing(9 * MIB), priority=1, store=store)
    after = bgio.bgwrite("other", b"after", store=store, chain_after=first)
    with pytest.raises(RuntimeError, match="the producer broke"):
        first.result(timeout=30)
    with pytest.raises(bgio.ChainError):
        after.result(timeout=30)
    assert first.bytes_on_disk in (None, 0)  # nothing of it is stored
    assert _keys(store) == []


def test_a_cancel_mid_upload_stores_nothing():
    store = MemoryStore()
    held = Held(9 * MIB, MIB)
    handle = bgio.bgwrite("cancelled", iter(held), priority=1, store=store)
    assert held.taken.wait(30)
    assert handle.cancel()
    held.go_on.set()
    with pytest.raises(CancelledError):
        handle.result(timeout=30)
    assert handle.bytes_on_disk in (None, 0)
    assert _keys(store) == []


# -- arguments, checked in the caller --------------------------------------------------------


@pytest.mark.parametrize(("file", "options", "error", "message"), [
    ("s3://", None, ValueError, "names no bucket"),
    ("s3://bucket", None, ValueError, "names no object"),
    ("s3://bucket/dir/", None, ValueError, "names no object"),
    ("s3://bucket/a/../b", None, ValueError, r"'\.\.' part"),
    ("memory:///key", None, ValueError, "pass it as store="),
    ("file://relative/name", None, ValueError, "absolute path"),
    ("file:///no/such/dir/name", None, ValueError, "does not exist"),
    ("s3://bucket/key", 3, TypeError, "storage_options must be a dict"),
    ("s3://bucket/key", {"no_such_option": 1}, ValueError, "no_such_option"),
])
def test_bad_destinations_are_refused_in_the_caller(file, options, error, message):
    with pytest.raises(error, match=message):
        bgio.bgwrite(file, b"x", storage_options=options)


def test_options_that_do_not_apply_are_refused(tmp_path):
    store = MemoryStore()
    with pytest.raises(ValueError, match="not both"):
        bgio.bgwrite("k", b"x", store=store, storage_options={"region": "x"})
    with pytest.raises(TypeError, match="store must be an obstore store"):
        bgio.bgwrite("k", b"x", store=object())
    with pytest.raises(TypeError, match="exclusive must be True or False"):
        bgio.bgwrite("k", b"x", store=store, exclusive=1)
    with pytest.raises(ValueError, match="an object is written whole"):
        bgio.bgwrite("k", b"x", store=store, mode="ab")
    with pytest.raises(ValueError, match="an object is written whole"):
        bgio.open("k", "ab", store=store)
    with pytest.raises(ValueError, match="direct applies to paths only"):
        bgio.bgwrite("k", b"x", store=store, direct=True)
    with pytest.raises(ValueError, match="written by threads"):
        bgio.bgwrite("k", b"x", store=store, backend="process")
    with pytest.raises(ValueError, match="written by threads"):
        bgio.Writer("s3://bucket/key", backend="process")
    with pytest.raises(ValueError, match="storage_options apply to object-store URLs only"):
        bgio.bgwrite(str(tmp_path / "f"), b"x", storage_options={})
    with pytest.raises(ValueError, match="mode='xb'"):
        bgio.bgwrite(str(tmp_path / "f"), b"x", exclusive=True)
    assert _keys(store) == []


def test_an_upload_with_a_max_rate_is_handed_over_in_small_pieces():
    from bgio.api import open_sink
    from bgio.sinks import fit_chunk_size

    store = MemoryStore()
    capped = bgio.PRESETS[1].replace(max_rate=4e6)
    sink = open_sink("k", None, False, False, profile=capped, store=store)
    assert fit_chunk_size(sink, capped.default_chunk_size) == 100_000  # a 40th of a second
    slow = open_sink("k", None, False, False, profile=capped.replace(max_rate=1e3), store=store)
    assert fit_chunk_size(slow, capped.default_chunk_size) == 64 * 1024  # at least 64 KiB
    free = open_sink("k", None, False, False, profile=bgio.PRESETS[1], store=store)
    assert fit_chunk_size(free, bgio.PRESETS[1].default_chunk_size) == 5 * MIB


def test_urls_of_object_stores_are_told_from_paths():
    assert is_object_url("s3://bucket/key")
    assert is_object_url("GS://bucket/key")
    assert is_object_url("file:///tmp/x")
    assert not is_object_url("/tmp/s3://x")
    assert not is_object_url("relative/path")
    assert not is_object_url(b"s3://bucket/key")
    target = object_target("s3://bucket/deep/key.bin", {"region": "us-east-1"})
    assert (target.path, target.url) == ("deep/key.bin", "s3://bucket/deep/key.bin")


def test_a_default_process_backend_leaves_uploads_to_threads(monkeypatch):
    import bgio.process

    monkeypatch.setattr(bgio.process, "_default", "process")
    assert bgio.process.check_backend(None, "s3://bucket/key") == "thread"


def test_the_stores_errors_say_the_status_and_the_stores_code():
    said = ("Error performing PUT http://127.0.0.1:1/b/k in 3ms - Server returned non-2xx "
            "status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket"
            "</Code><Message>The specified bucket does not exist</Message></Error>"
            "\n\nDebug source:\nNotFound {...}")
    assert describe(RuntimeError(said)) == (
        "HTTP 404 Not Found (NoSuchBucket: The specified bucket does not exist)")
    assert describe(RuntimeError("plain failure\nmore")) == "plain failure"
    error = upload_error("s3://b/k", FileNotFoundError(said))
    assert type(error) is FileNotFoundError
    assert str(error) == ("s3://b/k: upload failed: HTTP 404 Not Found (NoSuchBucket: The "
                          "specified bucket does not exist)")
    assert isinstance(error.__cause__, FileNotFoundError)


# -- against a real S3-compatible server ----------------------------------------------------


@pytest.mark.slow
def test_an_upload_to_s3_is_byte_exact_in_its_parts(s3_server):
    bucket = s3_server.bucket()
    data = _payload(40 * MIB)
    handle = bgio.bgwrite(f"s3://{bucket}/run/frames.bin", data, priority=1,
                          storage_options=s3_server.options())
    assert handle.result(timeout=120) == len(data)
    assert s3_server.read(bucket, "run/frames.bin") == data
    assert s3_server.parts(bucket, "run/frames.bin") == 5  # 8 MiB parts
    assert s3_server.uploads(bucket) == []


@pytest.mark.slow
def test_a_writer_to_s3_appends_its_writes_as_parts(s3_server):
    bucket = s3_server.bucket()
    pieces = [_payload(6 * MIB) for _ in range(3)]
    with bgio.Writer(f"s3://{bucket}/w", storage_options=s3_server.options(),
                     priority=1) as writer:
        for piece in pieces:
            writer.write(piece)
    assert s3_server.read(bucket, "w") == b"".join(pieces)


@pytest.mark.slow
def test_a_writers_buffer_may_be_reused_on_s3(s3_server):
    # obstore keeps the memory it is given until the part is sent: a Writer's pieces
    # are copied, or the refilled buffer would be what the server gets.
    bucket = s3_server.bucket()
    expected = _reused_buffer_writes(f"s3://{bucket}/reused",
                                     storage_options=s3_server.options())
    assert s3_server.read(bucket, "reused") == expected


@pytest.mark.slow
def test_bgio_copy_to_and_from_s3(s3_server, tmp_path):
    import subprocess
    import sys

    bucket = s3_server.bucket()
    source = tmp_path / "source.bin"
    source.write_bytes(_payload(12 * MIB + 5))
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true"}

    def copy(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "bgio", "copy", "-q", *args],
                              check=False, env=env, capture_output=True, timeout=120)

    up = copy(str(source), f"s3://{bucket}/up.bin")
    assert (up.returncode, up.stderr) == (0, b"")
    assert s3_server.read(bucket, "up.bin") == source.read_bytes()
    down = copy(f"s3://{bucket}/up.bin", str(tmp_path / "down.bin"))
    assert (down.returncode, down.stderr) == (0, b"")
    assert (tmp_path / "down.bin").read_bytes() == source.read_bytes()
    missing = copy(f"s3://{bucket}/missing", str(tmp_path / "x"))
    assert missing.returncode == 1
    assert missing.stderr.decode() == (
        f"bgio copy: cannot open 's3://{bucket}/missing' for reading: HTTP 404 Not Found "
        "(NoSuchKey: The specified key does not exist.)\n")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["failure", "cancel", "chain"])
def test_every_failure_aborts_the_upload_on_s3(s3_server, how):
    bucket = s3_server.bucket()
    options = s3_server.options()
    held = Held(20 * MIB, MIB, fail=how == "failure")  # two parts on the server, then held
    if how == "chain":
        first = bgio.bgwrite(f"s3://{bucket}/first", _failing(MIB), storage_options=options)
        handle = bgio.bgwrite(f"s3://{bucket}/k", iter(held), storage_options=options,
                              chain_after=first, priority=1)
        held.go_on.set()
        with pytest.raises(bgio.ChainError):
            handle.result(timeout=60)
        assert not held.taken.is_set()  # nothing of it was sent
    else:
        handle = bgio.bgwrite(f"s3://{bucket}/k", iter(held), storage_options=options,
                              priority=1)
        assert held.taken.wait(60)
        if how == "cancel":
            assert handle.cancel()
        held.go_on.set()
        with pytest.raises(CancelledError if how == "cancel" else RuntimeError):
            handle.result(timeout=60)
    assert s3_server.keys(bucket) == []
    assert s3_server.uploads(bucket) == []


@pytest.mark.slow
def test_exclusive_create_on_s3(s3_server):
    bucket = s3_server.bucket()
    options = s3_server.options()
    bgio.bgwrite(f"s3://{bucket}/k", b"old", storage_options=options).result(timeout=60)
    handle = bgio.bgwrite(f"s3://{bucket}/k", b"new", storage_options=options, exclusive=True)
    with pytest.raises(FileExistsError, match="HTTP 412"):
        handle.result(timeout=60)
    assert s3_server.read(bucket, "k") == b"old"


@pytest.mark.slow
def test_a_missing_bucket_fails_the_handle_with_the_status(s3_server):
    handle = bgio.bgwrite("s3://bgio-no-such-bucket/k", _payload(9 * MIB),
                          storage_options=s3_server.options())
    with pytest.raises(FileNotFoundError, match=r"s3://bgio-no-such-bucket/k: upload failed: "
                                                r"HTTP 404 Not Found \(NoSuchBucket"):
        handle.result(timeout=60)


@pytest.mark.slow
def test_a_server_that_dies_mid_upload_fails_the_handle(tmp_path):
    from s3server import S3Server

    server = S3Server()
    try:
        bucket = server.bucket()
        held = Held(9 * MIB, 9 * MIB)
        handle = bgio.bgwrite(f"s3://{bucket}/k", iter(held), storage_options=server.options(),
                              priority=1)
        assert held.taken.wait(60)
        server.stop()
        held.go_on.set()
        with pytest.raises(OSError, match=f"s3://{bucket}/k: upload failed"):
            handle.result(timeout=60)  # (bounded retries: seconds, not minutes)
    finally:
        server.stop()


_KILLED_WRITER = """
import sys, threading, bgio
from datetime import timedelta
def data():
    yield b"a" * (9 << 20)
    print("sent", flush=True)  # (the upload has taken the first piece: it exists)
    threading.Event().wait()
options = {"endpoint": sys.argv[2], "access_key_id": "test", "secret_access_key": "test",
           "region": "us-east-1", "client_options": {"allow_http": True}}
bgio.bgwrite(sys.argv[1], data(), priority=1, storage_options=options).result()
"""


@pytest.mark.slow
def test_cleanup_aborts_what_a_killed_writer_left(s3_server):
    import signal
    import subprocess
    import sys

    from bgio.s3 import cleanup

    bucket = s3_server.bucket()
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, f"s3://{bucket}/k",
                              s3_server.endpoint], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "sent\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert s3_server.uploads(bucket) == ["k"]  # at most the one upload, no object
    assert s3_server.keys(bucket) == []
    options = s3_server.options()
    del options["client_options"], options["retry_config"]
    # (moto dates every upload in 2010, so older_than is not tested against it here.)
    found = cleanup(f"s3://{bucket}", older_than=0, storage_options=options, dry_run=True)
    assert [upload.key for upload in found] == ["k"]
    assert s3_server.uploads(bucket) == ["k"]  # (a dry run)
    aborted = cleanup(f"s3://{bucket}/k", older_than=0, storage_options=options)
    assert [upload.upload_id for upload in aborted] == [found[0].upload_id]
    assert s3_server.uploads(bucket) == []


def test_cleanup_checks_its_arguments():
    from bgio.s3 import cleanup

    with pytest.raises(ValueError, match="s3://bucket or s3://bucket/prefix"):
        cleanup("gs://bucket")
    with pytest.raises(TypeError, match="older_than must be seconds or a timedelta"):
        cleanup("s3://bucket", older_than="1d")
    with pytest.raises(ValueError, match="older_than must be >= 0"):
        cleanup("s3://bucket", older_than=-1)
    pytest.importorskip("boto3")
    with pytest.raises(ValueError, match="nonsense not understood by cleanup"):
        cleanup("s3://bucket", storage_options={"nonsense": 1})


def test_cleanup_leaves_uploads_younger_than_asked(monkeypatch):
    import datetime

    import bgio.s3

    now = datetime.datetime.now(datetime.UTC)
    uploads = [{"Key": "young", "UploadId": "1", "Initiated": now - datetime.timedelta(minutes=5)},
               {"Key": "old", "UploadId": "2", "Initiated": now - datetime.timedelta(days=3)}]
    aborted: list[tuple[str, str, str]] = []

    class Client:  # what cleanup asks of boto3's client, as it answers
        def get_paginator(self, name: str):
            assert name == "list_multipart_uploads"
            return self

        def paginate(self, Bucket: str, Prefix: str):
            assert (Bucket, Prefix) == ("bucket", "runs/")
            return [{"Uploads": uploads}]

        def abort_multipart_upload(self, Bucket: str, Key: str, UploadId: str):
            aborted.append((Bucket, Key, UploadId))

    monkeypatch.setattr(bgio.s3, "_client", lambda options: Client())
    found = bgio.s3.cleanup("s3://bucket/runs/", older_than=datetime.timedelta(hours=1))
    assert [upload.key for upload in found] == ["old"]
    assert aborted == [("bucket", "old", "2")]


_DRAINED_UPLOAD = """
import sys, bgio
options = {"endpoint": sys.argv[2], "access_key_id": "test", "secret_access_key": "test",
           "region": "us-east-1", "client_options": {"allow_http": True}}
slow = bgio.PRESETS[4].replace(max_rate=2e6)  # 24 MiB at 2 MB/s: far longer than the test
bgio.bgwrite(sys.argv[1], b"x" * (24 << 20), priority=slow, storage_options=options)
print("ready", flush=True)
"""


@pytest.mark.slow
def test_a_ctrl_c_at_exit_aborts_the_upload(s3_server):
    import signal
    import subprocess
    import sys

    bucket = s3_server.bucket()
    child = subprocess.Popen([sys.executable, "-c", _DRAINED_UPLOAD, f"s3://{bucket}/k",
                              s3_server.endpoint], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline() == "ready\n"
    said = []
    while not said or not said[-1].startswith("bgio: finishing"):  # the exit drain began
        said.append(child.stderr.readline())
        assert said[-1], f"the child ended without draining: {said}"
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "bgio: abandoned 1 write(s); " in rest
    assert s3_server.keys(bucket) == []
    assert s3_server.uploads(bucket) == []  # aborted: no parts left behind


@pytest.mark.slow
def test_an_upload_keeps_to_its_max_rate(s3_server):
    # A generous bound, only to catch a cap that does nothing: 3 MB at 3 MB/s.
    import time

    bucket = s3_server.bucket()
    capped = bgio.PRESETS[1].replace(max_rate=3e6)
    started = time.perf_counter()
    handle = bgio.bgwrite(f"s3://{bucket}/capped", _payload(3_000_000), priority=capped,
                          storage_options=s3_server.options())
    assert handle.result(timeout=60) == 3_000_000
    assert time.perf_counter() - started > 0.6
    assert handle.rate is None or handle.rate < 4e6


# -- found by review ---------------------------------------------------------------------------


@pytest.mark.slow
def test_writes_to_one_url_run_in_call_order(s3_server):
    bucket = s3_server.bucket()
    url = f"s3://{bucket}/k"
    first = bgio.bgwrite(url, _payload(20 * MIB), priority=1, storage_options=s3_server.options())
    second = bgio.bgwrite(url, b"second", priority=1, storage_options=s3_server.options())
    first.result(timeout=60)
    assert second.result(timeout=60) == 6
    assert s3_server.read(bucket, "k") == b"second"  # the later write replaced the first


def test_two_writers_to_one_object_never_mix_their_writes():
    store = MemoryStore()
    one = bgio.Writer("k", store=store, priority=1)
    two = bgio.Writer("k", store=store, priority=1)
    one.write(b"a" * 100)
    two.write(b"b" * 100)
    one.close()
    assert _stored(store, "k") == b"a" * 100
    two.close()
    assert _stored(store, "k") == b"b" * 100  # each Writer is its own upload, in order


def test_uploads_are_threads_whatever_the_default_backend(monkeypatch):
    import bgio.process

    monkeypatch.setattr(bgio.process, "_default", "process")
    store = MemoryStore()
    assert bgio.bgwrite("k", b"x", store=store).result(timeout=30) == 1
    with bgio.Writer("w", store=store) as writer:
        assert writer.backend == "thread"
        writer.write(b"y")
    assert bgio.bgwrite_chunk("c", b"xyz", 1, store=store).result(timeout=30) == 3
    assert (_stored(store, "k"), _stored(store, "w"), _stored(store, "c")) == (b"x", b"y", b"xyz")


@pytest.mark.parametrize(("file", "message"), [
    ("s3://bucket/with\nnewline", "control character"),
    ("s3://bucket/nul\x00", "control character"),
    ("s3://bkt?versionId=1/k", "is not a bucket name"),
    ("s3://bkt#frag/k", "is not a bucket name"),
    ("s3://UPPER/k", "is not a bucket name"),
])
def test_keys_and_buckets_the_store_cannot_take_are_refused(file, message):
    with pytest.raises(ValueError, match=message):
        bgio.bgwrite(file, b"x")


def test_fsync_is_refused_for_an_object():
    with pytest.raises(ValueError, match="fsync does not apply to an object store"):
        bgio.bgwrite("k", b"x", store=MemoryStore(), fsync=True)


def test_an_exclusive_write_counts_nothing_stored_until_it_is():
    store = MemoryStore()
    handle = bgio.bgwrite("k", _payload(20 * MIB), store=store, exclusive=True, priority=1)
    handle.result(timeout=60)
    assert handle.bytes_on_disk == 20 * MIB
    bgio.bgwrite("k2", b"old", store=store).result(timeout=30)
    refused = bgio.bgwrite("k2", _payload(20 * MIB), store=store, exclusive=True, priority=1)
    with pytest.raises(FileExistsError):
        refused.result(timeout=60)
    assert refused.bytes_on_disk in (None, 0)  # (one request, refused: nothing stored)


def test_a_writer_freed_without_close_aborts_its_upload(caplog):
    import gc

    store = MemoryStore()
    writer = bgio.Writer("dropped", store=store, priority=1)
    writer.write(b"x" * (9 * MIB)).result(timeout=30)  # the upload has begun
    del writer
    gc.collect()
    assert "was freed without close(): its upload is aborted" in caplog.text
    assert _keys(store) == []


_LEFT_OPEN = """
import sys, bgio
options = {"endpoint": sys.argv[2], "access_key_id": "test", "secret_access_key": "test",
           "region": "us-east-1", "client_options": {"allow_http": True}}
f = bgio.open(sys.argv[1] + "/file", "wb", storage_options=options)
f.write(b"left open")  # (buffered by the file)
w = bgio.Writer(sys.argv[1] + "/writer", storage_options=options)
w.write(b"writer left open")
"""


@pytest.mark.slow
def test_a_writer_or_file_left_open_at_exit_is_completed(s3_server):
    import subprocess
    import sys

    bucket = s3_server.bucket()
    run = subprocess.run([sys.executable, "-c", _LEFT_OPEN, f"s3://{bucket}",
                          s3_server.endpoint], capture_output=True, timeout=120, check=False)
    assert (run.returncode, run.stderr) == (0, b"")
    assert s3_server.read(bucket, "file") == b"left open"
    assert s3_server.read(bucket, "writer") == b"writer left open"
    assert s3_server.uploads(bucket) == []


def _eventfds() -> int:
    return sum(os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
               for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


@pytest.mark.slow  # (about a second: twenty uploads started and aborted)
def test_writers_freed_with_writes_queued_leave_no_fd_behind():
    import gc

    store = MemoryStore()
    bgio.bgwrite("warm", b"x", store=store).result(timeout=30)
    assert bgio.wait_all(30)
    before = _eventfds()
    for index in range(20):
        writer = bgio.Writer(f"w{index}", store=store, priority=1)
        writer.write(b"x" * 1000)
        del writer
        gc.collect()
    assert bgio.wait_all(30)
    assert _eventfds() <= before + 1  # (a lane's waiter may be kept)


_FILE_URL_LEFT_OPEN = """
import sys, bgio
w = bgio.Writer("file://" + sys.argv[1] + "/writer.bin")
w.write(b"hello" * 1000)
"""


@pytest.mark.slow
def test_a_file_url_writer_left_open_at_exit_is_completed(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _FILE_URL_LEFT_OPEN, str(tmp_path)],
                         capture_output=True, timeout=60, check=False)
    assert (run.returncode, run.stderr) == (0, b"")
    assert (tmp_path / "writer.bin").read_bytes() == b"hello" * 1000
