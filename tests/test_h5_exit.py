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
