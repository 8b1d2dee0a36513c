"""Typed for strict users: ``mypy --strict`` passes on bgio and on a user's program."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytest.importorskip("mypy")


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow  # (mypy over the package: tens of seconds without its cache)
def test_bgio_passes_mypy_strict():
    run = _mypy("bgio")
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.mark.slow
def test_a_typed_user_program_passes_mypy_strict():
    # (Errors inside bgio are the test above's: here only the program's own.)
    run = _mypy("--follow-imports=silent", os.path.join("tests", "typed", "user_script.py"))
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.mark.slow
def test_the_typed_user_program_runs(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "typed", "user_script.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert (run.returncode, run.stderr) == (0, "")


@pytest.mark.slow
def test_a_checker_catches_wrong_arguments():
    run = _mypy("--follow-imports=silent", os.path.join("tests", "typed", "user_mistakes.py"))
    flagged = sorted(int(line.split(":")[1]) for line in run.stdout.splitlines()
                     if "user_mistakes.py" in line and ": error:" in line)
    assert flagged == [7, 8, 9, 11], run.stdout
