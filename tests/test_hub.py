"""The hub end to end on the mock rig: config -> backend edge -> ring -> matcher -> action."""

from __future__ import annotations


import pytest
from pihub_testing import wait_for

from pihub.backends.base import Backend, BackendStatus
from pihub.errors import BackendUnavailable, ConfigError
from pihub.events import Event

RIG = """
mock:
  outputs: {light: false}
event.hook.press:
  if: {type: GPIOEvent, pin: 17, value: 1}
  then:
    - action: mock.set
      args: {name: light, value: true}
    - action: variable.set
      args: {last_pin: "${pin}"}
event.hook.release:
  if: {type: GPIOEvent, pin: 17, value: 0}
  then:
    - action: mock.set
      args: {name: light, value: false}
"""




def test_edge_to_action_through_the_mock_backend(make_hub):
    hub = make_hub(RIG)
    mock = hub.backends["mock"]
    assert mock.status == BackendStatus.RUNNING
    assert hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1}).ok
    assert wait_for(lambda: mock.outputs["light"] is True)
    assert hub.flush()
    # hook context: ${pin} keeps its int type through the exact-template rule
    assert hub.execute("variable.get", {"name": "last_pin"}).output == {"last_pin": 17}
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 0})
    assert wait_for(lambda: mock.outputs["light"] is False)


def test_unmatched_events_fire_nothing(make_hub):
    hub = make_hub(RIG)
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 4, "value": 1})
    assert hub.flush()
    assert hub.backends["mock"].outputs["light"] is False
    assert hub.dispatcher.stats.hooks_fired == 0


def test_variables_survive_a_restart(make_hub):
    hub = make_hub(RIG)
    assert hub.execute("variable.set", {"colour": "blue"}).ok
    hub.stop()
    hub2 = make_hub(RIG)
    assert hub2.execute("variable.get", {"name": "colour"}).output == {"colour": "blue"}


def test_stop_loses_nothing_in_flight(make_hub):
    hub = make_hub("""
        engine: {ring_capacity: 8192, queue_size: 100000}
        event.hook.count:
          if: {type: CustomEvent, subtype: tick}
          then:
            - action: logger.debug
              args: {msg: tick}
    """)
    n = 3000
    accepted = sum(hub.publish(Event.of("CustomEvent", subtype="tick")) for _ in range(n))
    hub.stop()
    assert accepted == n
    assert hub.pool.completed >= n  # every hook job ran before stop returned
    assert hub.dispatcher.stats.hooks_fired == n


class _Unavailable(Backend):
    name = "unavailable"

    def validate_environment(self) -> None:
        raise BackendUnavailable("no /dev/gpiochip0 on this machine")

    def open(self, emit):  # pragma: no cover - never reached
        raise AssertionError

    def close(self) -> None:
        pass


class _Crashing(Backend):
    name = "crashing"

    def open(self, emit):
        raise OSError("device vanished")

    def close(self) -> None:
        pass


def test_failed_backends_are_marked_and_the_hub_runs_on(make_hub):
    hub = make_hub(RIG, start=False)
    for cls in (_Unavailable, _Crashing):
        b = cls({})
        hub.backends[b.name] = b
    statuses = []
    hub.dispatcher.add_listener(
        lambda e: statuses.append((e.args["backend"], e.args["status"])) if e.type.name == "BackendStatusEvent"
        else None)
    hub.start()
    assert hub.backends["unavailable"].status == BackendStatus.FAILED_ENVIRONMENT
    assert "gpiochip0" in hub.backends["unavailable"].error
    assert hub.backends["crashing"].status == BackendStatus.FAILED_RUNTIME
    assert "device vanished" in hub.backends["crashing"].error
    assert hub.flush()
    assert ("unavailable", str(BackendStatus.FAILED_ENVIRONMENT)) in statuses
    assert ("mock", str(BackendStatus.RUNNING)) in statuses
    hub.execute("mock.emit", {"type": "GPIOEvent", "pin": 17, "value": 1})
    assert wait_for(lambda: hub.backends["mock"].outputs["light"] is True)


def test_bad_hooks_and_procedures_are_all_reported_located(make_hub, tmp_path):
    with pytest.raises(ConfigError) as ei:
        make_hub("""
            event.hook.a:
              if: {type: GPIOEvnt}
              then: [{action: logger.info, args: {msg: x}}]
            event.hook.b:
              if: {type: GPIOEvent, value: {$gtt: 1}}
              then: [{action: logger.info, args: {msg: x}}]
            procedure.p:
              - fi ${x}: []
        """, start=False)
    text = str(ei.value)
    assert "GPIOEvnt" in text and "GPIOEvent" in text
    assert "$gtt" in text
    assert "fi ${x}" in text
    assert len(ei.value.problems) == 3
    assert all(p.file.endswith("config.yaml") and p.line > 0 for p in ei.value.problems)


def test_procedure_call_from_execute(make_hub):
    hub = make_hub("""
        procedure.double(x):
          - return: ${x * 2}
    """)
    assert hub.execute("procedure.double", {"x": 21}).output == 42
    r = hub.execute("procedure.doubel", {"x": 1})
    assert r.errors and "did you mean 'double'" in r.errors[0]


def test_webhook_replies_with_the_hooks_result(make_hub):
    hub = make_hub("""
        event.hook.ping:
          if: {type: WebhookEvent, hook: ping}
          then:
            - return: '${ {"pong": data["n"] + 1} }'
    """)
    ev = Event.of("WebhookEvent", hook="ping", method="POST", args={}, data={"n": 41}, headers={})
    resp = hub.webhook(ev, timeout=5)
    assert resp.ok and resp.output == {"pong": 42}
    other = Event.of("WebhookEvent", hook="nobody", method="GET", args={}, data=None, headers={})
    assert hub.webhook(other, timeout=5) is None


def test_a_webhook_matches_its_hooks_once(make_hub, monkeypatch):
    """The dispatcher's (native + plan) match decides the replying hook; Hub.webhook runs no
    condition of its own (it used to match every hook in Python first)."""
    from pihub.engine.conditions import Condition

    hub = make_hub("""
        event.hook.ping:
          if: {type: WebhookEvent, hook: ping, data: {n: {$gt: 0}}}
          then:
            - return: '${ {"pong": data["n"]} }'
    """)
    calls = []
    real = Condition.match

    def counting(self, event):
        calls.append(event.type.name)
        return real(self, event)

    monkeypatch.setattr(Condition, "match", counting)
    ev = Event.of("WebhookEvent", hook="ping", method="POST", args={}, data={"n": 1}, headers={})
    assert hub.webhook(ev, timeout=5).output == {"pong": 1}
    assert calls == []


def test_backends_run_on_the_hubs_clock(write_config, load_config):
    """A mock script step 'after: 5' waits 5 s of the hub's clock: a test moves it instead of sleeping."""
    from pihub.clock import ManualClock
    from pihub.hub import Hub
    from pihub_testing import wait_for

    clock = ManualClock()
    hub = Hub(load_config(write_config("""
        mock:
          script:
            - {after: 5, event: {type: CustomEvent, subtype: later}}
    """)), clock=clock)
    hub.start()
    try:
        mock = hub.backends["mock"]
        assert mock.clock is clock
        assert wait_for(lambda: clock.waiters == 1)  # the script thread waits on the clock
        clock.advance(4.9)
        assert not [h for h in mock.history() if h["kind"] == "event"]
        clock.advance(0.1)
        assert wait_for(lambda: [h for h in mock.history() if h["kind"] == "event"])
    finally:
        hub.stop()


def test_a_third_party_backend_without_a_clock_parameter_still_loads():
    from pihub.clock import ManualClock
    from pihub.hub import _construct

    class Old(Backend):
        name = "old"

        def __init__(self, config):
            super().__init__(config)

    backend = _construct(Old, {}, ManualClock())
    assert backend.config == {}
