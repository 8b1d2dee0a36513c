"""Uploads to a local S3-compatible server: bgio against obstore and s3fs used directly.

    python benchmarks/bench_s3.py [--mib M] [--repeat R] [--rate-mib M] [--json F]

Starts moto's server on a free 127.0.0.1 port (``pip install "moto[server]"``;
tests/s3server.py) and uploads M MiB (default 1024) of random bytes in
8 MiB parts, sides interleaved, medians of R rounds (default 5) with the
range, while the main thread runs a 1 ms sleep loop (its p99 and max gap
say what the upload costs an interactive program):

- ``bgio``: ``bgio.bgwrite("s3://...", data, priority=1)`` (8 parts in flight);
- ``obstore``: ``obstore.put(store, key, data, chunk_size=8 MiB)`` (its default
  12 parts in flight), in a thread;
- ``s3fs``: ``fs.open(path, "wb", block_size=8 MiB)`` written 8 MiB at a
  time, in a thread.

Each side ends when the object is complete; it is deleted after. Then
``max_rate``: bgio at preset 1 capped at ``--rate-mib`` MB/s (default 20,
decimal megabytes) for 10 s worth of data, the bytes handed to the upload
and the bytes the store acknowledged sampled every second: the whole
upload's average and each second's range. The server itself is the limit
(~50 MiB/s; its completion of a large upload takes seconds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

import bgio
from bgio.bench.loop import loop_gaps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from s3server import S3Server

MIB = 1 << 20
PART = 8 * MIB


def _data(mib: int) -> np.ndarray:
    block = np.frombuffer(os.urandom(64 * MIB), np.uint8)
    return np.tile(block, -(-mib // 64))[: mib * MIB]


def _bgio(server: S3Server, bucket: str, key: str, data: np.ndarray) -> threading.Event:
    handle = bgio.bgwrite(f"s3://{bucket}/{key}", data, priority=1,
                          storage_options=server.options())
    done = threading.Event()
    handle.add_done_callback(lambda _: done.set())
    return done


def _in_thread(work) -> threading.Event:
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported after the loop
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    done.errors = errors  # type: ignore[attr-defined]
    return done


def _obstore(server: S3Server, bucket: str, key: str, data: np.ndarray) -> threading.Event:
    import obstore
    from obstore.store import S3Store

    options = server.options()
    store = S3Store(bucket, endpoint=options["endpoint"], access_key_id="test",
                    secret_access_key="test", region="us-east-1",
                    client_options={"allow_http": True})
    return _in_thread(lambda: obstore.put(store, key, memoryview(data), chunk_size=PART))


def _s3fs(server: S3Server, bucket: str, key: str, data: np.ndarray) -> threading.Event:
    import s3fs

    fs = s3fs.S3FileSystem(key="test", secret="test", endpoint_url=server.endpoint,
                           client_kwargs={"region_name": "us-east-1"}, skip_instance_cache=True)
    view = memoryview(data)

    def work() -> None:
        with fs.open(f"{bucket}/{key}", "wb", block_size=PART) as out:
            for start in range(0, len(view), PART):
                out.write(view[start:start + PART])

    return _in_thread(work)


SIDES = {"bgio": _bgio, "obstore": _obstore, "s3fs": _s3fs}


def _timed(side, server: S3Server, bucket: str, data: np.ndarray, key: str) -> dict[str, float]:
    started = time.perf_counter()
    done = side(server, bucket, key, data)
    loop = loop_gaps(until=done.is_set, timeout=600)
    elapsed = time.perf_counter() - started
    errors = getattr(done, "errors", [])
    if errors:
        raise errors[0]
    if server.client().head_object(Bucket=bucket, Key=key)["ContentLength"] != len(data):
        raise RuntimeError(f"{key}: the object is not complete")
    server.client().delete_object(Bucket=bucket, Key=key)
    return {"mib_s": len(data) / MIB / elapsed, "p99_ms": loop.p99_ms, "max_ms": loop.max_ms}


def _rate(server: S3Server, bucket: str, rate: float) -> dict[str, object]:
    size = int(rate * 10)
    data = _data(-(-size // MIB))[:size]
    profile = bgio.PRESETS[1].replace(max_rate=rate)
    handle = bgio.bgwrite(f"s3://{bucket}/rate", data, priority=profile,
                          storage_options=server.options())
    started = time.perf_counter()
    samples = []
    while not handle.wait(1.0):  # (one sample a second is the measurement itself)
        samples.append((time.perf_counter() - started, handle.bytes_written,
                        handle.bytes_on_disk or 0))
    handle.result()
    elapsed = time.perf_counter() - started
    taken = [b - a for (_, a, _), (_, b, _) in itertools.pairwise(samples)]
    acknowledged = [b - a for (_, _, a), (_, _, b) in itertools.pairwise(samples)]
    last_taken = samples[-1][0] if samples else elapsed
    server.client().delete_object(Bucket=bucket, Key="rate")
    return {"asked_mb_s": rate / 1e6,
            "handed_over_mb_s": (samples[-1][1] if samples else size) / last_taken / 1e6,
            "complete_mb_s": size / elapsed / 1e6,
            "per_second_handed_mb": [round(x / 1e6, 2) for x in taken],
            "per_second_acknowledged_mb": [round(x / 1e6, 2) for x in acknowledged]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate-mib", type=float, default=20.0,
                        help="max_rate for the accuracy run, in MB/s (decimal)")
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sides = {name: SIDES[name] for name in args.sides.split(",")}
    server = S3Server()
    try:
        bucket = server.bucket()
        data = _data(args.mib)
        print(f"bgio {bgio.__version__}: {args.mib} MiB to a local moto server, 8 MiB parts; "
              f"medians of {args.repeat} [min-max], interleaved")
        for name, side in sides.items():  # warm up (connections, imports)
            _timed(side, server, bucket, data[: 16 * MIB], f"warm-{name}")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for round_ in range(args.repeat):
            order = list(sides.items())
            if round_ % 2:
                order.reverse()
            for name, side in order:
                results[name].append(_timed(side, server, bucket, data, f"{name}-{round_}"))
        for name, runs in results.items():
            cells = []
            for figure, unit in (("mib_s", "MiB/s"), ("p99_ms", "ms p99"), ("max_ms", "ms max")):
                values = [run[figure] for run in runs]
                cells.append(f"{statistics.median(values):7.1f} {unit} "
                             f"[{min(values):.1f}-{max(values):.1f}]")
            print(f"{name:<8} " + "  ".join(cells))
        others = [statistics.median(run["mib_s"] for run in results[name])
                  for name in results if name != "bgio"]
        if "bgio" in results and others:
            ours = statistics.median(run["mib_s"] for run in results["bgio"])
            print(f"bgio / fastest other: {ours / max(others):.2f}")
        rate = _rate(server, bucket, args.rate_mib * 1e6)
        print(f"max_rate {rate['asked_mb_s']:.1f} MB/s: handed over at "
              f"{rate['handed_over_mb_s']:.2f} MB/s, complete at {rate['complete_mb_s']:.2f}; "
              f"per second handed over {rate['per_second_handed_mb']}, acknowledged "
              f"{rate['per_second_acknowledged_mb']}")
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"uploads": results, "rate": rate}, out, indent=1)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
