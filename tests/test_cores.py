"""bgio.cores: how many cores bgio's threads may keep busy."""

import os

import pytest

from bgio import cores


def test_usable_is_every_core_the_process_may_run_on_until_some_are_reserved(monkeypatch):
    monkeypatch.setattr(cores, "_reserved", 0)
    assert cores.available() == len(os.sched_getaffinity(0))
    assert cores.usable() == cores.available()
    monkeypatch.setattr(cores, "available", lambda: 3)
    cores.reserve(1)
    assert cores.usable() == 2
    cores.reserve(5)
    assert cores.usable() == 1  # never fewer than one
    cores.reserve(0)
    assert cores.usable() == 3


@pytest.mark.parametrize(("count", "error", "message"), [
    (-1, ValueError, "count must be >= 0, got -1"),
    (1.0, TypeError, "count must be an int, not float"),
    (True, TypeError, "count must be an int, not bool"),
])
def test_reserve_refuses_what_is_not_a_count(monkeypatch, count, error, message):
    monkeypatch.setattr(cores, "_reserved", 0)
    with pytest.raises(error, match=message):
        cores.reserve(count)
    assert cores.usable() == cores.available()
