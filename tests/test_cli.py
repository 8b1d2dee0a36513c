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
def test_bench_prints_every_scenario_and_writes_json_and_a_plot(tmp_path):
    import importlib.util

    plot = importlib.util.find_spec("matplotlib") is not None  # the test extra installs it
    proc = _bgio("bench", "--size", "4", "--dir", str(tmp_path), "--json", "out.json",
                 *(["--plot", "out.png"] if plot else []), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"bgio {bgio.__version__} bench: 1 run, in {tmp_path} (ext4)" or \
        lines[0].startswith(f"bgio {bgio.__version__} bench: 1 run, in {tmp_path}")
    assert lines[2].startswith("streams: 4 MiB in one call")
    labels = [line.split("  ")[0].strip() for line in lines[4:16]]
    assert labels == ["sync f.write", "f.write in a thread", *[f"bgio p{n}" for n in range(1, 11)]]
    text = proc.stdout
    for heading in ("small writes: 100000 x 4096 B", "HDF5: 100 camera-like", "plain thread gzip-4",
                    "FrameWriter p1 gzip-4", "pacing: 100 MB at max_rate 50 MB/s: achieved",
                    "disk: 512 MiB to a file", "(preset 4 kept ",
                    "busy: 4 MiB in one call, the main thread running Python",
                    "(main thread busy: backend='process' wrote "):
        assert heading in text
    busy_rows = [line.split("  ")[0] for line in lines if line.startswith(("thread p", "process p"))]
    assert busy_rows == [f"{backend} p{preset}" for preset in (1, 4, 7, 10)
                         for backend in ("thread", "process")]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["settings"]["presets"] == list(range(1, 11))
    assert report["settings"]["size_bytes"] == 4 * 1024 * 1024
    assert report["settings"]["scenarios"] == ["streams", "busy", "small", "hdf5", "pacing",
                                               "disk"]
    results = report["results"]
    assert set(results["streams"]["bgio"]) >= {"bgio p1", "bgio p10"}
    assert results["streams"]["thread"]["label"] == "f.write in a thread"
    assert results["small"]["size_bytes"] == 100000 * 4096
    assert set(results["hdf5"]) == {"plain thread gzip-4, main calls h5py",
                                    "FrameWriter p1 gzip-4, main calls h5py"}
    assert results["pacing"]["target_rate"] == 50e6
    assert set(results["busy"]["rows"]) == {f"{backend} p{preset}" for preset in (1, 4, 7, 10)
                                            for backend in ("thread", "process")}
    assert results["busy"]["rows"]["process p1"]["mib_s"] > 0
    assert set(results["disk"]) == {"preset 4", "preset 4 without windows"}
    assert results["disk"]["preset 4"]["on_disk_s"] > 0
    if plot:
        assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "out.png"][: 1 + plot]


@pytest.mark.slow
def test_bench_scenarios_can_be_chosen(tmp_path):
    proc = _bgio("bench", "--size", "2", "--scenarios", "pacing", "--dir", str(tmp_path),
                 cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pacing: 100 MB" in proc.stdout and "streams:" not in proc.stdout
    proc = _bgio("bench", "--scenarios", "streams,disks", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown scenario(s) disks" in proc.stderr
    proc = _bgio("bench", "--scenarios", "pacing", "--plot", "x.png", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--plot shows the streams scenario" in proc.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_bench_compares_the_older_module_when_it_is_installed(tmp_path):
    # A stand-in with the older module's bgwrite (the real one is not installable here).
    fakes = Path(__file__).parent / "fakes"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fakes),
                                                        str(Path(bgio.__file__).parent.parent)]))
    proc = subprocess.run([sys.executable, "-m", "bgio", "bench", "--size", "2", "--scenarios",
                           "streams", "--dir", str(tmp_path), "--json", "out.json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("  ")[0] for line in proc.stdout.splitlines()]
    assert [f"nonblock p{n}" for n in range(1, 11)] == [row for row in rows if "nonblock" in row]
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["results"]["streams"]["nonblock"]) == {f"nonblock p{n}" for n in range(1, 11)}


def test_the_progress_bar_prints_sizes_and_rates_as_rate_reads_them():
    # tqdm's own unit_scale printed 2**20-based sizes as "MB" and the rate in
    # powers of 1000: a copy at --rate 50M showed "52.4MB/s".
    import io

    from bgio.cli import _BAR, _BAR_NO_TOTAL, _byte_bar
    from bgio.copy import parse_rate

    out = io.StringIO()
    bar = _byte_bar()(total=200 * 2**20, desc="src", unit="B", file=out, ncols=100,
                      bar_format=_BAR, smoothing=0, mininterval=0)
    bar.start_t -= 2.0  # as if it had taken 2 s: 100 MiB in 2 s is 50 MiB/s
    bar.update(100 * 2**20)
    line = str(bar)
    bar.close()
    assert line.startswith("src:  50%|") and "| 100MiB/200MiB [00:02<00:02, 50.0MiB/s]" in line
    assert parse_rate(line.split(", ")[1].split("/s")[0]) == parse_rate("50M")
    bar = _byte_bar()(desc="stdin", unit="B", file=io.StringIO(), bar_format=_BAR_NO_TOTAL,
                      smoothing=0)
    bar.start_t -= 4.0
    bar.update(3 * 2**30)
    assert str(bar) == "stdin: 3.00GiB [00:04, 768MiB/s]"
    bar.close()
