"""The scenarios of ``bgio bench``: each bgio row beside its baselines, measured in one run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..priority import PRESETS as PRESETS_BGIO
from . import disk
from .backends import (
    BACKEND_PRESETS,
    WINDOW,
    BusyScenario,
    advice,
    busy_scenario,
    busy_steps,
)
from .compare import Comparison, compare_steps, compare_writes
from .data import MIB, make_data
from .h5 import H5Run, h5_scenario, realistic_frames
from .pacing import RateRun, max_rate
from .schedule import progress
from .streams import StreamRun, open_small_writes
from .writes import nonblock_available

__all__ = ["PRESETS_ALL", "SCENARIOS", "Suite", "plot_suite", "run_suite", "suite_steps",
           "suite_tables"]

#: Scenario names, in the order they run and print.
SCENARIOS = ("streams", "busy", "small", "hdf5", "pacing", "disk")
#: What the disk scenario writes with each side.
DISK_BYTES = 512 * MIB
#: Its sides: the default preset as it is, and without its write-back windows.
DISK_SIDES = ("preset 4", "preset 4 without windows")
#: The presets of the streams scenario.
PRESETS_ALL = tuple(range(1, 11))
#: The sides of the HDF5 scenario (labels of :data:`bgio.bench.h5.ARMS`).
H5_SIDES = ("plain thread gzip-4, main calls h5py", "FrameWriter p1 gzip-4, main calls h5py")
#: Frames of the HDF5 scenario.
H5_FRAMES = 100
#: The pacing scenario's cap, and how much it writes (about 2 s).
PACING_RATE = 50e6
PACING_BYTES = 100 * 1000 * 1000


@dataclass
class Suite:
    """What ``bgio bench`` measured; a scenario not run is None."""

    streams: Comparison | None = None
    busy: BusyScenario | None = None
    small: StreamRun | None = None
    hdf5: dict[str, H5Run] | None = None
    pacing: RateRun | None = None
    disk: dict[str, disk.DiskRun] | None = None
    disk_note: str = ""
    settings: dict[str, object] = field(default_factory=dict)


def suite_steps(scenarios: Sequence[str], presets: Sequence[int], repeat: int) -> int:
    """Progress steps :func:`run_suite` reports."""
    steps = 0
    if "streams" in scenarios:
        steps += compare_steps(len(presets), repeat, thread=True,
                               nonblock=len(presets) if nonblock_available() else 0)
    if "busy" in scenarios:
        steps += busy_steps(BACKEND_PRESETS, repeat)
    steps += sum(1 for name in ("small", "pacing") if name in scenarios)
    if "disk" in scenarios:
        steps += len(DISK_SIDES) * repeat
    if "hdf5" in scenarios:
        steps += len(H5_SIDES) * (1 + repeat)
    return steps


def run_suite(directory: str, scenarios: Sequence[str], size: int, repeat: int = 1,
              presets: Sequence[int] = PRESETS_ALL,
              on_step: Callable[[str], None] | None = None) -> Suite:
    """Run the named scenarios in ``directory`` (files are removed as they are done).

    Parameters
    ----------
    directory : str
        An existing, writable directory.
    scenarios : sequence of str
        Names from :data:`SCENARIOS`.
    size : int
        Bytes of each write of the streams scenario.
    repeat : int, default 1
        Rounds; medians are reported.
    presets : sequence of int
        The presets of the streams scenario.
    on_step : callable taking a str, or None
        Called after each measurement (a progress bar).
    """
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"scenarios: unknown {unknown}; choose from {list(SCENARIOS)}")
    step = progress(on_step)
    suite = Suite(settings={"scenarios": list(scenarios), "size_bytes": size, "repeat": repeat,
                            "presets": list(presets)})
    if "streams" in scenarios or "busy" in scenarios:
        data = make_data(size)
        if "streams" in scenarios:
            # The older module, when installed, at the same preset numbers.
            suite.streams = compare_writes(data, presets, repeat, directory=directory,
                                           thread=True, on_step=step,
                                           nonblock=presets if nonblock_available() else ())
        if "busy" in scenarios:
            suite.busy = busy_scenario(directory, data, BACKEND_PRESETS, repeat, on_step=step)
        del data
    if "small" in scenarios:
        suite.small = open_small_writes(directory, count=100_000, size=4096, repeat=repeat)
        step("small writes")
    if "hdf5" in scenarios:
        frames = realistic_frames(H5_FRAMES)
        suite.hdf5 = h5_scenario(directory, frames, repeat=repeat, arms=H5_SIDES, on_step=step)
        del frames
    if "pacing" in scenarios:
        suite.pacing = max_rate(make_data(PACING_BYTES), rate=PACING_RATE, chunk_size=MIB,
                                directory=directory)
        step("pacing")
    if "disk" in scenarios:
        suite.disk, suite.disk_note = _disk(directory, repeat, step)
    return suite


def _disk(directory: str, repeat: int, step: Callable[[str], None]
          ) -> tuple[dict[str, disk.DiskRun], str]:
    """The disk scenario: preset 4 with and without its write-back windows, medians."""
    from .schedule import interleave
    from .stats import median_of

    profiles = {DISK_SIDES[0]: PRESETS_BGIO[4],
                DISK_SIDES[1]: PRESETS_BGIO[4].replace(writeback_window=None)}
    blocks = disk.source_blocks(DISK_BYTES)
    runs: dict[str, list[disk.DiskRun]] = {side: [] for side in DISK_SIDES}
    for side in interleave(DISK_SIDES, repeat):
        run = disk.bgio_side(side, directory, blocks, profiles[side])
        runs[side].append(run)
        step(f"disk: {side}")
    medians = {side: median_of(sorted(values, key=lambda run: run.on_disk_s))
               for side, values in runs.items()}
    notes = []
    if not disk.can_drop_caches():
        notes.append("the page cache was not dropped between sides (not root)")
    if not disk.windows_apply(directory):
        notes.append(f"{directory} has no device behind it: windows do not apply there")
    return medians, "; ".join(notes)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    lines = ["  ".join(text.ljust(widths[0]) if i == 0 else text.rjust(widths[i])
                       for i, text in enumerate(header))]
    for row in rows:
        lines.append("  ".join(text.ljust(widths[0]) if i == 0 else text.rjust(widths[i])
                               for i, text in enumerate(row)))
    return lines


def suite_tables(suite: Suite) -> list[str]:
    """The report: one table per scenario run, bgio rows beside their baselines."""
    lines: list[str] = []
    if suite.streams is not None:
        comparison = suite.streams
        size = comparison.sync.size_bytes if comparison.sync else 0
        lines.append(f"streams: {size / MIB:g} MiB in one call, the main thread in a 1 ms "
                     f"sleep loop meanwhile")
        rows = [run for run in (comparison.sync, comparison.thread) if run is not None]
        rows += list(comparison.bgio.values()) + list(comparison.nonblock.values())
        lines += _grid(
            ["", "MiB/s", "duty req %", "duty got %", "call ms", "loop p99 ms", "loop max ms",
             "peak RSS +MiB"],
            [[run.label, _cell(run.mib_s, 0), _cell(run.requested_duty_pct, 0),
              _cell(run.measured_duty_pct, 1), _cell(run.call_ms, 2), _cell(run.loop_p99_ms, 2),
              _cell(run.loop_max_ms, 2), _cell(run.peak_rss_mib, 1)] for run in rows])
        if comparison.idle is not None:
            lines.append(f"(idle loop, nothing written: p99 {comparison.idle.p99_ms:.2f} ms, "
                         f"max {comparison.idle.max_ms:.2f} ms)")
        lines.append("")
    if suite.busy is not None:
        busy = suite.busy
        lines.append(f"busy: {busy.size_bytes / MIB:g} MiB in one call, the main thread running "
                     f"Python meanwhile (each arm stops after {WINDOW:g} s)")
        lines += _grid(["", "MiB/s", "duty req %", "duty got %", "main work %"], [
            [run.label, _cell(run.mib_s, 0), _cell(run.requested_duty_pct, 0),
             _cell(run.measured_duty_pct, 1), _cell(run.main_work_pct, 0)]
            for run in busy.rows.values()])
        line = advice(busy)
        if line:
            lines.append(line)
        lines.append("")
    if suite.small is not None:
        small = suite.small
        lines.append(f"small writes: {small.label} through bgio.open against a buffered file")
        lines += _grid(["", "seconds", "MiB/s"], [
            ["plain open()", f"{small.plain_s:.3f}", f"{small.size_bytes / MIB / small.plain_s:.0f}"],
            ["bgio.open()", f"{small.bgio_s:.3f}", f"{small.size_bytes / MIB / small.bgio_s:.0f}"],
        ])
        lines.append(f"(bgio at {small.ratio:.2f}x the plain file's speed)")
        lines.append("")
    if suite.hdf5 is not None:
        lines.append(f"HDF5: {H5_FRAMES} camera-like 1024x1024 uint16 frames, gzip-4, while the "
                     f"main thread reads another HDF5 file in a loop")
        lines += _grid(["", "MiB/s", "loop p99 ms", "loop max ms"], [
            [run.label.replace(", main calls h5py", ""), f"{run.mib_s:.0f}",
             _cell(run.p99_ms, 2), _cell(run.max_ms, 1)] for run in suite.hdf5.values()])
        lines.append("")
    if suite.disk is not None:
        lines += _disk_table(suite)
    if suite.pacing is not None:
        pacing = suite.pacing
        lines.append(f"pacing: {pacing.size_bytes / 1e6:.0f} MB at max_rate "
                     f"{pacing.target_rate / 1e6:g} MB/s: achieved "
                     f"{pacing.achieved_rate / 1e6:.2f} MB/s ({pacing.error_pct:+.1f} %)")
        lines.append("")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _disk_table(suite: Suite) -> list[str]:
    assert suite.disk is not None
    lines = [f"disk: {DISK_BYTES / MIB:g} MiB to a file, page cache dropped first, then fsync"]
    lines += _grid(["", "on disk s", "peak dirty MiB", "device MiB/s writing", "loop p99 ms",
                    "loop max ms", "fsync loop max ms"],
                   [[side, f"{run.on_disk_s:.2f}", f"{run.peak_dirty_mib:.0f}",
                     f"{run.device_mib_s:.0f}", f"{run.loop_p99_ms:.2f}", f"{run.loop_max_ms:.1f}",
                     f"{run.fsync_max_ms:.1f}"] for side, run in suite.disk.items()])
    windowed, plain = suite.disk[DISK_SIDES[0]], suite.disk[DISK_SIDES[1]]
    lines.append(f"(preset 4 kept {windowed.peak_dirty_mib:.0f} MiB dirty where the page cache "
                 f"alone held {plain.peak_dirty_mib:.0f} MiB, and had the data on disk in "
                 f"{windowed.on_disk_s:.2f} s against {plain.on_disk_s:.2f} s"
                 + (f"; {suite.disk_note}" if suite.disk_note else "") + ")")
    lines.append("")
    return lines


def plot_suite(suite: Suite, path: str | os.PathLike[str]) -> None:
    """Throughput against responsiveness, per preset and per baseline, as a PNG.

    Needs matplotlib (``pip install "bgio[plot]"``).

    Raises
    ------
    ValueError
        If the streams scenario was not run (the plot shows it).
    ImportError
        If matplotlib is not installed.
    """
    if suite.streams is None:
        raise ValueError("the plot shows the streams scenario, which was not run")
    import matplotlib

    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt

    comparison = suite.streams
    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    presets = list(comparison.bgio.values())
    axes.plot([run.mib_s for run in presets], [run.loop_p99_ms for run in presets], "o-",
              color="tab:blue", label="bgio presets")
    for index, run in enumerate(presets):
        # Above and below in turn: neighbouring presets often sit close together.
        axes.annotate(run.label.replace("bgio ", ""), (run.mib_s, run.loop_p99_ms),
                      textcoords="offset points", xytext=(4, 6 if index % 2 == 0 else -13),
                      fontsize=9)
    if comparison.nonblock:
        older = list(comparison.nonblock.values())
        axes.plot([run.mib_s for run in older], [run.loop_p99_ms for run in older], "^--",
                  color="tab:green", label="nonblock presets")
    for plain, color in ((comparison.sync, "tab:red"), (comparison.thread, "tab:orange")):
        if plain is not None:
            axes.plot([plain.mib_s], [plain.loop_p99_ms], "s", color=color, label=plain.label)
    if comparison.idle is not None:
        axes.axhline(comparison.idle.p99_ms, color="grey", linestyle=":",
                     label="idle main loop p99")
    axes.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    # 2, 3, 5, 10, 20 ... rather than 10^0 x 2: plain numbers, a few of them.
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else ""))
    axes.set_xlabel("throughput (MiB/s)")
    axes.set_ylabel("main thread's 1 ms loop, p99 iteration (ms, log)")
    size = presets[0].size_bytes / MIB if presets else 0
    axes.set_title(f"bgio bench: {size:g} MiB written while the main thread runs")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="best", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
