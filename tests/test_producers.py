"""Producers in other processes: ``writer.producer()`` of FrameWriter and RecordWriter.

The fast tests use a producer pickled and unpickled in this process (it
connects back over its socket exactly as in another process); the slow
ones run producers in ``spawn``ed and ``fork``ed worker processes.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading

import h5py
import numpy as np
import pytest
from producer_workers import (
    FEATURES,
    FRAME_SHAPE,
    append_events,
    events,
    frame,
    write_frames,
    write_wrong_shape,
)

import bgio
import bgio.h5
from bgio.h5.producers import FrameProducer, RecordProducer

BACKENDS = ["thread", pytest.param("process", marks=pytest.mark.slow)]


_made = []


@pytest.fixture(autouse=True)
def _disconnect_producers():
    """Each test's producers disconnect at its end (their service threads end too)."""
    yield
    while _made:
        _made.pop().close()


def elsewhere(producer):
    """The producer as another process gets it: pickled, no connection of its own."""
    copy = pickle.loads(pickle.dumps(producer))
    _made.append(copy)
    return copy


def frames_writer(path, backend="thread", **options):
    return bgio.h5.FrameWriter(path, "frames", FRAME_SHAPE, "<u2", priority=1,
                               backend=backend, **options)


def records_writer(path, backend="thread", **options):
    return bgio.h5.RecordWriter(path, "events", FEATURES, priority=1, backend=backend,
                                **options)


def stored_frames(path):
    with h5py.File(path, "r") as file:
        return file["frames"][...]


def assert_frames(path, count):
    stored = stored_frames(path)
    assert stored.shape == (count, *FRAME_SHAPE)
    for index in range(count):
        np.testing.assert_array_equal(stored[index], frame(index), err_msg=f"frame {index}")


def assert_events(path, count):
    with h5py.File(path, "r") as file:
        group = file["events"]
        expected = [events(index) for index in range(count)]
        np.testing.assert_array_equal(group["nevents"][...],
                                      [len(each["area"]) for each in expected])
        for name in FEATURES:
            np.testing.assert_array_equal(
                group[name][...], np.concatenate([each[name] for each in expected]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_out_of_order_store_every_frame_byte_exact(tmp_path, backend):
    path = tmp_path / "f.h5"
    with frames_writer(path, backend) as writer:
        producer = writer.producer(shared_frames=4)
        order = list(range(40))[::-1]
        threads = [threading.Thread(target=write_frames, args=(elsewhere(producer), order[k::3]))
                   for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert writer.frames_written == 40  # (the writer process's producers: counted at close)
    assert writer.missing == []
    assert_frames(path, 40)


@pytest.mark.slow
def test_appends_here_go_after_what_producers_wrote_in_the_writer_process(tmp_path):
    path = tmp_path / "f.h5"
    with frames_writer(path, "process") as writer:
        writer.append(frame(0))
        producer = elsewhere(writer.producer())
        producer.write_at(1, frame(1))
        producer.append(frame(2))
        producer.flush()
        writer.append(frame(3))  # after the producer's frames, not over them
        with pytest.raises(ValueError, match="shared_frames must be an int >= 1"):
            writer.producer(shared_frames=0)
    assert (writer.frames_written, writer.extent) == (4, 4)
    assert_frames(path, 4)


@pytest.mark.slow
def test_frames_a_producer_never_wrote_are_reported_in_the_writer_process(tmp_path):
    path = tmp_path / "f.h5"
    writer = frames_writer(path, "process")
    producer = elsewhere(writer.producer())
    producer.write_at(3, frame(3))
    producer.flush()
    with pytest.warns(RuntimeWarning, match=r"3 frame\(s\) of 4 never written"):
        writer.close()
    assert (writer.missing, writer.extent) == ([0, 1, 2], 4)


def test_append_from_a_producer_goes_after_the_highest_written(tmp_path):
    path = tmp_path / "f.h5"
    with frames_writer(path) as writer:
        writer.append(frame(0))
        producer = elsewhere(writer.producer())
        producer.append(np.stack([frame(1), frame(2)]))
        producer.flush()
        writer.append(frame(3))
        assert writer.extent == 4
    assert_frames(path, 4)


def test_a_frame_written_goes_back_to_the_shared_memory(tmp_path):
    with frames_writer(tmp_path / "f.h5", chunk_frames=1, copy=False) as writer:
        producer = elsewhere(writer.producer(shared_frames=1))
        for index in range(5):  # one shared frame: each write must give it back
            shared = producer.acquire(timeout=30)
            shared[...] = frame(index)
            producer.write_at(index, shared)
        producer.flush()
    assert_frames(tmp_path / "f.h5", 5)


def test_no_free_shared_frame_blocks_times_out_or_raises(tmp_path):
    with frames_writer(tmp_path / "f.h5") as writer:
        producer = elsewhere(writer.producer(shared_frames=2))
        held = [producer.acquire(), producer.acquire()]
        with pytest.raises(bgio.QueueFull, match="all 2 frames of the pool are in use"):
            producer.acquire(block=False)
        with pytest.raises(bgio.QueueFull, match="after 0.05 s"):
            producer.acquire(timeout=0.05)
        with pytest.raises(bgio.QueueFull):
            producer.write_at(0, frame(0), block=False)  # a copy needs a free frame too
        came = threading.Event()
        got = []

        def wait_for_one() -> None:
            got.append(producer.acquire(timeout=30))
            came.set()

        waiter = threading.Thread(target=wait_for_one)
        waiter.start()
        producer.release(held.pop())
        assert came.wait(30)
        waiter.join()
        producer.release(got[0])
        with producer.acquired() as shared:  # released at the end: never written
            pass
        producer.release(held.pop())
        assert shared.shape == FRAME_SHAPE
        producer.write_at(0, frame(0), block=False)  # both free again


def test_release_of_a_frame_not_held_is_refused(tmp_path):
    with frames_writer(tmp_path / "f.h5") as writer:
        producer = elsewhere(writer.producer())
        shared = producer.acquire()
        producer.write_at(0, shared)
        with pytest.raises(ValueError, match="not a frame this producer acquired"):
            producer.release(shared)
        with pytest.raises(ValueError, match="not a frame this producer acquired"):
            producer.release(np.zeros(FRAME_SHAPE, "<u2"))


def test_the_writers_checks_raise_in_the_producer(tmp_path):
    with frames_writer(tmp_path / "f.h5") as writer:
        producer = elsewhere(writer.producer())
        with pytest.raises(ValueError, match="shape"):
            producer.write_at(0, np.zeros((3, 3), "<u2"))
        with pytest.raises(TypeError, match="cannot be stored as uint16 without loss"):
            producer.write_at(0, np.zeros(FRAME_SHAPE, "<f8"))
        with pytest.raises(ValueError, match="index must be an int >= 0"):
            producer.write_at(-1, frame(0))
        with pytest.raises(TypeError, match="index must be an int"):
            producer.write_at("0", frame(0))
        producer.write_at(0, frame(0))
    assert_frames(tmp_path / "f.h5", 1)


def test_after_close_producers_are_refused(tmp_path):
    writer = frames_writer(tmp_path / "f.h5")
    connected = elsewhere(writer.producer())
    connected.write_at(0, frame(0))
    late = elsewhere(writer.producer())
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        connected.write_at(1, frame(1))
    with pytest.raises(bgio.BgioError, match="cannot reach the writer"):
        late.write_at(1, frame(1))
    with pytest.raises(ValueError, match="producer\\(\\) of a closed FrameWriter"):
        writer.producer()
    assert_frames(tmp_path / "f.h5", 1)


def test_a_store_that_fails_is_reported_to_the_producer(tmp_path):
    file = h5py.File(tmp_path / "f.h5", "w")
    writer = bgio.h5.FrameWriter(file, "frames", FRAME_SHAPE, "<u2", chunk_frames=2)
    producer = elsewhere(writer.producer())
    producer.write_at(0, frame(0))
    file.close()  # the store of the chunk, once complete, fails
    producer.write_at(1, frame(1))
    with pytest.raises(RuntimeError, match="identifier"):
        producer.flush()
    with pytest.raises(bgio.BgioError, match="a write of this producer failed: RuntimeError"
                       ) as caught:
        producer.write_at(2, frame(2))
    assert isinstance(caught.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError):
        writer.close()


def test_a_frame_held_when_a_failure_is_known_goes_back_to_the_shared_memory(tmp_path):
    file = h5py.File(tmp_path / "f.h5", "w")
    writer = bgio.h5.FrameWriter(file, "frames", FRAME_SHAPE, "<u2", chunk_frames=1)
    producer = elsewhere(writer.producer(shared_frames=2))
    shared = producer.acquire()
    file.close()
    producer.write_at(0, frame(0))  # its store fails
    with pytest.raises(RuntimeError, match="identifier"):
        producer.flush()
    with pytest.raises(bgio.BgioError, match="a write of this producer failed"):
        producer.write_at(1, shared)  # refused before it is sent: the slot is let go
    other = elsewhere(writer.producer())
    assert len([other.acquire(block=False), other.acquire(block=False)]) == 2
    with pytest.raises(RuntimeError):
        writer.close()


def test_records_from_several_producers_in_any_order(tmp_path):
    path = tmp_path / "r.h5"
    with records_writer(path) as writer:
        producer = writer.producer()
        order = list(range(30))[::-1]
        threads = [threading.Thread(target=append_events, args=(elsewhere(producer),
                                                                order[k::2]))
                   for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert writer.frames_written == 30
    assert_events(path, 30)


def test_record_producer_errors(tmp_path):
    with records_writer(tmp_path / "r.h5") as writer:
        producer = elsewhere(writer.producer())
        producer.append(0, events(0))
        with pytest.raises(ValueError, match="frame 0 was already appended"):
            producer.append(0, events(0))
        with pytest.raises(TypeError, match="events must be a mapping"):
            producer.append(1, [1, 2])
        with pytest.raises(ValueError, match="frame_index must be an int >= 0"):
            producer.append(-1, events(1))
        producer.append(1, events(1))
    assert_events(tmp_path / "r.h5", 2)


def test_a_record_producer_waits_for_room(tmp_path):
    size = sum(array.nbytes for array in events(2).values())
    writer = records_writer(tmp_path / "r.h5", max_pending_bytes=size)
    producer = elsewhere(writer.producer())
    producer.append(2, events(2))  # held: frames 0 and 1 are missing
    with pytest.raises(bgio.QueueFull):
        producer.append(4, events(2), block=False)
    producer.append(0, events(0))  # the frame the others wait for always goes in
    producer.append(1, events(1))
    with pytest.warns(RuntimeWarning, match=r"1 frame\(s\) were dropped"):  # (the refused)
        writer.close()
    assert writer.dropped_frames == 1


def test_producers_are_picklable_and_say_what_they_feed(tmp_path):
    with frames_writer(tmp_path / "f.h5") as writer, \
            records_writer(tmp_path / "r.h5") as records:
        frames = writer.producer()
        assert isinstance(frames, FrameProducer)
        assert isinstance(records.producer(), RecordProducer)
        copy = elsewhere(frames)
        assert repr(copy) == f"<bgio.h5.FrameProducer for '{tmp_path / 'f.h5'}:/frames'>"
        assert copy.frame_shape == FRAME_SHAPE
        assert copy.dtype == np.dtype("<u2")
        with copy:
            copy.write_at(0, frame(0))
    assert_frames(tmp_path / "f.h5", 1)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_producers_in_spawned_processes(tmp_path, backend):
    spawn = multiprocessing.get_context("spawn")
    path, records_path = tmp_path / "f.h5", tmp_path / "r.h5"
    with frames_writer(path, backend) as writer, records_writer(records_path, backend) as rw:
        producer, events_producer = writer.producer(shared_frames=6), rw.producer()
        order = list(range(60))[::-1]
        workers = [spawn.Process(target=write_frames, args=(producer, order[k::3]))
                   for k in range(3)]
        workers += [spawn.Process(target=append_events, args=(events_producer, order[k::2]))
                    for k in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0] * 5
    assert_frames(path, 60)
    assert_events(records_path, 60)


@pytest.mark.slow
def test_an_error_is_raised_in_the_spawned_producer(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    with frames_writer(tmp_path / "f.h5") as writer:
        queue = spawn.Queue()
        worker = spawn.Process(target=write_wrong_shape, args=(writer.producer(), queue))
        worker.start()
        name, message = queue.get(timeout=120)
        worker.join(60)
    assert name == "ValueError"
    assert "shape" in message


@pytest.mark.slow
def test_a_producer_used_before_and_after_a_fork(tmp_path):
    fork = multiprocessing.get_context("fork")
    with frames_writer(tmp_path / "f.h5") as writer:
        producer = writer.producer()
        _made.append(producer)
        producer.write_at(0, frame(0))  # connected here before the fork
        worker = fork.Process(target=write_frames, args=(producer, [3, 2, 1]))
        worker.start()
        worker.join(60)
        assert worker.exitcode == 0
        producer.write_at(4, frame(4))  # this process's connection still works
        producer.flush()
    assert_frames(tmp_path / "f.h5", 5)


def _open_fds():
    import os
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_thread_that_ends_takes_its_connection_with_it(tmp_path):
    path = tmp_path / "f.h5"
    with frames_writer(path) as writer:
        producer = elsewhere(writer.producer())
        producer.write_at(0, frame(0))  # this thread's connection, kept
        before = _open_fds()
        threads = [threading.Thread(target=producer.write_at, args=(index, frame(index)))
                   for index in range(1, 21)]
        for thread in threads:
            thread.start()
            thread.join()
        # Each thread's client socket closed when the thread ended (the writer's side
        # closes when it reads the end: not necessarily yet). Kept, they would be 20 more.
        assert _open_fds() - before <= 20 + 2
        producer.write_at(21, frame(21))  # the producer goes on in this thread
    assert_frames(path, 22)


def _shared_memory_fds():
    import os
    found = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:bgio-frames")
        except OSError:
            pass  # (the listing's own fd, gone)
    return found


def _join_service_threads():
    for thread in threading.enumerate():
        if thread.name == "bgio-service-producers":
            thread.join(30)


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_closed_writers_shared_memory_goes_without_the_cyclic_collector(tmp_path):
    import gc

    _join_service_threads()  # earlier tests' (their producers closed at their end)
    gc.collect()
    before = _shared_memory_fds()
    gc.disable()
    try:
        writer = frames_writer(tmp_path / "f.h5")
        producer = pickle.loads(pickle.dumps(writer.producer(shared_frames=2)))
        producer.write_at(0, frame(0))
        assert _shared_memory_fds() > before  # the pool's, and the producer's mapping
        producer.close()
        writer.close()
        _join_service_threads()  # its client gone, it lets go of the service
        del writer, producer
        assert _shared_memory_fds() == before
    finally:
        gc.enable()
    assert_frames(tmp_path / "f.h5", 1)


def test_more_shared_frames_than_the_machine_has_memory_is_refused(tmp_path):
    with frames_writer(tmp_path / "f.h5") as writer:
        with pytest.raises(ValueError, match=r"^shared_frames: 1,000,000,000,000 frames of 768 "
                                             r"bytes take .* GiB of shared memory, more than "
                                             r"this machine's .* GiB$"):
            writer.producer(shared_frames=10 ** 12)
        writer.producer(shared_frames=4)  # (nothing was made by the refused call)


def test_a_pool_larger_than_memory_is_refused():
    with pytest.raises(ValueError, match=r"^count: 1,000,000,000 frames of 1,048,576 bytes"):
        bgio.FramePool((1024, 1024), "u1", 10 ** 9)
