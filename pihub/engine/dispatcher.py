"""The dispatcher: the single consumer of the bus, and the only place actions start.

One thread pops batches from the ring (blocking in C, GIL released, no spinning), runs
the two-stage matcher over the whole batch, applies the hook selection rule per event,
and hands each selected hook to a small pre-started :class:`WorkerPool`. It never runs an
action itself and never starts a thread per event.

Back-pressure and loss are counted, never silent:

* a producer whose ring is full drops at the ring (counted per producer by the bus); the
  dispatcher notices the count grew and publishes one ``BusOverflowEvent`` per producer
  per check interval, and logs it;
* a hook whose job does not fit in the worker queue is dropped and counted
  (``hooks_dropped``) and logged, rate-limited.

Stopping drains: :meth:`Dispatcher.stop` lets the thread pop until the ring is empty
(the hub closes producers first), then the pool runs what was queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pihub.engine.hooks import Hook, select
from pihub.events import CATALOGUE, Event, Reply
from pihub.messages import Response

log = logging.getLogger("pihub.dispatcher")

#: ``fire(hook, event, captures)``, run on a worker thread for each selected hook.
FireHook = Callable[[Hook, Event, dict[str, Any]], None]
#: Called on the dispatcher thread for every event; must be quick and must not block.
Listener = Callable[[Event], None]


class _Batch(Protocol):
    n: int

    def event(self, i: int) -> Event: ...


class _Matcher(Protocol):
    def match_batch(self, batch: Any) -> list[tuple[int, Hook, dict[str, Any]]]: ...


class WorkerPool:
    """A fixed set of pre-started threads running submitted jobs from a bounded queue.

    Args:
        workers: number of threads (started by :meth:`start`).
        queue_size: jobs waiting at most; :meth:`submit` refuses (returns False) beyond.
        name: thread name prefix.
    """

    def __init__(self, workers: int = 4, queue_size: int = 1024, name: str = "pihub-worker") -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, not {queue_size}")
        self.workers = workers
        self.queue_size = queue_size
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self.submitted = 0
        self.rejected = 0
        self.failed = 0
        self.completed = 0

    def start(self) -> None:
        """Start the worker threads (idempotent)."""
        if self._threads:
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)``; False (and counted in ``rejected``) when the queue is full."""
        with self._lock:
            if self._pending >= self.queue_size:
                self.rejected += 1
                return False
            self._pending += 1
            self.submitted += 1
        self._jobs.put((fn, args))
        return True

    @property
    def pending(self) -> int:
        """Jobs queued or running now."""
        return self._pending

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception:
                self.failed += 1
                log.exception("job %s failed", getattr(fn, "__qualname__", fn))
            finally:
                with self._lock:
                    self._pending -= 1
                    self.completed += 1

    def stop(self, timeout: float = 10.0) -> None:
        """Run every queued job, then stop the threads; ``timeout`` in seconds for all."""
        for _ in self._threads:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.error("worker %s still busy after %.1f s; abandoning it", t.name, timeout)
        self._threads = []


@dataclass
class DispatchStats:
    """Counters of the dispatcher (monotonic since start)."""

    events: int = 0
    batches: int = 0
    hooks_fired: int = 0
    hooks_dropped: int = 0
    overflow_reports: int = 0


class LatencyHistogram:
    """Dispatch latency (event timestamp -> hook job queued), in microsecond buckets.

    Buckets are upper bounds in microseconds; ``counts[i]`` counts values <= ``bounds[i]``
    (the last bucket is +inf). Written by the dispatcher thread only.
    """

    bounds: tuple[float, ...] = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000, 250000,
                                 float("inf"))

    def __init__(self) -> None:
        self.counts = [0] * len(self.bounds)
        self.total_us = 0.0
        self.n = 0

    def observe(self, us: float) -> None:
        for i, b in enumerate(self.bounds):
            if us <= b:
                self.counts[i] += 1
                break
        self.total_us += us
        self.n += 1


class Dispatcher:
    """The consumer thread (see the module docstring).

    Args:
        bus: the :class:`pihub.bus.Bus` to drain.
        matcher: the compiled hooks (:class:`pihub.engine.rules.Matcher`), or None.
        fire: runs one selected hook for one event (on a worker thread).
        pool: the worker pool jobs go to.
        batch_size: events popped per native call.
        overflow_check: seconds between checks of the bus drop counters.
    """

    def __init__(self, bus: Any, matcher: _Matcher | None, fire: FireHook, pool: WorkerPool, *,
                 batch_size: int = 256, overflow_check: float = 0.5) -> None:
        self.bus = bus
        self.matcher = matcher
        self.fire = fire
        self.pool = pool
        self.batch_size = batch_size
        self.overflow_check = overflow_check
        self.listeners: list[Listener] = []
        self.stats = DispatchStats()
        self.latency = LatencyHistogram()
        #: incremented on every loop turn, idle wake-ups included (the systemd watchdog
        #: pings only while this moves).
        self.progress = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer = bus.producer("dispatcher", shared=True)
        self._dropped_seen: dict[str, int] = {}
        self._overflow_type = CATALOGUE.get("BusOverflowEvent")
        self._last_drop_log = 0.0
        # events published with a Reply that this thread has not decided yet; only while
        # one is pending does process() look at the events no hook matched
        self._replies: set[Reply] = set()
        self._replies_lock = threading.Lock()

    def expect_reply(self, reply: Reply) -> None:
        """Register ``reply`` before publishing its event (see :class:`pihub.events.Reply`).

        The dispatcher then sets ``reply.hook`` to the first hook it selects for the event
        (whose run answers), resolves it with None when no hook matches, or with an error
        Response when that hook's job is dropped.
        """
        with self._replies_lock:
            self._replies.add(reply)

    def forget_reply(self, reply: Reply) -> None:
        """Unregister ``reply`` (answered, or its waiter gave up)."""
        with self._replies_lock:
            self._replies.discard(reply)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on the dispatcher thread for every event."""
        self.listeners.append(listener)

    def start(self) -> None:
        """Start the consumer thread ``pihub-dispatcher``."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pihub-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Drain the ring, then stop the thread; ``timeout`` in seconds."""
        if self._thread is None:
            return
        self._stopping.set()
        self.bus.wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("dispatcher did not stop within %.1f s", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        next_check = time.monotonic() + self.overflow_check
        wait = min(self.overflow_check, 0.25)
        while True:
            stopping = self._stopping.is_set()
            batch = self.bus.pop(self.batch_size, timeout=0 if stopping else wait)
            self.progress += 1
            if batch.n:
                try:
                    self.process(batch)
                except Exception:
                    log.exception("dispatcher failed on a batch of %d events", batch.n)
            elif stopping:
                break
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.overflow_check
                self._check_overflow()
        self._check_overflow()

    def process(self, batch: _Batch) -> None:
        """Match one popped batch and queue the selected hooks (dispatcher thread only)."""
        st = self.stats
        st.batches += 1
        st.events += batch.n
        if self.listeners:
            for i in range(batch.n):
                ev = batch.event(i)
                for listener in self.listeners:
                    try:
                        listener(ev)
                    except Exception:
                        log.exception("event listener %r failed", listener)
        hits = self.matcher.match_batch(batch) if self.matcher is not None else []
        if self._replies:
            self._unmatched_replies(batch, hits)
        # hits are grouped by event index (ascending); select per event.
        start = 0
        while start < len(hits):
            idx = hits[start][0]
            end = start + 1
            while end < len(hits) and hits[end][0] == idx:
                end += 1
            event = batch.event(idx)
            chosen = select([(h, caps) for _, h, caps in hits[start:end]])
            if event.ts_ns:
                self.latency.observe((time.monotonic_ns() - event.ts_ns) / 1000.0)
            reply = event.reply
            if reply is not None and chosen:
                reply.hook = chosen[0][0]
            for hook, caps in chosen:
                if self.pool.submit(self.fire, hook, event, caps):
                    st.hooks_fired += 1
                else:
                    st.hooks_dropped += 1
                    self._log_hook_drop(hook)
                    if reply is not None and reply.hook is hook:
                        reply.resolve(Response(errors=[f"worker queue full ({self.pool.queue_size} jobs):"
                                                       f" hook {hook.name!r} dropped, try again"]))
            start = end

    def _unmatched_replies(self, batch: _Batch, hits: list[tuple[int, Hook, dict[str, Any]]]) -> None:
        """Resolve with None the replies of this batch's events that no hook matched."""
        matched = {idx for idx, _, _ in hits}
        for i in range(batch.n):
            if i not in matched:
                reply = batch.event(i).reply
                if reply is not None:
                    reply.resolve(None)

    def _log_hook_drop(self, hook: Hook) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= 5.0:
            self._last_drop_log = now
            log.warning("worker queue full (%d jobs): hook %r dropped (%d dropped so far)",
                        self.pool.queue_size, hook.name, self.stats.hooks_dropped)

    def _check_overflow(self) -> None:
        for name, ps in self.bus.stats().items():
            seen = self._dropped_seen.get(name, 0)
            if ps.dropped > seen:
                self._dropped_seen[name] = ps.dropped
                self.stats.overflow_reports += 1
                log.warning("bus ring of producer %r was full: %d events dropped (%d in total)",
                            name, ps.dropped - seen, ps.dropped)
                self._producer.publish(Event(self._overflow_type,
                                             {"producer": name, "dropped": ps.dropped - seen},
                                             time.monotonic_ns(), "dispatcher"))
