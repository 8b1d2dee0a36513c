"""The `bgio` command, driven as a user would: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bgio
from bgio.cli import main


def _bgio(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(bgio.__file__).parent.parent))
    return subprocess.run([sys.executable, "-m", "bgio", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env, check=False)


@pytest.mark.slow
def test_bench_prints_the_table_and_writes_json(tmp_path):
    proc = _bgio("bench", "--size", "4", "--dir", str(tmp_path), "--json", "out.json",
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"bgio {bgio.__version__} bench: 4 MiB per write")
    labels = [line.split("  ")[0].strip() for line in lines[2:7]]
    assert labels == ["sync f.write", "bgio p1", "bgio p4", "bgio p7", "bgio p10"]
    assert "idle loop baseline" in lines[7]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["settings"]["presets"] == [1, 4, 7, 10]
    assert report["settings"]["size_bytes"] == 4 * 1024 * 1024
    assert set(report["results"]["bgio"]) >= {"bgio p1", "bgio p10"}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # its scratch files are gone


def test_missing_dir_is_a_one_line_error(tmp_path):
    proc = _bgio("bench", "--dir", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bgio bench: error: --dir {tmp_path / 'nope'}: no such directory"
    assert "Traceback" not in proc.stderr


def test_bad_option_values_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--size", "-3"])
    assert exit_info.value.code == 2
    assert "must be a positive number" in capsys.readouterr().err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().err
