"""The dispatcher: the single consumer of the bus, and the only place actions start.

One thread pops batches from the ring (blocking in C, GIL released, no spinning), runs
the two-stage matcher over the whole batch, applies the hook selection rule per event,
and starts each selected hook, in the rule's order: most on a small pre-started
:class:`WorkerPool`, the *inline* ones on the dispatcher thread itself. It never starts
a thread per event.

**Inline hooks.** Waking a sleeping worker is a second thread hand-off after the ring's
(about 20 µs on a 2-core VM, plus the GIL hand-over); a hook that only sets a pin or a
variable in memory runs in less. :func:`inline_hooks` picks, once at start, the hooks
whose whole ``then`` is known when the config is compiled to call only actions declared
``blocking=False`` (:func:`pihub.plugin.action`: GPIO and mock outputs, ``event.fire``),
through ``if``/``set``/``return`` steps only: no ``procedure.*`` call, no loop, no
templated action name. Such a hook runs on the dispatcher thread through the same
``fire`` callable, so its errors are logged and a webhook's reply is resolved exactly as
on a worker. ``variable.*`` is not inline: a SQLite commit is ~20 µs at p50 but several
ms when it checkpoints the WAL (an fsync), and the store's lock is shared with the HTTP
threads; ``logger.*`` writes to the log's stream. Neither may stall the only consumer.

A batch's inline hooks share a time budget (``inline_budget``, real seconds measured on
``clock``): once the hooks run inline in one batch have taken longer than that, the hook
that crossed it is counted (``inline_overruns``) and logged (rate-limited), and the rest of
the batch's hooks go to the pool (``inline_deferred``). So a slow "non-blocking" action
delays the events behind it by at most one budget plus its own run.

Back-pressure and loss are counted, never silent:

* a producer whose ring is full drops at the ring (counted per producer by the bus); the
  dispatcher notices the count grew and publishes one ``BusOverflowEvent`` per producer
  per check interval, and logs it;
* a hook whose job does not fit in the worker queue is dropped and counted
  (``hooks_dropped``) and logged, rate-limited.

Stopping drains: :meth:`Dispatcher.stop` lets the thread pop until the ring is empty
(the hub closes producers first; inline hooks have run by then), then the pool runs what
was queued.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pihub.clock import SYSTEM, Clock
from pihub.engine.hooks import Hook, select
from pihub.engine.procedures import ActionStep, IfStep, ReturnStep, SetStep, Steps
from pihub.events import CATALOGUE, Event, Reply
from pihub.logs import LogLimiter
from pihub.messages import Response

log = logging.getLogger("pihub.dispatcher")

#: ``fire(hook, event, captures)``, run for each selected hook: on a worker thread, or on
#: the dispatcher thread for an inline hook. What it returns is not used.
FireHook = Callable[[Hook, Event, dict[str, Any]], object]
#: Seconds of inline hook runs one batch may take before its other hooks go to the pool.
DEFAULT_INLINE_BUDGET = 0.0005
#: Called on the dispatcher thread for every event; must be quick and must not block.
Listener = Callable[[Event], None]


class _Batch(Protocol):
    n: int

    def event(self, i: int) -> Event: ...


class _Matcher(Protocol):
    def match_batch(self, batch: Any) -> list[tuple[int, Hook, dict[str, Any]]]: ...


def _run_job(fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    """Call ``fn(*args)``; False when it raised, after logging the traceback."""
    try:
        fn(*args)
    except Exception:
        log.exception("job %s failed", getattr(fn, "__qualname__", fn))
        return False
    return True


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
        self._idle = threading.Condition(self._lock)  # notified when pending drops to 0
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

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; False after ``timeout`` real seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, max(0.0, timeout))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args = job
            try:
                if not _run_job(fn, args):
                    self.failed += 1
            finally:
                with self._lock:
                    self._pending -= 1
                    self.completed += 1
                    if not self._pending:
                        self._idle.notify_all()

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
    #: of ``hooks_fired``, those run on the dispatcher thread
    hooks_inline: int = 0
    #: inline hooks whose run took the batch past its inline budget
    inline_overruns: int = 0
    #: inline hooks sent to the pool because their batch's budget was spent
    inline_deferred: int = 0
    #: inline hooks whose ``fire`` raised (logged as a pool job's failure is)
    inline_failed: int = 0


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
        """Count one latency of ``us`` microseconds (>= 0) in its bucket."""
        self.counts[bisect_left(self.bounds, us)] += 1  # the first bound >= us; the last is +inf
        self.total_us += us
        self.n += 1


def _steps_inline(steps: Steps, is_blocking: Callable[[str], bool]) -> bool:
    """True when every step is ``if``/``set``/``return`` or a non-blocking, non-templated action."""
    for step in steps.items:
        if isinstance(step, ActionStep):
            if step.action_template is not None or is_blocking(step.action):
                return False
        elif isinstance(step, IfStep):
            bodies = [body for _, body in step.branches]
            if step.orelse is not None:
                bodies.append(step.orelse)
            if not all(_steps_inline(body, is_blocking) for body in bodies):
                return False
        elif not isinstance(step, (SetStep, ReturnStep)):
            return False  # loops, while, and anything this function does not know
    return True


def inline_hooks(hooks: Iterable[Hook], is_blocking: Callable[[str], bool]) -> frozenset[Hook]:
    """The hooks that may run on the dispatcher thread (see the module docstring).

    Args:
        hooks: the compiled hooks (their ``then`` as :func:`pihub.engine.procedures.compile_steps`
            makes it; a hook with any other ``then`` is never inline).
        is_blocking: ``is_blocking("plugin.method")``, e.g.
            :meth:`pihub.engine.actions.ActionRegistry.is_blocking`; it must answer True
            for ``procedure.*`` and for names that do not resolve.

    Returns:
        Those whose steps, at any depth of ``if``, are only ``set``, ``return`` and
        actions with a literal name for which ``is_blocking`` is False.
    """
    return frozenset(h for h in hooks if isinstance(h.then, Steps) and _steps_inline(h.then, is_blocking))


class Dispatcher:
    """The consumer thread (see the module docstring).

    Args:
        bus: the :class:`pihub.bus.Bus` to drain.
        matcher: the compiled hooks (:class:`pihub.engine.rules.Matcher`), or None.
        fire: runs one selected hook for one event (on a worker thread).
        pool: the worker pool jobs go to.
        batch_size: events popped per native call.
        overflow_check: seconds between checks of the bus drop counters, on ``clock`` (checked
            after each loop turn, so at most one idle wait, 0.25 s, late).
        inline: the hooks to run on the dispatcher thread (:func:`inline_hooks`); none
            by default.
        inline_budget: seconds of inline runs per batch (see the module docstring), > 0.
        clock: what the budget is measured on; the system clock by default (a budget is
            about real time taken from the events behind).

    Raises:
        ValueError: ``inline_budget`` is not a positive number of seconds.
    """

    def __init__(self, bus: Any, matcher: _Matcher | None, fire: FireHook, pool: WorkerPool, *,
                 batch_size: int = 256, overflow_check: float = 0.5, inline: Collection[Hook] = (),
                 inline_budget: float = DEFAULT_INLINE_BUDGET, clock: Clock | None = None) -> None:
        if not inline_budget > 0:  # NaN included
            raise ValueError(f"inline_budget must be > 0 seconds, not {inline_budget!r}")
        self.bus = bus
        self.matcher = matcher
        self.fire = fire
        self.pool = pool
        self.batch_size = batch_size
        self.overflow_check = overflow_check
        self.inline = frozenset(inline)
        self.inline_budget = float(inline_budget)
        self._now = (SYSTEM if clock is None else clock).now
        #: called for every event before its hooks start (:meth:`add_listener`), and after
        #: the batch's hooks were started
        self.listeners: list[Listener] = []
        self.observers: list[Listener] = []
        self.stats = DispatchStats()
        self.latency = LatencyHistogram()
        #: incremented at the end of every loop turn, idle wake-ups included, so after the
        #: batch's hooks were started (the systemd watchdog pings only while this moves;
        #: Hub.flush waits for it to move).
        self.progress = 0
        self._turned = threading.Condition()  # notified after a turn while wait_progress waits
        self._turn_waiters = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # _sp: only the dispatcher thread publishes through it (_check_overflow runs in _run)
        self._producer = bus.producer("dispatcher", shared=False)
        self._dropped_seen: dict[str, int] = {}
        self._overflow_type = CATALOGUE.get("BusOverflowEvent")
        self._drop_log = LogLimiter(1, 5.0, self._now)  # the first is logged, whatever the clock reads
        self._overrun_log = LogLimiter(1, 5.0, self._now)
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

    def add_listener(self, listener: Listener, *, before_hooks: bool = False) -> None:
        """Call ``listener(event)`` on the dispatcher thread for every event.

        Args:
            listener: called once per event; an exception it raises is logged.
            before_hooks: call it before the event's hooks start (for bookkeeping the hooks
                rely on, such as their traces). Otherwise it is called once the batch's
                hooks were started, inline ones run: an observer (the websocket feed, MQTT
                state) then adds nothing to the time from an event to its hooks' actions.
        """
        (self.listeners if before_hooks else self.observers).append(listener)

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

    def wait_progress(self, seen: int, timeout: float) -> bool:
        """Wait until :attr:`progress` is no longer ``seen`` (a loop turn ended since).

        Returns:
            Whether it moved: False after ``timeout`` real seconds, or at once when the
            thread is not running (nothing would move it).
        """
        with self._turned:
            self._turn_waiters += 1
            try:
                self._turned.wait_for(lambda: self.progress != seen or not self.running, max(0.0, timeout))
            finally:
                self._turn_waiters -= 1
        return self.progress != seen

    def _run(self) -> None:
        next_check = self._now() + self.overflow_check
        wait = min(self.overflow_check, 0.25)
        while True:
            stopping = self._stopping.is_set()
            batch = self.bus.pop(self.batch_size, timeout=0 if stopping else wait)
            if batch.n:
                try:
                    self.process(batch)
                except Exception:
                    log.exception("dispatcher failed on a batch of %d events", batch.n)
            # counted after process(): once it moved, the turn's inline hooks have run (Hub.flush)
            self.progress += 1
            if self._turn_waiters:  # a lock round-trip per turn only while someone waits
                with self._turned:
                    self._turned.notify_all()
            if not batch.n and stopping:
                break
            now = self._now()
            if now >= next_check:
                next_check = now + self.overflow_check
                self._check_overflow()
        self._check_overflow()

    def process(self, batch: _Batch) -> None:
        """Match one popped batch and start the selected hooks (dispatcher thread only).

        The listeners added ``before_hooks`` see the batch's events first. Each event's
        selected hooks then start in the selection rule's order: an inline one runs to its
        end before the next is started or queued. The other listeners see the events last.
        """
        st = self.stats
        st.batches += 1
        st.events += batch.n
        if self.listeners:
            self._tell(self.listeners, batch)
        self._start_hooks(batch)
        if self.observers:
            self._tell(self.observers, batch)

    @staticmethod
    def _tell(listeners: list[Listener], batch: _Batch) -> None:
        """Call every listener with every event of ``batch``, in order."""
        for i in range(batch.n):
            ev = batch.event(i)
            for listener in listeners:
                try:
                    listener(ev)
                except Exception:
                    log.exception("event listener %r failed", listener)

    def _start_hooks(self, batch: _Batch) -> None:
        """Match ``batch`` and run or queue the selected hooks (see :meth:`process`)."""
        st = self.stats
        hits = self.matcher.match_batch(batch) if self.matcher is not None else []
        if self._replies:
            self._unmatched_replies(batch, hits)
        # hits are grouped by event index (ascending); select per event.
        inline = self.inline
        spent = 0.0  # seconds of inline runs in this batch
        over = False  # the budget is spent: the rest goes to the pool
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
                if inline and hook in inline:
                    if not over:
                        t0 = self._now()
                        if not _run_job(self.fire, (hook, event, caps)):
                            st.inline_failed += 1
                        took = self._now() - t0
                        spent += took
                        st.hooks_fired += 1
                        st.hooks_inline += 1
                        if spent > self.inline_budget:
                            over = True
                            st.inline_overruns += 1
                            self._log_overrun(hook, took, spent)
                        continue
                    st.inline_deferred += 1
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

    def _log_overrun(self, hook: Hook, took: float, spent: float) -> None:
        if self._overrun_log.allow()[0]:
            log.warning("inline hook %r ran %.3f ms, taking its batch's inline hooks to %.3f ms, over the"
                        " %.3f ms budget: the rest of the batch goes to the worker pool (%d overruns so far)",
                        hook.name, took * 1e3, spent * 1e3, self.inline_budget * 1e3, self.stats.inline_overruns)

    def _log_hook_drop(self, hook: Hook) -> None:
        if self._drop_log.allow()[0]:
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
