"""A filesystem that refuses bytes: the error reaches handles and close(), the file is closed.

The writer runs in a subprocess whose file size is capped (``RLIMIT_FSIZE``,
with ``SIGXFSZ`` ignored), so HDF5's writes fail with ``EFBIG`` exactly as
they would on a full disk, without needing one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import bgio.h5

LIMIT = 1 << 20

WRITER = textwrap.dedent("""
    import json, os, resource, signal, sys
    import numpy as np
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    import bgio.h5

    path, kind = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    if kind == "frames":
        w = bgio.h5.FrameWriter(path, "frames", (256, 512), "<u2")
        handles = [w.append(rng.integers(0, 65535, (256, 512), dtype="<u2")) for _ in range(10)]
    else:
        w = bgio.h5.RecordWriter(path, "events", {{"x": ((), "<u8")}}, chunk_events=16384)
        handles = [w.append(i, {{"x": rng.integers(0, 2**63, 16384, dtype="<u8")}})
                   for i in range(10)]
    outcomes = []
    for handle in handles:
        error = handle.exception(timeout=60)
        outcomes.append(None if error is None else [type(error).__name__, getattr(error, "errno", None)])
    try:
        w.close()
        closed = None
    except Exception as exc:
        closed = [type(exc).__name__, getattr(exc, "errno", None)]
    open_files = [os.readlink(f"/proc/self/fd/{{fd}}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{{fd}}")]
    print(json.dumps({{"outcomes": outcomes, "close": closed,
                      "still_open": [name for name in open_files if name == os.path.realpath(path)]}}))
""").format(limit=LIMIT)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and /proc: Linux")
@pytest.mark.parametrize("kind", ["frames", "records"])
def test_a_refused_write_surfaces_and_the_file_is_closed(tmp_path, kind):
    path = tmp_path / "capped.h5"
    run = subprocess.run([sys.executable, "-c", WRITER, str(path), kind], check=False,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr  # errors go to handles and the bgio logger, not stderr
    report = json.loads(run.stdout)
    outcomes = report["outcomes"]
    # 256 KiB (frames) or 128 KiB (records) per store, under a 1 MiB cap: the
    # first stores succeed, one fails with EFBIG, and every later one is
    # refused in order rather than written after the gap.
    stored = outcomes.index(["OSError", 27])
    assert stored >= 2 and outcomes[:stored] == [None] * stored
    assert all(outcome[0] == "ChainError" for outcome in outcomes[stored + 1 :])
    assert report["close"] == ["OSError", 27]
    assert report["still_open"] == []
    # HDF5 had reserved space it could not write: the file is shorter than
    # its end-of-file address and does not open; bgio.h5.recover extends it
    # (as Debian's h5clear --increment=0 does), with what was stored intact.
    with pytest.raises(OSError, match="truncated file"):
        h5py.File(path, "r")
    if shutil.which("h5clear") is not None:
        theirs = tmp_path / "theirs.h5"
        shutil.copyfile(path, theirs)
        subprocess.run(["h5clear", "--increment=0", str(theirs)], check=True,
                       capture_output=True)
    assert bgio.h5.recover(path) is True
    assert bgio.h5.recover(path) is False  # nothing left to repair
    if shutil.which("h5clear") is not None:
        assert os.path.getsize(path) == os.path.getsize(theirs)
    rng = np.random.default_rng(0)
    with h5py.File(path, "r") as f:
        if kind == "frames":
            for index in range(stored):
                want = rng.integers(0, 65535, (256, 512), dtype="<u2")
                assert np.array_equal(f["frames"][index], want)
        else:
            want = np.concatenate([rng.integers(0, 2**63, 16384, dtype="<u8") for _ in range(stored)])
            assert np.array_equal(f["events/x"][: len(want)], want)
