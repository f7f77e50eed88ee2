"""LiveTraces: the daemon's bounded per-event hook traces (pihub/replay.py), without a browser."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pihub.events import Event
from pihub.messages import Response
from pihub.replay import LiveTraces


class FakeHook:
    def __init__(self, name: str) -> None:
        self.name = name


def explain_none(event: Event) -> tuple[list[Any], dict[str, str]]:
    return [], {}


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="trace capacity must be >= 1 event, not 0"):
        LiveTraces(0)


def test_the_ring_keeps_the_last_capacity_events() -> None:
    traces = LiveTraces(3)
    events = [Event.of("CustomEvent", "t", n=i) for i in range(5)]
    for e in events:
        traces.listener(e)
    assert all(e.id for e in events), "the listener gives each event its id"
    assert [traces.trace(e.id, explain_none, "dev") is None for e in events] == [True, True, False, False, False]


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="trace max_bytes must be >= 1 byte, not 0"):
        LiveTraces(3, max_bytes=0)


BIG = 200 << 10  # an attacker's event: a 200 KiB string (an MQTT payload, a posted event)


def test_big_events_leave_past_the_byte_budget_as_if_by_count() -> None:
    budget = 1 << 20
    traces = LiveTraces(1000, max_bytes=budget)
    events = [Event.of("CustomEvent", "t", blob="x" * BIG) for _ in range(20)]
    for e in events:
        traces.listener(e)
        traces.charge(e)  # as the hub registers it: an observer, after the hooks
        assert traces.bytes <= budget
    kept = [traces.trace(e.id, explain_none, "dev") is not None for e in events]
    n = kept.count(True)
    assert 1 <= n < 10 and kept == [False] * (20 - n) + [True] * n  # the oldest left first
    assert traces.evicted_for_bytes == 20 - n  # None: the panel's 404, as for one gone by count


def test_small_events_are_kept_up_to_the_count_bound() -> None:
    traces = LiveTraces(100, max_bytes=1 << 20)
    events = [Event.of("GPIOEvent", "t", pin=i % 40, value=1) for i in range(300)]
    for e in events:
        traces.listener(e)
        traces.charge(e)
    assert traces.evicted_for_bytes == 0
    assert [traces.trace(e.id, explain_none, "dev") is not None for e in events] == [False] * 200 + [True] * 100


def test_big_action_outputs_count_towards_the_budget() -> None:
    budget = 1 << 20
    traces = LiveTraces(1000, max_bytes=budget)
    events = [Event.of("CustomEvent", "t", n=i) for i in range(20)]
    for e in events:  # small events whose hook's action answers 200 KiB
        traces.listener(e)
        prev = traces.begin("h", e)
        traces.action_done(traces.action_started("shell.exec", {"cmd": "cat big"}), Response(output="y" * BIG))
        traces.end(prev, Response())
        traces.charge(e)
        assert traces.bytes <= budget
    assert traces.evicted_for_bytes > 10
    assert traces.trace(events[0].id, explain_none, "dev") is None
    last = traces.trace(events[-1].id, lambda e: ([FakeHook("h")], {}), "dev")
    assert last is not None and last["actions"][0]["output"] == "y" * BIG


def test_a_hook_run_records_its_actions_and_unshown_errors() -> None:
    traces = LiveTraces(10, clock=lambda: 1234.5)
    event = Event.of("CustomEvent", "t")
    traces.listener(event)
    assert traces.action_started("logger.info", {}) is None, "outside a hook nothing is traced"
    previous = traces.begin("h1", event)
    rec = traces.action_started("variable.set", {"x": 1})
    traces.action_done(rec, Response(output={"x": 1}))
    bad = traces.action_started("mock.set", {})
    traces.action_done(bad, Response(errors=["mock.set: missing argument 'name'"]))
    running = traces.trace(event.id, lambda e: ([FakeHook("h1")], {"h2": "subtype: None != x"}), "dev")
    assert running is not None and running["complete"] is False
    traces.end(previous, Response(errors=["mock.set: missing argument 'name'", "[2]: name 'y' is not defined"]))
    t = traces.trace(event.id, lambda e: ([FakeHook("h1")], {"h2": "subtype: None != x"}), "dev")
    assert t is not None
    assert t["complete"] is True
    assert t["fired"] == ["h1"] and t["not_fired"] == {"h2": "subtype: None != x"}
    assert t["actions"] == [
        {"hook": "h1", "action": "variable.set", "args": {"x": 1}, "output": {"x": 1}, "errors": [], "skipped": None},
        {"hook": "h1", "action": "mock.set", "args": {}, "output": None,
         "errors": ["mock.set: missing argument 'name'"], "skipped": None},
    ]
    assert t["hook_errors"] == {"h1": ["[2]: name 'y' is not defined"]}
    assert t["event"]["id"] == event.id and t["event"]["target"] == "dev"
    assert traces.hook_stats() == {"h1": (1, 1234.5)}


def test_threads_do_not_mix_their_hooks_actions() -> None:
    traces = LiveTraces(10)
    a, b = Event.of("CustomEvent", "t", n=1), Event.of("CustomEvent", "t", n=2)
    traces.listener(a)
    traces.listener(b)
    inside = threading.Barrier(2)

    def run(hook: str, event: Event) -> None:
        prev = traces.begin(hook, event)
        inside.wait(5)  # both hooks are running at once
        for i in range(50):
            traces.action_done(traces.action_started(f"{hook}.act", {"i": i}), Response(output=i))
        traces.end(prev, Response())

    threads = [threading.Thread(target=run, args=("ha", a)), threading.Thread(target=run, args=("hb", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    ta = traces.trace(a.id, lambda e: ([FakeHook("ha")], {}), "dev")
    tb = traces.trace(b.id, lambda e: ([FakeHook("hb")], {}), "dev")
    assert ta is not None and tb is not None
    assert {x["action"] for x in ta["actions"]} == {"ha.act"} and len(ta["actions"]) == 50
    assert {x["action"] for x in tb["actions"]} == {"hb.act"} and len(tb["actions"]) == 50


def test_an_event_evicted_while_its_hook_runs_is_dropped_quietly() -> None:
    traces = LiveTraces(1)
    first = Event.of("CustomEvent", "t")
    traces.listener(first)
    prev = traces.begin("h", first)
    traces.listener(Event.of("CustomEvent", "t"))  # evicts the first
    traces.action_done(traces.action_started("logger.info", {}), Response())
    traces.end(prev, Response())
    assert traces.trace(first.id, explain_none, "dev") is None
    assert traces.hook_stats()["h"][0] == 1


def test_the_hub_traces_hooks_on_its_workers(make_hub: Any) -> None:
    hub = make_hub("""
mock: {}
event.hook.greet:
  if: {type: CustomEvent, subtype: hello}
  then:
    - action: mock.set
      args: {name: greeted, value: "${who}"}
    - action: procedure.twice
      args: {who: "${who}"}
procedure.twice(who):
  - action: variable.set
    args: {last: "${who}"}
""", start=False)
    hub.dispatcher.add_listener(hub.traces.listener, before_hooks=True)  # as serving the web does
    hub.start(serve_web=False)
    event = Event.of("CustomEvent", "test", subtype="hello", who="ada")
    assert hub.publish(event) and hub.flush()
    from pihub_testing import wait_for

    assert wait_for(lambda: (hub.trace(event.id) or {}).get("complete"))
    t = hub.trace(event.id)
    assert [(a["hook"], a["action"]) for a in t["actions"]] == [
        ("greet", "mock.set"), ("greet", "procedure.twice"), ("greet", "variable.set")]
    assert t["actions"][0]["output"] == {"name": "greeted", "value": "ada", "previous": None}
    assert hub.describe_hooks()["hooks"][0]["fired"] == 1
