"""bgio.h5.exit: writers still open when the program ends are closed, their frames stored."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import pytest


@pytest.mark.slow
def test_writers_left_open_are_closed_at_exit(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, bgio.h5
        w = bgio.h5.FrameWriter(sys.argv[1], "frames", (8, 8), "u1", chunk_frames=4)
        for i in range(6):
            w.append(np.full((8, 8), i, "u1"))
        r = bgio.h5.RecordWriter(sys.argv[1], "g", {"x": ((), "i4")})
        r.append(1, {"x": [5]})
        r.append(0, {"x": [1, 2]})
    """)
    path = tmp_path / "open.h5"
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120, check=False,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0 and run.stderr == "", run.stderr
    with h5py.File(path, "r") as f:
        assert f["frames"][:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
        assert f["g/x"][:].tolist() == [1, 2, 5] and f["g/nevents"][:].tolist() == [2, 1]


def _wait_for(event) -> None:
    assert event.wait(60)


def test_a_forked_child_leaves_the_parent_s_open_writers_alone(tmp_path):
    # multiprocessing runs the threads' exit hooks in a forked child: the child's
    # copy of the writer must not be closed there, or it writes its stale metadata
    # over the parent's file (here: after the parent closed it).
    import multiprocessing

    import numpy as np

    from bgio.h5 import FrameWriter

    fork = multiprocessing.get_context("fork")
    path = tmp_path / "f.h5"
    parent_closed = fork.Event()
    frames = np.arange(100 * 64, dtype="<u2").reshape(100, 8, 8)
    writer = FrameWriter(path, "frames", (8, 8), "<u2", compression="gzip", priority=1)
    child = fork.Process(target=_wait_for, args=(parent_closed,))
    child.start()
    try:
        writer.append(frames)
        writer.close()
    finally:
        parent_closed.set()
        child.join(60)
    assert child.exitcode == 0
    with h5py.File(path, "r") as f:
        assert f["frames"].shape == (100, 8, 8)
        assert f["frames"][...].tobytes() == frames.tobytes()
