"""Time, for every rule that depends on it: one injectable clock.

Debounce windows, press sequences, throttles, note-off timers, retry back-offs, poll
intervals and the hub's drain polling read time and wait through a :class:`Clock`. The
daemon uses :data:`SYSTEM` (``CLOCK_MONOTONIC``); tests and ``pihub replay`` hand the same
code a :class:`ManualClock` and move time themselves, so no test sleeps to let a window
pass and a recorded trace replays with its own timing.

The contract, for both clocks:

* :meth:`Clock.now` is monotonic seconds (a float; its origin is arbitrary);
* :meth:`Clock.wait` blocks the calling thread until a :class:`threading.Event` is set or
  ``timeout`` seconds of *this clock's* time have passed, and returns whether the event is
  set: backend loops use it for poll intervals and back-offs (``while not
  clock.wait(stopping, interval): poll()``);
* :meth:`Clock.call_later` runs a callable after a delay on the clock's timer thread (one
  thread for the whole process, started on first use) and returns a :class:`Timer` that
  can be cancelled. Callbacks must be short and must not block: they emit an event or
  schedule more work. An exception in one is logged and does not stop the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["SYSTEM", "Clock", "ManualClock", "SystemClock", "Timer"]

log = logging.getLogger("pihub.clock")


class Timer:
    """A pending :meth:`Clock.call_later` call."""

    __slots__ = ("_args", "_cancelled", "_fn", "due", "fired")

    def __init__(self, due: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        #: when it runs, in its clock's seconds.
        self.due = due
        #: True once the callable has been called.
        self.fired = False
        self._fn = fn
        self._args = args
        self._cancelled = False

    def cancel(self) -> bool:
        """Cancel it; True when it had not run yet (so it never will)."""
        if self.fired or self._cancelled:
            return False
        self._cancelled = True
        return True

    @property
    def active(self) -> bool:
        """Neither run nor cancelled."""
        return not (self.fired or self._cancelled)

    def _run(self) -> None:
        if self._cancelled:
            return
        self.fired = True
        try:
            self._fn(*self._args)
        except Exception:
            log.exception("timer callback %s failed", getattr(self._fn, "__qualname__", self._fn))


class Clock(Protocol):
    """What time-dependent code asks of time (see the module docstring)."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set or ``timeout`` seconds passed; ``event.is_set()``."""
        ...

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Call ``fn(*args)`` on the timer thread after ``delay`` seconds (0 or less: soon)."""
        ...


class _TimerQueue:
    """Timers ordered by due time; ties run in the order they were scheduled."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def push(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.due, next(self._seq), timer))

    def pop_due(self, now: float) -> Timer | None:
        """The earliest timer due at ``now`` or before (cancelled ones are dropped), else None."""
        while self._heap and self._heap[0][0] <= now:
            timer = heapq.heappop(self._heap)[2]
            if timer.active:
                return timer
        return None

    def next_due(self) -> float | None:
        """When the earliest live timer is due, or None."""
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None


class SystemClock:
    """``CLOCK_MONOTONIC`` time, real waits, and one ``pihub-timer`` thread for timers."""

    def __init__(self) -> None:
        self._queue = _TimerQueue()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """``event.wait(timeout)``."""
        return event.wait(max(0.0, timeout))

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """See :meth:`Clock.call_later`."""
        timer = Timer(self.now() + max(0.0, delay), fn, args)
        with self._cond:
            self._queue.push(timer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pihub-timer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._cond:
                timer = self._queue.pop_due(self.now())
                while timer is None:
                    due = self._queue.next_due()
                    self._cond.wait(None if due is None else max(0.0, due - self.now()))
                    timer = self._queue.pop_due(self.now())
            timer._run()


class ManualClock:
    """A clock that moves only when told to: for tests and for replaying recorded time.

    :meth:`advance` moves time forward, running each due timer at its own due time (so a
    timer scheduled by a callback within the step runs in the same step), and wakes the
    threads blocked in :meth:`wait` whose timeout has passed. Timers run on the thread
    that calls :meth:`advance`.

    Args:
        start: the initial :meth:`now`, in seconds.
    """

    #: seconds of real time between a waiter's checks of its event (a set Event does not
    #: notify this clock; only the event's owner knows it was set).
    POLL = 0.005

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._queue = _TimerQueue()
        self._cond = threading.Condition()
        self._waiters = 0

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    @property
    def waiters(self) -> int:
        """Threads blocked in :meth:`wait` now (tests wait for a loop to reach its wait)."""
        return self._waiters

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set or virtual time reaches ``now() + timeout``."""
        with self._cond:
            deadline = self._now + max(0.0, timeout)
            self._waiters += 1
            try:
                while not event.is_set() and self._now < deadline:
                    self._cond.wait(self.POLL)
            finally:
                self._waiters -= 1
        return event.is_set()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """See :meth:`Clock.call_later`; the timer runs inside a later :meth:`advance`."""
        timer = Timer(self._now + max(0.0, delay), fn, args)
        with self._cond:
            self._queue.push(timer)
        return timer

    def pending(self) -> list[float]:
        """Due times of the timers that have not run, earliest first."""
        with self._cond:
            return sorted(t.due for _, _, t in self._queue._heap if t.active)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), running the timers due on the way.

        Raises:
            ValueError: for a negative step (time never goes back).
        """
        if seconds < 0:
            raise ValueError(f"a clock only moves forward: advance({seconds}) is negative")
        target = self._now + seconds
        while True:
            with self._cond:
                due = self._queue.next_due()
                if due is None or due > target:
                    self._now = target
                    self._cond.notify_all()
                    return
                self._now = max(self._now, due)
                timer = self._queue.pop_due(self._now)
                self._cond.notify_all()
            if timer is not None:
                timer._run()


#: The process's clock: what every component uses unless it is handed another.
SYSTEM: Clock = SystemClock()
