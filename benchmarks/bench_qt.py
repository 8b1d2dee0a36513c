"""A Qt event loop's ticks while frames are saved: bgio's example window against a plain QThread.

    python benchmarks/bench_qt.py [--frames N] [--repeat R] [--dir DIR] [--json F]

Runs ``docs/examples/qt_frames.py``'s window offscreen (``QT_QPA_PLATFORM``)
in a fresh process per run: a camera timer hands N frames (default 200) of
512 x 512 uint16, one every 5 ms, to a writer storing them with gzip level
4, while a 16 ms timer stands for the GUI's own work and records when it
fires: an animation (``plain``), or a viewer that reads a little of
another HDF5 file on each tick (``h5py``: the GUI's own h5py calls, which
wait for h5py's lock while another thread holds it). Sides (interleaved,
medians of R rounds, default 5), each in both conditions:

- ``idle``: the camera runs, nothing is written;
- ``bgio``: the example's window (``bgio.h5.FrameWriter``, ``bgio.qt``
  signals, ``close(wait=False)``);
- ``qthread``: a plain ``QThread`` that takes the frames from a queue and
  does ``ds[i] = frame`` (h5py compresses under its lock, holding the GIL).

Reported per side: the 16 ms timer's intervals while the frames are taken
and stored, p50 / p99 / max (ms), and the seconds until the file is closed.
``--child SIDE`` runs one side and prints its figures as JSON (the tests use
it to run the example).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "docs", "examples")
TICK_MS = 16
SIDES = ("idle", "bgio", "qthread")


def _child(side: str, frames: int, path: str, tick_h5: bool) -> dict[str, object]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, EXAMPLES)
    import h5py
    import numpy as np
    import qt_frames
    from PySide6 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    ticks: list[float] = []
    tick = QtCore.QTimer()
    tick.setInterval(TICK_MS)
    tick.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    if tick_h5:
        other_path = path + ".other.h5"
        with h5py.File(other_path, "w") as other_file:
            other_file["data"] = np.arange(4096, dtype=np.float64)
        other = h5py.File(other_path, "r")["data"]
        os.remove(other_path)  # (open: readable until closed)

        def on_tick() -> None:
            other[0:16]  # the viewer's own h5py call
            ticks.append(time.perf_counter())
    else:
        def on_tick() -> None:
            ticks.append(time.perf_counter())
    tick.timeout.connect(on_tick)
    outcome: dict[str, object] = {}
    made = [qt_frames.camera_frame(index) for index in range(min(frames, 8))]

    clock = {"start": 0.0}

    def finish(what: str) -> None:
        outcome["seconds"] = time.perf_counter() - clock["start"]
        outcome["outcome"] = what
        tick.stop()
        app.quit()

    if side == "bgio":
        window = qt_frames.SaverWindow(path, frames)
        window.saved.connect(lambda result: (
            outcome.update(bar=window.bar.value(), status=window.status.text(),
                           main_thread=QtCore.QThread.currentThread() is app.thread()),
            finish("failed" if isinstance(result, BaseException) else "saved")))
        begin = window.start
    else:
        class Saver(QtCore.QThread):
            def __init__(self) -> None:
                super().__init__()
                self.frames: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()

            def run(self) -> None:
                with h5py.File(path, "w") as file:
                    dataset = file.create_dataset(
                        "frames", (frames, *qt_frames.SHAPE), "uint16", compression="gzip",
                        compression_opts=4, chunks=(1, *qt_frames.SHAPE))
                    index = 0
                    while (frame := self.frames.get()) is not None:
                        dataset[index] = frame
                        index += 1

        saver = Saver()
        saver.finished.connect(lambda: finish("saved"))
        camera = QtCore.QTimer()
        camera.setInterval(5)
        sent = [0]

        def grab() -> None:
            if side == "qthread":
                saver.frames.put(made[sent[0] % len(made)])
            sent[0] += 1
            if sent[0] == frames:
                camera.stop()
                saver.frames.put(None)

        camera.timeout.connect(grab)

        def begin() -> None:
            saver.start()
            camera.start()

    def go() -> None:
        clock["start"] = time.perf_counter()
        tick.start()
        begin()

    QtCore.QTimer.singleShot(0, go)
    app.exec()
    intervals = sorted((b - a) * 1e3 for a, b in itertools.pairwise(ticks))
    outcome["ticks"] = len(intervals)
    if intervals:
        outcome.update(p50_ms=statistics.median(intervals),
                       p99_ms=intervals[min(len(intervals) - 1, int(len(intervals) * 0.99))],
                       max_ms=intervals[-1])
    return outcome


def _run(side: str, frames: int, directory: str, tick_h5: bool) -> dict[str, object]:
    path = os.path.join(directory, f"qt-{side}.h5")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", side,
                           "--frames", str(frames), "--path", path,
                           *(["--tick-h5"] if tick_h5 else [])],
                          capture_output=True, text=True, check=True, timeout=600)
    if os.path.exists(path):
        os.remove(path)
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--tick-h5", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.frames, args.path, args.tick_h5)))
        return 0
    directory = tempfile.mkdtemp(dir=args.dir)
    cases = [(side, tick) for tick in ("plain", "h5py") for side in SIDES]
    runs: dict[str, list[dict[str, object]]] = {f"{side} {tick}": [] for side, tick in cases}
    _run("bgio", 20, directory, False)  # warm up (imports, the disk)
    for round_ in range(args.repeat):
        for side, tick in cases if round_ % 2 == 0 else cases[::-1]:
            runs[f"{side} {tick}"].append(_run(side, args.frames, directory, tick == "h5py"))
    os.rmdir(directory)
    print(f"{args.frames} gzip-4 frames of 512x512 uint16, one per 5 ms, Qt offscreen; a "
          f"{TICK_MS} ms timer's intervals (ms). Medians of {args.repeat} [min-max]:")
    summary: dict[str, dict[str, float]] = {}
    for side, results in runs.items():
        line, summary[side] = [], {}
        for key in ("p50_ms", "p99_ms", "max_ms", "seconds"):
            values = [float(result[key]) for result in results]  # type: ignore[arg-type]
            summary[side][key] = statistics.median(values)
            line.append(f"{key} {statistics.median(values):.1f} "
                        f"[{min(values):.1f}-{max(values):.1f}]")
        print(f"  {side:14s} " + ", ".join(line))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"runs": runs, "medians": summary}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
