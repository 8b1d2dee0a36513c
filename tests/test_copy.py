"""``bgio copy``: driven as a command, in a subprocess, as users run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from bgio.copy import format_size, parse_rate

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def bgio(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bgio", *args], capture_output=True,
                          timeout=120, env=ENV, check=False, **kwargs)


@pytest.fixture
def payload(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 12345)  # several blocks and a ragged end
    path = tmp_path / "src.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.slow
def test_a_file_is_copied_exactly(tmp_path, payload):
    source, data = payload
    run = bgio("copy", str(source), str(tmp_path / "dst.bin"))
    assert run.returncode == 0, run.stderr
    assert run.stderr == b""  # no bar when stderr is not a terminal
    assert (tmp_path / "dst.bin").read_bytes() == data


@pytest.mark.slow
def test_stdin_to_a_file_and_a_file_to_stdout(tmp_path, payload):
    source, data = payload
    run = bgio("copy", "-", str(tmp_path / "in.bin"), input=data)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "in.bin").read_bytes() == data
    run = bgio("copy", str(source), "-", "--priority", "1")
    assert run.returncode == 0, run.stderr
    assert run.stdout == data


@pytest.mark.slow
def test_a_directory_as_destination_gets_the_source_name(tmp_path, payload):
    source, data = payload
    (tmp_path / "into").mkdir()
    run = bgio("copy", str(source), str(tmp_path / "into"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "into" / "src.bin").read_bytes() == data
    run = bgio("copy", "-", str(tmp_path / "into"), input=b"x")
    assert run.returncode == 1 and b"Is a directory (name the file to write)" in run.stderr


@pytest.mark.slow
def test_options(tmp_path, payload):
    source, data = payload
    target = tmp_path / "dst.bin"
    target.write_bytes(b"old")
    run = bgio("copy", str(source), str(target), "--atomic", "--fsync", "--priority", "10")
    assert run.returncode == 0, run.stderr
    assert target.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.bin", "src.bin"]
    started = time.monotonic()
    run = bgio("copy", str(source), str(tmp_path / "slow.bin"), "--rate", "6M")
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "slow.bin").read_bytes() == data
    assert took > 0.3  # ~0.5 s at 6 MiB/s; only a gross failure of the pacing shows here


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "fast"], "not a rate: 'fast'"),
    (["--priority", "11"], "must be a preset 1..10"),
])
def test_usage_errors(tmp_path, payload, args, message):
    source, _ = payload
    run = bgio("copy", str(source), str(tmp_path / "d"), *args)
    assert run.returncode == 2
    assert message in run.stderr.decode()
    assert len(run.stderr.decode().strip().splitlines()) == 1


@pytest.mark.slow
def test_atomic_to_stdout_is_refused(payload):
    source, _ = payload
    run = bgio("copy", str(source), "-", "--atomic")
    assert run.returncode == 2
    assert run.stderr.decode() == "bgio copy: error: --atomic needs a file as DST, not standard output\n"


@pytest.mark.slow
@pytest.mark.parametrize(("source", "destination", "message"), [
    ("missing.bin", "dst.bin", "missing.bin: No such file or directory"),
    (".", "dst.bin", ": Is a directory"),
    ("src.bin", "/dev/full", "No space left on device"),
    ("src.bin", "no/such/dir/dst.bin", "no/such/dir"),
])
def test_failures_are_one_line_and_exit_1(tmp_path, payload, source, destination, message):
    run = bgio("copy", source, destination, cwd=tmp_path)
    stderr = run.stderr.decode()
    assert run.returncode == 1, stderr
    assert stderr.startswith("bgio copy: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.mark.slow
def test_a_broken_pipe_is_one_line(payload):
    source, _ = payload
    process = subprocess.Popen([sys.executable, "-m", "bgio", "copy", str(source), "-",
                                "--rate", "4M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=ENV)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(10)
    process.stdout.close()  # the reader goes away
    stderr = process.stderr.read().decode()
    assert process.wait(60) == 1
    assert stderr == "bgio copy: error: broken pipe (the reader of the output went away)\n"


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_an_atomic_copy_leaves_the_old_file(tmp_path, payload):
    source, _ = payload
    target = tmp_path / "dst.bin"
    target.write_bytes(b"old contents")
    process = subprocess.Popen([sys.executable, "-m", "bgio", "copy", str(source), str(target),
                                "--rate", "1M", "--atomic"], stderr=subprocess.PIPE, env=ENV)
    # bgio copy shows no progress when stderr is not a terminal, so there is no
    # sign to wait for: the sleep puts the SIGINT well into the copy (3 MiB at
    # 1 MiB/s), past the start-up; the assertions need it to land mid-copy.
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    assert process.stderr is not None
    assert process.stderr.read().decode() == "bgio copy: interrupted\n"
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst.bin", "src.bin"]


def test_parse_rate():
    assert parse_rate("100M") == 100 * 2**20
    assert parse_rate("2.5k") == 2560
    assert parse_rate("1G") == 2**30 and parse_rate("1GiB") == 2**30 and parse_rate("7") == 7
    assert parse_rate("50MiB") == parse_rate("50m") == 50 * 2**20 and parse_rate("512B") == 512
    for bad in ("", "M", "-5M", "0", "5X", "1e3", "5iB"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)


@pytest.mark.parametrize("text", ["50MB", "50mb", "2KB", "1GB", "1tb"])
def test_a_decimal_looking_suffix_is_refused(text):
    with pytest.raises(ValueError, match=rf"^ambiguous rate: '{text}' \(write \d+[KMGT] or "
                                         r"\d+[KMGT]iB for powers of 1024; 1000-based units are "
                                         r"not taken\)$"):
        parse_rate(text)


def test_an_ambiguous_rate_is_a_usage_error(payload):
    source, _ = payload
    run = bgio("copy", str(source), "/dev/null", "--rate", "50MB")
    assert run.returncode == 2
    assert run.stderr.decode() == (
        "bgio copy: error: argument --rate: ambiguous rate: '50MB' (write 50M or 50MiB for "
        "powers of 1024; 1000-based units are not taken) (see --help)\n")


def test_format_size_prints_what_parse_rate_reads():
    assert [format_size(n) for n in (0, 512, 1023, 1024, 1536, 10 * 2**10, 50 * 2**20, 3 * 2**30)] \
        == ["0B", "512B", "1023B", "1.00KiB", "1.50KiB", "10.0KiB", "50.0MiB", "3.00GiB"]
    for rate in ("50M", "6M", "1.5G", "100k"):
        assert parse_rate(format_size(parse_rate(rate))) == parse_rate(rate)
