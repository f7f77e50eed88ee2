"""WorkerPool and Dispatcher, over the real native bus and matcher."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from pihub_testing import wait_for

from pihub.bus import Bus
from pihub.clock import ManualClock
from pihub.engine import conditions
from pihub.engine.actions import ActionRegistry
from pihub.engine.conditions import RegexTimeouts, compile_condition
from pihub.engine.dispatcher import Dispatcher, LatencyHistogram, WorkerPool, inline_hooks
from pihub.engine.hooks import Hook
from pihub.engine.procedures import compile_steps
from pihub.engine.rules import Matcher
from pihub.events import Event, Reply
from pihub.plugin import Plugin, action


def test_pool_runs_jobs_and_counts_failures():
    pool = WorkerPool(workers=2, queue_size=10)
    pool.start()
    done = []
    assert pool.submit(done.append, 1)
    assert pool.submit(lambda: 1 / 0)
    pool.stop()
    assert done == [1]
    assert pool.failed == 1 and pool.completed == 2


def test_pool_rejects_beyond_queue_size_and_runs_queued_on_stop():
    pool = WorkerPool(workers=1, queue_size=3)
    gate = threading.Event()
    ran = []
    pool.start()
    assert pool.submit(gate.wait)
    assert pool.submit(ran.append, "a")
    assert pool.submit(ran.append, "b")
    assert not pool.submit(ran.append, "c")  # 3 pending: full
    assert pool.rejected == 1
    gate.set()
    pool.stop()
    assert ran == ["a", "b"]


@pytest.mark.parametrize("workers,queue_size", [(0, 1), (1, 0)])
def test_pool_rejects_bad_sizes(workers, queue_size):
    with pytest.raises(ValueError):
        WorkerPool(workers, queue_size)


def _hook(name: str, cond: dict, order: int, priority: int = 0) -> Hook:
    return Hook(name, compile_condition(cond, ()), None, priority, order)


@pytest.fixture
def bus():
    b = Bus(capacity=64, max_producers=8)
    yield b
    b.close()


def test_dispatcher_fires_selected_hooks_in_config_order(bus):
    hooks = [
        _hook("any_gpio", {"type": "GPIOEvent"}, 0),
        _hook("pin17", {"type": "GPIOEvent", "pin": 17, "value": 1}, 1),
        _hook("sensor", {"type": "SensorDataEvent"}, 2),
    ]
    fired: list[tuple[str, object]] = []
    lock = threading.Lock()

    def fire(hook, event, caps):
        with lock:
            fired.append((hook.name, event.args["pin"]))

    pool = WorkerPool(1, 100)
    pool.start()
    matcher = Matcher(hooks)
    d = Dispatcher(bus, matcher, fire, pool)
    seen = []
    d.add_listener(seen.append)
    d.start()
    p = bus.producer("test")
    e1 = Event.of("GPIOEvent", pin=17, value=1)
    e2 = Event.of("GPIOEvent", pin=4, value=1)
    assert p.publish(e1) and p.publish(e2)
    assert wait_for(lambda: len(fired) == 3)
    d.stop()
    pool.stop()
    matcher.close()
    assert fired == [("any_gpio", 17), ("pin17", 17), ("any_gpio", 4)]
    assert seen[:2] == [e1, e2]
    assert d.stats.events == 2 and d.stats.hooks_fired == 3


def test_bookkeeping_listeners_run_before_the_hooks_and_observers_after_the_inline_ones(bus):
    # the websocket feed and MQTT state are observers: they must not delay a hook's action
    hook = _hook("pin17", {"type": "GPIOEvent", "pin": 17}, 0)
    order: list[str] = []
    pool = WorkerPool(1, 10)  # not started: an inline hook never reaches it
    matcher = Matcher([hook])
    d = Dispatcher(bus, matcher, lambda h, e, c: order.append(f"hook {e.args['pin']}"), pool, inline=[hook])
    d.add_listener(lambda e: order.append(f"observer {e.args['pin']}"))
    d.add_listener(lambda e: order.append(f"bookkeeping {e.args['pin']}"), before_hooks=True)
    p = bus.producer("test")
    assert p.publish(Event.of("GPIOEvent", pin=17, value=1)) and p.publish(Event.of("GPIOEvent", pin=4, value=1))
    d.process(bus.pop(8, timeout=1.0))
    matcher.close()
    assert order == ["bookkeeping 17", "bookkeeping 4", "hook 17", "observer 17", "observer 4"]


def test_priority_selects_only_highest(bus):
    hooks = [_hook("low", {"type": "GPIOEvent"}, 0), _hook("high", {"type": "GPIOEvent", "pin": 1}, 1, 5)]
    fired = []
    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher(hooks)
    d = Dispatcher(bus, m, lambda h, e, c: fired.append(h.name), pool)
    d.start()
    bus.producer("t").publish(Event.of("GPIOEvent", pin=1, value=0))
    bus.producer("t2").publish(Event.of("GPIOEvent", pin=2, value=0))
    assert wait_for(lambda: len(fired) == 2)
    d.stop()
    pool.stop()
    m.close()
    assert fired == ["high", "low"]


def test_full_worker_queue_drops_and_counts(bus):
    gate = threading.Event()
    pool = WorkerPool(1, 1)
    pool.start()
    m = Matcher([_hook("h", {"type": "CustomEvent"}, 0)])
    d = Dispatcher(bus, m, lambda h, e, c: gate.wait(5), pool)
    d.start()
    p = bus.producer("t")
    for i in range(5):
        assert p.publish(Event.of("CustomEvent", subtype=str(i)))
    assert wait_for(lambda: d.stats.events == 5)
    gate.set()
    d.stop()
    pool.stop()
    m.close()
    assert d.stats.hooks_fired + d.stats.hooks_dropped == 5
    assert d.stats.hooks_dropped >= 3  # one running, at most one queued


def test_a_catastrophic_regex_does_not_stall_the_dispatcher(bus, monkeypatch):
    """(.*a){7}$ on one long value held the dispatcher (and, through the GIL, every thread)
    for minutes: it now gives up as no match, and the next event's hook still fires."""
    timeouts = RegexTimeouts(clock=lambda: 0.0)
    monkeypatch.setattr(conditions, "REGEX_TIMEOUTS", timeouts)
    fired = []
    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher([_hook("slow", {"type": "CustomEvent", "text": {"$regex": "(.*a){7}$"}}, 0),
                 _hook("after", {"type": "CustomEvent", "n": 1}, 1)])
    d = Dispatcher(bus, m, lambda h, e, c: fired.append(h.name), pool)
    d.start()
    p = bus.producer("t")
    for _ in range(3):
        assert p.publish(Event.of("CustomEvent", text="a" * 4000 + "b"))
    assert p.publish(Event.of("CustomEvent", n=1))
    assert wait_for(lambda: fired == ["after"], timeout=10)
    d.stop()
    pool.stop()
    m.close()
    assert timeouts.count == 3 and d.stats.events == 4


def test_overflow_is_reported_as_an_event(bus):
    overflow = []
    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher([_hook("ovf", {"type": "BusOverflowEvent"}, 0)])
    d = Dispatcher(bus, m, lambda h, e, c: overflow.append(dict(e.args)), pool, overflow_check=0.01)
    p = bus.producer("noisy")
    injected = 200  # ring capacity is 64 and the dispatcher is not running yet
    accepted = sum(p.publish(Event.of("CustomEvent", subtype="x")) for _ in range(injected))
    assert accepted == 64
    d.start()
    assert wait_for(lambda: overflow)
    d.stop()
    pool.stop()
    m.close()
    assert overflow[0] == {"producer": "noisy", "dropped": injected - accepted}
    assert d.stats.overflow_reports == 1


def test_the_overflow_check_interval_runs_on_the_clock(bus):
    clock = ManualClock()
    overflow = []
    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher([_hook("ovf", {"type": "BusOverflowEvent"}, 0)])
    d = Dispatcher(bus, m, lambda h, e, c: overflow.append(dict(e.args)), pool, overflow_check=60, clock=clock)
    p = bus.producer("noisy")
    assert sum(p.publish(Event.of("CustomEvent", subtype="x")) for _ in range(100)) == 64
    d.start()
    try:
        for _ in range(3):  # turns of the loop (idle waits) without the clock moving: no check
            assert d.wait_progress(d.progress, 2)
        assert overflow == [] and d.stats.overflow_reports == 0
        clock.advance(60)
        assert wait_for(lambda: overflow, 2)
        assert overflow == [{"producer": "noisy", "dropped": 36}]
    finally:
        d.stop()
        pool.stop()
        m.close()


def test_stop_drains_everything_published_before(bus):
    pool = WorkerPool(2, 10_000)
    pool.start()
    count = []
    m = Matcher([_hook("h", {"type": "CustomEvent"}, 0)])
    d = Dispatcher(bus, m, lambda h, e, c: count.append(1), pool)
    p = bus.producer("t")
    n = sum(p.publish(Event.of("CustomEvent", subtype="s")) for _ in range(60))
    d.start()
    d.stop()
    pool.stop()
    m.close()
    assert n == 60 and len(count) == 60


def test_a_reply_is_decided_by_the_dispatchers_one_match(bus):
    """The first selected hook answers; an event no hook matches is answered with None."""
    hooks = [_hook("low", {"type": "WebhookEvent"}, 0), _hook("high", {"type": "WebhookEvent", "hook": "a"}, 1, 5)]
    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher(hooks)

    def fire(hook, event, caps):
        if event.reply is not None and event.reply.hook is hook:
            event.reply.resolve(hook.name)

    d = Dispatcher(bus, m, fire, pool)
    d.start()
    p = bus.producer("t")
    answers = {}
    for name in ("a", "b"):
        ev = Event.of("WebhookEvent", hook=name, method="GET", args={}, data=None, headers={})
        ev.reply = Reply()
        d.expect_reply(ev.reply)
        assert p.publish(ev)
        answers[name] = ev.reply.wait(5)
    unmatched = Event.of("CustomEvent", subtype="x")
    unmatched.reply = Reply()
    d.expect_reply(unmatched.reply)
    assert p.publish(unmatched)
    assert unmatched.reply.wait(5) == (True, None)
    d.stop()
    pool.stop()
    m.close()
    assert answers == {"a": (True, "high"), "b": (True, "low")}


def test_a_reply_whose_hook_is_dropped_gets_an_error(bus):
    gate = threading.Event()
    pool = WorkerPool(1, 1)
    pool.start()
    m = Matcher([_hook("h", {"type": "CustomEvent"}, 0)])
    d = Dispatcher(bus, m, lambda h, e, c: gate.wait(5), pool)
    d.start()
    p = bus.producer("t")
    for i in range(2):  # one running, one queued: the pool is full
        assert p.publish(Event.of("CustomEvent", subtype=str(i)))
    assert wait_for(lambda: d.stats.events == 2)
    ev = Event.of("CustomEvent", subtype="waiting")
    ev.reply = Reply()
    d.expect_reply(ev.reply)
    assert p.publish(ev)
    answered, resp = ev.reply.wait(5)
    gate.set()
    d.stop()
    pool.stop()
    m.close()
    assert answered and resp.errors == ["worker queue full (1 jobs): hook 'h' dropped, try again"]


def test_only_the_first_resolve_of_a_reply_counts():
    reply = Reply()
    assert reply.wait(0) == (False, None)
    reply.resolve(1)
    reply.resolve(2)
    assert reply.done and reply.wait(0) == (True, 1)


# ------------------------------------------------------------------------------ inline hooks

class _Outputs(Plugin):
    name = "out"

    @action(blocking=False)
    def set(self, value: Any = None) -> Any:
        """Memory only."""
        return value

    @action
    def save(self, value: Any = None) -> Any:
        """Pretends to write a file."""
        return value


def _registry() -> ActionRegistry:
    reg = ActionRegistry()
    reg.register(_Outputs())
    return reg


@pytest.mark.parametrize("then,inline", [
    ([{"action": "out.set", "args": {"value": "${pin}"}}], True),
    ([], True),
    ({"action": "out.set"}, True),
    ([{"set": {"x": 1}}, {"if ${x > 0}": [{"action": "out.set"}]}, {"else": [{"action": "out.set"}]},
      "return ${x}"], True),
    ([{"action": "out.set"}, {"action": "out.save"}], False),
    ([{"if ${pin}": [{"action": "out.set"}]}, {"elif ${value}": [{"action": "out.save"}]}], False),
    ([{"if ${pin}": []}, {"else": [{"action": "out.save"}]}], False),
    ([{"action": "procedure.quick"}], False),
    ([{"action": "procedure.async.quick"}], False),
    ([{"action": "out.${name}"}], False),
    ([{"for x in ${[1, 2]}": [{"action": "out.set"}]}], False),
    ([{"fork x in ${[1, 2]}": [{"action": "out.set"}]}], False),
    ([{"while ${False}": [{"action": "out.set"}]}], False),
    ([{"action": "out.missing"}], False),
    ([{"action": "nosuch.set"}], False),
])
def test_only_hooks_of_non_blocking_actions_without_calls_or_loops_are_inline(then, inline):
    hook = Hook("h", compile_condition({"type": "GPIOEvent"}, ()), compile_steps(then), 0, 0)
    assert inline_hooks([hook], _registry().is_blocking) == (frozenset({hook}) if inline else frozenset())


def test_a_hook_whose_then_is_not_compiled_steps_is_never_inline():
    assert inline_hooks([_hook("raw", {"type": "GPIOEvent"}, 0)], lambda action: False) == frozenset()


@pytest.mark.parametrize("budget", [0, -0.001, float("nan")])
def test_the_inline_budget_must_be_positive(bus, budget):
    with pytest.raises(ValueError, match=r"inline_budget must be > 0 seconds, not"):
        Dispatcher(bus, None, lambda h, e, c: None, WorkerPool(1, 1), inline_budget=budget)


def test_inline_hooks_start_in_rule_order_with_the_pool_ones(bus):
    """Per event, each selected hook starts in config order: an inline one runs to its end
    on the dispatcher thread before the next one is queued or run."""
    hooks = [
        _hook("a_inline", {"type": "GPIOEvent"}, 0),
        _hook("b_pool", {"type": "GPIOEvent"}, 1),
        _hook("c_inline", {"type": "GPIOEvent"}, 2),
        _hook("outranked_inline", {"type": "GPIOEvent", "pin": 4}, 3, priority=-1),
    ]
    pool = WorkerPool(1, 10)
    gate = threading.Event()
    log_: list[tuple[str, str, int]] = []  # (hook, thread, jobs submitted when it started)

    def fire(hook, event, caps):
        log_.append((hook.name, threading.current_thread().name, pool.submitted))
        if hook.name == "b_pool":
            gate.wait(5)

    pool.start()
    matcher = Matcher(hooks)
    d = Dispatcher(bus, matcher, fire, pool, inline=[hooks[0], hooks[2], hooks[3]])
    d.start()
    assert bus.producer("t").publish(Event.of("GPIOEvent", pin=4, value=1))
    assert wait_for(lambda: len(log_) == 3)
    gate.set()
    d.stop()
    pool.stop()
    matcher.close()
    assert sorted(log_, key=lambda r: r[0]) == [
        ("a_inline", "pihub-dispatcher", 0),  # before b was queued
        ("b_pool", "pihub-worker-0", 1),
        ("c_inline", "pihub-dispatcher", 1),  # after b was queued
    ]
    assert (d.stats.hooks_fired, d.stats.hooks_inline, pool.submitted) == (3, 2, 1)


def _popped(bus, *subtypes: str):
    """One batch of CustomEvents of these subtypes, popped on this thread (no dispatcher thread)."""
    p = bus.producer("t")
    for subtype in subtypes:
        assert p.publish(Event.of("CustomEvent", subtype=subtype))
    batch = bus.pop(256, timeout=0)
    assert batch.n == len(subtypes)
    return batch


def test_an_inline_overrun_sends_the_rest_of_the_batch_to_the_pool_and_is_counted(bus, caplog):
    clock = ManualClock()
    hook = _hook("slow", {"type": "CustomEvent"}, 0)
    ran: list[tuple[str, bool]] = []
    here = threading.current_thread()

    def fire(h, event, caps):
        ran.append((event.args["subtype"], threading.current_thread() is here))
        if event.args["subtype"] == "slow":
            clock.advance(0.002)  # this run takes 2 ms of the batch's 1 ms

    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher([hook])
    d = Dispatcher(bus, m, fire, pool, inline=[hook], inline_budget=0.001, clock=clock)
    with caplog.at_level(logging.WARNING, logger="pihub.dispatcher"):
        d.process(_popped(bus, "slow", "a", "b"))
    assert wait_for(lambda: len(ran) == 3)
    assert sorted(ran) == [("a", False), ("b", False), ("slow", True)]
    st = d.stats
    assert (st.hooks_fired, st.hooks_inline, st.inline_overruns, st.inline_deferred) == (3, 1, 1, 2)
    assert pool.submitted == 2
    assert any("inline hook 'slow' ran 2.000 ms" in r.getMessage() and "1.000 ms budget" in r.getMessage()
               for r in caplog.records)
    d.process(_popped(bus, "c", "d"))  # a new batch has a new budget
    pool.stop()
    m.close()
    assert ran[3:] == [("c", True), ("d", True)]
    assert (st.hooks_inline, st.inline_overruns, st.inline_deferred) == (3, 1, 2)


def test_hooks_within_the_budget_all_run_inline(bus):
    clock = ManualClock()
    hook = _hook("quick", {"type": "CustomEvent"}, 0)
    ran = []

    def fire(h, event, caps):
        ran.append(threading.current_thread().name)
        clock.advance(0.00005)  # 10 runs: half the budget

    pool = WorkerPool(1, 10)  # never started: nothing may reach it
    m = Matcher([hook])
    d = Dispatcher(bus, m, fire, pool, inline=[hook], inline_budget=0.001, clock=clock)
    d.process(_popped(bus, *"abcdefghij"))
    m.close()
    assert len(ran) == 10 and pool.submitted == 0
    assert (d.stats.hooks_inline, d.stats.inline_overruns) == (10, 0)


def test_errors_of_inline_hooks_are_logged_like_pool_ones(bus, caplog):
    hook = _hook("broken", {"type": "CustomEvent"}, 0)

    def fire(h, event, caps):
        raise RuntimeError(f"boom {event.args['subtype']}")

    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher([hook])
    # a still clock: logging a traceback takes longer than the 0.5 ms budget on a busy box
    inline = Dispatcher(bus, m, fire, pool, inline=[hook], clock=ManualClock())
    pooled = Dispatcher(bus, m, fire, pool)
    with caplog.at_level(logging.ERROR, logger="pihub.dispatcher"):
        inline.process(_popped(bus, "0", "1"))
        pooled.process(_popped(bus, "0"))
        pool.stop()
    m.close()
    failures = [(r.getMessage(), r.exc_info[1].args[0]) for r in caplog.records if r.exc_info]
    assert failures == [(f"job {fire.__qualname__} failed", "boom 0"),
                        (f"job {fire.__qualname__} failed", "boom 1"),
                        (f"job {fire.__qualname__} failed", "boom 0")]
    assert inline.stats.inline_failed == 2 and inline.stats.hooks_inline == 2  # the second still ran
    assert pool.failed == 1


def test_a_webhook_reply_from_an_inline_hook(bus):
    hooks = [_hook("answer", {"type": "WebhookEvent"}, 0), _hook("also", {"type": "WebhookEvent"}, 1)]
    answered_on = []

    def fire(hook, event, caps):
        if event.reply is not None and event.reply.hook is hook:
            answered_on.append(threading.current_thread().name)
            event.reply.resolve(hook.name)

    pool = WorkerPool(1, 10)
    pool.start()
    m = Matcher(hooks)
    d = Dispatcher(bus, m, fire, pool, inline=[hooks[0]])
    d.start()
    ev = Event.of("WebhookEvent", hook="x", method="GET", args={}, data=None, headers={})
    ev.reply = Reply()
    d.expect_reply(ev.reply)
    assert bus.producer("t").publish(ev)
    answer = ev.reply.wait(5)
    d.stop()
    pool.stop()
    m.close()
    assert answer == (True, "answer") and answered_on == ["pihub-dispatcher"]


def test_stop_drains_inline_and_pool_hooks_alike(bus):
    hooks = [_hook("inline", {"type": "CustomEvent"}, 0), _hook("pooled", {"type": "CustomEvent"}, 1)]
    count = {"inline": 0, "pooled": 0}
    lock = threading.Lock()

    def fire(h, e, c):
        with lock:
            count[h.name] += 1

    pool = WorkerPool(2, 10_000)
    pool.start()
    m = Matcher(hooks)
    d = Dispatcher(bus, m, fire, pool, inline=[hooks[0]])
    p = bus.producer("t")
    n = sum(p.publish(Event.of("CustomEvent", subtype="s")) for _ in range(60))
    d.start()
    d.stop()
    pool.stop()
    m.close()
    assert n == 60 and count == {"inline": 60, "pooled": 60}


def test_latency_histogram_counts_each_latency_in_the_first_bucket_whose_bound_holds_it() -> None:
    hist = LatencyHistogram()
    for us in (0.0, 10.0, 10.5, 25.0, 250000.0, 250000.1, 1e12):
        hist.observe(us)
    by_bound = dict(zip(hist.bounds, hist.counts, strict=True))
    assert by_bound[10] == 2  # 0 and 10: a bound is inclusive
    assert by_bound[25] == 2
    assert by_bound[250000] == 1
    assert by_bound[float("inf")] == 2
    assert sum(hist.counts) == hist.n == 7
    assert hist.total_us == pytest.approx(0 + 10 + 10.5 + 25 + 250000 + 250000.1 + 1e12)


class _Hostile:
    """A value every comparison and repr of which raises."""

    def __eq__(self, other):
        raise RuntimeError("eq")

    __hash__ = None  # type: ignore[assignment]

    def __float__(self):
        raise RuntimeError("float")

    def __repr__(self):
        raise RuntimeError("repr")


def test_a_hostile_event_value_does_not_cost_its_batch_the_other_hooks(bus, caplog):
    """An arg nested 100 000 deep or one whose ==/repr raise fails its own conditions only:
    the events around it in the same batch still fire their hooks."""
    deep: dict = {}
    cur = deep
    for _ in range(100_000):
        cur["a"] = {}
        cur = cur["a"]
    hooks = [
        _hook("nested", {"type": "CustomEvent", "d": {"a": {"b": 1}}}, 0),
        _hook("num", {"type": "CustomEvent", "d": {"$gt": 1}}, 1),
        _hook("eq", {"type": "CustomEvent", "w": 5}, 2),
        _hook("alive", {"type": "CustomEvent", "alive": 1}, 3),
    ]
    fired = []
    pool = WorkerPool(1, 100)
    pool.start()
    m = Matcher(hooks)
    d = Dispatcher(bus, m, lambda h, e, c: fired.append(h.name), pool)
    p = bus.producer("t")
    events = [Event.of("CustomEvent", alive=1), Event.of("CustomEvent", d=deep), Event.of("CustomEvent", w=_Hostile()),
              Event.of("CustomEvent", d={"a": {"b": 1}}), Event.of("CustomEvent", w=5), Event.of("CustomEvent", alive=1)]
    assert all(p.publish(e) for e in events)  # published before start: one batch
    with caplog.at_level(logging.ERROR, logger="pihub.dispatcher"):
        d.start()
        d.stop()
    pool.stop()
    m.close()
    assert fired == ["alive", "nested", "eq", "alive"]
    assert d.stats.events == 6
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
