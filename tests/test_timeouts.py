"""``timeout=`` arguments: checked in the caller, everywhere one is taken."""

from __future__ import annotations

import io
import math
import threading

import numpy as np
import pytest

import bgio
from bgio.timeouts import check_timeout


def test_none_and_infinity_mean_no_limit_and_numbers_are_seconds():
    assert check_timeout(None) is None
    assert check_timeout(math.inf) is None
    assert check_timeout(0) == 0.0
    assert check_timeout(2.5) == 2.5
    assert check_timeout(np.float32(0.5)) == 0.5
    assert check_timeout(threading.TIMEOUT_MAX) == threading.TIMEOUT_MAX


@pytest.mark.parametrize("bad", [-0.001, -math.inf, math.nan, threading.TIMEOUT_MAX * 2, 1e300])
def test_values_no_thread_can_wait_are_value_errors(bad):
    with pytest.raises(ValueError, match="timeout"):
        check_timeout(bad)


@pytest.mark.parametrize("bad", ["1", True, [1], object()])
def test_non_numbers_are_type_errors(bad):
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        check_timeout(bad)


def test_every_call_with_a_timeout_checks_it_before_waiting(tmp_path):
    writer = bgio.Writer(io.BytesIO(), max_pending_bytes=10)
    with pytest.raises(ValueError, match="timeout"):
        writer.write(b"x", timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        writer.flush(timeout=math.nan)
    with pytest.raises(ValueError, match="timeout"):
        writer.close(timeout=1e300)
    writer.close(timeout=math.inf)
    with pytest.raises(ValueError, match="timeout"):
        bgio.wait_all(timeout=-5)
    assert bgio.wait_all(timeout=math.inf)

    from bgio.h5 import FrameWriter

    frames = FrameWriter(tmp_path / "f.h5", "frames", (2, 2), "u1")
    with pytest.raises(ValueError, match="timeout"):
        frames.append(np.zeros((2, 2), "u1"), timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        frames.flush(timeout=math.nan)
    with pytest.raises(ValueError, match="timeout"):
        frames.close(timeout=-1)
    frames.close(timeout=math.inf)
