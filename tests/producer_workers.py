"""Worker processes for the producer tests (run in ``spawn`` subprocesses, so importable).

Each frame and each frame's events are made from their index alone, so
the test knows exactly what the file must hold.
"""

from __future__ import annotations

import numpy as np

FRAME_SHAPE = (16, 24)
FEATURES = {"area": ((), "<f4"), "trace": ((3,), "<u2")}


def frame(index: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 65535, FRAME_SHAPE, dtype="<u2")


def events(index: int) -> dict[str, np.ndarray]:
    count = index % 3
    rng = np.random.default_rng(1000 + index)
    return {"area": rng.normal(50, 5, count).astype("<f4"),
            "trace": rng.integers(0, 65535, (count, 3), dtype="<u2")}


def write_frames(producer, indices: list[int]) -> None:
    """Every other frame filled in place in shared memory, the rest copied in."""
    for position, index in enumerate(indices):
        if position % 2:
            with producer.acquired() as shared:
                shared[...] = frame(index)
                producer.write_at(index, shared)
        else:
            producer.write_at(index, frame(index))
    producer.flush()


def append_events(producer, indices: list[int]) -> None:
    for index in indices:
        producer.append(index, events(index))
    producer.flush()


def write_wrong_shape(producer, queue) -> None:
    """Report what a refused write raises here, in the worker."""
    try:
        producer.write_at(0, np.zeros((3, 3), "<u2"))
    except Exception as exc:  # noqa: BLE001 - the test checks what it was
        queue.put((type(exc).__name__, str(exc)))
    else:
        queue.put(None)
