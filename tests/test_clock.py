"""The injectable clock: timers and waits on the system clock and on a manual one."""

from __future__ import annotations

import threading

import pytest
from pihub_testing import wait_for

from pihub.clock import ManualClock, SystemClock


def test_manual_timers_run_at_their_due_time_in_order() -> None:
    clock = ManualClock(start=10.0)
    seen: list[tuple[str, float]] = []
    clock.call_later(0.5, lambda: seen.append(("b", clock.now())))
    clock.call_later(0.2, lambda: seen.append(("a", clock.now())))
    clock.call_later(0.2, lambda: seen.append(("a2", clock.now())))  # ties run in scheduling order
    clock.advance(0.1)
    assert seen == []
    clock.advance(0.4)
    assert seen == [("a", 10.2), ("a2", 10.2), ("b", 10.5)]
    assert clock.now() == 10.5


def test_a_timer_scheduled_by_a_callback_runs_in_the_same_advance() -> None:
    clock = ManualClock()
    seen: list[float] = []

    def first() -> None:
        seen.append(clock.now())
        clock.call_later(0.3, lambda: seen.append(clock.now()))

    clock.call_later(0.1, first)
    clock.advance(1.0)
    assert seen == [0.1, pytest.approx(0.4)]
    assert clock.now() == 1.0


def test_cancelled_timers_never_run_and_cancel_says_whether_it_stopped_one() -> None:
    clock = ManualClock()
    seen: list[int] = []
    t = clock.call_later(1, seen.append, 1)
    assert t.active and clock.pending() == [1.0]
    assert t.cancel() is True
    assert t.cancel() is False
    clock.advance(2)
    assert seen == [] and clock.pending() == []
    done = clock.call_later(0, seen.append, 2)
    clock.advance(0)
    assert seen == [2] and done.fired and done.cancel() is False


def test_a_failing_callback_is_logged_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    seen: list[int] = []
    clock.call_later(1, lambda: 1 / 0)
    clock.call_later(1, seen.append, 1)
    clock.advance(1)
    assert seen == [1]
    assert any("timer callback" in r.getMessage() for r in caplog.records)


def test_time_never_goes_back() -> None:
    with pytest.raises(ValueError, match="only moves forward"):
        ManualClock().advance(-1)


def test_manual_wait_ends_when_time_passes_or_the_event_is_set() -> None:
    clock = ManualClock()
    stopping = threading.Event()
    results: list[bool] = []
    t = threading.Thread(target=lambda: results.append(clock.wait(stopping, 5.0)))
    t.start()
    assert wait_for(lambda: clock.waiters == 1)
    clock.advance(4.9)
    assert results == [] and clock.waiters == 1
    clock.advance(0.1)
    t.join(5)
    assert results == [False]

    t = threading.Thread(target=lambda: results.append(clock.wait(stopping, 5.0)))
    t.start()
    assert wait_for(lambda: clock.waiters == 1)
    stopping.set()
    t.join(5)
    assert results == [False, True]


def test_system_clock_runs_timers_on_its_thread_and_waits_for_real() -> None:
    clock = SystemClock()
    fired = threading.Event()
    where: list[str] = []
    late = clock.call_later(60, where.append, "never")
    clock.call_later(0.01, lambda: (where.append(threading.current_thread().name), fired.set()))
    assert fired.wait(5)
    assert where == ["pihub-timer"]
    assert late.cancel()
    assert clock.wait(fired, 0) is True
    assert clock.wait(threading.Event(), 0) is False
    assert clock.now() <= clock.now()
