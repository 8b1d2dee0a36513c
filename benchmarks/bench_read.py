"""Background reads from the disk: throughput, duty cycle, the main thread, a writer beside.

    python benchmarks/bench_read.py [--dir DIR] [--gib G] [--repeat N] [--write-gib W]
                                    [--json F]

Run as root on Linux, in a directory on the disk to measure (not tmpfs): the
page cache is dropped before every side. A G GiB file (default 2) is read
while the main thread runs a 1 ms loop (its p99 and longest gap are
reported) by:

- ``bgio.bgread(path, into=buffer)`` at presets 1, 4, 7 and 10 (duty cycle
  measured by the handle, beside the profile's asked busy share);
- a plain thread's ``readinto`` loop into the same buffer, 1 MiB a call.

Then a second process writes W GiB (default 1) with ``dd oflag=direct``
(its rate is the device's), alone and while ``bgread`` reads the file at
preset 10 and at preset 1, and beside the plain reader thread. Target:
the writer keeps >= 70 % of its solo rate beside preset 10.

Sides interleave (order reversed every other round); medians of N rounds
(default 5), with the range.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError

try:
    import bgio
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import bgio
from bgio.bench import disk, load
from bgio.bench.loop import loop_gaps
from bgio.bench.report import environment
from bgio.bench.schedule import interleave

GIB = 1024 ** 3
MIB = 1024 ** 2
PRESETS = (1, 4, 7, 10)


def _bgio_reader(priority: int) -> Callable[[str, memoryview, threading.Event], dict]:
    def read(path: str, buffer: memoryview, stop: threading.Event) -> dict:
        handle = bgio.bgread(path, into=buffer, priority=priority)
        handle.add_done_callback(lambda _: stop.set())
        stop.wait()
        if not handle.done():  # (told to stop from outside: the fairness sides)
            handle.cancel()
        try:
            handle.result()
        except CancelledError:  # (stopped from outside, by a fairness side's writer)
            pass
        asked = bgio.PRESETS[priority].bandwidth_pct / 100
        return {"bytes": handle.bytes_read, "duty": handle.duty_cycle, "asked": asked}
    return read


def _plain_reader(path: str, buffer: memoryview, stop: threading.Event) -> dict:
    done = 0
    with open(path, "rb", buffering=0) as file:
        while done < len(buffer) and not stop.is_set():
            got = file.readinto(buffer[done : done + MIB])
            if not got:
                break
            done += got
    stop.set()
    return {"bytes": done, "duty": None, "asked": None}


READERS: dict[str, Callable[[str, memoryview, threading.Event], dict]] = {
    **{f"bgread preset {p}": _bgio_reader(p) for p in PRESETS},
    "plain thread readinto": _plain_reader,
}


def read_side(name: str, path: str, buffer: memoryview) -> dict:
    """One read of the whole file, cache dropped, the main thread in its 1 ms loop."""
    dropped = disk.drop_caches()
    stop = threading.Event()
    out: dict = {}

    def run() -> None:
        out.update(READERS[name](path, buffer, stop))

    thread = threading.Thread(target=run, name="bench-reader")
    started = time.perf_counter()
    thread.start()
    loop = loop_gaps(until=stop, timeout=3600)
    thread.join()
    seconds = time.perf_counter() - started
    return {"side": name, "mib_s": out["bytes"] / MIB / seconds, "seconds": seconds,
            "duty": out["duty"], "asked": out["asked"], "loop_p99_ms": loop.p99_ms,
            "loop_max_ms": loop.max_ms, "cache_dropped": dropped}


def writer_side(name: str, directory: str, path: str, buffer: memoryview,
                write_bytes: int) -> dict:
    """A second process writes ``write_bytes`` with ``dd oflag=direct``, alone or beside a
    reader of ``path`` (which reads until the writer is done)."""
    disk.drop_caches()
    stop = threading.Event()
    reader = None
    if name != "alone":
        reader = threading.Thread(target=READERS[name], args=(path, buffer, stop),
                                  name="bench-reader")
        reader.start()
        time.sleep(0.2)  # (the reader under way first)
    target = os.path.join(directory, "bench-read-writer.bin")
    started = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=1M",
                    f"count={write_bytes // MIB}", "oflag=direct", "status=none"], check=True)
    seconds = time.perf_counter() - started
    stop.set()
    if reader is not None:
        reader.join()
    os.remove(target)
    return {"side": name, "write_mib_s": write_bytes / MIB / seconds}


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="directory on the disk (default: temp dir)")
    parser.add_argument("--gib", type=float, default=2.0, help="GiB to read (default 2)")
    parser.add_argument("--write-gib", type=float, default=1.0, help="GiB the writer writes")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--no-fairness", action="store_true", help="skip the writer sides")
    parser.add_argument("--load", action="store_true",
                        help="two other processes spin the cores throughout")
    parser.add_argument("--json", default=None, help="write every run to this file")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.load:
            stack.enter_context(load.spinners())
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if not disk.can_drop_caches():
        print("warning: not root (or not Linux): the page cache is not dropped between sides",
              file=sys.stderr)
    size = int(args.gib * GIB)
    buffer = memoryview(bytearray(size))
    buffer[::4096] = bytes(len(buffer[::4096]))  # (touched: no first-touch faults in a side)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bgio-read-") as directory:
        path = os.path.join(directory, "bench-read.bin")
        with open(path, "wb") as file:
            file.writelines(disk.source_blocks(size))
            os.fsync(file.fileno())
        device = disk.device_of(directory)
        for name in READERS:  # warm-up, discarded
            read_side(name, path, buffer[: 64 * MIB])
        runs: dict[str, list[dict]] = {name: [] for name in READERS}
        for name in interleave(list(READERS), args.repeat):
            run = read_side(name, path, buffer)
            runs[name].append(run)
            print(f"  {name}: {run['mib_s']:.0f} MiB/s, loop max {run['loop_max_ms']:.1f} ms",
                  file=sys.stderr)
        fairness: dict[str, list[dict]] = {}
        if not args.no_fairness:
            sides = ["alone", "bgread preset 10", "bgread preset 1", "plain thread readinto"]
            fairness = {name: [] for name in sides}
            for name in interleave(sides, args.repeat):
                run = writer_side(name, directory, path, buffer, int(args.write_gib * GIB))
                fairness[name].append(run)
                print(f"  writer {name}: {run['write_mib_s']:.0f} MiB/s", file=sys.stderr)
    print(environment())
    print(f"{args.gib:g} GiB read from {directory} (device {device}), cache dropped; "
          f"medians of {args.repeat} (range)"
          + ("; two processes spinning the cores" if args.load else "; machine idle"))
    print(f"{'side':24s} {'MiB/s':>24s} {'duty (asked)':>13s} {'loop p99 ms':>19s} "
          f"{'loop max ms':>19s}")
    for name, side_runs in runs.items():
        duties = [run["duty"] for run in side_runs if run["duty"] is not None]
        duty = (f"{statistics.median(duties):.2f} ({side_runs[0]['asked']:.2f})" if duties
                else "-")
        print(f"{name:24s} {_median_range([r['mib_s'] for r in side_runs]):>24s} {duty:>13s} "
              f"{_median_range([r['loop_p99_ms'] for r in side_runs]):>19s} "
              f"{_median_range([r['loop_max_ms'] for r in side_runs]):>19s}")
    if fairness:
        solo = statistics.median(run["write_mib_s"] for run in fairness["alone"])
        print(f"\na second process writing {args.write_gib:g} GiB (dd oflag=direct):")
        for name, side_runs in fairness.items():
            rates = [run["write_mib_s"] for run in side_runs]
            print(f"  {name:24s} {_median_range(rates)} MiB/s  "
                  f"{statistics.median(rates) / solo:6.0%} of alone")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"reads": runs, "writer": fairness}, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
