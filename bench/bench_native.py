"""The ring (``pihub.bus``): how fast events get from a producer to the Python consumer.

Figures (events/s, higher is better; medians of ``--runs`` runs after a warm-up run):

* ``native.baseline``: the yardstick, no pihub code: ``queue.Queue`` (and
  ``queue.SimpleQueue``) between two Python threads, one ``put`` per event.
* ``native.c_drain``: a C producer thread (:mod:`pihub.devtools.loadgen`, no Python in it) pushes
  GPIO events in batches of 256 into a 65536-slot ring. ``dispatcher``: the real
  ``Dispatcher`` thread drains it (pop 256, match against 1000 GPIO hooks; the events
  probe a hooked pin but their value never matches, so nothing fires). The others pop
  with ``Bus.pop(256)`` on the main thread: ``pop_only`` counts the popped events; ``pop_and_read`` also
  reads every slot's type and key0 in Python (strided ``memoryview`` slices of the batch's
  memory, one loop turn per event), the least per-event work a Python consumer can do. The C producer retries when
  the ring is full. ``ring_full_refusals`` sums, over the runs, the events a push
  found no room for (the ring's drop counter): each retry counts again, so it measures how
  often the producer outran the consumer, not lost events (none are lost).
* ``native.py_publish``: a Python producer thread publishes while a Python consumer
  thread pops (batches of 256), until every event was popped; a refused event is
  re-published (``ring_full_refusals`` counts the refusals, as above). Three ways to publish:
  ``publish_raw`` (256 pre-encoded slots per call), ``publish_batch`` (256 ``Event``
  objects per call: encoded in Python a column at a time, each travels by reference) and
  ``publish`` (one ``Event`` per call).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from common import Context, Deadline, median, repeat, result, rounded

QUEUE_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 60.0
BATCH = 256
RING = 65536
GOAL_C_DRAIN = 8e6
GOAL_PY_BATCH = 5e6
#: publish_batch of Event objects (issue 9): each event is still read attribute by attribute in Python
GOAL_PY_EVENTS = 2e6


# ------------------------------------------------------------------ baseline

def _queue_run(make_queue: Callable[[], Any], n: int) -> float:
    """Events/s handing ``n`` items from one Python thread to another through a queue."""
    q = make_queue()
    items = [(i, 17, 1) for i in range(n)]  # a small tuple per event, built beforehand
    done = threading.Event()
    got = [0]

    def consume() -> None:
        get = q.get
        k = 0
        while k < n:
            get()
            k += 1
        got[0] = k
        done.set()

    consumer = threading.Thread(target=consume, name="bench-queue-consumer", daemon=True)
    consumer.start()
    t0 = time.perf_counter()
    put = q.put
    for it in items:
        put(it)
    if not done.wait(QUEUE_TIMEOUT_S):
        raise RuntimeError(f"queue consumer got {got[0]} of {n} items in {QUEUE_TIMEOUT_S} s")
    dt = time.perf_counter() - t0
    consumer.join(1.0)
    return n / dt


def bench_queue_baseline(ctx: Context) -> Iterator[dict[str, Any]]:
    """The baseline: ``queue.Queue`` (and ``queue.SimpleQueue``) between two Python threads."""
    n = ctx.scale(300_000, 10_000)
    for name, make, metric in (("queue.Queue", queue.Queue, "queue_Queue_events_per_s"),
                               ("queue.SimpleQueue", queue.SimpleQueue, "queue_SimpleQueue_events_per_s")):
        runs = repeat(functools.partial(_queue_run, make, n), ctx.runs)
        yield result("native.baseline", metric, median(runs), "events/s", better="higher", n=n,
                     runs=rounded(runs),
                     note=f"{name}: one Python thread put()s {n} small tuples one by one, another get()s "
                          "them; time from the first put to the last get (no pihub code; DESIGN.md §3: "
                          "0.25-0.7 M/s for queue.Queue)")


# ------------------------------------------------------------------ C producer -> Python

def _gpio_template() -> Any:
    from pihub import bus as pbus
    from pihub.events import Event

    pbus.intern(17)
    return Event.of("GPIOEvent", pin=17, value=0)


def _c_drain_run(n: int, read: bool) -> tuple[float, int]:
    """One run: C loadgen pushes n events, Python pops them. Returns (events/s, refusals)."""
    from pihub.bus import SLOT_OFFSETS, SLOT_SIZE, Bus, ffi
    from pihub.devtools import loadgen

    bus = Bus(capacity=RING, max_producers=4)
    words_per_slot = SLOT_SIZE // 4
    w_type, w_key0 = SLOT_OFFSETS["type"] // 4, SLOT_OFFSETS["key"] // 4
    try:
        dl = Deadline(RUN_TIMEOUT_S)
        got = 0
        typed = 0
        t0 = time.perf_counter()
        lg = loadgen.start(bus, _gpio_template(), events_per_thread=n, threads=1, batch=BATCH, retry=True)
        pop = bus.pop
        while got < n and not dl.expired():
            b = pop(BATCH, 0.1)
            k = b.n
            if read and k:
                # the batch's memory as 32-bit words; one strided slice per field
                words = memoryview(ffi.buffer(b.slots, k * SLOT_SIZE)).cast("I")
                end = k * words_per_slot
                for t, key in zip(words[w_type:end:words_per_slot].tolist(),
                                  words[w_key0:end:words_per_slot].tolist(), strict=True):
                    if t and key != 0xFFFFFFFF:
                        typed += 1
            got += k
        dt = time.perf_counter() - t0
        accepted = lg.join()
        if got != n or accepted != n:
            raise RuntimeError(f"C drain: popped {got}, accepted {accepted}, expected {n} "
                               f"(deadline {RUN_TIMEOUT_S} s)")
        if read and typed != n:
            raise RuntimeError(f"C drain: read {typed} typed slots of {n}")
        refused = sum(s.dropped for s in bus.stats().values())
        return n / dt, refused
    finally:
        bus.close()


def _c_dispatch_run(n: int) -> tuple[float, int]:
    """One run: C loadgen -> the real Dispatcher (1000 hooks). Returns (events/s, refusals)."""
    import logging

    from bench_engine import make_hooks

    from pihub.bus import Bus
    from pihub.devtools import loadgen
    from pihub.engine.dispatcher import Dispatcher, WorkerPool
    from pihub.engine.rules import Matcher

    bus = Bus(capacity=RING, max_producers=8)
    matcher = Matcher(make_hooks(1000))
    pool = WorkerPool(workers=2, queue_size=1024)
    fired = [0]

    def fire(hook: Any, event: Any, captures: Any) -> None:
        fired[0] += 1

    # Refusals (the C producer retries them) are reported by this benchmark; keep the
    # dispatcher's own overflow report (a log line and an event) out of the measured window.
    disp = Dispatcher(bus, matcher, fire, pool, batch_size=BATCH, overflow_check=3600.0)
    dlog = logging.getLogger("pihub.dispatcher")
    level = dlog.level
    dlog.setLevel(logging.ERROR)
    pool.start()
    disp.start()
    st = disp.stats
    try:
        dl = Deadline(RUN_TIMEOUT_S)
        t0 = time.perf_counter()
        lg = loadgen.start(bus, _gpio_template(), events_per_thread=n, threads=1, batch=BATCH, retry=True)
        while st.events < n and not dl.expired():
            time.sleep(0.0005)
        dt = time.perf_counter() - t0
        accepted = lg.join()
        refused = sum(s.dropped for s in bus.stats().values())
        if st.events != n or accepted != n:
            raise RuntimeError(f"C -> dispatcher: {st.events} processed, {accepted} accepted, expected {n}")
        return n / dt, refused
    finally:
        disp.stop(5)
        pool.stop(5)
        dlog.setLevel(level)
        matcher.close()
        bus.close()


def bench_c_drain(ctx: Context) -> Iterator[dict[str, Any]]:
    """C producer thread -> ring -> Python consumer popping batches of 256."""
    n = ctx.scale(10_000_000, 200_000)
    out = repeat(functools.partial(_c_dispatch_run, n), ctx.runs)
    rates = [r for r, _ in out]
    yield result("native.c_drain", "dispatcher_events_per_s", median(rates), "events/s", goal=GOAL_C_DRAIN,
                 better="higher", n=n, runs=rounded(rates), ring_full_refusals=sum(r for _, r in out), hooks=1000,
                 note=f"1 C loadgen thread (pihub.devtools.loadgen, GPIOEvent pin=17, value=sequence number, batches of "
                      f"{BATCH}, retry on full) -> {RING}-slot ring -> the real Dispatcher thread (pop {BATCH}, "
                      "Matcher.match_batch over 1000 GPIO hooks: every event probes hook 17, ~none fires); "
                      "time from loadgen start until the dispatcher counted every event")
    for read, metric, goal in ((False, "pop_only_events_per_s", GOAL_C_DRAIN),
                               (True, "pop_and_read_events_per_s", None)):
        out = repeat(functools.partial(_c_drain_run, n, read), ctx.runs)
        rates = [r for r, _ in out]
        what = ("Python only counts the popped events" if not read else
                "Python also reads type and key0 of every slot (strided memoryview slices, one Python loop turn per event)")
        yield result("native.c_drain", metric, median(rates), "events/s", goal=goal, better="higher", n=n,
                     runs=rounded(rates), ring_full_refusals=sum(r for _, r in out),
                     note=f"1 C loadgen thread (pihub.devtools.loadgen, batches of {BATCH}, retry on full) -> "
                          f"{RING}-slot ring -> Bus.pop({BATCH}) on the main thread; {what}; "
                          "time from loadgen start to the last pop")


# ------------------------------------------------------------------ Python producer -> Python

def _encoded_slots(k: int) -> Any:
    from pihub import bus as pbus
    from pihub.events import Event

    slots = pbus.new_slots(k)
    for j in range(k):
        pbus.intern(j % 64)
        pbus.encode(Event.of("GPIOEvent", pin=j % 64, value=j & 1), slots, j)
    return slots


def _py_publish_run(n: int, how: str) -> tuple[float, int]:
    """One run: a Python thread publishes n events, another pops them. (events/s, refusals)."""
    from pihub.bus import Bus
    from pihub.events import Event

    bus = Bus(capacity=RING, max_producers=4)
    prod = bus.producer("bench")
    slots = _encoded_slots(BATCH) if how == "raw" else None
    events = [Event.of("GPIOEvent", pin=j % 64, value=j & 1) for j in range(BATCH)]
    go = threading.Event()
    done = threading.Event()
    errors: list[BaseException] = []
    dl = Deadline(RUN_TIMEOUT_S)

    def produce() -> None:
        try:
            go.wait(5)
            left = n
            while left > 0 and not dl.expired():
                k = min(BATCH, left)
                if how == "raw":
                    sent = prod.publish_raw(slots, k)
                elif how == "batch":
                    sent = prod.publish_batch(events[:k] if k < BATCH else events)
                else:
                    sent = 0
                    pub = prod.publish
                    for ev in events[:k]:
                        if not pub(ev):
                            break
                        sent += 1
                left -= sent
                if sent < k:
                    time.sleep(0)  # ring full: let the consumer run; the rest is sent again
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            errors.append(e)
        finally:
            done.set()

    th = threading.Thread(target=produce, name="bench-producer", daemon=True)
    th.start()
    got = 0
    pop = bus.pop
    try:
        t0 = time.perf_counter()
        go.set()
        while got < n and not dl.expired() and not errors:
            got += pop(BATCH, 0.05).n
        dt = time.perf_counter() - t0
        done.wait(5)
        th.join(5)
        if errors:
            raise errors[0]
        if got != n:
            raise RuntimeError(f"py publish ({how}): popped {got} of {n} within {RUN_TIMEOUT_S} s")
        return n / dt, bus.stats()["bench"].dropped
    finally:
        bus.close()


def bench_py_publish(ctx: Context) -> Iterator[dict[str, Any]]:
    """Python producer thread -> ring -> Python consumer thread."""
    cases = (
        ("raw", "publish_raw_events_per_s", GOAL_PY_BATCH, ctx.scale(5_000_000, 100_000),
         f"Producer.publish_raw of {BATCH} pre-encoded slots per call"),
        ("batch", "publish_batch_events_per_s", GOAL_PY_EVENTS, ctx.scale(1_000_000, 50_000),
         f"Producer.publish_batch of {BATCH} GPIOEvent objects per call (pin, value; encoded in Python "
         "column by column, passed by reference)"),
        ("single", "publish_single_events_per_s", None, ctx.scale(500_000, 20_000),
         "Producer.publish of one Event per call"),
    )
    for how, metric, goal, n, what in cases:
        out = repeat(functools.partial(_py_publish_run, n, how), ctx.runs)
        rates = [r for r, _ in out]
        yield result("native.py_publish", metric, median(rates), "events/s", goal=goal, better="higher", n=n,
                     runs=rounded(rates), ring_full_refusals=sum(r for _, r in out),
                     note=f"{what}, from a Python thread, while the main thread pops batches of {BATCH} "
                          f"({RING}-slot ring; refused events re-published); time until the last event "
                          "was popped")


BENCHES = [bench_queue_baseline, bench_c_drain, bench_py_publish]
