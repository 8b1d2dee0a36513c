"""Pacing under load: duty cycles and a rate cap on an idle machine, beside spinning processes,
and beside a main thread running Python (issue "Worker core", point 3).

    python benchmarks/bench_pacing.py [--dir /dev/shm] [--repeat 5] [--seconds 1.5]
                                      [--rate-seconds 4] [--quiet 0.2] [--quick] [--json FILE]

Targets:

- busy fraction within +-5 points of 20, 50 and 80 % in each condition, as
  measured from outside bgio (the *truth*: the writer thread's CPU time
  inside the write system calls over wall time; on tmpfs a write is a copy
  done by the CPU), with the handle's ``duty_cycle`` within 5 points of the
  truth;
- where a target lies above the condition's ceiling (the truth at
  ``bandwidth_pct=100``), reach at least the smaller of target - 5 and 60 %
  of the ceiling, ``duty_cycle`` again within 5 points of the truth (the
  issue states this for the busy main thread; on a 2-core machine two
  spinning processes set a ceiling too, and the same rule is applied);

On a shared machine each write waits for a quiet moment first (``--quiet``)
and the ``others`` column says how many cores other processes still took.
- ``max_rate`` 50 MB/s in 1 MiB chunks: every 1-second window of every run
  within +-5 % of the cap, in each condition.

Cells are interleaved (round-robin over conditions and profiles, the order
reversed every other round); figures are medians of R rounds with their
range. The measuring lives in ``bgio.bench.pacing`` and ``bgio.bench.load``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from bgio import bench
    from bgio.bench.load import describe
    from bgio.version import __version__
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio import bench
    from bgio.bench.load import describe
    from bgio.version import __version__

PERCENTS = (20, 50, 80)
CHUNK = bench.MIB
RATE = 50e6

# Targets.
POINTS = 5.0  # busy fraction: +- points around the target; duty_cycle: +- points around the truth
CEILING_SHARE = 0.6  # above the ceiling: at least this share of it (or target - POINTS)
RATE_TOLERANCE_PCT = 5.0


@dataclass
class Verdict:
    """What a duty-cycle cell is held to, and whether it meets it."""

    target: str
    ok: bool


def _verdict(pct: float, ceiling: float, cell: bench.PacingCell) -> Verdict:
    truth = cell.truth_pct.median
    duty = cell.duty_pct.median
    honest = abs(duty - truth) <= POINTS
    if pct <= ceiling:
        low, high = pct - POINTS, pct + POINTS
        return Verdict(f"{low:g}..{high:g} %", low <= truth <= high and honest)
    floor = min(pct - POINTS, CEILING_SHARE * ceiling)
    return Verdict(f">= {floor:.1f} % (above ceiling)", truth >= floor and honest)


def _spread(spread: bench.Spread) -> str:
    return f"{spread.low:.1f}..{spread.high:.1f}"


def _others(cell: bench.PacingCell) -> str:
    """The most cores other processes took during any of the cell's runs."""
    return f"{max(run.others_cores or 0.0 for run in cell.runs):.2f}"


def _print_duty(result: bench.LoadedPacing) -> tuple[int, int]:
    head = ("condition", "pct", "duty_cycle", "truth", "truth range", "duty range", "thread",
            "others", "target (truth; duty within 5 of truth)", "result")
    rows = []
    met = checked = 0
    conditions = list(dict.fromkeys(cell.condition for cell in result.duty))
    for condition in conditions:
        ceiling = result.ceiling(condition)
        for cell in result.duty:
            if cell.condition != condition:
                continue
            pct = cell.bandwidth_pct
            thread = sorted(run.thread_pct for run in cell.runs)[len(cell.runs) // 2]
            values = [describe(condition), f"{pct:g}", f"{cell.duty_pct.median:.1f} %",
                      f"{cell.truth_pct.median:.1f} %", _spread(cell.truth_pct),
                      _spread(cell.duty_pct), f"{thread:.1f} %", _others(cell)]
            if pct == 100:
                rows.append((*values, "ceiling (reference)", "-"))
                continue
            verdict = _verdict(pct, ceiling, cell)
            checked += 1
            met += verdict.ok
            rows.append((*values, verdict.target, "ok" if verdict.ok else "MISS"))
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) for i in range(len(head))]
    print("  ".join(f"{h:<{w}}" for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)))
    return met, checked


def _print_rate(result: bench.LoadedPacing) -> tuple[int, int]:
    head = ("condition", "worst window (all runs)", "runs' worst: median", "range of windows",
            "others", "target", "result")
    rows = []
    met = 0
    for cell in result.rate:
        assert cell.max_rate is not None and cell.worst_window_pct is not None
        lows = [run.rate_low for run in cell.runs if run.rate_low is not None]
        highs = [run.rate_high for run in cell.runs if run.rate_high is not None]
        worst = max((cell.worst_window_pct.low, cell.worst_window_pct.high), key=abs)
        ok = abs(worst) <= RATE_TOLERANCE_PCT
        met += ok
        rows.append((describe(cell.condition), f"{worst:+.2f} %",
                     f"{cell.worst_window_pct.median:+.2f} %",
                     f"{min(lows) / 1e6:.2f}..{max(highs) / 1e6:.2f} MB/s", _others(cell),
                     f"+-{RATE_TOLERANCE_PCT:g} %", "ok" if ok else "MISS"))
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) for i in range(len(head))]
    print("  ".join(f"{h:<{w}}" for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(f"{v:<{w}}" for v, w in zip(row, widths)))
    return met, len(rows)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_pacing.py",
                                     description=__doc__.splitlines()[0].rstrip(","))
    parser.add_argument("--dir", default="/dev/shm", metavar="DIR",
                        help="where the test file lives (default: /dev/shm, tmpfs: the engine "
                             "without the disk)")
    parser.add_argument("--repeat", type=int, default=5, metavar="N",
                        help="interleaved rounds; medians reported (default: 5)")
    parser.add_argument("--seconds", type=float, default=1.5, metavar="S",
                        help="length of each duty-cycle write (default: 1.5)")
    parser.add_argument("--rate-seconds", type=float, default=4.0, metavar="S",
                        help=f"length of each max_rate write at {RATE / 1e6:g} MB/s (default: 4)")
    parser.add_argument("--conditions", default=",".join(bench.CONDITIONS),
                        help="comma-separated subset of " + ",".join(bench.CONDITIONS))
    parser.add_argument("--quiet", type=float, default=0.2, metavar="CORES",
                        help="before each write wait (up to --quiet-timeout) until other "
                             "processes use fewer cores than this; 0 starts at once "
                             "(default: 0.2)")
    parser.add_argument("--quiet-timeout", type=float, default=3.0, metavar="S",
                        help="longest wait for quiet before a write (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="a rough look in ~40 s: 2 rounds, 0.6 s writes, 2 s rate runs")
    parser.add_argument("--json", metavar="FILE", help="also write every raw figure to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.seconds, args.rate_seconds = 2, 0.6, 2.0
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.rate_seconds < 1.5:
        parser.error("--rate-seconds must be at least 1.5 (a 1-second window needs room)")
    if not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir}: no such directory")
    args.conditions = tuple(args.conditions.split(","))
    unknown = set(args.conditions) - set(bench.CONDITIONS)
    if unknown:
        parser.error(f"--conditions: unknown {', '.join(sorted(unknown))}")
    if args.json is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"--json {args.json}: its directory does not exist")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every cell, print the tables; return the exit status."""
    from tqdm import tqdm

    args = _parse(argv)
    started = time.perf_counter()
    steps = bench.pacing_steps(args.conditions, PERCENTS, args.repeat)
    with tqdm(total=steps, desc="bench_pacing", unit="run", file=sys.stderr, disable=None,
              leave=False) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update()

        result = bench.pacing_under_load(
            PERCENTS, args.conditions, args.repeat, seconds=args.seconds, chunk_size=CHUNK,
            rate=RATE, rate_seconds=args.rate_seconds, directory=args.dir,
            quiet=args.quiet or None, quiet_timeout=args.quiet_timeout, on_step=step)
    elapsed = time.perf_counter() - started
    env = bench.environment(args.dir)
    print(f"bgio {__version__} pacing benchmark: {CHUNK // bench.MIB} MiB chunks, "
          f"{args.seconds:g} s per duty-cycle write, {args.rate_seconds:g} s at max_rate, "
          f"median of {args.repeat} interleaved rounds, in {args.dir} "
          f"({env.get('filesystem') or 'unknown fs'}), {env['cpu_count']} CPUs, "
          f"Python {env['python']}, switch interval {env['switch_interval_s'] * 1e3:g} ms; "
          f"{elapsed:.0f} s")
    print("truth = writer's CPU time inside the write calls / wall time; thread = all the "
          "writer thread's CPU time / wall time;\nothers = most cores used by processes outside "
          "the benchmark during a run of the cell (a shared machine's noise)")
    print()
    duty_met, duty_checked = _print_duty(result)
    print()
    rate_met, rate_checked = _print_rate(result)
    print()
    print(f"targets met: {duty_met + rate_met} of {duty_checked + rate_checked}")
    if args.json is not None:
        report = {
            "settings": {"repeat": args.repeat, "seconds": args.seconds,
                         "rate_seconds": args.rate_seconds, "chunk_size": CHUNK, "rate": RATE,
                         "quiet_cores": args.quiet, "quiet_timeout_s": args.quiet_timeout,
                         "conditions": list(args.conditions)},
            "environment": env,
            "ceilings": {c: result.ceiling(c) for c in args.conditions},
            "result": bench.to_jsonable(result),
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
