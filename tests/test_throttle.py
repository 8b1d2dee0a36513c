"""Pacing maths with a fake clock: no sleeping, exact figures."""

from __future__ import annotations

import pytest

from bgio import BackgroundIOPriority
from bgio.throttle import IDLE_SLACK, MAX_CREDIT, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(throttle: Throttle, clock: FakeClock, chunks: int, busy: float, nbytes: int = 1000,
        oversleep: float = 0.0, late: float = 0.0):
    """Drive the throttle as the worker does; return (total busy, total wall, waits).

    Each pause lasts ``oversleep`` times longer than asked; each write
    returns ``late`` seconds after its work is done (the interpreter lock
    taken back late), which is not busy time.
    """
    start = clock.now
    waits = []
    for _ in range(chunks):
        wait = throttle.delay()
        assert wait >= 0
        waits.append(wait)
        clock.now += wait * (1 + oversleep)
        started = clock.now
        clock.now += busy + late
        throttle.record(nbytes, started, clock.now, busy=busy)
    return chunks * busy, clock.now - start, waits


@pytest.mark.parametrize("pct", [20, 45, 50, 72, 80, 99])
def test_duty_cycle_is_the_requested_percentage(pct):
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, pct), clock=clock)
    busy, wall, waits = run(t, clock, 200, busy=0.01)
    # Nothing waits after the last chunk, so the busy share is exact up to that one pause.
    expected_wall = busy * 100 / pct - 0.01 * (100 - pct) / pct
    assert wall == pytest.approx(expected_wall)
    assert waits[0] == 0.0


def test_first_pause_is_the_full_pause():
    # The older module slept 5x too little in its first window.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 20), clock=clock)
    _, _, waits = run(t, clock, 2, busy=1.0)
    assert waits == [0.0, pytest.approx(4.0)]


def test_full_bandwidth_never_waits():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100), clock=clock)
    _, _, waits = run(t, clock, 50, busy=0.3)
    assert waits == [0.0] * 50


def test_window_averages_over_the_last_chunks():
    # One slow chunk followed by fast ones: the slow chunk's pause is spread
    # over the window, and forgotten once it has left the window.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 3), clock=clock)
    run(t, clock, 1, busy=3.0)
    _, _, waits = run(t, clock, 5, busy=0.0)
    assert waits[0] == pytest.approx(3.0)  # owed after the slow chunk
    assert waits[1:] == [0.0, 0.0, 0.0, 0.0]


def test_overhead_and_oversleeping_count_as_idle_time():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50), clock=clock)
    t.record(1000, 0.0, 1.0, busy=1.0)
    clock.now = 1.5  # half a second of overhead since the write
    assert t.delay() == pytest.approx(0.5)
    clock.now = 2.7  # overslept
    assert t.delay() == 0.0


@pytest.mark.parametrize("pct", [20, 50, 80])
def test_oversleeping_is_made_up_by_the_pauses_after_it(pct):
    # Every pause runs 25 % long (a loaded machine): the schedule is kept,
    # so the pauses after each one are shorter and the busy share holds.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, pct), clock=clock)
    busy, wall, _ = run(t, clock, 500, busy=0.01, oversleep=0.25)
    assert busy / wall == pytest.approx(pct / 100, rel=0.01)


def test_a_late_return_is_not_busy_and_is_made_up():
    # Each write hands the interpreter lock back 2 ms late (a busy main
    # thread): the chunk's 1 ms of work pays for 2 ms at 50 %, so no pause
    # is owed, and the writer runs at the rate the late returns allow.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50), clock=clock)
    busy, wall, waits = run(t, clock, 100, busy=0.001, late=0.002)
    assert waits == [0.0] * 100
    assert busy / wall == pytest.approx(1 / 3)


def test_lateness_earns_at_most_a_smoothing_window_of_credit():
    # A pause overslept by a minute: the chunks after it skip their pauses
    # until the credit, a window's pauses (here 2 of 1 s), is used up.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 2), clock=clock)
    t.record(1000, 0.0, 1.0, busy=1.0)
    clock.now = 1.0
    assert t.delay() == pytest.approx(1.0)
    t.record(1000, 60.0, 61.0, busy=1.0)
    clock.now = 61.0
    assert t.delay() == 0.0
    t.record(1000, 61.0, 62.0, busy=1.0)
    clock.now = 62.0
    assert t.delay() == 0.0
    t.record(1000, 62.0, 63.0, busy=1.0)
    clock.now = 63.0
    assert t.delay() == pytest.approx(1.0)  # owed again, in full


def _late_after_a_pause(t: Throttle, clock: FakeClock, late: float, cpu_wait: float):
    """A pause overslept by ``late`` seconds, ``cpu_wait`` of them waiting for a CPU, then
    one chunk of 0.1 ms; return the time that took."""
    pause = t.delay()
    assert pause > 0
    clock.now += pause + late
    t.record(1000, clock.now, clock.now + 0.0001, busy=0.0001, cpu_wait=cpu_wait)
    clock.now += 0.0001
    return pause + late + 0.0001


@pytest.mark.parametrize("late, cpu_wait", [(0.005, 0.0), (0.08, 0.08)])
def test_lateness_is_made_up_whatever_the_window(late, cpu_wait):
    # A tiny chunk late (a wake-up that waited for a CPU, for a time slice
    # or for tenths of a second): its pauses are far shorter than the
    # lateness, yet it is made up in full.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 1), clock=clock)
    busy, wall, _ = run(t, clock, 10, busy=0.0001)
    wall += _late_after_a_pause(t, clock, late, cpu_wait)
    busy2, wall2, waits = run(t, clock, 2000, busy=0.0001)
    assert waits[0] == 0.0
    assert (busy + busy2 + 0.0001) / (wall + wall2) == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("late, cpu_wait, made_up", [
    (0.08, 0.0, IDLE_SLACK),  # an oversleep, not for want of a CPU
    (0.08, 0.03, 0.03),  # partly
    (0.3, 0.3, MAX_CREDIT),  # a longer stall: to MAX_CREDIT, no more
])
def test_lateness_is_made_up_to_a_bound(late, cpu_wait, made_up):
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 1), clock=clock)
    run(t, clock, 10, busy=0.0001)
    _late_after_a_pause(t, clock, late, cpu_wait)
    _, _, waits = run(t, clock, 4000, busy=0.0001)
    # Each chunk skips its pause of 0.1 ms until the credit is used up.
    skipped = next(index for index, wait in enumerate(waits) if wait > 0)
    assert skipped == pytest.approx(made_up / 0.0001, rel=0.01)


def test_waiting_for_a_cpu_adds_up_while_behind_schedule():
    # A thread sharing a CPU: each chunk waits 0.2 ms for it, so the worker
    # falls behind without any pause; what it owes is kept up to
    # MAX_CREDIT (not IDLE_SLACK) and made up once the CPU is its own.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 1), clock=clock)
    for _ in range(1000):  # 0.1 ms busy + 0.2 ms waiting: 0.1 ms owed a chunk
        assert t.delay() == 0.0
        started = clock.now
        clock.now += 0.0003
        t.record(1000, started, clock.now, busy=0.0001, cpu_wait=0.0002)
    _, _, waits = run(t, clock, 2000, busy=0.0001)
    skipped = next(index for index, wait in enumerate(waits) if wait > 0)
    assert skipped == pytest.approx(MAX_CREDIT / 0.0001, rel=0.01)


def test_a_slower_profile_after_an_unpaced_one_inherits_no_credit():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100), clock=clock)
    run(t, clock, 200, busy=0.001)  # 0.2 s flat out
    t.profile = BackgroundIOPriority(0, 1000, 50)
    _, _, waits = run(t, clock, 3, busy=0.001)
    assert waits[1] == pytest.approx(0.001)  # paced from its first chunk


def test_gaps_of_a_slow_source_earn_no_more_than_the_idle_slack():
    # Gaps shorter than IDLE_SLACK (a camera between frames) count as late,
    # not idle, but no CPU was waited for: at most IDLE_SLACK is made up.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 1), clock=clock)
    for _ in range(50):
        clock.now += t.delay() + 0.015
        started = clock.now
        clock.now += 0.001
        t.record(1000, started, clock.now, busy=0.001)
    _, _, waits = run(t, clock, 100, busy=0.001)
    skipped = next(index for index, wait in enumerate(waits) if wait > 0)
    assert skipped <= IDLE_SLACK / 0.001 + 1


@pytest.mark.parametrize("cpu_wait", [0.0, 0.025])
def test_a_preemption_is_not_idle_time(cpu_wait):
    # Behind schedule (no pause asked for), then 25 ms before the next
    # chunk: more than IDLE_SLACK. Waiting for data, that is idle and the
    # credit is gone; waiting for a CPU (the run queue says so), it stays.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 1), clock=clock)
    run(t, clock, 10, busy=0.0001)
    _late_after_a_pause(t, clock, 0.08, 0.08)
    run(t, clock, 100, busy=0.0001)  # catching up: 10 ms of the 80 made up
    assert t.delay() == 0.0
    clock.now += 0.025
    t.record(1000, clock.now, clock.now + 0.0001, busy=0.0001, cpu_wait=cpu_wait)
    clock.now += 0.0001
    _, _, waits = run(t, clock, 2000, busy=0.0001)
    skipped = next(index for index, wait in enumerate(waits) if wait > 0)
    if cpu_wait:
        # 80 ms late, 10 ms of it made up, 25 ms more: all within MAX_CREDIT.
        assert skipped == pytest.approx((0.08 - 0.01 + 0.025) / 0.0001, rel=0.01)
    else:
        assert skipped == 0


def test_idle_time_earns_no_wait_and_no_credit():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 20), clock=clock)
    t.record(1000, 0.0, 1.0, busy=1.0)
    clock.now = 100.0
    assert t.delay() == 0.0
    t.record(1000, 100.0, 101.0, busy=1.0)  # no pause was asked: it waited for data
    clock.now = 101.0
    assert t.delay() == pytest.approx(4.0)


def test_busy_time_leaves_out_one_wake_up_latency_never_cpu_time():
    t = Throttle(BackgroundIOPriority(0, 1000, 50))
    assert t.busy_of(wall=0.006, cpu=0.001) == pytest.approx(0.006)  # nothing measured yet
    for _ in range(5):
        t.note_wake(0.001, 0.006)  # every pause wakes 5 ms late
    assert t.latency == pytest.approx(0.005)
    assert t.busy_of(wall=0.006, cpu=0.001) == pytest.approx(0.001)
    assert t.busy_of(wall=0.006, cpu=0.004) == pytest.approx(0.004)  # CPU time stays busy
    assert t.busy_of(wall=0.020, cpu=0.001) == pytest.approx(0.015)  # the device's time too
    assert t.busy_of(wall=0.020, cpu=0.001, waited=0.015) == pytest.approx(0.001)
    # Runnable but waiting for a CPU (other processes): not busy either.
    assert t.busy_of(wall=0.020, cpu=0.001, queued=0.015) == pytest.approx(0.001)


def test_max_rate_paces_to_the_byte_rate():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100, max_rate=1e6), clock=clock)
    _, wall, waits = run(t, clock, 101, busy=0.0001, nbytes=100_000)
    # 100 chunks of 100 kB after the first must take 0.1 s each: 10 s for 10 MB.
    assert wall == pytest.approx(10.0001, rel=1e-6)
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(0.0999)


def test_max_rate_gives_no_credit_for_idle_time():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100, max_rate=1000.0), clock=clock)
    t.record(1000, 0.0, 0.0, busy=0.0)
    clock.now = 60.0  # a minute idle
    assert t.delay() == 0.0
    t.record(1000, 60.0, 60.0, busy=0.0)
    assert t.delay() == pytest.approx(1.0)  # no burst above one chunk


def test_duty_cycle_and_rate_combine_taking_the_longer_wait():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, max_rate=100.0), clock=clock)
    t.record(1000, 0.0, 1.0, busy=1.0)
    clock.now = 1.0
    assert t.delay() == pytest.approx(9.0)  # rate wins: 1000 bytes at 100 B/s
    t2 = Throttle(BackgroundIOPriority(0, 1000, 10, max_rate=1e9), clock=clock)
    t2.record(1000, 0.0, 1.0, busy=1.0)
    assert t2.delay() == pytest.approx(9.0)  # duty cycle wins


def test_profile_may_change_between_chunks():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 50, 5), clock=clock)
    run(t, clock, 5, busy=1.0)
    assert t.delay() == pytest.approx(1.0)
    t.profile = BackgroundIOPriority(0, 1000, 25, 2)
    clock.now += 1.0  # the pause
    clock.now += 1.0
    t.record(1000, clock.now - 1.0, clock.now, busy=1.0)  # paced at 25 % from now on
    assert t.delay() == pytest.approx(3.0)


def test_rate_over_the_window_since_a_time():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100, 2), clock=clock)
    assert t.rate() is None
    t.record(100, 0.0, 1.0, busy=1.0)
    t.record(300, 1.0, 2.0, busy=1.0)
    assert t.rate() == pytest.approx(200.0)
    assert t.rate(since=1.0) == pytest.approx(300.0)
    assert t.rate(since=5.0) is None


@pytest.mark.parametrize("pct", [20, 50, 80, 95])
def test_short_pauses_add_up_instead_of_being_lost(pct):
    # A fast device: 0.1 ms per chunk owes pauses far below min_pause each;
    # they are taken together, and the duty cycle holds.
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, pct), clock=clock, min_pause=0.0005)
    busy, wall, waits = run(t, clock, 2000, busy=0.0001)
    assert all(w == 0.0 or w >= 0.0005 for w in waits)
    assert busy / wall == pytest.approx(pct / 100, rel=0.02)


def test_min_pause_applies_to_the_rate_cap_without_losing_time():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 100, max_rate=1e7), clock=clock, min_pause=0.001)
    _, wall, waits = run(t, clock, 1001, busy=0.0, nbytes=1000)  # 1 MB at 10 MB/s
    assert all(w == 0.0 or w >= 0.001 for w in waits)
    assert wall == pytest.approx(0.1, abs=0.0011)


def test_kept_chunks_are_bounded():
    clock = FakeClock()
    t = Throttle(BackgroundIOPriority(0, 1000, 99.99, 5), clock=clock, min_pause=10.0)
    run(t, clock, 10_000, busy=1e-9)
    assert len(t._recent) == 5
