"""WorkerPool and Dispatcher, over the real native bus and matcher."""

from __future__ import annotations

import threading

import pytest
from pihub_testing import wait_for

from pihub.bus import Bus
from pihub.engine.conditions import compile_condition
from pihub.engine.dispatcher import Dispatcher, WorkerPool
from pihub.engine.hooks import Hook
from pihub.engine.rules import Matcher
from pihub.events import Event, Reply


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
