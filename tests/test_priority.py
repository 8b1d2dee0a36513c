"""Profiles and presets: the older module's values, validated, immutable."""

from __future__ import annotations

import dataclasses

import pytest

import bgio
from bgio.priority import resolve_priority

MIB = 1024 * 1024

# (level, chain_poll_time, chunk size in MiB, bandwidth %) from the older module.
OLD_PRESETS = [
    (1, 0.0009, 5, 100), (2, 0.0009, 4, 90), (3, 0.0015, 3, 78), (4, 0.0015, 2, 72),
    (5, 0.0019, 1.6, 65), (6, 0.0019, 0.75, 55), (7, 0.0024, 0.69, 45), (8, 0.0024, 0.5, 35),
    (9, 0.0031, 0.3, 30), (10, 0.0100, 0.25, 20),
]


@pytest.mark.parametrize(("level", "poll", "mib", "pct"), OLD_PRESETS)
def test_presets_keep_the_older_values(level, poll, mib, pct):
    p = bgio.PRESETS[level]
    assert p.chain_poll_time == poll
    assert p.default_chunk_size == int(MIB * mib)
    assert p.bandwidth_pct == pct
    assert p.num_chunks_rate_smoothing == 5
    assert p.max_rate is None


def test_there_are_exactly_ten_presets():
    assert sorted(bgio.PRESETS) == list(range(1, 11))


def test_profile_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        bgio.PRESETS[1].bandwidth_pct = 50  # type: ignore[misc]


def test_float_chunk_size_is_truncated():
    assert bgio.BackgroundIOPriority(0, 1.9, 50).default_chunk_size == 1


def test_replace_validates_again():
    p = bgio.PRESETS[3].replace(max_rate=1e6, num_chunks_rate_smoothing=2)
    assert (p.max_rate, p.num_chunks_rate_smoothing, p.bandwidth_pct) == (1e6, 2, 78)
    with pytest.raises(ValueError, match="bandwidth_pct"):
        bgio.PRESETS[3].replace(bandwidth_pct=0)
    with pytest.raises(TypeError, match="unknown field"):
        bgio.PRESETS[3].replace(speed=3)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, 1024, 0), {}, ValueError, "bandwidth_pct"),
        ((0, 1024, -5), {}, ValueError, "bandwidth_pct"),
        ((0, 1024, 100.01), {}, ValueError, "bandwidth_pct"),
        ((0, 1024, float("nan")), {}, ValueError, "bandwidth_pct"),
        ((0, 1024, "50"), {}, TypeError, "bandwidth_pct"),
        ((0, 0, 50), {}, ValueError, "default_chunk_size"),
        ((0, 0.5, 50), {}, ValueError, "default_chunk_size"),
        ((0, "1k", 50), {}, TypeError, "default_chunk_size"),
        ((0, True, 50), {}, TypeError, "default_chunk_size"),
        ((0, 1024, 50, 0), {}, ValueError, "num_chunks_rate_smoothing"),
        ((0, 1024, 50, 2.5), {}, TypeError, "num_chunks_rate_smoothing"),
        ((-1, 1024, 50), {}, ValueError, "chain_poll_time"),
        ((0, 1024, 50), {"max_rate": -1}, ValueError, "max_rate"),
        ((0, 1024, 50), {"max_rate": 0}, ValueError, "max_rate"),
        ((0, 1024, 50), {"max_rate": "fast"}, TypeError, "max_rate"),
        ((0, 1024, 50), {"max_rate": float("inf")}, ValueError, "max_rate"),
    ],
)
def test_invalid_profile_values_name_the_argument(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        bgio.BackgroundIOPriority(*args, **kwargs)


def test_max_rate_is_keyword_only():
    with pytest.raises(TypeError):
        bgio.BackgroundIOPriority(0, 1024, 50, 5, 1e6)  # type: ignore[misc]


def test_resolve_priority():
    custom = bgio.BackgroundIOPriority(0, 10, 50)
    assert resolve_priority(custom) is custom
    assert resolve_priority(7) is bgio.PRESETS[7]
    with pytest.raises(ValueError, match=r"priority must be 1\.\.10"):
        resolve_priority(0)
    with pytest.raises(ValueError, match="priority"):
        resolve_priority(11)
    with pytest.raises(TypeError, match="priority must be an int"):
        resolve_priority("7")
    with pytest.raises(TypeError, match="priority"):
        resolve_priority(True)
    with pytest.raises(TypeError, match="priority"):
        resolve_priority(7.0)


@pytest.mark.parametrize("changes", [{"bandwidth_pct": 1e-300}, {"bandwidth_pct": 0.001},
                                     {"max_rate": 1e-300}, {"max_rate": 0.5}])
def test_pacing_that_cannot_be_honoured_is_refused_when_the_profile_is_made(changes):
    name = next(iter(changes))
    with pytest.raises(ValueError, match=name):
        bgio.PRESETS[4].replace(**changes)
