"""A window that saves camera frames with bgio: a start button, a progress bar, a status line.

    python docs/examples/qt_frames.py [--frames N] [--path F.h5] [--auto]

A timer stands in for the camera: every ``--every`` ms it hands one
512 x 512 uint16 frame to a :class:`bgio.h5.FrameWriter` (gzip level 4,
preset 4). The GUI thread only appends (microseconds each): compression
and the stores run in bgio's threads, the progress bar follows the
writer's progress signals (:class:`bgio.qt.WriteSignals`, delivered in
the GUI thread), and the last frame is followed by ``close(wait=False)``
so the window stays responsive while the backlog is stored. ``--auto``
presses Start itself and quits once the file is saved (for a run with no
screen: ``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from PySide6 import QtCore, QtWidgets

import bgio.h5
import bgio.qt

SHAPE = (512, 512)


def camera_frame(index: int) -> np.ndarray:
    """Frame ``index`` of the stand-in camera (Poisson noise, so gzip has work to do)."""
    return np.random.default_rng(index).poisson(200, size=SHAPE).astype(np.uint16)


class SaverWindow(QtWidgets.QWidget):
    """Start saves ``frames`` camera frames to ``path``; ``saved`` says how it ended."""

    #: The writer's last progress record once the file is closed, or the error.
    saved = QtCore.Signal(object)

    def __init__(self, path: str, frames: int, every_ms: int = 5, priority: int = 4) -> None:
        super().__init__()
        self.setWindowTitle("bgio: saving frames")
        self._path, self._frames, self._priority = path, frames, priority
        # Frames made before the run: the camera's cost is not the GUI's here.
        self._made = [camera_frame(index) for index in range(min(frames, 8))]
        self._writer: bgio.h5.FrameWriter | None = None
        self._sent = 0
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setMaximum(frames)
        self.status = QtWidgets.QLabel("ready")
        layout = QtWidgets.QVBoxLayout(self)
        for widget in (self.start_button, self.bar, self.status):
            layout.addWidget(widget)
        self._camera = QtCore.QTimer(self)
        self._camera.setInterval(every_ms)
        self._camera.timeout.connect(self._grab)

    def start(self) -> None:
        """Open the file and start the camera."""
        self.start_button.setEnabled(False)
        if os.path.exists(self._path):
            os.remove(self._path)
        self._writer = bgio.h5.FrameWriter(self._path, "frames", SHAPE, "uint16",
                                           compression="gzip", compression_opts=4,
                                           priority=self._priority)
        signals = bgio.qt.WriteSignals(self._writer, interval=0.05, parent=self)
        signals.progress.connect(self._show)
        signals.finished.connect(self._done)
        signals.failed.connect(self._done)
        self._sent = 0
        self._camera.start()

    def _grab(self) -> None:
        assert self._writer is not None
        self._writer.append(self._made[self._sent % len(self._made)])
        self._sent += 1
        if self._sent == self._frames:
            self._camera.stop()
            self.status.setText(f"{self._frames} frames taken; storing the rest")
            self._writer.close(wait=False)  # the GUI goes on while the backlog is stored

    def _show(self, progress: bgio.WriteProgress) -> None:
        self.bar.setValue(progress.frames_done or 0)
        if self._sent < self._frames:
            self.status.setText(f"{self._sent} frames taken, {progress.frames_done} stored")

    def _done(self, outcome: object) -> None:
        if isinstance(outcome, BaseException):
            self.status.setText(f"failed: {outcome}")
        else:
            self.status.setText(f"saved {self._frames} frames to {self._path}")
        self.start_button.setEnabled(True)
        self.saved.emit(outcome)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--every", type=int, default=5, help="ms between camera frames")
    parser.add_argument("--path", default=os.path.join(tempfile.gettempdir(), "bgio-frames.h5"))
    parser.add_argument("--auto", action="store_true", help="start at once, quit when saved")
    args = parser.parse_args(argv)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    window = SaverWindow(args.path, args.frames, args.every)
    outcome: list[object] = []
    window.saved.connect(outcome.append)
    window.show()
    if args.auto:
        window.saved.connect(lambda _: app.quit())
        QtCore.QTimer.singleShot(0, window.start)
    app.exec()
    if args.auto:
        print(window.status.text())
        return 0 if outcome and not isinstance(outcome[0], BaseException) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
