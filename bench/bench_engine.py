"""The engine: hook matching, publish -> match -> dispatch, and edge -> action latency.

Workload shared by the matcher and dispatch figures: N hooks
``{type: GPIOEvent, pin: i, value: 1}`` for i in 0..N-1 (compiled by
``pihub.engine.conditions.compile_condition``, one ``Hook`` each, no priorities), so
every condition is native (pin: interned-key equality on key0; value: numeric equality
on num0) and the C matcher finds the candidate rule through its hash index on pin.

* ``engine.match``: 4096 GPIO events with ``pin`` uniform in ``[0, 2N)`` and ``value``
  in {0, 1} (seeded): about 25 % of the events match exactly one hook, the rest none.
  They are published as ``Event`` objects and popped, so pins no hook names carry
  the "never interned" key, as in the daemon. Two costs per event, matching batches of
  256 (the dispatcher's batch size):

  - ``native``: ``lib.ph_match_batch`` alone, the C stage (cffi call included);
  - ``match_batch``: ``Matcher.match_batch(batch)``, what the dispatcher calls: the C
    stage plus the Python walk over the hits that builds ``(index, hook, captures)``.

  The peer figure is Platypush's ``EventProcessor.process_event`` over the same hooks
  and events, measured in the same run (``bench/peer_match.py``), converted to ns.
* ``engine.dispatch``: 1000 hooks; a Python producer thread publishes pre-encoded
  slots (``publish_raw``, 256 per call, flow-controlled so the ring never refuses) while
  the real ``Dispatcher`` thread pops, matches, selects and submits each selected hook to
  the real ``WorkerPool`` (4 threads), whose job is a trivial ``fire`` callback. Time from
  the first publish until every event was processed and every job ran. Two hit rates:
  1 event in 256 fires a hook (headline), and 1 in 4.
* ``engine.latency``: one event every ~1 ms from a Python producer thread; the time from
  the event's ``ts_ns`` (``time.monotonic_ns()`` when it was built, just before
  ``publish``) to the moment the action runs, read with ``time.monotonic_ns()`` (the
  same clock). 2000 samples after 100 warm-up events. Two floors, then two paths, each
  with the hook run inline on the dispatcher thread and on a worker of the pool:

  - ``no_handoff`` / ``no_handoff_busy`` (floors, no goal): the same work with no thread
    hand-off: the producer thread pops its own event and runs ``Dispatcher.process``;
    it sleeps between events, or spins on the clock so the CPU stays warm;
  - ``dispatcher_inline`` / ``dispatcher``: Bus -> Dispatcher with the 1000 hooks ->
    ``fire`` callback, inline (every hook passed as ``inline``) / through the WorkerPool;
  - ``hub_action`` / ``hub_action_pool``: a ``Hub`` from a YAML config whose hook's
    ``then:`` calls an action of a tiny plugin registered on the hub (``Hub.publish`` ->
    dispatcher -> procedure runner -> action registry -> plugin method): ``bench.mark``,
    declared ``blocking=False`` like a GPIO write, so the hub runs the hook inline /
    ``bench.mark_pool``, the same body left blocking, so the hook goes to a worker.
"""

from __future__ import annotations

import functools
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import peer_platypush
from common import Context, Deadline, median, percentile, repeat, result, rounded

HOOK_COUNTS = peer_platypush.HOOK_COUNTS
N_EVENTS = 4096
BATCH = 256
RING = 65536
GOAL_MATCH_NS_1000 = 20.0
GOAL_DISPATCH = 3e6
GOAL_LATENCY_P50_US = 25.0
RUN_TIMEOUT_S = 60.0


def make_hooks(n: int) -> list[Any]:
    """N GPIO hooks ``pin: i, value: 1`` (``then`` is never run by these benchmarks)."""
    from pihub.engine.conditions import compile_condition
    from pihub.engine.hooks import Hook

    return [Hook(f"gpio_{i}", compile_condition({"type": "GPIOEvent", "pin": i, "value": 1},
                                                (f"event.hook.gpio_{i}", "if")), None, 0, i)
            for i in range(n)]


def gpio_events(n_hooks: int, n_events: int, seed: int = 1) -> list[Any]:
    from pihub.events import Event

    rng = random.Random(seed)
    return [Event.of("GPIOEvent", pin=rng.randrange(2 * n_hooks), value=rng.randrange(2))
            for _ in range(n_events)]


class _View:
    """Events [off, off+n) of a popped Batch, shaped like a Batch for Matcher.match_batch."""

    __slots__ = ("_batch", "_off", "n", "slots")

    def __init__(self, batch: Any, off: int, n: int) -> None:
        self.slots = batch.slots + off
        self.n = n
        self._batch = batch
        self._off = off

    def event(self, i: int) -> Any:
        return self._batch.event(self._off + i)


def _timed(fn: Any, min_s: float, max_loops: int) -> float:
    """Seconds per call of ``fn()``, looping until ``min_s`` elapsed (at most max_loops calls)."""
    loops = 0
    t0 = time.perf_counter()
    while True:
        fn()
        loops += 1
        dt = time.perf_counter() - t0
        if dt >= min_s or loops >= max_loops:
            return dt / loops


# ------------------------------------------------------------------ match cost

def _native_ns(match_c: Any, m: Any, starts: list[Any], hits: Any, cap: int, consumed: Any,
               min_s: float) -> float:
    """ns per event of ``ph_match_batch`` over the batches starting at ``starts``."""
    def once() -> None:
        for s in starts:
            match_c(m, s, BATCH, hits, cap, consumed)
    return _timed(once, min_s, 100_000) / (len(starts) * BATCH) * 1e9


def _match_batch_ns(match_batch: Any, views: list[_View], min_s: float) -> float:
    """ns per event of ``Matcher.match_batch`` over ``views``."""
    def once() -> None:
        for v in views:
            match_batch(v)
    return _timed(once, min_s, 100_000) / sum(v.n for v in views) * 1e9


def bench_match(ctx: Context) -> Iterator[dict[str, Any]]:
    """Matching cost per event at 10 / 100 / 1000 / 10000 hooks (C stage, and match_batch)."""
    from pihub._native import ffi, lib
    from pihub.bus import Bus
    from pihub.engine.rules import Matcher

    peer, peer_note = peer_platypush.match_costs(ctx)
    min_s = 0.05 if ctx.quick else 0.2
    for n in HOOK_COUNTS:
        hooks = make_hooks(n)
        matcher = Matcher(hooks)
        bus = Bus(capacity=2 * N_EVENTS, max_producers=2)
        try:
            events = gpio_events(n, N_EVENTS)
            expected = sum(1 for e in events if e.args["pin"] < n and e.args["value"] == 1)
            prod = bus.producer("bench")
            if prod.publish_batch(events) != N_EVENTS:
                raise RuntimeError("could not publish the match workload")
            batch = bus.pop(N_EVENTS, 0)
            if batch.n != N_EVENTS:
                raise RuntimeError(f"popped {batch.n} of {N_EVENTS} events")
            views = [_View(batch, off, BATCH) for off in range(0, N_EVENTS, BATCH)]
            got = sum(len(matcher.match_batch(v)) for v in views)
            if got != expected:
                raise RuntimeError(f"{n} hooks: match_batch found {got} hits, expected {expected}")

            m = matcher._m  # the native matcher handle (private: the C stage alone)
            cap = max(4096, n)
            hits = ffi.new("struct ph_hit[]", cap)
            consumed = ffi.new("uint32_t *")
            starts = [batch.slots + off for off in range(0, N_EVENTS, BATCH)]
            match_c = lib.ph_match_batch
            c_hits = sum(match_c(m, s, BATCH, hits, cap, consumed) for s in starts)
            if c_hits != expected:
                raise RuntimeError(f"{n} hooks: ph_match_batch found {c_hits} hits, expected {expected}")

            c_runs = repeat(functools.partial(_native_ns, match_c, m, starts, hits, cap, consumed, min_s),
                            ctx.runs)
            py_runs = repeat(functools.partial(_match_batch_ns, matcher.match_batch, views, min_s), ctx.runs)
        finally:
            matcher.close()
            bus.close()
        p = peer.get(n)
        peer_ns = p["us_per_event"] * 1000.0 if p else None
        pnote = (f"Platypush process_event over the same {n} hooks: {p['us_per_event']:.4g} us/event; "
                 f"{peer_note}") if p else peer_note
        workload = (f"{n} hooks GPIOEvent pin=i value=1; {N_EVENTS} events pin uniform in [0,{2 * n}), "
                    f"value 0/1 ({expected} hits); batches of {BATCH}")
        yield result("engine.match", f"native_ns_per_event_{n}_hooks", median(c_runs), "ns/event",
                     goal=GOAL_MATCH_NS_1000 if n == 1000 else None, better="lower", peer=peer_ns,
                     peer_note=pnote, runs=rounded(c_runs), n=N_EVENTS, hooks=n, hits=expected,
                     note=f"C stage: lib.ph_match_batch per batch (cffi call included); {workload}")
        yield result("engine.match", f"match_batch_ns_per_event_{n}_hooks", median(py_runs), "ns/event",
                     better="lower", peer=peer_ns, peer_note=pnote, runs=rounded(py_runs), n=N_EVENTS, hooks=n,
                     hits=expected,
                     note=f"Matcher.match_batch (C stage + Python list of (index, hook, captures)); {workload}")


# ------------------------------------------------------------------ publish -> match -> dispatch

def _encoded_workload(n_hooks: int, hit_every: int, n: int, seed: int = 2) -> tuple[Any, int]:
    """Pre-encoded GPIO slots: every ``hit_every``-th event matches one hook. (slots, hits)."""
    from pihub import bus as pbus
    from pihub.events import Event

    rng = random.Random(seed)
    for pin in range(2 * n_hooks):
        pbus.intern(pin)
    slots = pbus.new_slots(n)
    hits = 0
    for j in range(n):
        if j % hit_every == 0:
            ev = Event.of("GPIOEvent", pin=rng.randrange(n_hooks), value=1)
            hits += 1
        elif rng.randrange(2):
            ev = Event.of("GPIOEvent", pin=rng.randrange(n_hooks), value=0)  # pin hooked, value not
        else:
            ev = Event.of("GPIOEvent", pin=n_hooks + rng.randrange(n_hooks), value=1)  # pin not hooked
        pbus.encode(ev, slots, j)
    return slots, hits


def _dispatch_run(n_hooks: int, hit_every: int, total: int, workload: tuple[Any, int]) -> dict[str, float]:
    from pihub.bus import Bus
    from pihub.engine.dispatcher import Dispatcher, WorkerPool
    from pihub.engine.rules import Matcher

    slots, hits_per_buf = workload
    nbuf = len(slots)
    bus = Bus(capacity=RING, max_producers=8)
    matcher = Matcher(make_hooks(n_hooks))
    pool = WorkerPool(workers=4, queue_size=max(1024, total // hit_every + 16))
    fired = [0]
    lock = threading.Lock()

    def fire(hook: Any, event: Any, captures: Any) -> None:
        with lock:
            fired[0] += 1

    disp = Dispatcher(bus, matcher, fire, pool, batch_size=BATCH)
    prod = bus.producer("bench")
    errors: list[BaseException] = []
    dl = Deadline(RUN_TIMEOUT_S)
    st = disp.stats

    def produce() -> None:
        try:
            sent = 0
            while sent < total and not dl.expired():
                # flow control: never let the ring refuse (a refusal is a drop + overflow report)
                while sent - st.events > RING - 2 * BATCH and not dl.expired():
                    time.sleep(0)
                off = sent % nbuf
                k = min(BATCH, total - sent, nbuf - off)
                got = prod.publish_raw(slots + off, k)
                if got != k:
                    raise RuntimeError(f"ring refused {k - got} events despite flow control")
                sent += k
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            errors.append(e)

    expected_hits = (total // nbuf) * hits_per_buf + sum(1 for j in range(total % nbuf) if j % hit_every == 0)
    pool.start()
    disp.start()
    try:
        th = threading.Thread(target=produce, name="bench-producer", daemon=True)
        t0 = time.perf_counter()
        th.start()
        while ((st.events < total or fired[0] + st.hooks_dropped < expected_hits)
               and not dl.expired() and not errors):
            time.sleep(0.0005)
        dt = time.perf_counter() - t0
        th.join(5)
        if errors:
            raise errors[0]
        if st.events != total or fired[0] != expected_hits or st.hooks_dropped:
            raise RuntimeError(f"dispatch: {st.events}/{total} events, {fired[0]}/{expected_hits} hooks fired, "
                               f"{st.hooks_dropped} dropped (deadline {RUN_TIMEOUT_S} s)")
        return {"rate": total / dt, "fired": fired[0]}
    finally:
        disp.stop(5)
        pool.stop(5)
        matcher.close()
        bus.close()


def bench_dispatch(ctx: Context) -> Iterator[dict[str, Any]]:
    """Python publish_raw -> ring -> Dispatcher (match + select + submit) -> WorkerPool, 1000 hooks."""
    n_hooks = 1000
    for hit_every, metric, goal in ((256, "events_per_s_1000_hooks", GOAL_DISPATCH),
                                    (4, "events_per_s_1000_hooks_25pct_hits", None)):
        total = ctx.scale(3_000_000 if hit_every > 4 else 500_000, 50_000)
        workload = _encoded_workload(n_hooks, hit_every, 4096)
        out = repeat(functools.partial(_dispatch_run, n_hooks, hit_every, total, workload), ctx.runs)
        rates = [o["rate"] for o in out]
        yield result("engine.dispatch", metric, median(rates), "events/s", goal=goal, better="higher", n=total,
                     runs=rounded(rates), hooks=n_hooks, fired_per_run=out[0]["fired"],
                     note=f"{total} GPIO events, 1 in {hit_every} fires one of {n_hooks} hooks; Python thread "
                          f"publish_raw (256 pre-encoded slots per call, flow-controlled) -> Dispatcher thread "
                          "(pop 256, Matcher.match_batch, select, WorkerPool.submit) -> 4 workers running a "
                          "trivial fire callback; time until every event was processed and every job ran")


# ------------------------------------------------------------------ edge -> action latency

def _paced_publish(publish: Any, make_event: Any, count: int, period_s: float, dl: Deadline, *,
                   busy: bool = False) -> int:
    """Publish ``count`` events, one every ``period_s`` (absolute schedule). Returns how many.

    Between events the thread sleeps, or with ``busy`` spins on the clock (the CPU never
    idles, so its caches stay warm: the same work measured hot).
    """
    sent = 0
    next_t = time.monotonic()
    while sent < count and not dl.expired():
        next_t += period_s
        if publish(make_event(sent)):
            sent += 1
        if busy:
            while time.monotonic() < next_t:
                pass
            continue
        pause = next_t - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return sent


def _latency_rows(ctx: Context, path: str, lat_ns: list[int], warm: int, extra_note: str, *,
                  floor: bool = False, pace: str = "one event every ~1 ms", **extra: Any) -> Iterator[dict]:
    """The p50 and p99 rows of one path; a ``floor`` (not a pihub path) has no goal and no peer."""
    samples = sorted(x / 1000.0 for x in lat_ns[warm:])
    if len(samples) < 10:
        raise RuntimeError(f"latency ({path}): only {len(samples)} samples")
    common = {"n": len(samples), "better": "lower", **extra}
    if not floor:
        common["peer_note"] = ("Platypush has no in-process figure to match; its run-bench.sh webhook -> hook -> "
                               "action and custom event -> YAML hook p50 (HTTP included) are in the "
                               "peer_platypush.daemon rows")
    note = (f"{extra_note}; {pace} from a Python thread, {len(samples)} samples after {warm} "
            "warm-up; latency = time.monotonic_ns() in the action - event.ts_ns (set when the event is built, "
            "just before publish)")
    yield result("engine.latency", f"{path}_p50_us", percentile(samples, 50), "us",
                 goal=None if floor else GOAL_LATENCY_P50_US,
                 note=note, **common)
    yield result("engine.latency", f"{path}_p99_us", percentile(samples, 99), "us", note=note,
                 max_us=samples[-1], **common)


def bench_latency_baseline(ctx: Context) -> Iterator[dict[str, Any]]:
    """The floor under the latency figures: one thread hand-off, no pihub code.

    A Python thread puts ``time.monotonic_ns()`` into a ``queue.SimpleQueue`` every ~1 ms;
    another, blocked in ``get``, records how long the item took to reach it. pihub's path
    has one such hand-off for an inline hook (producer -> dispatcher through the ring's
    futex) and two for a hook run on a worker (then dispatcher -> worker through the
    pool's queue), each waking a sleeping thread.
    """
    import queue

    warm, count = 100, ctx.scale(2000, 200) + 100
    q: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    lat: list[int] = []

    def consume() -> None:
        while True:
            t0 = q.get()
            if t0 is None:
                return
            lat.append(time.monotonic_ns() - t0)

    th = threading.Thread(target=consume, name="bench-wakeup", daemon=True)
    th.start()
    dl = Deadline(count * 0.002 + 30)
    _paced_publish(lambda t0: q.put(t0) or True, lambda i: time.monotonic_ns(), count, 0.001, dl)
    q.put(None)
    th.join(5)
    if len(lat) != count:
        raise RuntimeError(f"latency baseline: {len(lat)} of {count} items arrived")
    samples = sorted(x / 1000.0 for x in lat[warm:])
    note = ("no pihub code: a Python thread put()s time.monotonic_ns() into a queue.SimpleQueue every ~1 ms, "
            f"another thread blocked in get() records the delay; {len(samples)} samples after {warm} warm-up. "
            "One sleeping-thread wake-up; pihub's edge -> action path has one for an inline hook, two for a "
            "hook run on a worker")
    yield result("engine.latency", "baseline_thread_wakeup_p50_us", percentile(samples, 50), "us", better="lower",
                 n=len(samples), note=note)
    yield result("engine.latency", "baseline_thread_wakeup_p99_us", percentile(samples, 99), "us", better="lower",
                 n=len(samples), max_us=samples[-1], note=note)


def _dispatcher_latency(ctx: Context, inline: bool) -> Iterator[dict[str, Any]]:
    """Edge -> fire callback: Bus -> Dispatcher (1000 hooks) -> inline, or WorkerPool."""
    from pihub.bus import Bus
    from pihub.engine.dispatcher import Dispatcher, WorkerPool
    from pihub.engine.rules import Matcher
    from pihub.events import Event

    warm, count = 100, ctx.scale(2000, 200) + 100
    bus = Bus(capacity=4096, max_producers=8)
    hooks = make_hooks(1000)
    matcher = Matcher(hooks)
    pool = WorkerPool(workers=4, queue_size=1024)
    lat: list[int] = []
    seen: list[int] = []

    def fire(hook: Any, event: Any, captures: Any) -> None:
        lat.append(time.monotonic_ns() - event.ts_ns)

    def listener(event: Any) -> None:  # on the dispatcher thread, before matching
        seen.append(time.monotonic_ns() - event.ts_ns)

    disp = Dispatcher(bus, matcher, fire, pool, batch_size=BATCH, inline=hooks if inline else ())
    disp.add_listener(listener)
    prod = bus.producer("bench")
    pool.start()
    disp.start()
    try:
        dl = Deadline(count * 0.002 + 30)
        out: list[int] = []

        def produce() -> None:
            out.append(_paced_publish(prod.publish, lambda i: Event.of("GPIOEvent", pin=17, value=1),
                                      count, 0.001, dl))

        th = threading.Thread(target=produce, name="bench-edge", daemon=True)
        th.start()
        th.join(dl.left() + 1)
        while len(lat) < count and not dl.expired():
            time.sleep(0.001)
    finally:
        disp.stop(5)
        pool.stop(5)
        matcher.close()
        bus.close()
    path = "dispatcher_inline" if inline else "dispatcher"
    if len(lat) != count:
        raise RuntimeError(f"latency ({path}): {len(lat)} of {count} events reached the action")
    wake = sorted(x / 1000.0 for x in seen[warm:])
    how = "run inline on the dispatcher thread -> fire callback" if inline else "WorkerPool(4) -> fire callback"
    yield from _latency_rows(ctx, path, lat, warm,
                             f"Bus.publish (Event) -> Dispatcher thread (Matcher, 1000 GPIO hooks) -> {how}; "
                             "to_dispatcher_* = edge -> an event listener on the dispatcher thread (before "
                             "matching)",
                             to_dispatcher_p50_us=percentile(wake, 50), to_dispatcher_p99_us=percentile(wake, 99))


#: How the no-hand-off floor paces its events: row suffix, period (s), spin instead of sleeping,
#: and what the note says of it.
_FLOOR_PACES = {
    "sleep": ("", 0.001, False, "the thread sleeps between events, as a producer does"),
    "spin": ("_busy", 0.001, True, "the thread spins on the clock between events (never idles)"),
    "back_to_back": ("_hot", 0.0, True, "events back to back (the same work hot)"),
}


def _no_handoff_latency(ctx: Context, pace: str) -> Iterator[dict[str, Any]]:
    """Edge -> fire callback with no thread hand-off at all: the producer thread itself pops
    its event and runs ``Dispatcher.process`` (1000 hooks, inline, one listener), as
    ``dispatcher_inline`` does on the dispatcher thread. Not a path pihub takes (the
    dispatcher is the only consumer); the floor a hand-off design is measured against.
    ``pace`` is a key of :data:`_FLOOR_PACES`; each stage's median is in the p50 row, to show
    whether one stage or all of them slow down when the thread pauses between events.
    """
    from pihub.bus import Bus
    from pihub.engine.dispatcher import Dispatcher, WorkerPool
    from pihub.engine.rules import Matcher
    from pihub.events import Event

    suffix, period, spin, how = _FLOOR_PACES[pace]
    path = "no_handoff" + suffix
    warm, count = 100, ctx.scale(2000, 200) + 100
    bus = Bus(capacity=4096, max_producers=8)
    hooks = make_hooks(1000)
    matcher = Matcher(hooks)
    pool = WorkerPool(workers=1)  # never used: every hook is inline; the dispatcher needs one
    lat: list[int] = []
    # per event, the clock at: event built (its ts_ns), publish called, publish returned, pop
    # returned, action ran
    marks: list[tuple[int, int, int, int, int]] = []
    fired: list[int] = [0]

    def fire(hook: Any, event: Any, captures: Any) -> None:
        fired[0] = now = time.monotonic_ns()
        lat.append(now - event.ts_ns)

    disp = Dispatcher(bus, matcher, fire, pool, batch_size=BATCH, inline=hooks)
    disp.add_listener(lambda event: None)  # dispatcher_inline's path calls one listener too
    prod = bus.producer("bench")

    def publish_and_process(event: Any) -> bool:
        t0 = time.monotonic_ns()
        ok = prod.publish(event)
        t1 = time.monotonic_ns()
        batch = bus.pop(BATCH, timeout=0)
        t2 = time.monotonic_ns()
        disp.process(batch)
        marks.append((event.ts_ns, t0, t1, t2, fired[0]))
        return ok

    try:
        dl = Deadline(count * 0.002 + 30)
        _paced_publish(publish_and_process, lambda i: Event.of("GPIOEvent", pin=17, value=1), count, period, dl,
                       busy=spin)
    finally:
        matcher.close()
        bus.close()
    if len(lat) != count:
        raise RuntimeError(f"latency ({path}): {len(lat)} of {count} events reached the action")
    stages = {name: round(median([m[i + 1] - m[i] for m in marks[warm:]]) / 1000.0, 2)
              for i, name in enumerate(("build", "publish", "pop", "process_to_action"))}
    yield from _latency_rows(ctx, path, lat, warm,
                             "no thread hand-off (not a pihub path: the floor): the producer thread publishes, "
                             "pops its own event and runs Dispatcher.process (Matcher, 1000 GPIO hooks, inline, "
                             f"one listener) -> fire callback; {how}; stages_p50_us: the median of each stage "
                             "alone (build: event.ts_ns -> publish called; process_to_action: pop returned -> "
                             "the action), timed by the same clock around each call", floor=True,
                             pace="one event every ~1 ms" if period else "events back to back",
                             stages_p50_us=stages)


def bench_latency_floor(ctx: Context) -> Iterator[dict[str, Any]]:
    """The dispatcher's work with no hand-off: paced with sleeps as a producer is, spinning, hot."""
    for pace in _FLOOR_PACES:
        yield from _no_handoff_latency(ctx, pace)


def bench_latency_dispatcher(ctx: Context) -> Iterator[dict[str, Any]]:
    """Edge -> fire callback: the hook run inline on the dispatcher, then on a worker."""
    yield from _dispatcher_latency(ctx, inline=True)
    yield from _dispatcher_latency(ctx, inline=False)


HUB_CONFIG = """\
device_id: pihub-bench
workdir: {workdir}
logging:
  level: WARNING
http:  # served as deployed (the websocket's and the traces' listeners run per event), on free ports
  port: 0
  websocket_port: 0
event.hook.bench_latency:
  if:
    type: CustomEvent
    subtype: bench
  then:
    - action: bench.{action}
      args:
        t0: ${{t0}}
"""


def _bench_plugin(samples: list[int]) -> Any:
    from pihub.plugin import Plugin, action

    class BenchPlugin(Plugin):
        """Records edge -> action latency (benchmarks only)."""

        name: ClassVar[str] = "bench"
        side_effects: ClassVar[bool] = False

        @action(blocking=False)  # a list append: a hook calling it runs inline
        def mark(self, t0: int) -> None:
            """Record now - t0.

            Args:
                t0: the event's time.monotonic_ns() when it was built.
            """
            samples.append(time.monotonic_ns() - t0)

        @action
        def mark_pool(self, t0: int) -> None:
            """Record now - t0 (the same body, left blocking: a hook calling it goes to a worker).

            Args:
                t0: the event's time.monotonic_ns() when it was built.
            """
            samples.append(time.monotonic_ns() - t0)

    return BenchPlugin()


def _hub_latency(ctx: Context, action: str) -> Iterator[dict[str, Any]]:
    """Edge -> action through a Hub: hook ``then: bench.<action>`` on a custom plugin."""
    from pihub import config as pconfig
    from pihub.events import Event
    from pihub.hub import Hub, known_sections

    warm, count = 100, ctx.scale(2000, 200) + 100
    lat: list[int] = []
    with tempfile.TemporaryDirectory(prefix="pihub-bench-hub-") as tmp:
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(HUB_CONFIG.format(workdir=str(Path(tmp) / "work"), action=action), encoding="utf-8")
        config = pconfig.load(str(cfg), sections=known_sections())
        plugin = _bench_plugin(lat)

        class BenchHub(Hub):
            # The hub checks every hook action against its registry while it is built, so
            # the plugin must be registered with the built-ins (Hub has no public way to
            # add a plugin; this overrides its private builder step).
            def _build_plugins(self, problems: list[Any]) -> None:
                super()._build_plugins(problems)
                self.registry.register(plugin)

        hub = BenchHub(config, with_backends=False)
        hub.start()
        try:
            dl = Deadline(count * 0.002 + 30)

            def make(i: int) -> Any:
                ev = Event.of("CustomEvent", subtype="bench")
                ev.args["t0"] = ev.ts_ns
                return ev

            th = threading.Thread(target=_paced_publish, args=(hub.publish, make, count, 0.001, dl),
                                  name="bench-edge", daemon=True)
            th.start()
            th.join(dl.left() + 1)
            while len(lat) < count and not dl.expired():
                time.sleep(0.001)
        finally:
            hub.stop(10)
    inline = action == "mark"
    path = "hub_action" if inline else "hub_action_pool"
    if len(lat) != count:
        raise RuntimeError(f"latency ({path}): {len(lat)} of {count} events reached the action")
    ran_inline = hub.dispatcher.stats.hooks_inline
    if ran_inline != (count if inline else 0):
        raise RuntimeError(f"latency ({path}): {ran_inline} of {count} hooks ran inline, expected "
                           f"{'all' if inline else 'none'}")
    how = "inline on the dispatcher thread" if inline else "WorkerPool(4)"
    yield from _latency_rows(ctx, path, lat, warm,
                             f"Hub.publish(CustomEvent) -> Dispatcher -> {how} -> procedure runner -> "
                             f"action registry -> bench.{action} of a plugin registered on the hub (1 hook)")


def bench_latency_hub(ctx: Context) -> Iterator[dict[str, Any]]:
    """Edge -> action through a Hub: a non-blocking action (hook inline), then a blocking one."""
    yield from _hub_latency(ctx, "mark")
    yield from _hub_latency(ctx, "mark_pool")


BENCHES = [bench_match, bench_dispatch, bench_latency_baseline, bench_latency_floor, bench_latency_dispatcher,
           bench_latency_hub]
