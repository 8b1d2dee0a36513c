"""``bgio copy``: driven as a command, in a subprocess, as users run it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from bgio.copy import format_size, parse_rate

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def bgio(*args: str, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "bgio", *args], timeout=120, env=ENV,
                          check=False, **kwargs)


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
    run = bgio("copy", "-", "into", input=b"x", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == b"bgio copy: cannot create 'into': Is a directory (name the file to write)\n"


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
@pytest.mark.parametrize(("args", "message"), [
    (["missing.bin", "dst.bin"],
     "cannot open 'missing.bin' for reading: No such file or directory"),
    ([".", "dst.bin"], "cannot open '.' for reading: Is a directory"),
    (["/proc/self/mem", "dst.bin"], "error reading '/proc/self/mem': Input/output error"),
    (["src.bin", "/dev/full"], "error writing '/dev/full': No space left on device"),
    (["src.bin", "no/such/dir/dst.bin"],
     "cannot create 'no/such/dir/dst.bin': No such file or directory"),
    (["src.bin", "no/such/dir/dst.bin", "--atomic"],
     "cannot create 'no/such/dir/dst.bin': No such file or directory"),
    (["src.bin", "src.bin/dst.bin"], "cannot create 'src.bin/dst.bin': Not a directory"),
])
def test_failures_read_like_cp_and_exit_1(tmp_path, payload, args, message):
    run = bgio("copy", *args, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.decode() == f"bgio copy: {message}\n"
    # Nothing is created before the source is open and DST's directory known; like cp, a
    # read error after that leaves DST as far as it got (here: empty).
    left = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "src.bin"}
    assert left == ({"dst.bin": b""} if "error reading" in message else {})


def test_a_full_disk_on_standard_output_is_named(tmp_path, payload):
    with open("/dev/full", "wb") as full:
        run = bgio("copy", "src.bin", "-", cwd=tmp_path, stdout=full, stderr=subprocess.PIPE)
    assert run.returncode == 1
    assert run.stderr == b"bgio copy: error writing 'standard output': No space left on device\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the mode bits say")
def test_permission_errors_read_like_cp(tmp_path, payload):
    locked = tmp_path / "locked"
    locked.write_bytes(b"secret")
    locked.chmod(0)
    (tmp_path / "ro").mkdir(mode=0o555)
    (tmp_path / "kept").write_bytes(b"kept")
    (tmp_path / "kept").chmod(0o444)
    try:
        for args, message in [
            (["locked", "x"], "cannot open 'locked' for reading: Permission denied"),
            (["src.bin", "ro/x"], "cannot create 'ro/x': Permission denied"),
            (["src.bin", "ro/x", "--atomic"], "cannot create 'ro/x': Permission denied"),
            (["src.bin", "kept"], "cannot open 'kept' for writing: Permission denied"),
        ]:
            run = bgio("copy", *args, cwd=tmp_path)
            assert (run.returncode, run.stderr.decode()) == (1, f"bgio copy: {message}\n")
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert (tmp_path / "kept").read_bytes() == b"kept"


@pytest.fixture
def same(tmp_path):
    """A 9 MiB file with another name for it of each kind; copying it over itself must not touch it."""
    data = os.urandom(9 * 1024 * 1024)  # more than a block: a truncating copy would lose data
    path = tmp_path / "same.bin"
    path.write_bytes(data)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "link").symlink_to("same.bin")
    os.link(path, tmp_path / "hard")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "same.bin").symlink_to("../same.bin")
    yield path, data
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == 1_000_000_000


@pytest.mark.slow
@pytest.mark.parametrize(("source", "destination", "atomic"), [
    ("same.bin", "same.bin", False),
    ("same.bin", "link", False),
    ("link", "same.bin", False),
    ("hard", "same.bin", False),
    ("same.bin", "link", True),
    ("same.bin", "hard", True),
])
def test_a_file_copied_onto_itself_is_refused_and_untouched(tmp_path, same, source, destination,
                                                           atomic):
    run = bgio("copy", source, destination, *(["--atomic"] if atomic else []), cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.decode() == f"bgio copy: '{source}' and '{destination}' are the same file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "hard", "link", "same.bin"]


def test_a_directory_destination_that_holds_the_source_is_refused(tmp_path, same):
    run = bgio("copy", "dir/same.bin", "dir", cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr == b"bgio copy: 'dir/same.bin' and 'dir/same.bin' are the same file\n"


@pytest.mark.slow
def test_standard_streams_onto_their_own_file_are_refused(tmp_path, same):
    path, _ = same
    with open(path, "rb") as source:
        run = bgio("copy", "-", "same.bin", cwd=tmp_path, stdin=source)
    assert (run.returncode, run.stderr) == (1, b"bgio copy: '-' and 'same.bin' are the same file\n")
    with open(path, "ab") as output:  # appending to its own input would never end
        run = bgio("copy", "same.bin", "-", cwd=tmp_path, stdout=output, stderr=subprocess.PIPE)
    assert (run.returncode, run.stderr) == (1, b"bgio copy: 'same.bin' and '-' are the same file\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # opening for append may not, but be sure


def test_a_device_destination_is_written_into_not_replaced(payload):
    source, _ = payload
    run = bgio("copy", str(source), "/dev/null")
    assert (run.returncode, run.stderr) == (0, b"")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_destination_is_written_into(tmp_path, payload):
    source, data = payload
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    run = bgio("copy", str(source), str(fifo))
    reader.join(60)
    assert (run.returncode, run.stderr) == (0, b"")
    assert received == [data]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_closed_pipe_downstream_ends_quietly_as_cat_does(payload):
    # cat dies of SIGPIPE: no message, and status 141 in a shell (pipefail sees it).
    source, _ = payload
    script = (f'"{sys.executable}" -m bgio copy "{source}" - | head -c 10 > /dev/null; '
              'echo "${PIPESTATUS[0]}"; cat "$0" | head -c 10 > /dev/null; echo "${PIPESTATUS[0]}"')
    run = subprocess.run(["bash", "-c", script, str(source)], capture_output=True, env=ENV,
                         timeout=60, check=False)
    assert run.stderr == b""
    assert run.stdout == b"141\n141\n"  # bgio copy's, then cat's


@pytest.mark.slow
def test_a_reader_that_goes_away_mid_copy_kills_it_with_sigpipe(payload):
    source, _ = payload
    process = subprocess.Popen([sys.executable, "-m", "bgio", "copy", str(source), "-",
                                "--rate", "4M"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=ENV)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.read(10)
    process.stdout.close()  # the reader goes away
    assert process.stderr.read() == b""  # no message, no "Exception ignored"
    assert process.wait(60) == -signal.SIGPIPE


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


def test_a_rate_too_large_for_a_number_is_refused():
    with pytest.raises(ValueError, match="too large"):
        parse_rate("9" * 400)


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


def test_the_copy_is_full_speed_unless_asked():
    from bgio import PRESETS
    from bgio import priority as bgio_priority
    from bgio.cli import copy_profile

    full = copy_profile(None, None)
    assert (full.bandwidth_pct, full.max_rate, full.io_priority) == (100, None, None)
    assert full.default_chunk_size == PRESETS[1].default_chunk_size
    assert copy_profile(7, None) == PRESETS[7]
    capped = copy_profile(None, 50 << 20)
    assert (capped.max_rate, capped.default_chunk_size) == (50 << 20, (50 << 20) // 20)
    assert capped.writeback_window == bgio_priority.DEFAULT_WRITEBACK_WINDOW
    assert copy_profile(1, 1000) == PRESETS[1].replace(max_rate=1000, default_chunk_size=4096)
    assert copy_profile(10, 1 << 30).default_chunk_size == PRESETS[10].default_chunk_size


def test_copy_help_says_it_is_full_speed_by_default(capsys):
    from bgio import cli

    with pytest.raises(SystemExit):
        cli.main(["copy", "--help"])
    assert "default: full speed, unpaced" in " ".join(capsys.readouterr().out.split())
