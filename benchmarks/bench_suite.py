"""The scenarios of ``bgio bench`` at development sizes: larger writes, more rounds.

    python benchmarks/bench_suite.py [--size MIB] [--repeat R] [--scenarios LIST]
                                     [--dir DIR] [--json FILE] [--plot FILE.png]

Same implementation as ``bgio bench`` (``bgio.bench.suite``); defaults here
are 2048 MiB per write and medians of 5 interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

try:
    from bgio.bench import environment, to_jsonable
    from bgio.bench import suite as scenarios
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bgio.bench import environment, to_jsonable
    from bgio.bench import suite as scenarios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=2048.0, help="MiB per streams write")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; medians are reported")
    parser.add_argument("--scenarios", default=",".join(scenarios.SCENARIOS))
    parser.add_argument("--dir", default=None, help="directory for the files")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--plot", default=None, help="plot throughput against the loop's p99")
    args = parser.parse_args()
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        env = environment(directory)
        result = scenarios.run_suite(directory, names, int(args.size * 2**20), args.repeat,
                                     on_step=lambda label: print(f"  {label}", file=sys.stderr))
    print("\n".join(scenarios.suite_tables(result)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"settings": result.settings, "environment": env,
                       "results": to_jsonable(result)}, out, indent=2)
    if args.plot:
        scenarios.plot_suite(result, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
