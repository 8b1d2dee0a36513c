"""The examples in the docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bgio

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(bgio.__path__, "bgio.")
    if name.rsplit(".", 1)[-1] not in {"__main__"}
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_public_name_has_a_docstring():
    for name in bgio.__all__:
        obj = getattr(bgio, name)
        if name in {"__version__", "PRESETS"}:
            continue
        assert (obj.__doc__ or "").strip(), name
