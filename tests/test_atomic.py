"""atomic=True: the path, complete or not at all, and nothing else changes."""

from __future__ import annotations

import errno
import os
import stat

import pytest

import bgio
from bgio.sinks import path as path_sink


def _temporaries(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".bgio-tmp")]


def test_a_link_stays_a_link_and_its_file_is_replaced(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    (tmp_path / "middle").symlink_to("real.bin")
    link = tmp_path / "link"
    link.symlink_to("middle")  # a chain of two links
    bgio.bgwrite(link, b"new data", atomic=True).result(timeout=30)
    assert link.is_symlink() and os.readlink(link) == "middle"
    assert (tmp_path / "middle").is_symlink()
    assert real.read_bytes() == b"new data" and link.read_bytes() == b"new data"
    assert _temporaries(tmp_path) == []


def test_a_link_into_another_directory_gets_its_temporary_there(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.bin").write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(elsewhere / "data.bin")
    seen = []
    real_open = path_sink.os.open

    def spy(name, *args):
        if str(name).endswith(".bgio-tmp"):
            seen.append(os.path.dirname(name))
        return real_open(name, *args)

    path_sink.os.open = spy
    try:
        bgio.bgwrite(link, b"new", atomic=True).result(timeout=30)
    finally:
        path_sink.os.open = real_open
    assert seen == [str(elsewhere)]
    assert (elsewhere / "data.bin").read_bytes() == b"new" and link.is_symlink()


def test_a_dangling_link_creates_the_file_it_names(tmp_path):
    link = tmp_path / "link"
    link.symlink_to("target.bin")
    bgio.bgwrite(link, b"fresh", atomic=True).result(timeout=30)
    assert link.is_symlink() and (tmp_path / "target.bin").read_bytes() == b"fresh"


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: p.mkdir(), "a directory"),
])
def test_a_target_that_is_not_a_regular_file_is_refused(tmp_path, make, kind):
    target = tmp_path / "special"
    make(target)
    with pytest.raises(ValueError, match=f"is {kind}"):
        bgio.bgwrite(target, b"x", atomic=True)
    with pytest.raises(ValueError, match=f"is {kind}"):
        bgio.Writer(target, atomic=True)
    link = tmp_path / "link"
    link.symlink_to(target)  # through a link too
    with pytest.raises(ValueError, match=f"'{link}' is {kind}"):
        bgio.bgwrite(link, b"x", atomic=True)
    assert not stat.S_ISREG(os.stat(target).st_mode)


def test_a_fifo_is_refused_with_the_reason(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match="is a FIFO; atomic=True replaces regular files only"):
        bgio.bgwrite(tmp_path / "fifo", b"x", atomic=True)


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null")
def test_a_device_is_refused_and_left_alone():
    before = os.stat("/dev/null")
    with pytest.raises(ValueError, match="'/dev/null' is a character device"):
        bgio.bgwrite("/dev/null", b"x", atomic=True)
    with pytest.raises(ValueError, match="is a character device"):
        bgio.open("/dev/null", "wb", atomic=True)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_the_new_file_keeps_the_old_ones_permissions_and_owner(tmp_path):
    target = tmp_path / "secret.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    if os.geteuid() == 0:
        os.chown(target, 12345, 54321)
    bgio.bgwrite(target, b"new", atomic=True).result(timeout=30)
    info = os.stat(target)
    assert stat.S_IMODE(info.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (12345, 54321)
    assert target.read_bytes() == b"new"


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        bgio.bgwrite(tmp_path / "new.bin", b"x", atomic=True).result(timeout=30)
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "new.bin").st_mode) == 0o644


def test_errors_name_the_target_never_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "target.bin"
    target.write_bytes(b"old")

    def full(name, flags, mode=0o777):
        raise OSError(errno.ENOSPC, "No space left on device", name)

    monkeypatch.setattr(path_sink.os, "open", full)
    handle = bgio.bgwrite(target, b"new", atomic=True)
    with pytest.raises(OSError) as caught:
        handle.result(timeout=30)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert ".bgio-tmp" not in str(caught.value)
    monkeypatch.undo()
    failing_replace = OSError(errno.EXDEV, "Invalid cross-device link")

    def refuse(source, destination):
        failing_replace.filename, failing_replace.filename2 = source, destination
        raise failing_replace

    monkeypatch.setattr(path_sink.os, "replace", refuse)
    handle = bgio.bgwrite(target, b"new", atomic=True)
    with pytest.raises(OSError) as caught:
        handle.result(timeout=30)
    assert caught.value.filename == str(target) and ".bgio-tmp" not in str(caught.value)
    assert target.read_bytes() == b"old" and _temporaries(tmp_path) == []


def test_a_failure_or_a_cancel_leaves_no_temporary(tmp_path):
    target = tmp_path / "target.bin"
    target.write_bytes(b"old")

    def chunks():
        yield b"a" * 1000
        raise RuntimeError("the source failed")

    handle = bgio.bgwrite(target, chunks(), atomic=True)
    with pytest.raises(RuntimeError, match="the source failed"):
        handle.result(timeout=30)
    assert target.read_bytes() == b"old" and _temporaries(tmp_path) == []
    slow = bgio.PRESETS[10].replace(max_rate=1e5)
    handle = bgio.bgwrite(target, b"b" * 10_000_000, atomic=True, priority=slow)
    handle.cancel()
    handle.wait(30)
    assert handle.cancelled()
    assert target.read_bytes() == b"old" and _temporaries(tmp_path) == []
