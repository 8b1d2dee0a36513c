"""Core benchmark of bgio: every headline figure beside its target, measured by bgio.bench.

Usage: python benchmarks/bench_core.py [--dir DIR] [--repeat 5] [--size 512] [--json FILE]

This script only chooses sizes and prints; the measuring code is the bgio.bench package.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from bgio import bench
    from bgio.version import __version__
except ImportError:  # run from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bgio import bench
    from bgio.version import __version__

PRESETS = (1, 4, 7, 10)
DUTY_PERCENTS = (20, 50, 80)
#: Chunk size of the custom duty-cycle profiles.
DUTY_CHUNK = bench.MIB
#: The rate cap checked, bytes per second, and the most bytes written at it (4 s, 191 chunks).
RATE = 50e6
RATE_BYTES = 200_000_000
RATE_CHUNK = bench.MIB
SMALL_COUNT = 10_000
SMALL_BLOCK = 4096
SMALL_PRIORITY = 1

# Targets.
CALL_MS = 1.0
P1_VS_SYNC = 0.9
RSS_MIB = 64.0
P99_OVER_IDLE_MS = 0.5
MAX_GAP_MS = 10.0
DUTY_POINTS = 5.0
RATE_TOLERANCE = 0.05
SMALL_RATIO = 2.0


@dataclass
class Row:
    """One line of the report: a figure, its target, and whether it meets it (None: no target)."""

    figure: str
    value: str
    target: str
    ok: bool | None


def _rows(
    latency: Sequence[tuple[str, bench.CallLatency]],
    comparison: bench.Comparison,
    duty: bench.Comparison,
    rate: bench.RateRun,
    small: bench.SmallWrites,
) -> list[Row]:
    rows: list[Row] = []
    for name, lat in latency:
        rows.append(Row(f"call latency, {lat.size_bytes / bench.MIB:g} MiB {name}",
                        f"{lat.median_ms:.3f} ms", f"<= {CALL_MS:g} ms", lat.median_ms <= CALL_MS))

    sync = comparison.sync
    idle = comparison.idle
    assert sync is not None and idle is not None
    rows.append(Row("throughput, sync f.write", f"{sync.mib_s:.0f} MiB/s", "reference", None))
    for label, run in comparison.bgio.items():
        if label == "bgio p1":
            floor = P1_VS_SYNC * sync.mib_s
            rows.append(Row(f"throughput, {label}", f"{run.mib_s:.0f} MiB/s",
                            f">= {floor:.0f} ({P1_VS_SYNC:g} x sync)", run.mib_s >= floor))
        else:
            rows.append(Row(f"throughput, {label}", f"{run.mib_s:.0f} MiB/s",
                            f"({run.mib_s / sync.mib_s:.2f} x sync)", None))
    for label, run in comparison.bgio.items():
        rows.append(Row(f"peak RSS, {label}", f"input + {run.peak_rss_mib:.1f} MiB",
                        f"<= input + {RSS_MIB:g} MiB", run.peak_rss_mib <= RSS_MIB))

    ceiling = idle.p99_ms + P99_OVER_IDLE_MS
    rows.append(Row("loop p99, idle baseline", f"{idle.p99_ms:.2f} ms", "reference", None))
    for label, run in comparison.bgio.items():
        rows.append(Row(f"loop p99, {label}", f"{run.loop_p99_ms:.2f} ms",
                        f"<= {ceiling:.2f} (idle + {P99_OVER_IDLE_MS:g})",
                        run.loop_p99_ms <= ceiling))
    rows.append(Row("loop max, idle baseline", f"{idle.max_ms:.2f} ms", "reference", None))
    rows.append(Row("loop max, sync f.write", f"{sync.loop_max_ms:.2f} ms",
                    "reference (blocked)", None))
    for label, run in comparison.bgio.items():
        rows.append(Row(f"loop max, {label}", f"{run.loop_max_ms:.2f} ms",
                        f"<= {MAX_GAP_MS:g} ms", run.loop_max_ms <= MAX_GAP_MS))

    for run in duty.bgio.values():
        pct = run.requested_duty_pct or 100.0
        got = run.measured_duty_pct
        chunk = f"{DUTY_CHUNK / bench.MIB:g} MiB chunks"
        rows.append(Row(f"duty cycle, {pct:g} % requested ({chunk})",
                        "-" if got is None else f"{got:.1f} %",
                        f"{pct - DUTY_POINTS:g}..{pct + DUTY_POINTS:g} %",
                        got is not None and abs(got - pct) <= DUTY_POINTS))

    low, high = rate.target_rate * (1 - RATE_TOLERANCE), rate.target_rate * (1 + RATE_TOLERANCE)
    rows.append(Row(f"max_rate {rate.target_rate / 1e6:g} MB/s, {rate.size_bytes / 1e6:.0f} MB",
                    f"{rate.achieved_rate / 1e6:.2f} MB/s ({rate.error_pct:+.1f} %)",
                    f"{low / 1e6:.3g}..{high / 1e6:.3g} MB/s", low <= rate.achieved_rate <= high))

    what = f"{small.count:,} x {small.block_size // 1024} KiB"
    rows.append(Row(f"small writes {what}, sync loop", f"{small.sync_seconds * 1e3:.1f} ms",
                    "reference", None))
    rows.append(Row(f"small writes {what}, Writer {small.priority.removeprefix('bgio ')}",
                    f"{small.bgio_seconds * 1e3:.1f} ms ({small.ratio:.2f} x sync)",
                    f"<= {SMALL_RATIO:g} x sync", small.ratio <= SMALL_RATIO))
    return rows


def _print_table(rows: Sequence[Row]) -> None:
    head = ("figure", "measured", "target", "result")
    widths = [max(len(head[i]), *(len(getattr(r, f)) for r in rows))
              for i, f in enumerate(("figure", "value", "target"))]
    print(f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]}")
    for row in rows:
        mark = "-" if row.ok is None else ("ok" if row.ok else "MISS")
        print(f"{row.figure:<{widths[0]}}  {row.value:>{widths[1]}}  "
              f"{row.target:<{widths[2]}}  {mark}")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_core.py",
        description="Measure bgio's headline figures against their targets (medians of "
                    "interleaved runs).",
    )
    parser.add_argument("--dir", metavar="DIR",
                        help="write test files in a temporary subdirectory of DIR "
                             "(default: the system's temporary directory)")
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="rounds per comparison; medians are reported (default: 5)")
    parser.add_argument("--size", type=float, default=512.0, metavar="MIB",
                        help="MiB per large write (default: 512)")
    parser.add_argument("--json", metavar="FILE", help="also write every raw figure to FILE")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not args.size * bench.MIB >= 1:
        parser.error("--size must be positive")
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir}: no such directory")
    if args.json is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: its directory does not exist")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement, print the table; return the exit status."""
    from tqdm import tqdm

    args = _parse(argv)
    size = int(args.size * bench.MIB)
    repeat = args.repeat
    rate_bytes = min(RATE_BYTES, size)
    calls = max(5, repeat)
    steps = (
        3 * calls
        + bench.compare_steps(len(PRESETS), repeat)
        + bench.compare_steps(len(DUTY_PERCENTS), repeat, sync=False, idle=False, warmup=False)
        + bench.compare_steps(1, repeat, sync=False, idle=False, warmup=False)
        + 2 * repeat + 2
    )
    with tempfile.TemporaryDirectory(prefix="bgio-bench-", dir=args.dir) as directory, \
            tqdm(total=steps, desc="bench_core", unit="run", file=sys.stderr, disable=None,
                 leave=False) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update()

        env = bench.environment(directory)
        data = bench.make_data(size)
        as_bytes = data.tobytes()
        latency = [
            ("bytes to /dev/null", bench.call_latency(as_bytes, calls, on_step=step)),
            ("numpy to /dev/null", bench.call_latency(data, calls, on_step=step)),
            # A file is slower to write than /dev/null, so the worker hands the
            # GIL back to the caller sooner: both are worth seeing.
            ("numpy to a file",
             bench.call_latency(data, calls, directory=directory, on_step=step)),
        ]
        del as_bytes  # not needed any more; keeps RSS steady for what follows
        comparison = bench.compare_writes(data, PRESETS, repeat, directory=directory,
                                          on_step=step)
        duty = bench.duty_cycles(data, DUTY_PERCENTS, DUTY_CHUNK, repeat, directory=directory,
                                 on_step=step)
        rate = bench.max_rate(data[:rate_bytes], RATE, RATE_CHUNK, repeat, directory=directory,
                              on_step=step)
        small = bench.small_writes(SMALL_COUNT, SMALL_BLOCK, SMALL_PRIORITY, repeat,
                                   directory=directory, on_step=step)

    rows = _rows(latency, comparison, duty, rate, small)
    where = args.dir or "a temporary directory"
    runs = "1 run" if repeat == 1 else f"median of {repeat} interleaved runs"
    print(f"bgio {__version__} core benchmark: {size / bench.MIB:g} MiB writes, {runs}, in {where} "
          f"({env.get('filesystem') or 'unknown fs'}), {env['cpu_count']} CPUs, "
          f"Python {env['python']}")
    _print_table(rows)
    checked = [row.ok for row in rows if row.ok is not None]
    print(f"targets met: {sum(checked)} of {len(checked)}")

    if args.json is not None:
        env["directory"] = args.dir
        report = {
            "settings": {"size_bytes": size, "repeat": repeat, "rate_bytes": rate_bytes},
            "environment": env,
            "call_latency": {name: bench.to_jsonable(lat) for name, lat in latency},
            "throughput": bench.to_jsonable(comparison),
            "duty_cycle": bench.to_jsonable(duty),
            "max_rate": bench.to_jsonable(rate),
            "small_writes": bench.to_jsonable(small),
            "targets": [bench.to_jsonable(row) for row in rows],
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
