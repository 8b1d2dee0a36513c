"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")


def _examples() -> list[str]:
    """The ``.. code-block:: python`` blocks of the README, dedented."""
    with open(README, encoding="utf-8") as file:
        text = file.read()
    blocks = re.findall(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    return ["\n".join(line[4:] for line in block.splitlines()) for block in blocks]


def test_the_readme_has_examples():
    assert len(_examples()) >= 2


@pytest.mark.parametrize("index", range(len(_examples())))
def test_a_readme_example_runs_as_written(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = compile(_examples()[index], f"README.rst example {index + 1}", "exec")
    exec(code, {"__name__": "__readme__"})  # noqa: S102 - the README's own code
    assert os.listdir(tmp_path)  # (each example writes files)
