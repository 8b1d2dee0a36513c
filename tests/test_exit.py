"""The exit drain: pending writes finish at exit, or a Ctrl-C abandons them honestly (status 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

CHILD = textwrap.dedent("""
    import logging, sys, threading
    import bgio
    logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
    path, how = sys.argv[1], sys.argv[2]
    # 50 MiB at 2 MB/s: half a minute, far more than any test waits.
    slow = bgio.PRESETS[4].replace(max_rate=2e6, default_chunk_size=1 << 16)
    if how == "frames":
        import numpy as np
        import bgio.h5
        w = bgio.h5.FrameWriter(path, "frames", (1024, 1024), "<u2", priority=slow)
        for _ in range(25):
            w.append(np.ones((1024, 1024), "<u2"))
    else:
        bgio.bgwrite(path, b"x" * (50 << 20), priority=slow, atomic=how == "atomic")
    print("ready", flush=True)
    if how == "interrupted":
        threading.Event().wait()  # the program is busy until a Ctrl-C ends it
""")


def _start(path, how):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), how], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.readline() == "ready\n"
    return child


def _until_drain_line(child) -> list[str]:
    lines = []
    while True:
        line = child.stderr.readline()
        assert line, f"the child ended without saying it drains: {lines}"
        lines.append(line)
        if line.startswith("bgio: finishing"):
            return lines


@pytest.mark.parametrize("how", ["plain", "atomic"])
def test_a_ctrl_c_during_the_drain_abandons_and_says_so(tmp_path, how):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    child = _start(path, how)
    (line,) = _until_drain_line(child)
    assert line.startswith("bgio: finishing 1 pending write(s), ")
    assert line.endswith(" MiB left; press Ctrl-C to abandon them\n")
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "Exception ignored" not in rest and "Traceback" not in rest
    lines = rest.splitlines()
    assert lines[0].startswith(f"bgio ERROR abandoned at exit: {path}: ")
    assert lines[0].endswith(" bytes written (1 write(s) cancelled)")
    assert lines[1].startswith("bgio: abandoned 1 write(s); ") and len(lines) == 2
    if how == "atomic":
        assert path.read_bytes() == b"old"  # the target as it was
        assert [name for name in os.listdir(tmp_path) if name.endswith(".bgio-tmp")] == []
    else:
        written = int(lines[0].split(": ")[2].split(" of ")[0])
        assert 0 < written < 50 << 20 and path.stat().st_size == written


def test_a_program_interrupted_first_is_told_and_a_second_ctrl_c_abandons(tmp_path):
    child = _start(tmp_path / "out.bin", "interrupted")
    child.send_signal(signal.SIGINT)  # the program's own Ctrl-C: its traceback, then the drain
    before = "".join(_until_drain_line(child))
    assert "KeyboardInterrupt" in before and "Exception ignored" not in before
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 130 and "Exception ignored" not in rest
    assert "bgio: abandoned 1 write(s)" in rest


def test_open_frame_writers_are_abandoned_too(tmp_path):
    child = _start(tmp_path / "frames.h5", "frames")
    _until_drain_line(child)
    child.send_signal(signal.SIGINT)
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "Exception ignored" not in rest and "Traceback" not in rest
    assert "bgio: abandoned " in rest


def test_a_drain_that_finishes_keeps_quiet_and_the_exit_status(tmp_path):
    code = ("import bgio, sys; bgio.bgwrite(sys.argv[1], b'y' * 1000, priority=1); "
            "sys.exit(3)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "quick.bin")],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 3 and done.stderr == ""
    assert (tmp_path / "quick.bin").read_bytes() == b"y" * 1000
