"""A user's program, checked with ``mypy --strict`` (tests/test_typing.py): bgio's public API
as a strict user types it."""

from __future__ import annotations

import concurrent.futures
import io
import os
import tempfile

import numpy as np

import bgio
import bgio.h5


def save(directory: str) -> int:
    frames = np.zeros((4, 64, 64), np.uint16)
    handle: bgio.BackgroundWriteProcess = bgio.bgwrite(os.path.join(directory, "a.raw"), frames,
                                                       priority=7)
    done, _ = concurrent.futures.wait([handle], timeout=30)
    written: int = handle.result()
    with bgio.Writer(os.path.join(directory, "b.raw"), priority=4) as writer:
        for frame in frames:
            writer.write(frame)
    with bgio.open(os.path.join(directory, "c.raw"), priority=7) as binary:
        count: int = binary.write(frames[0])
    with bgio.open(os.path.join(directory, "d.txt"), "w", encoding="utf-8") as text:
        characters: int = text.write("text\n")
    assert isinstance(text, io.TextIOWrapper)
    with bgio.h5.FrameWriter(os.path.join(directory, "e.h5"), "frames", (64, 64),
                             "uint16") as frame_writer:
        frame_writer.append(frames[0])
    # Every kind of data and source the calls take at run time:
    bgio.bgwrite(os.path.join(directory, "f.raw"), [frames[0], b"x", memoryview(b"y")]).result()
    bgio.bgwrite(os.fsencode(os.path.join(directory, "g.raw")),
                 (frame for frame in frames)).result()
    with open(os.path.join(directory, "h.raw"), "wb") as stream:
        bgio.bgwrite(stream, bytearray(10)).result()
    read: bgio.BackgroundRead = bgio.bgread(os.path.join(directory, "a.raw"),
                                            np.int64(100), offset=np.int64(2))
    with open(os.path.join(directory, "a.raw"), "rb", buffering=0) as raw:
        bgio.bgread(raw, into=np.zeros(10, np.uint8)).result()
    data = read.result()
    return written + count + characters + len(done) + len(data)


if __name__ == "__main__":
    print(save(tempfile.mkdtemp()))
