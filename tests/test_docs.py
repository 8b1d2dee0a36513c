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


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """The manual built as the docs extra builds it: warnings are errors."""
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    import subprocess
    import sys
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    out = tmp_path_factory.mktemp("manual")
    for builder in ("html", "doctest"):  # doctest: the pages' examples are run
        run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-q", "-b", builder,
                              str(docs), str(out / builder)], capture_output=True, text=True,
                             timeout=300, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
    return out


@pytest.mark.slow
def test_the_manual_builds_without_warnings_and_its_examples_pass(manual):
    report = (manual / "doctest" / "output.txt").read_text()
    assert "0 failures in tests" in report and " tests" in report
    pages = {path.name for path in (manual / "html").glob("*.html")}
    assert pages >= {"index.html", "quickstart.html", "priorities.html", "streams.html",
                     "hdf5.html", "live.html", "guarantees.html", "migrating.html", "api.html"}


@pytest.mark.slow
@pytest.mark.parametrize("module", ["bgio", "bgio.h5"])
def test_every_public_name_is_in_the_reference(manual, module):
    api = (manual / "html" / "api.html").read_text()
    names = [name for name in importlib.import_module(module).__all__
             if not name.startswith("__") and name != "compat"]
    missing = [name for name in names if f'id="{module}.{name}"' not in api]
    assert missing == []
